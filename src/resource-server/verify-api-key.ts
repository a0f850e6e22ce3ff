/**
 * `Authorization: Bearer pcs_…`: a personal API key (account/api-keys.ts) on an
 * MCP endpoint. The caller becomes the key's user — the same id, name, email
 * and groups their OAuth tokens carry — limited to the key's scopes; the route
 * then applies that user's policy, limits, sessions and audit unchanged.
 *
 * Lookups (the key and its user) are cached for API_KEY_CACHE_MS, failures
 * included (an unknown key sent in a loop costs one store read per period).
 * That is the revocation bound: a key revoked on any replica, or whose user
 * was removed from YAML or disabled at the identity provider, stops working on
 * every replica within API_KEY_CACHE_MS. Expiry is checked on every request
 * against the injected clock, cached or not.
 *
 * An identity-provider user's key re-checks them with the IdP at lookup, as a refresh of
 * their OAuth tokens does (auth-server/offboarding.ts), at most every revalidateEvery: a key
 * used with no OAuth refresh would otherwise outlive the IdP's "no" until it expired.
 */
import { API_KEY_CACHE_MS, API_KEY_PREFIX, hashApiKey, isLive, LAST_USED_RESOLUTION_MS, type ApiKeyRecord, type ApiKeys } from '../account/api-keys.js'
import type { KeyOwners } from '../account/key-owners.js'
import type { UserIdentity } from '../identity.js'
import { isStoreUnavailable } from '../store/types.js'
import { storeUnavailableError, STORE_RETRY_AFTER_S } from '../store/outage.js'
import { PortcullisError } from '../errors.js'
import type { RevalidationOutcome } from '../auth-server/offboarding.js'
import { tokenError, type RequestIdentity } from './verify-token.js'

const MAX_CACHED_KEYS = 10_000

interface Cached { readonly atMs: number, readonly found: { readonly record: ApiKeyRecord, readonly user: UserIdentity } | undefined }

export interface ApiKeyVerifierOptions {
  readonly isEnabled: boolean
  readonly keys: ApiKeys
  readonly owners: KeyOwners
  readonly now: () => number
  /** A failed last-use write (the store down): logged, never fatal to the request. */
  readonly onRecordUseError: (err: Error) => void
  /** Whether an administrator blocked the user (admin/blocked-users.ts): their keys are refused too. */
  readonly isUserBlocked?: (userId: string) => boolean
  /** Re-checks an identity-provider user with their IdP when due (Offboarding.atRefresh, no grant). */
  readonly revalidate?: (userId: string) => Promise<RevalidationOutcome>
}

export function isApiKey (token: string): boolean {
  return token.startsWith(API_KEY_PREFIX)
}

/** The client id sessions and audit see for a key: its own, so no two keys share a session. */
export function apiKeyClientId (keyId: string): string {
  return `api-key:${keyId}`
}

export class ApiKeyVerifier {
  private readonly cache = new Map<string, Cached>()
  /** Lookups under way, by key hash: requests arriving together share one (and one re-check at the IdP). */
  private readonly loading = new Map<string, Promise<Cached['found']>>()

  constructor (private readonly options: ApiKeyVerifierOptions) {}

  /** The key's user as a request identity, or a TokenError (401 invalid_token). */
  async verify (secret: string): Promise<RequestIdentity> {
    if (!this.options.isEnabled) throw tokenError('api_keys_disabled')
    const now = this.options.now()
    const hash = hashApiKey(secret)
    let cached = this.cache.get(hash)
    if (cached === undefined || now - cached.atMs >= API_KEY_CACHE_MS) {
      cached = { atMs: now, found: await this.loadOnce(hash, secret) }
      this.remember(hash, cached)
    }
    const found = cached.found
    if (found === undefined || !isLive(found.record, now)) throw tokenError('api_key')
    if (this.options.isUserBlocked?.(found.record.userId) === true) throw tokenError('blocked')
    this.noteUse(hash, cached, now)
    return identityOf(found.record, found.user)
  }

  private async loadOnce (hash: string, secret: string): Promise<Cached['found']> {
    let pending = this.loading.get(hash)
    if (pending === undefined) {
      pending = this.loadOrUnavailable(secret).finally(() => this.loading.delete(hash))
      this.loading.set(hash, pending)
    }
    return await pending
  }

  /** The store down (Redis unreachable): 503 "retry shortly" and nothing cached — never a 401 that would look like a bad key. */
  private async loadOrUnavailable (secret: string): Promise<Cached['found']> {
    try {
      return await this.load(secret)
    } catch (err) {
      if (!isStoreUnavailable(err)) throw err
      throw storeUnavailableError(err)
    }
  }

  private async load (secret: string): Promise<Cached['found']> {
    const record = await this.options.keys.lookup(secret)
    if (record === undefined) return undefined
    if (!await this.isStillVouchedFor(record.userId)) return undefined
    // Read after the re-check: it may have changed the user's groups (or disabled the account).
    const user = await this.options.owners.identityOf(record.userId)
    return user === undefined ? undefined : { record, user }
  }

  /**
   * The IdP's word on the key's user, when due: refused (offboarded, a user linked by email
   * included, whose local account stays) - the key is refused; cannot be re-checked (no IdP
   * refresh token) - 401 saying so; the IdP cannot be asked - 503, nothing cached, nobody
   * offboarded. Neither failure serves a request on an account nobody re-checked.
   */
  private async isStillVouchedFor (userId: string): Promise<boolean> {
    const outcome = await this.options.revalidate?.(userId) ?? { kind: 'ok' }
    switch (outcome.kind) {
      case 'ok': return true
      case 'refused': return false
      case 'sign-in-again': throw tokenError('idp_recheck')
      case 'unavailable': throw new PortcullisError('PORTCULLIS_ERR_IDP_UNAVAILABLE', undefined, { headers: { 'retry-after': String(STORE_RETRY_AFTER_S) } })
    }
  }

  private remember (hash: string, entry: Cached): void {
    this.cache.delete(hash)
    if (this.cache.size >= MAX_CACHED_KEYS) {
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    this.cache.set(hash, entry)
  }

  /** Last use, coarse: one store write per key per LAST_USED_RESOLUTION_MS, not one per request. */
  private noteUse (hash: string, cached: Cached, now: number): void {
    const found = cached.found
    if (found === undefined) return
    const last = found.record.lastUsedAtMs
    if (last !== undefined && now - last < LAST_USED_RESOLUTION_MS) return
    const record = { ...found.record, lastUsedAtMs: now }
    this.cache.set(hash, { atMs: cached.atMs, found: { record, user: found.user } })
    this.options.keys.recordUse(record, now).catch(this.options.onRecordUseError)
  }
}

function identityOf (record: ApiKeyRecord, user: UserIdentity): RequestIdentity {
  return {
    id: user.id,
    name: user.name,
    groups: user.groups ?? [],
    ...(user.email === undefined ? {} : { email: user.email }),
    clientId: apiKeyClientId(record.keyId),
    scopes: new Set(record.scopes),
    isClient: false,
    expiresAtS: Math.floor(record.expiresAtMs / 1000),
    grantId: undefined,
    keyId: record.keyId,
    servers: record.servers,
  }
}
