/**
 * Revocation (RFC 7009) of the gateway's JWT access tokens at /oauth/revoke.
 *
 * oidc-provider refuses structured tokens there (unsupported_token_type): a
 * JWT access token is not stored, so it has nothing to delete. This step runs
 * after oidc-provider has authenticated the client and refused the token, and
 * revokes the token's whole grant — refresh tokens included — instead:
 *
 * - It is what oidc-provider itself does for an opaque access token
 *   (actions/revocation.js calls helpers/revoke.js with its grantId), and what
 *   RFC 7009 2.1 allows ("MAY revoke the respective refresh token as well").
 * - A client revoking its access token is signing out; a refresh token left
 *   alive would mint a fresh access token a moment later.
 * - One mechanism (the revoked-grant list) with entries bounded by the number
 *   of grants, rather than a second list of every revoked `jti`.
 *
 * Machine tokens (client_credentials) carry no grant: they stay unrevocable
 * (unsupported_token_type, as before) and expire within accessTokenTtl.
 */
import type { KoaContextWithOIDC } from 'oidc-provider'
import { TokenError, type TokenVerifier } from '../resource-server/verify-token.js'

export interface AccessTokenRevocationDeps {
  readonly verifier: TokenVerifier
  /** Every audience a token of this gateway can carry (each server's URL, the gateway's own). */
  readonly audiences: readonly string[]
  readonly revokeGrant: (grantId: string) => Promise<void>
}

const MACHINE_TOKEN_DESCRIPTION = 'client_credentials access tokens cannot be revoked; they expire within auth.accessTokenTtl'

/** RFC 7009 2.2: 200 with an empty body, whether or not there was anything to revoke. */
function revoked (ctx: KoaContextWithOIDC): void {
  ctx.status = 200
  ctx.body = ''
}

export function revokeJwtAccessTokens (deps: AccessTokenRevocationDeps): (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void> {
  return async (ctx, next) => {
    await next()
    if (ctx.oidc?.route !== 'revocation' || ctx.status !== 400) return
    if ((ctx.body as { error?: unknown } | undefined)?.error !== 'unsupported_token_type') return
    // Set only once client authentication passed.
    const client = ctx.oidc.client
    const token = ctx.oidc.params?.token
    if (client === undefined || typeof token !== 'string') return
    let identity
    try {
      identity = await deps.verifier.verify(token, deps.audiences)
    } catch (err) {
      if (!(err instanceof TokenError)) throw err
      // RFC 7009 2.2: an invalid token (expired, already revoked, not ours) is not an error.
      return revoked(ctx)
    }
    if (identity.clientId !== client.clientId) {
      // RFC 7009 2.1: only the client the token was issued to may revoke it. As oidc-provider's
      // default policy: a public client learns nothing, a confidential one is told.
      if (client.clientAuthMethod === 'none') return revoked(ctx)
      ctx.body = { error: 'invalid_request', error_description: 'client is not authorized to revoke the presented token' }
      return
    }
    if (identity.grantId === undefined) {
      ctx.body = { error: 'unsupported_token_type', error_description: MACHINE_TOKEN_DESCRIPTION }
      return
    }
    await deps.revokeGrant(identity.grantId)
    revoked(ctx)
  }
}
