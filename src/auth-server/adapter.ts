/**
 * oidc-provider's storage adapter on top of the Store. Two behaviours beyond
 * plain storage:
 *
 * - Single-use is enforced at the store, atomically: of two concurrent
 *   redemptions of one authorization code, exactly one wins; the other is
 *   refused and the grant revoked (RFC 6749 4.1.2: a code used twice should
 *   revoke what it issued). oidc-provider alone checks "consumed" and marks it
 *   in two steps, so two racing requests could both succeed.
 * - The same holds for refresh tokens across replicas: of two requests that
 *   both found a token unused, only the first to consume it gets new tokens
 *   (outside the grace window), and the race revokes the family like a replay.
 * - Refresh tokens get a short grace window: for `refreshTokenReuseGrace`
 *   after rotation the old token still works (clients that refresh twice in
 *   parallel); after it, a replay is reuse, and oidc-provider revokes the
 *   whole grant (refresh token family).
 * - Every revocation of a grant — code replay, refresh-token reuse, the
 *   revocation endpoint, a destroyed Grant, the cross-replica races above —
 *   goes through `revokeGrant`, which also voids the grant's access tokens
 *   (JWTs, never stored) on every replica (resource-server/revoked-grants.ts).
 * - Registered clients expire `registeredClientTtl` after their last use
 *   (sliding: each use moves the expiry, at most once a day per replica), so
 *   abandoned dynamic registrations do not grow the store without bound.
 */
import { errors } from 'oidc-provider'
import type { Payload, Store } from '../store/types.js'

export interface AdapterOptions {
  readonly refreshGraceS: number
  readonly registeredClientTtlMs: number
  /** Lifetime past last use of a registered client nobody has signed in with yet. */
  readonly unusedClientTtlMs: number
  readonly now: () => number
  /** Deletes the grant's records and voids its access tokens everywhere. */
  readonly revokeGrant: (grantId: string) => Promise<void>
  /** A Grant record was saved: its account's grant index learns of it (offboarding revokes them all). */
  readonly onGrantSaved?: (accountId: string, grantId: string, expiresAtMs: number | undefined) => Promise<void>
}

/** Remembered last expiry moves per client, at most this many (then forgotten: one extra write each). */
const MAX_TRACKED_CLIENTS = 10_000
const DAY_MS = 24 * 3600_000

/**
 * Models oidc-provider stores without an expiry that we expire when unused for
 * auth.registeredClientTtl: registered clients, and their registration access
 * tokens (RFC 7592), which would otherwise outlive the clients forever.
 */
const SLIDING = new Set(['Client', 'RegistrationAccessToken'])

