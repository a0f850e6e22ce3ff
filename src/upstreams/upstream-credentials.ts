/**
 * servers[].upstreamAuth (issue 14): where an HTTP upstream's `Authorization` comes from when
 * each caller has their own credential there — a token linked by OAuth at the upstream's
 * authorization server (`type: oauth`), or one exchanged at the identity provider
 * (`type: tokenExchange`, RFC 8693).
 *
 * The HTTP upstream asks for the caller's credential before each request and, when the
 * upstream answers 401 (or 403 with a challenge) to it, asks once for a new one and sends the
 * request again — except a 403 insufficient_scope, a valid credential short of a scope, which
 * a new one would not fix: that is answered as PORTCULLIS_ERR_UPSTREAM_INSUFFICIENT_SCOPE. A failure is a PortcullisError, answered to the client as a JSON-RPC error:
 * never a 401 from the gateway (it would send the client into a pointless new OAuth dance
 * with the gateway, which has nothing to do with the upstream's credential).
 */
import type { McpExchange } from './types.js'
import type { UserIdentity } from '../identity.js'

export interface UpstreamCredentials {
  /**
   * The `Authorization` header value for this caller (e.g. `Bearer <token>`): from a cache, or
   * fetched / refreshed now. Throws a PortcullisError the client can act on — e.g. a link to
   * connect their account — when there is none.
   */
  authorizationFor: (ex: McpExchange) => string | Promise<string>
  /**
   * The upstream refused `rejected` (401, or 403 with a challenge other than insufficient_scope). Returns a different value to
   * send the request once more with, after a refresh; throws a PortcullisError when no new
   * credential can be had (the link error again, or 502 with the detail in logs only).
   */
  renew: (ex: McpExchange, rejected: string) => Promise<string>
}

/**
 * `${user.credentials.<server>}` in a stdio server's env: the caller's current access token at
 * that HTTP server (upstreamAuth oauth), refreshed first when it is about to expire. Throws the
 * link error (a PortcullisError) when the caller has none.
 */
export type LinkedTokenSource = (server: string, user: UserIdentity, canElicitUrl?: boolean) => Promise<string>

/** Builds the credentials of one server with `upstreamAuth` (app.ts wires the implementations). */
export type UpstreamCredentialsFactory = (server: string) => UpstreamCredentials | undefined
