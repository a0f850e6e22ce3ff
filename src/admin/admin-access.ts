/**
 * Who may use the admin API (README "Administration"), failing closed:
 *
 * - `Authorization: Bearer <admin.bearerToken>`, compared in constant time over SHA-256
 *   digests (equal lengths, so the comparison leaks neither content nor length) → actor
 *   `admin-token`, for automation;
 * - or a gateway access token (RFC 9068 JWT) whose audience is the admin resource
 *   `<publicUrl>/admin` (RFC 8707: a token for an MCP server is not one for the admin API),
 *   carrying the `portcullis:admin` scope, of a user in one of `admin.groups` (the token's
 *   `groups` claim) → actor: that user. A blocked user's or revoked grant's token is refused
 *   by the verifier like everywhere else.
 *
 * Every refusal is a coded error with a message that never repeats the credential.
 */
import { ADMIN_SCOPE } from '../config/defaults.js'
import { PortcullisError } from '../errors.js'
import { TokenError, type TokenVerifier } from '../resource-server/verify-token.js'
import { bearerCheck } from '../net/bearer-check.js'

/** RFC 6750 2.1: `Bearer` then a b64token. */
const BEARER_RE = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

export type AdminActor =
  | { readonly kind: 'admin-token' }
  | { readonly kind: 'user', readonly id: string, readonly name: string, readonly clientId: string }

export interface AdminAccessOptions {
  /** The admin resource, `<publicUrl>/admin`. */
  readonly audience: string
  readonly groups: readonly string[]
  readonly bearerToken: string | undefined
  readonly verifier: TokenVerifier
}

export type AdminAuthenticator = (authorization: string | undefined) => Promise<AdminActor>

export function actorName (actor: AdminActor): string {
  return actor.kind === 'admin-token' ? 'admin-token' : actor.id
}

export function createAdminAuthenticator (opts: AdminAccessOptions): AdminAuthenticator {
  // The configured token as metrics.bearerToken is checked: any characters it was given (the
  // schema asks only for its length), not just RFC 6750's b64token, which access tokens follow.
  const isAdminToken = bearerCheck(opts.bearerToken)
  const adminGroups = new Set(opts.groups)
  return async (authorization) => {
    if (authorization === undefined || authorization === '') throw unauthorized('send Authorization: Bearer <admin.bearerToken or an access token for the admin API>')
    if (isAdminToken(authorization)) return { kind: 'admin-token' }
    const token = BEARER_RE.exec(authorization)?.[1]
    if (token === undefined) throw unauthorized('the Authorization header is not "Bearer <token>"')
    let identity
    try {
      identity = await opts.verifier.verify(token, [opts.audience])
    } catch (err) {
      if (!(err instanceof TokenError)) throw err
      // The wrong bearer token lands here too (not a JWT): one message, no hint which was meant.
      throw unauthorized(err.reason === 'audience' ? `the access token is not for the admin API (its audience must be ${opts.audience})` : err.message)
    }
    if (identity.isClient) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_FORBIDDEN', 'a machine client\'s token cannot administer the gateway')
    if (!identity.scopes.has(ADMIN_SCOPE)) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_FORBIDDEN', `the access token lacks the ${ADMIN_SCOPE} scope`)
    if (!(identity.groups ?? []).some((group) => adminGroups.has(group))) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_FORBIDDEN', 'the user is in none of admin.groups')
    return { kind: 'user', id: identity.id, name: identity.name, clientId: identity.clientId }
  }
}

function unauthorized (detail: string): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', detail, { headers: { 'www-authenticate': 'Bearer realm="portcullis-admin"' } })
}
