/**
 * What the gateway keeps of a user's session at their identity provider: the
 * IdP's refresh token — or, for GitHub, whose OAuth app tokens do not expire and
 * come without one, the access token — sealed with the SecretBox and never
 * logged, and when the user last signed in there. One record per gateway account (`<provider>:<sub>`,
 * or a local user linked by email), shared by replicas through the store.
 *
 * The revalidation at token refresh and back-channel logout read it through
 * `idpSession(accountId)`.
 */
import type { Store } from '../store/types.js'
import type { SecretBox } from './secret-box.js'

const KEY_PREFIX = 'idp-session:'
/** `<provider>:<sub>` -> the gateway account it signed in as (itself, or a local user linked by email). */
const SIGNED_IN_AS_PREFIX = 'idp-signed-in-as:'
/** `<provider>:<IdP sid>` -> `<provider>:<sub>`: back-channel logout tokens may name only the IdP session. */
const SID_PREFIX = 'idp-sid:'
/** One use of an account's IdP refresh token at a time (the key predates token exchange: revalidation used it first). */
const REFRESHING_PREFIX = 'idp-revalidating:'

export interface IdpSession {
  /** The identity provider's name (`auth.identityProviders[].name`). */
  readonly provider: string
  /** The user's subject at that provider. */
  readonly subject: string
  /** The IdP's refresh token, when it issued one (opened: handle as a secret). */
  readonly refreshToken?: string
  /** GitHub: the OAuth app's access token, which re-reads /user, /user/orgs and /user/teams (opened: handle as a secret). */
  readonly accessToken?: string
  /** When the user last signed in at the IdP through the gateway, ms. */
  readonly signedInAtMs: number
}

interface StoredSession {
  readonly provider: string
  readonly subject: string
  /** Sealed (secret-box.ts), bound to this record's key. */
  readonly sealedRefreshToken?: string
  /** Sealed, bound to this record's key and the slot (a sealed refresh token does not open here). */
  readonly sealedAccessToken?: string
  readonly signedInAtMs: number
}

const ACCESS_TOKEN_SLOT = '#access-token'

export class IdpSessions {
  constructor (private readonly store: Store, private readonly box: SecretBox) {}

  /**
   * Records a sign-in. Without a new refresh token the one kept before stays: IdPs that rotate
   * nothing, or issue one only at the first consent, still leave the gateway a token to use.
   * A new access token (GitHub) replaces the one kept before.
   */
  async save (accountId: string, session: IdpSession, expiresAtMs?: number): Promise<void> {
    const key = KEY_PREFIX + accountId
    const before = session.refreshToken === undefined ? await this.stored(accountId) : undefined
    const sealedRefreshToken = session.refreshToken === undefined
      ? (before?.provider === session.provider && before.subject === session.subject ? before.sealedRefreshToken : undefined)
      : this.box.seal(session.refreshToken, key)
    const sealedAccessToken = session.accessToken === undefined ? undefined : this.box.seal(session.accessToken, key + ACCESS_TOKEN_SLOT)
    const record: StoredSession = {
      provider: session.provider,
      subject: session.subject,
      ...(sealedRefreshToken === undefined ? {} : { sealedRefreshToken }),
      ...(sealedAccessToken === undefined ? {} : { sealedAccessToken }),
      signedInAtMs: session.signedInAtMs,
    }
    await this.store.kvSet(key, JSON.stringify(record), expiresAtMs)
  }

  /** The user's IdP session with its tokens opened, or undefined when the gateway keeps none. */
  async idpSession (accountId: string): Promise<IdpSession | undefined> {
    const stored = await this.stored(accountId)
    if (stored === undefined) return undefined
    return {
      provider: stored.provider,
      subject: stored.subject,
      ...(stored.sealedRefreshToken === undefined ? {} : { refreshToken: this.box.open(stored.sealedRefreshToken, KEY_PREFIX + accountId) }),
      ...(stored.sealedAccessToken === undefined ? {} : { accessToken: this.box.open(stored.sealedAccessToken, KEY_PREFIX + accountId + ACCESS_TOKEN_SLOT) }),
      signedInAtMs: stored.signedInAtMs,
    }
  }

  /**
   * Remembers which account an IdP identity signed in as and, when the IdP named its session
   * (the ID token's `sid`), whose session that is: back-channel logout names the user by sub or sid.
   */
  async link (identityId: string, accountId: string, sid: string | undefined, expiresAtMs: number): Promise<void> {
    await this.store.kvSet(SIGNED_IN_AS_PREFIX + identityId, accountId, expiresAtMs)
    if (sid !== undefined) await this.store.kvSet(`${SID_PREFIX}${identityId.split(':')[0] ?? ''}:${sid}`, identityId, expiresAtMs)
  }

  /** The account an IdP identity signed in as (the identity itself when not linked to a local user). */
  async accountOf (identityId: string): Promise<string> {
    return await this.store.kvGet(SIGNED_IN_AS_PREFIX + identityId) ?? identityId
  }

  /** The identity (`<provider>:<sub>`) whose IdP session `sid` is, if the gateway saw it. */
  async identityOfSid (provider: string, sid: string): Promise<string | undefined> {
    return await this.store.kvGet(`${SID_PREFIX}${provider}:${sid}`)
  }

  /**
   * Claims the account's IdP refresh token for one use, across replicas, until `untilMs` at the
   * latest: IdPs rotate refresh tokens, and a second use of a rotated one is a replay (OAuth 2.0
   * Security BCP, RFC 9700 4.14.2: many IdPs then revoke the whole grant). Revalidation and
   * token exchange both refresh with it. False when another use is under way.
   */
  async claimRefresh (accountId: string, untilMs: number): Promise<boolean> {
    return await this.store.kvSetIfAbsent(REFRESHING_PREFIX + accountId, '1', untilMs)
  }

  async releaseRefresh (accountId: string): Promise<void> {
    await this.store.kvDelete(REFRESHING_PREFIX + accountId)
  }

  /** Forgets the session (the IdP logged the user out, or refused them). */
  async forget (accountId: string): Promise<void> {
    await this.store.kvDelete(KEY_PREFIX + accountId)
  }

  private async stored (accountId: string): Promise<StoredSession | undefined> {
    const text = await this.store.kvGet(KEY_PREFIX + accountId)
    return text === undefined ? undefined : JSON.parse(text) as StoredSession
  }
}