/** Models whose records are spent by use. */
const SINGLE_USE = new Set(['AuthorizationCode', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PushedAuthorizationRequest'])

/** Set when a user first signs in with a registered client: from then on it lives registeredClientTtl past each use. */
export function signedInKey (clientId: string): string {
  return `auth:client-signed-in:${clientId}`
}

function clientIdOf (model: string, id: string, payload: Payload): string | undefined {
  if (model === 'Client') return id
  return typeof payload.clientId === 'string' ? payload.clientId : undefined
}

/**
 * A user signed in with this client (an authorization code was issued to it): it is in use,
 * and from now on lives registeredClientTtl past each use, with its registration access token.
 */
export async function markClientSignedIn (store: Store, clientId: string, registeredClientTtlMs: number, now: number): Promise<void> {
  const key = signedInKey(clientId)
  if (await store.kvGet(key) !== undefined) return
  await store.kvSet(key, '1', now + registeredClientTtlMs)
  await store.touch('Client', clientId, now + registeredClientTtlMs)
}

export function createAdapter (store: Store, options: AdapterOptions): new (model: string) => object {
  const nowS = (): number => Math.floor(options.now() / 1000)
  const clientTtlMs = options.registeredClientTtlMs
  const touchEveryMs = Math.min(DAY_MS, Math.floor(clientTtlMs / 10))
  const touchedAt = new Map<string, number>()
  /** How long a client lives past a use: the long rule once a user has signed in with it, else the short one. */
  const lifetimeOf = async (clientId: string | undefined): Promise<number> =>
    clientId !== undefined && await store.kvGet(signedInKey(clientId)).catch(() => undefined) !== undefined ? clientTtlMs : options.unusedClientTtlMs
  /** The signed-in mark lives as long as the client it marks. */
  const keepMark = (clientId: string | undefined, ttlMs: number, now: number): void => {
    if (clientId !== undefined && ttlMs === clientTtlMs) store.kvSet(signedInKey(clientId), '1', now + ttlMs).catch(() => {})
  }
  /** A registered client (or its registration access token) was used: its unused-lifetime starts again. */
  const touch = (model: string, id: string, clientId: string | undefined): void => {
    const now = options.now()
    const key = `${model}:${id}`
    if (now - (touchedAt.get(key) ?? -Infinity) < touchEveryMs) return
    if (touchedAt.size >= MAX_TRACKED_CLIENTS) touchedAt.clear()
    touchedAt.set(key, now)
    // Best effort: a failed move only shortens the record's life to its previous expiry.
    void lifetimeOf(clientId).then(async (ttlMs) => {
      if (model === 'Client') keepMark(clientId, ttlMs, now)
      await store.touch(model, id, now + ttlMs)
    }).catch(() => { touchedAt.delete(key) })
  }

  return class StoreAdapter {
    constructor (private readonly model: string) {}

    async upsert (id: string, payload: Payload, expiresIn?: number): Promise<void> {
      const now = options.now()
      const expiresAt = expiresIn !== undefined ? now + expiresIn * 1000 : SLIDING.has(this.model) ? now + await lifetimeOf(clientIdOf(this.model, id, payload)) : undefined
      if (SLIDING.has(this.model)) touchedAt.set(`${this.model}:${id}`, now)
      await store.upsert(this.model, id, payload, expiresAt)
      if (this.model === 'Grant' && typeof payload.accountId === 'string') await options.onGrantSaved?.(payload.accountId, id, expiresAt)
    }

    async find (id: string): Promise<Payload | undefined> {
      const payload = await store.find(this.model, id)
      if (payload !== undefined && SLIDING.has(this.model)) touch(this.model, id, clientIdOf(this.model, id, payload))
      if (payload !== undefined && this.model === 'RefreshToken' && typeof payload.consumed === 'number' && nowS() - payload.consumed < options.refreshGraceS) {
        // Within the grace window the just-rotated token still looks unused.
        delete payload.consumed
      }
      return payload
    }

    async findByUid (uid: string): Promise<Payload | undefined> {
      return store.findByUid(this.model, uid)
    }

    async findByUserCode (userCode: string): Promise<Payload | undefined> {
      return store.findByUserCode(this.model, userCode)
    }

    async consume (id: string): Promise<void> {
      const earlier = await store.consume(this.model, id, nowS())
      if (earlier === 'first') return
      const used = this.model === 'RefreshToken' ? 'refresh token already used' : 'authorization code already used'
      // Gone since this request read it: another request (maybe on another
      // replica) spent it and the replay revoked the grant, or it expired.
      // Nobody wins a record that no longer exists.
      if (earlier === 'gone') throw new errors.InvalidGrant(used)
      // Another request spent it first, between this one's lookup and now.
      const isSpent = SINGLE_USE.has(this.model) || (this.model === 'RefreshToken' && nowS() - earlier >= options.refreshGraceS)
      if (!isSpent) return
      const payload = await store.find(this.model, id)
      if (typeof payload?.grantId === 'string') await options.revokeGrant(payload.grantId)
      throw new errors.InvalidGrant(used)
    }

    async destroy (id: string): Promise<void> {
      // oidc-provider destroys a Grant only when revoking it (helpers/revoke.js): its tokens go with it.
      if (this.model === 'Grant') await options.revokeGrant(id)
      else await store.destroy(this.model, id)
    }

    /** oidc-provider calls this once per token model on each revocation (helpers/revoke.js); one is enough, more are harmless. */
    async revokeByGrantId (grantId: string): Promise<void> {
      await options.revokeGrant(grantId)
    }
  }
}
