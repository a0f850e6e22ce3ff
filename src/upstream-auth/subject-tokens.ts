/**
 * The subject token of a token exchange (RFC 8693 2.1, `subject_token`): the user's access
 * token at their identity provider.
 *
 * Where it comes from: a refresh (RFC 6749 6) with the IdP refresh token the gateway kept at
 * the user's sign-in (idp-sessions.ts, sealed), then reused until shortly before it expires.
 * Not the access token of the sign-in itself, kept sealed beside it: that one expires (an hour
 * at most IdPs) while the user's gateway session lives on for weeks, so a refresh would be
 * needed anyway — and a refresh is also the IdP vouching for the user now, not at sign-in (a
 * user disabled at the IdP gets no new token, so no exchanged one either). Kept in memory
 * only: it is a bearer token for the user at the IdP, cheap to get again, and nothing of it
 * lands at rest. A rotated refresh token is saved back at once (the old one is spent).
 *
 * Failures: no IdP sign-in kept for the user (a local or machine account, another provider's,
 * or the IdP gave no refresh token), or the IdP refusing the refresh (invalid_grant: the
 * token or account is gone) → PORTCULLIS_ERR_UPSTREAM_SIGN_IN_REQUIRED (HTTP 200), which only a new
 * sign-in through the IdP fixes; the IdP unreachable → 502, detail in logs only.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { IdentityProviderConfig } from '../config/schema.js'
import { PortcullisError } from '../errors.js'
import type { IdpSession, IdpSessions } from '../auth-server/idp-sessions.js'
import { isIdpRefusal } from '../auth-server/oidc-relying-party.js'
import type { UserIdentity } from '../identity.js'
import { ExpiringCache, reuseUntil } from './expiring-cache.js'

/** Users whose IdP access token is kept at once; past it the oldest are refreshed again when next needed. */
const MAX_SUBJECT_TOKENS = 10_000
/** Stop using an IdP access token this long before it expires: the exchange must still accept it. */
const SUBJECT_TOKEN_MARGIN_MS = 60_000
/** When the IdP says nothing of its lifetime (expires_in is only RECOMMENDED, RFC 6749 5.1). */
const DEFAULT_SUBJECT_TOKEN_LIFETIME_MS = 5 * 60_000
/** How long a refresh may hold the account's refresh token (the lock's expiry, should this replica die). */
const REFRESH_LOCK_MS = 30_000

/** The IdP's side: a refresh grant (OidcRelyingParty.accessToken). */
export interface IdpRefresher {
  accessToken: (refreshToken: string, subject: string) => Promise<{ accessToken: string, expiresInS?: number, refreshToken?: string }>
}

export interface SubjectTokensOptions {
  /** The oidc provider whose tokens are exchanged. */
  readonly idp: IdentityProviderConfig
  readonly refresher: IdpRefresher
  readonly sessions: IdpSessions
  /** auth.refreshTokenTtl: how long the session record lives past a refresh (as at sign-in). */
  readonly sessionTtlMs: number
  readonly now: () => number
}

export class SubjectTokens {
  private readonly cache: ExpiringCache<string>
  private readonly label: string

  constructor (private readonly opts: SubjectTokensOptions) {
    this.cache = new ExpiringCache(MAX_SUBJECT_TOKENS, opts.now)
    this.label = opts.idp.displayName ?? opts.idp.name
  }

  /** The user's IdP access token (cached, or refreshed now). Throws a PortcullisError the user can act on. */
  async tokenFor (user: UserIdentity, server: string, log: FastifyBaseLogger): Promise<string> {
    return await this.cache.get(user.id, async () => await this.refresh(user, server, log))
  }

  /** The IdP no longer takes the cached token (an exchange refused it): the next call refreshes. */
  forget (accountId: string): void {
    this.cache.delete(accountId)
  }

  private async refresh (user: UserIdentity, server: string, log: FastifyBaseLogger): Promise<{ value: string, expiresAtMs: number }> {
    // Refused before the lock is taken: a local user's every call costs one read, no lock.
    await this.usableSession(user, server)
    if (!await this.opts.sessions.claimRefresh(user.id, this.opts.now() + REFRESH_LOCK_MS)) {
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `your ${this.label} session is being refreshed; retry in a few seconds`)
    }
    try {
      // Read again under the lock: another replica may have rotated the refresh token meanwhile.
      const { session, refreshToken } = await this.usableSession(user, server)
      let result
      try {
        result = await this.opts.refresher.accessToken(refreshToken, session.subject)
      } catch (err) {
        if (isIdpRefusal(err)) {
          log.info({ server, user: user.id, provider: this.opts.idp.name, ...idpError(err) }, 'identity provider refused the refresh for a token exchange')
          throw this.signInRequired(server, `${this.label} no longer accepts your sign-in`)
        }
        log.error({ server, user: user.id, provider: this.opts.idp.name, ...idpError(err) }, 'could not refresh the identity provider token for a token exchange')
        throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', undefined, { cause: err })
      }
      if (result.refreshToken !== undefined && result.refreshToken !== refreshToken) {
        await this.opts.sessions.save(user.id, { ...session, refreshToken: result.refreshToken }, this.opts.now() + this.opts.sessionTtlMs)
      }
      const lifetimeMs = result.expiresInS === undefined ? DEFAULT_SUBJECT_TOKEN_LIFETIME_MS : result.expiresInS * 1000
      return { value: result.accessToken, expiresAtMs: reuseUntil(this.opts.now(), lifetimeMs, SUBJECT_TOKEN_MARGIN_MS) }
    } finally {
      await this.opts.sessions.releaseRefresh(user.id)
    }
  }

  /** The user's session at this provider with a refresh token; a PortcullisError saying how to get one otherwise. */
  private async usableSession (user: UserIdentity, server: string): Promise<{ session: IdpSession, refreshToken: string }> {
    if (user.isClient === true) throw this.signInRequired(server, 'a machine client has no sign-in there')
    const session = await this.opts.sessions.idpSession(user.id)
    if (session?.provider !== this.opts.idp.name) throw this.signInRequired(server, 'the gateway holds no sign-in of yours there')
    if (session.refreshToken === undefined) throw this.signInRequired(server, `${this.label} gave the gateway no refresh token at your sign-in`)
    return { session, refreshToken: session.refreshToken }
  }

  private signInRequired (server: string, why: string): PortcullisError {
    return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_SIGN_IN_REQUIRED',
      `MCP server "${server}" acts as you with a token from ${this.label}, and ${why}: sign in to the gateway through ${this.label} (reconnect your client and choose "Sign in with ${this.label}")`,
      { data: { server, identityProvider: this.opts.idp.name } })
  }
}

/** What an IdP said when it refused (its OAuth error, RFC 6749 5.2), for the log: never a token. */
export function idpError (err: unknown): { status?: number, error?: string, description?: string, reason?: string } {
  if (typeof err !== 'object' || err === null) return { reason: String(err) }
  const e = err as { status?: unknown, error?: unknown, error_description?: unknown, code?: unknown, message?: unknown }
  if (typeof e.error === 'string') {
    return {
      ...(typeof e.status === 'number' ? { status: e.status } : {}),
      error: e.error.slice(0, 100),
      ...(typeof e.error_description === 'string' ? { description: e.error_description.slice(0, 300) } : {}),
    }
  }
  return { reason: `${typeof e.code === 'string' ? `${e.code}: ` : ''}${typeof e.message === 'string' ? e.message : 'unknown error'}`.slice(0, 300) }
}
