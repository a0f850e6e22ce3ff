/**
 * A bounded in-memory cache of short-lived credentials, each kept until its own deadline,
 * with one load at a time per key: concurrent requests of one user share one token request
 * instead of each spending one at the identity provider (and, for a rotating refresh token,
 * instead of the second use being a replay).
 *
 * Bounded: past `maxEntries` the expired entries go first, then the oldest, so a gateway with
 * many users holds at most `maxEntries` tokens per cache; a dropped one is loaded again.
 */
export interface Expiring<T> {
  readonly value: T
  /** When to stop handing it out (ms, the injected clock). */
  readonly expiresAtMs: number
}

export class ExpiringCache<T> {
  private readonly entries = new Map<string, Expiring<T>>()
  private readonly loading = new Map<string, Promise<T>>()

  constructor (private readonly maxEntries: number, private readonly now: () => number) {}

  /** The live value of `key`, else the one `load` gives (one load per key at a time; a failed load is not kept). */
  async get (key: string, load: () => Promise<Expiring<T>>): Promise<T> {
    const live = this.peek(key)
    if (live !== undefined) return live
    const pending = this.loading.get(key)
    if (pending !== undefined) return await pending
    const loaded = load().then((entry) => {
      this.set(key, entry)
      return entry.value
    }).finally(() => this.loading.delete(key))
    this.loading.set(key, loaded)
    return await loaded
  }

  /** The live value of `key` without loading. */
  peek (key: string): T | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAtMs > this.now()) return entry.value
    this.entries.delete(key)
    return undefined
  }

  delete (key: string): void {
    this.entries.delete(key)
  }

  get size (): number {
    return this.entries.size
  }

  private set (key: string, entry: Expiring<T>): void {
    this.entries.delete(key)
    if (this.entries.size >= this.maxEntries) this.evict()
    if (entry.expiresAtMs > this.now()) this.entries.set(key, entry)
  }

  private evict (): void {
    const nowMs = this.now()
    for (const [key, entry] of this.entries) if (entry.expiresAtMs <= nowMs) this.entries.delete(key)
    // Insertion order is age order (set() re-inserts): the oldest go first.
    for (const key of this.entries.keys()) {
      if (this.entries.size < this.maxEntries) break
      this.entries.delete(key)
    }
  }
}

/**
 * How long to hand out a token that lives `lifetimeMs` from `nowMs`: until shortly before it
 * expires (a request sent at the last moment must not arrive with an expired token), by at
 * most `marginMs` and at most half its life (a token that lives 20 s is still used for 10 s).
 */
export function reuseUntil (nowMs: number, lifetimeMs: number, marginMs: number): number {
  return nowMs + lifetimeMs - Math.min(marginMs, lifetimeMs / 2)
}
