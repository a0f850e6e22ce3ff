/**
 * Offboarding: the gateway follows the identity provider when it stops vouching
 * for a user.
 *
 * At a refresh of the gateway's own tokens (the client's refresh_token grant, and a code
 * exchange: the code may come from a sign-in the authorization server kept),
 * an IdP user last vouched for longer ago than the provider's `revalidateEvery`
 * is re-checked with the IdP refresh token kept at sign-in (idp-sessions.ts):
 *
 * - the IdP answers: the new claims are saved (group changes reach the next
 *   access token and policy) with the rotated IdP refresh token; the refresh goes on;
 * - the IdP refuses (invalid_grant: the user is disabled or deleted, the token
 *   revoked; userinfo refused), or the claims no longer pass admission
 *   (requiredGroups, allowedDomains): the user is offboarded — the account is
 *   disabled, every grant of theirs revoked (their access tokens are refused on
 *   every replica within the revoked-grant poll, about a second), their IdP
 *   session forgotten, their stdio sessions and processes on this replica ended,
 *   their browser sign-ins (authorization server, account and admin pages) ended —
 *   and the client's refresh gets invalid_grant;
 * - the IdP cannot be asked (network error, 5xx, the gateway's own client
 *   misconfigured): the refresh is refused with temporarily_unavailable (503,
 *   the client retries) and nothing is disabled — no tokens are issued on an
 *   unchecked account, and an IdP outage does not offboard everyone;
 * - the gateway holds no IdP refresh token (the IdP issued none): the user
 *   cannot be re-checked, so the refresh is refused with invalid_grant (sign in
 *   again, which re-checks them at the IdP) — the account is not disabled.
 *
 * An API key's use re-checks its user the same way (no grant is presented; the key is refused
 * when the user is offboarded or cannot be re-checked, and answers 503 while the IdP cannot be
 * asked): otherwise a key used with no OAuth refresh would never be re-checked.
 *
 * Back-channel logout (backchannel-logout.ts) offboards through the same `offboard`, at once.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Config, IdentityProviderConfig } from '../config/schema.js'
import type { AccountGrants } from './account-grants.js'
import { ExternalAccounts, isExternalAccountId } from './external-accounts.js'
import { admissionRefusal, identityFromClaims, type ExternalIdentity } from './idp-identity.js'
import type { IdpSessions } from './idp-sessions.js'
import type { IdpSignIn } from './idp-sign-in.js'
import { isIdpRefusal } from './oidc-relying-party.js'
import { isGitHubRefusal } from './github-oauth-app.js'
import type { LogoutSubject } from './backchannel-logout.js'
import type { Store } from '../store/types.js'

/** One revalidation per account at a time (IdPs rotate refresh tokens: a second use would be a replay). */
const REVALIDATION_LOCK_MS = 30_000

export type RevalidationOutcome =
  | { readonly kind: 'ok' }
  /** The IdP refused the user (or admission did): offboarded; the refresh gets invalid_grant. */
  | { readonly kind: 'refused', readonly reason: string }
  /** The gateway cannot re-check the user (no IdP refresh token): invalid_grant, sign in again. */
  | { readonly kind: 'sign-in-again', readonly reason: string }
  /** The IdP could not be asked: temporarily_unavailable, nothing disabled. */
  | { readonly kind: 'unavailable', readonly reason: string }

export interface OffboardingOptions {
  readonly config: Config
  readonly store: Store
  readonly idp: IdpSignIn
  readonly sessions: IdpSessions
  readonly grants: AccountGrants
  /** Revokes one grant everywhere (its records, and its access tokens through the revoked-grant list). */
  readonly revokeGrant: (grantId: string) => Promise<void>
  /** Ends the user's sessions and processes (every replica) and removes their upstream links. */
  readonly endUserSessions: (accountId: string) => Promise<void>
  /**
   * Ends the user's browser sign-ins: at the authorization server (ended-sign-ins.ts) and on the
   * account and admin pages (account/page-sessions.ts).
   */
  readonly endSignIns: (accountId: string) => Promise<void>
  /** Revokes every API key of the account (account/api-keys.ts). */
  readonly revokeApiKeys: (accountId: string) => Promise<void>
  readonly log: FastifyBaseLogger
  readonly now: () => number
}

export class Offboarding {
  private readonly accounts: ExternalAccounts

  constructor (private readonly opts: OffboardingOptions) {
    this.accounts = new ExternalAccounts(opts.store)
  }

