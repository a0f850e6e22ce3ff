/**
 * The one redirect-URI rule, for every client source (Dynamic Client
 * Registration, Client ID Metadata Documents, clients listed in YAML):
 *
 * - `http:` only on a loopback host, any port (RFC 8252 7.3; MCP
 *   authorization, "Communication Security": redirect URIs MUST be localhost
 *   or HTTPS);
 * - `https:` anywhere;
 * - a private-use scheme (`cursor://`, `vscode://`) for native apps (RFC 8252 7.1).
 *
 * oidc-provider refuses unparseable URIs and `javascript:`-like schemes itself.
 */

import { LOOPBACK_HOSTS } from '../net/loopback.js'

/** Completes "redirect_uris …" (oidc-provider answers invalid_redirect_uri for messages starting so) or "redirect URIs …". */
export const HTTP_REDIRECT_RULE = 'using http: must use a loopback host (127.0.0.1, localhost or [::1]); use https: or a custom scheme elsewhere'

function parse (uri: string): URL | undefined {
  try {
    return new URL(uri)
  } catch {
    return undefined
  }
}

/** Whether the URI breaks the rule (plain http to a host other than loopback). */
export function isForbiddenRedirect (uri: string): boolean {
  const url = parse(uri)
  return url?.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)
}

/** http: on a loopback host: whatever listens on that port of the user's machine gets the code. */
export function isLoopbackRedirect (uri: string): boolean {
  const url = parse(uri)
  return url?.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)
}

/** Loopback or a private-use scheme: a native app (oidc-provider's `application_type: native` rules). */
export function isLoopbackOrNative (uri: string): boolean {
  const url = parse(uri)
  return url !== undefined && url.protocol !== 'https:' && (url.protocol !== 'http:' || LOOPBACK_HOSTS.has(url.hostname))
}
