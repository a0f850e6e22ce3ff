/**
 * Finding an upstream MCP server's authorization server the way a spec-following MCP client
 * does (MCP 2025-11-25 basic/authorization, "Authorization Server Discovery"):
 *
 * 1. an unauthenticated request to the server; its 401's `WWW-Authenticate` may name the
 *    protected resource metadata (`resource_metadata`, RFC 9728 5.1) and the scope to ask for;
 * 2. otherwise the well-known URIs of RFC 9728 3.1, path-aware first
 *    (`/.well-known/oauth-protected-resource/<path>`), then at the root;
 * 3. the metadata's `resource` must be the server's own URL (RFC 9728 3.3: otherwise a server
 *    could point the gateway at metadata for another resource), and its first
 *    `authorization_servers` entry is the issuer (RFC 8414 / OIDC discovery follow, in
 *    oauth-client.ts).
 *
 * Every request goes through the guarded fetch given (net/guarded-fetch.ts).
 */
import type { FetchLike } from '../net/guarded-fetch.js'
import { parseBearerChallenge } from './www-authenticate.js'

const PRM_WELL_KNOWN = '/.well-known/oauth-protected-resource'

export interface UpstreamAuthorization {
  /** The resource indicator sent with every authorization and token request (RFC 8707). */
  readonly resource: string
  /** The authorization server's issuer identifier. */
  readonly issuer: string
  /** The scope the upstream's challenge asked for, if any (MCP "Scope Selection Strategy"). */
  readonly challengeScope?: string
  readonly scopesSupported: readonly string[]
}

/** Thrown when the upstream does not say, usably, where its authorization server is. */
export class DiscoveryError extends Error {
  override readonly name = 'DiscoveryError'
}

/** RFC 9728 3.1: the path-aware well-known URI first (for a URL with a path), then the root one. */
export function protectedResourceMetadataUrls (resourceUrl: string): string[] {
  const url = new URL(resourceUrl)
  const path = url.pathname.replace(/\/$/, '')
  const root = `${url.origin}${PRM_WELL_KNOWN}`
  return path === '' ? [root] : [`${url.origin}${PRM_WELL_KNOWN}${path}${url.search}`, root]
}

/** The scopes to ask for: configured ones, else the challenge's, else the metadata's scopes_supported. */
export function scopesToRequest (configured: readonly string[], found: Pick<UpstreamAuthorization, 'challengeScope' | 'scopesSupported'>): string[] {
  if (configured.length > 0) return [...configured]
  if (found.challengeScope !== undefined) return found.challengeScope.split(' ').filter((s) => s !== '')
  return [...found.scopesSupported]
}

/** Steps 1 to 3 above, for the upstream at `resourceUrl`. */
export async function discoverUpstreamAuthorization (resourceUrl: string, fetch: FetchLike): Promise<UpstreamAuthorization> {
  const challenge = await probe(resourceUrl, fetch)
  const candidates = challenge.resourceMetadata === undefined ? protectedResourceMetadataUrls(resourceUrl) : [challenge.resourceMetadata]
  for (const candidate of candidates) {
    const metadata = await readJson(candidate, fetch)
    if (metadata === undefined) continue
    const resource = metadata.resource
    if (typeof resource !== 'string' || !isSameResource(resource, resourceUrl)) {
      throw new DiscoveryError(`the protected resource metadata at ${candidate} is for ${String(resource)}, not ${resourceUrl}`)
    }
    const issuer = Array.isArray(metadata.authorization_servers) ? metadata.authorization_servers[0] : undefined
    if (typeof issuer !== 'string' || !URL.canParse(issuer)) throw new DiscoveryError(`the protected resource metadata at ${candidate} names no authorization server`)
    const supported = Array.isArray(metadata.scopes_supported) ? metadata.scopes_supported.filter((s): s is string => typeof s === 'string') : []
    return { resource, issuer, scopesSupported: supported, ...(challenge.scope === undefined ? {} : { challengeScope: challenge.scope }) }
  }
  throw new DiscoveryError(`${resourceUrl} publishes no protected resource metadata (RFC 9728)`)
}

/**
 * The first request a client would send (initialize), without a token: a protected server
 * answers 401 with its challenge. Should the server not be protected after all, it may open a
 * session that nobody uses; the server ends it at its own idle timeout.
 */
async function probe (resourceUrl: string, fetch: FetchLike): Promise<ReturnType<typeof parseBearerChallenge>> {
  const response = await fetch(resourceUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'portcullis-discovery', version: '1' } } }),
  })
  return response.status === 401 ? parseBearerChallenge(response.headers.get('www-authenticate') ?? undefined) : {}
}

async function readJson (url: string, fetch: FetchLike): Promise<Record<string, unknown> | undefined> {
  const response = await fetch(url, { headers: { accept: 'application/json' } })
  if (response.status !== 200) return undefined
  const body: unknown = await response.json().catch(() => undefined)
  return typeof body === 'object' && body !== null && !Array.isArray(body) ? body as Record<string, unknown> : undefined
}

/** Equal as URLs, a trailing slash aside (RFC 9728 3.3 asks for identity; servers differ on the slash). */
function isSameResource (a: string, b: string): boolean {
  if (!URL.canParse(a) || !URL.canParse(b)) return false
  const strip = (u: string): string => new URL(u).href.replace(/\/$/, '')
  return strip(a) === strip(b)
}