  /**
   * Called before the gateway answers a refresh_token grant of `accountId`'s grant `grantId`, and
   * when an API key's user is looked up (no grant: a key is used with no refresh at all, and would
   * otherwise outlive the IdP's "no" until it expired).
   */
  async atRefresh (accountId: string, grantId?: string): Promise<RevalidationOutcome> {
    const session = await this.opts.sessions.idpSession(accountId)
    if (session === undefined) return await this.withoutIdpSession(accountId, grantId)
    const identityId = `${session.provider}:${session.subject}`
    const idp = this.opts.idp.has(session.provider) ? this.opts.idp.relyingParty(session.provider).idp : undefined
    if (idp === undefined) return await this.refuse(accountId, identityId, grantId, `identity provider "${session.provider}" is no longer configured`)
    const account = await this.accounts.find(identityId)
    if (account?.disabled !== undefined) return await this.refuse(accountId, identityId, grantId, account.disabled.reason)
    if (account !== undefined && this.opts.now() - account.validatedAtMs < idp.revalidateEvery) return { kind: 'ok' }
    if (!await this.opts.sessions.claimRefresh(accountId, this.opts.now() + REVALIDATION_LOCK_MS)) {
      return { kind: 'unavailable', reason: 'the account is being re-checked with its identity provider; retry shortly' }
    }
    try {
      // Read again under the lock: a token exchange (or another replica) may have rotated the
      // refresh token since the read above, and the spent one would be refused by the IdP —
      // offboarding a user who did nothing wrong.
      const current = await this.opts.sessions.idpSession(accountId)
      if (current === undefined) return await this.withoutIdpSession(accountId, grantId)
      // GitHub's OAuth app tokens do not expire and come without a refresh token: the access token re-reads the user.
      const credential = current.refreshToken ?? current.accessToken
      if (credential === undefined) return { kind: 'sign-in-again', reason: `${idp.displayName ?? idp.name} gave the gateway no refresh token; sign in again` }
      return await this.revalidate(accountId, idp, { ...current, credential }, grantId)
    } finally {
      await this.opts.sessions.releaseRefresh(accountId)
    }
  }

  /**
   * Before a code exchange: the code may come from a sign-in the authorization server kept (its
   * browser session), with no visit to the IdP behind it, so the user is re-checked as at a
   * refresh. When they cannot be re-checked (no IdP refresh token), their kept sign-ins end too:
   * the next authorization goes to the IdP, which vouches afresh, instead of back to this refusal.
   */
  async atCodeExchange (accountId: string, grantId: string): Promise<RevalidationOutcome> {
    const outcome = await this.atRefresh(accountId, grantId)
    if (outcome.kind === 'sign-in-again') await this.opts.endSignIns(accountId)
    return outcome
  }

  /**
   * The IdP no longer vouches for the user: disables the account, revokes every grant of
   * theirs, forgets their IdP session and ends their stdio sessions and processes.
   */
  async offboard (accountId: string, identityId: string, reason: string): Promise<void> {
    await this.opts.sessions.forget(accountId)
    await this.accounts.disable(identityId, reason, this.opts.now())
    const grantIds = await this.opts.grants.of(accountId)
    for (const grantId of grantIds) await this.opts.revokeGrant(grantId)
    await this.opts.grants.forget(accountId)
    await this.opts.endUserSessions(accountId)
    // A user linked by email is a local account, which is not disabled: without this the browser
    // that signed in through the IdP stayed signed in, and got new tokens at a consent click.
    await this.opts.endSignIns(accountId)
    // A user linked by email is a local account, which stays enabled: once its IdP session is
    // forgotten its keys would pass for a plain local user's. An IdP account's keys are refused
    // while it is disabled, and work again if the IdP admits the user again.
    if (accountId !== identityId) await this.opts.revokeApiKeys(accountId)
    this.opts.log.info({ user: accountId, identity: identityId, reason, grants: grantIds.length }, 'identity provider no longer vouches for the user: grants revoked, sessions ended')
  }

