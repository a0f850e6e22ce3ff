/**
 * The one state interface: OAuth records (clients, grants, codes, sessions,
 * refresh tokens, interactions), gateway key-values (signing keys, consent
 * index) and counters (login throttling, rate limits). Backends: SQLite (the
 * embedded default), memory (tests only), Redis (several replicas).
 *
 * Times are milliseconds since the epoch, except `consumed`, which
 * oidc-provider keeps in seconds inside the payload.
 */

export type Payload = Record<string, unknown>

/**
 * The store's backend did not answer (Redis down, unreachable, timed out).
 * Callers turn it into a 503 "retry shortly", never a 500: nothing is broken,
 * and the gateway recovers by itself when the backend returns.
 */
export class StoreUnavailableError extends Error {
  readonly code = 'PORTCULLIS_ERR_STORE_UNAVAILABLE'
  constructor (readonly location: string, options?: ErrorOptions, reason = 'is unreachable') {
    super(`the store (${location}) ${reason}`, options)
    this.name = 'StoreUnavailableError'
  }
}

export function isStoreUnavailable (err: unknown): err is StoreUnavailableError {
  return err instanceof StoreUnavailableError
}

/** The last write the store's disk refused (SQLite: full, I/O error, read-only, busy); cleared by the next write that works. */
/** A record of one grant, as `Store.findByGrantId` lists it. */
export interface GrantRecord {
  readonly model: string
  readonly id: string
  readonly payload: Payload
  readonly expiresAtMs: number | undefined
}

/** What `Store.consume` found: see there. */
export type Consumption = 'first' | 'gone' | number

export interface StoreWriteFailure {
  /** The backend's error code, e.g. SQLITE_FULL. */
  readonly code: string
  readonly message: string
  /** When writes started failing (ms). */
  readonly sinceMs: number
}

/** The part of a pino logger a store uses. */
export interface StoreLog {
  error: (details: Record<string, unknown>, message: string) => void
  info: (details: Record<string, unknown>, message: string) => void
}

/** One stored item, for copying a store into another (`portcullis migrate-store`). */
export type StoredEntry =
  | { readonly kind: 'record', readonly model: string, readonly id: string, readonly payload: Payload, readonly expiresAtMs: number | undefined }
  | { readonly kind: 'kv', readonly key: string, readonly value: string, readonly expiresAtMs: number | undefined }

/** A revoked grant: every access token of it is void until `untilMs` (when the last of them expires anyway). */
export interface RevokedGrant {
  readonly grantId: string
  readonly untilMs: number
}

export interface CounterHit {
  /** The count in the current window, including this hit. */
  readonly count: number
  /** When the current window ends (ms). */
  readonly resetAtMs: number
}

export interface Store {
  readonly kind: 'sqlite' | 'memory' | 'redis'
  /** Where the data lives, for logs (a path, or a URL without credentials). */
  readonly location: string

  upsert: (model: string, id: string, payload: Payload, expiresAtMs: number | undefined) => Promise<void>
  /** The payload, or undefined when missing or expired. */
  find: (model: string, id: string) => Promise<Payload | undefined>
  findByUid: (model: string, uid: string) => Promise<Payload | undefined>
  findByUserCode: (model: string, userCode: string) => Promise<Payload | undefined>
  /**
   * Marks the record consumed at `nowS` (seconds) unless it already was, in
   * one atomic step, so the caller learns whether it won the race: `'first'`
   * when this call consumed it; the earlier consumption time when another call
   * did; `'gone'` when the record no longer exists (expired, or deleted by a
   * revocation since the caller read it): nobody can win it any more.
   */
  consume: (model: string, id: string, nowS: number) => Promise<Consumption>
  destroy: (model: string, id: string) => Promise<void>
  /**
   * Revokes a grant in one atomic step: deletes every record (of any model)
   * carrying this grantId and the Grant record itself, and lists the grant as
   * revoked until `voidUntilMs` — its access tokens are JWTs checked without
   * the store, so resource servers learn of the revocation from that list.
   */
  revokeByGrantId: (grantId: string, voidUntilMs: number) => Promise<void>
  /** The live records carrying this grantId (its refresh tokens, codes…), the Grant record excluded: the admin API's grant view. */
  findByGrantId: (grantId: string) => Promise<GrantRecord[]>
  /** Revoked grants listed until after `afterMs`, oldest first (the list each replica polls). */
  revokedGrants: (afterMs: number) => Promise<RevokedGrant[]>
  /** Moves a live record's expiry (registered clients that are still used); no-op when missing. */
  touch: (model: string, id: string, expiresAtMs: number) => Promise<void>
  /** Every live record and key-value (counters excluded: they are windows of minutes). */
  entries: () => AsyncIterable<StoredEntry>

  kvGet: (key: string) => Promise<string | undefined>
  kvSet: (key: string, value: string, expiresAtMs?: number) => Promise<void>
  /**
   * Sets only when absent or expired, in one atomic step (replicas racing to create the signing
   * keys; a single-use assertion id seen twice); true when this call set it.
   */
  kvSetIfAbsent: (key: string, value: string, expiresAtMs?: number) => Promise<boolean>
  kvDelete: (key: string) => Promise<void>
  /**
   * Compare-and-swap in one atomic step: only while the live value is `expected`, sets it to
   * `next` (with `expiresAtMs`), or deletes it when `next` is undefined; true when this call did.
   * Releasing a lock only its owner holds; saving or dropping a row only if nobody changed it since.
   */
  kvCompareAndSwap: (key: string, expected: string, next: string | undefined, expiresAtMs?: number) => Promise<boolean>

  /** Fixed-window counter: adds `cost` to `key` within a window of `windowMs`. */
  hit: (key: string, windowMs: number, cost?: number) => Promise<CounterHit>
  /** Clears a counter (a successful login forgives earlier failures). */
  resetCounter: (key: string) => Promise<void>

  /** Cheap liveness check for /readyz. */
  ping: () => Promise<void>
  /** Set while writes fail though the store answers (SQLite on a full disk); /readyz reports it. */
  lastWriteFailure?: () => StoreWriteFailure | undefined
  close: () => Promise<void>
}
