/**
 * Sign-in through the organisation's identity providers, between the gateway's
 * sign-in page and oidc-provider's interaction:
 *
 * 1. begin: state, nonce and PKCE verifier are kept server-side, keyed by
 *    state, bound to the interaction uid, for a short while; the browser goes
 *    to the IdP.
 * 2. The IdP sends the browser to <publicUrl>/oauth/idp/<name>/callback, which
 *    only looks the state up and forwards to the interaction's own path: there
 *    oidc-provider's interaction cookie (path-scoped to /interaction/<uid>)
 *    proves this is the browser that started the sign-in (an IdP login link
 *    started by someone else and opened by a victim is refused).
 * 3. complete: the state is used once, the code redeemed and every check of
 *    openid-client made (GitHub: github-oauth-app.ts reads the user from its
 *    API); claims become an identity (idp-identity.ts), which is
 *    admitted or refused, saved, and signed in as `<provider>:<sub>` — or as the
 *    local user with the same verified email when the provider has linkByEmail.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Config, IdentityProviderConfig } from '../config/schema.js'
import type { FetchLike } from '../net/guarded-fetch.js'
import type { Store } from '../store/types.js'
import { ExternalAccounts } from './external-accounts.js'
import { admissionRefusal, hasGroupsOverage, identityFromClaims, type ExternalIdentity } from './idp-identity.js'
import type { IdpSessions } from './idp-sessions.js'
import { GitHubOAuthApp } from './github-oauth-app.js'
import { OidcRelyingParty, type PendingSignIn } from './oidc-relying-party.js'
import type { UserDirectory } from './users.js'

const PENDING_PREFIX = 'idp-pending:'
const USED_PREFIX = 'idp-state-used:'
/** How long a user may take at the IdP (typing a password, MFA) before the sign-in must start again. */
export const IDP_SIGN_IN_TTL_MS = 10 * 60 * 1000

export type IdpSignInOutcome =
  | { readonly kind: 'signed-in', readonly accountId: string, readonly identity: ExternalIdentity }
  | { readonly kind: 'refused', readonly reason: string, readonly identity: ExternalIdentity }

export interface IdpSignInOptions {
  readonly config: Config
  readonly store: Store
  readonly users: UserDirectory
  readonly sessions: IdpSessions
  readonly fetch: FetchLike
  readonly log: FastifyBaseLogger
  readonly now: () => number
}

/** One provider's side of a sign-in: an OpenID Connect relying party or a GitHub OAuth app. */
export type SignInParty = OidcRelyingParty | GitHubOAuthApp

export class IdpSignIn {
  private readonly parties: ReadonlyMap<string, SignInParty>
  private readonly accounts: ExternalAccounts

  constructor (private readonly opts: IdpSignInOptions) {
    const { publicUrl, auth } = opts.config
    this.parties = new Map(auth.identityProviders.map((idp) => [idp.name, idp.type === 'github' ? new GitHubOAuthApp(idp, publicUrl, opts.fetch) : new OidcRelyingParty(idp, publicUrl, opts.fetch)]))
    this.accounts = new ExternalAccounts(opts.store)
  }

  /** The providers a user can sign in with, in configuration order. */
  get providers (): IdentityProviderConfig[] {
    return [...this.parties.values()].map((p) => p.idp)
  }

  has (name: string): boolean {
    return this.parties.has(name)
  }

  /** The IdP's authorization URL for this interaction; its state, nonce and verifier stay here. */
  async begin (name: string, uid: string): Promise<URL> {
    const party = this.relyingParty(name)
    const { url, pending } = await party.begin(uid)
    await this.opts.store.kvSet(PENDING_PREFIX + pending.state, JSON.stringify(pending), this.opts.now() + IDP_SIGN_IN_TTL_MS)
    return url
  }

  /** The sign-in a callback's state belongs to (not yet used up), or undefined. */
  async pending (name: string, state: string | undefined): Promise<PendingSignIn | undefined> {
    if (state === undefined || state === '') return undefined
    const stored = await this.opts.store.kvGet(PENDING_PREFIX + state)
    const pending = stored === undefined ? undefined : JSON.parse(stored) as PendingSignIn
    return pending?.provider === name ? pending : undefined
  }

  /** Uses a state up: true for the first caller only, even when two callbacks race. */
  async use (pending: PendingSignIn): Promise<boolean> {
    const hit = await this.opts.store.hit(USED_PREFIX + pending.state, IDP_SIGN_IN_TTL_MS)
    await this.opts.store.kvDelete(PENDING_PREFIX + pending.state)
    return hit.count === 1
  }

  /** Redeems the callback (`query`: the IdP's parameters), decides admission and records the user. */
  async complete (pending: PendingSignIn, query: URLSearchParams): Promise<IdpSignInOutcome> {
    const party = this.relyingParty(pending.provider)
    const callbackUrl = new URL(party.redirectUri)
    callbackUrl.search = query.toString()
    const { claims, groups, refreshToken, accessToken } = await party.complete(callbackUrl, pending)
    const idp = party.idp
    const identity = identityFromClaims(idp, claims, groups)
    if (hasGroupsOverage(claims) && idp.groupsClaim !== undefined) {
      this.opts.log.warn({ provider: idp.name, user: identity.id, name: identity.name }, 'identity provider left out the groups claim (Entra ID groups overage): the user has no IdP groups here; see README "Identity providers", Microsoft Entra ID')
    }
    const refusal = admissionRefusal(idp, identity, claims)
    if (refusal !== undefined) return { kind: 'refused', reason: refusal, identity }
    const nowMs = this.opts.now()
    await this.accounts.save(identity, nowMs)
    const accountId = this.linkedLocalUser(idp, identity) ?? identity.id
    const expiresAtMs = nowMs + this.opts.config.auth.refreshTokenTtl
    await this.opts.sessions.save(accountId, { provider: idp.name, subject: identity.subject, ...(refreshToken === undefined ? {} : { refreshToken }), ...(accessToken === undefined ? {} : { accessToken }), signedInAtMs: nowMs }, expiresAtMs)
    await this.opts.sessions.link(identity.id, accountId, typeof claims.sid === 'string' && claims.sid !== '' ? claims.sid : undefined, expiresAtMs)
    return { kind: 'signed-in', accountId, identity }
  }

  /**
   * With linkByEmail and an email the IdP verified: the local user who has that email, if exactly
   * one does. Revalidation asks again (offboarding.ts): the IdP may have changed the address.
   */
  linkedLocalUser (idp: IdentityProviderConfig, identity: ExternalIdentity): string | undefined {
    if (!idp.linkByEmail || !identity.emailVerified || identity.email === undefined) return undefined
    return this.opts.users.findByEmail(identity.email)?.username
  }

  /**
   * One provider's side (revalidation and logout reuse its discovery and client authentication).
   * A GitHub user is re-read with GitHubOAuthApp.refresh(IdpSession.accessToken, subject);
   * which errors mean "no": isGitHubRefusal.
   */
  relyingParty (name: string): SignInParty {
    const party = this.parties.get(name)
    if (party === undefined) throw new Error(`no identity provider named ${name}`)
    return party
  }
}