  /**
   * Back-channel logout: the IdP ended the user's session there. The gateway does not tie its
   * grants to IdP sessions, so a logout naming only a sid ends all of that user's access too.
   * Returns the accounts offboarded (none for a user the gateway never saw).
   */
  async logout (provider: string, subject: LogoutSubject): Promise<string[]> {
    const identityId = subject.sub === undefined ? await this.opts.sessions.identityOfSid(provider, subject.sid ?? '') : `${provider}:${subject.sub}`
    if (identityId === undefined || await this.accounts.find(identityId) === undefined) return []
    const accountId = await this.opts.sessions.accountOf(identityId)
    await this.offboard(accountId, identityId, 'logged out at the identity provider (back-channel logout)')
    return [accountId]
  }

  /** No IdP session kept: a local user (nothing to check), or an IdP user whose session record is gone. */
  private async withoutIdpSession (accountId: string, grantId: string | undefined): Promise<RevalidationOutcome> {
    if (!isExternalAccountId(accountId)) return { kind: 'ok' }
    const account = await this.accounts.find(accountId)
    if (account?.disabled !== undefined) return await this.refuse(accountId, accountId, grantId, account.disabled.reason)
    const idp = account !== undefined && this.opts.idp.has(account.provider) ? this.opts.idp.relyingParty(account.provider).idp : undefined
    // Just re-checked (another replica, or the session record has expired since).
    if (account !== undefined && idp !== undefined && this.opts.now() - account.validatedAtMs < idp.revalidateEvery) return { kind: 'ok' }
    return { kind: 'sign-in-again', reason: 'the gateway cannot re-check this account with its identity provider; sign in again' }
  }

  private async revalidate (accountId: string, idp: IdentityProviderConfig, session: { provider: string, subject: string, credential: string, refreshToken?: string, accessToken?: string, signedInAtMs: number }, grantId: string | undefined): Promise<RevalidationOutcome> {
    const identityId = `${session.provider}:${session.subject}`
    let identity: ExternalIdentity
    let claims: Readonly<Record<string, unknown>>
    let refreshToken: string | undefined
    try {
      let groups: readonly string[] | undefined
      ({ claims, refreshToken, groups } = await this.opts.idp.relyingParty(idp.name).refresh(session.credential, session.subject))
      identity = identityFromClaims(idp, claims, groups)
    } catch (err) {
      if (isIdpRefusal(err) || isGitHubRefusal(err)) return await this.refuse(accountId, identityId, grantId, `${idp.displayName ?? idp.name} refused the account at revalidation`)
      this.opts.log.warn({ provider: idp.name, user: accountId, err: { message: (err as Error).message } }, 'identity provider unreachable at revalidation: refresh refused for now, account kept')
      return { kind: 'unavailable', reason: `${idp.displayName ?? idp.name} cannot be reached to re-check your account; retry shortly` }
    }
    const refusal = admissionRefusal(idp, identity, claims) ?? this.linkRefusal(accountId, idp, identity)
    if (refusal !== undefined) return await this.refuse(accountId, identityId, grantId, refusal)
    const nowMs = this.opts.now()
    await this.accounts.save(identity, nowMs)
    const kept = refreshToken ?? session.refreshToken
    await this.opts.sessions.save(accountId, { provider: idp.name, subject: session.subject, ...(kept === undefined ? {} : { refreshToken: kept }), ...(session.accessToken === undefined ? {} : { accessToken: session.accessToken }), signedInAtMs: session.signedInAtMs }, nowMs + this.opts.config.auth.refreshTokenTtl)
    this.opts.log.info({ provider: idp.name, user: accountId, groups: identity.groups }, 'identity provider re-checked the user')
    return { kind: 'ok' }
  }

  /**
   * A user linked by email (linkByEmail) is the local user only while the IdP still gives them that
   * local user's verified email: an address the IdP changed (a rename, an address handed to
   * someone else), or linkByEmail turned off, ends the link - the IdP account is no longer them.
   */
  private linkRefusal (accountId: string, idp: IdentityProviderConfig, identity: ExternalIdentity): string | undefined {
    if (accountId === identity.id || this.opts.idp.linkedLocalUser(idp, identity) === accountId) return undefined
    return `your account at ${idp.displayName ?? idp.name} is no longer linked to the local user "${accountId}" (its verified email changed, or linkByEmail is off)`
  }

  private async refuse (accountId: string, identityId: string, grantId: string | undefined, reason: string): Promise<RevalidationOutcome> {
    // The presented grant first: it is revoked even if the account's grant index missed it.
    if (grantId !== undefined) await this.opts.revokeGrant(grantId)
    await this.offboard(accountId, identityId, reason)
    return { kind: 'refused', reason }
  }
}
