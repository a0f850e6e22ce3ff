/**
 * The revoked-grant list, checked beside the verified-token cache.
 *
 * Access tokens are ES256 JWTs checked locally (no store round trip per
 * request), so deleting a grant's records does not stop its access tokens.
 * RFC 6749 4.1.2 (a code used twice should revoke what it issued), RFC 9700
 * 4.14.2 (refresh-token reuse revokes the family) and RFC 7009 2.1 (revoking
 * a token may revoke the grant) all expect those tokens to die too. Each
 * token carries its grant id (`grant_id` claim); a revoked grant is listed in
 * the store (shared by replicas) until its longest-lived access token would
 * have expired: accessTokenTtl + the verifier's clock tolerance, or longer when a
 * longer accessTokenTtl was ever in force (tokens minted under it may still be
 * live after a reload lowers it). That longest retention is kept in the store
 * (`revoked-grants:retention-ms`, raised by any replica, never lowered), so every
 * replica lists revocations as long as the longest and their `untilMs` keep the
 * order the polls read them in.
 *
 * Cost per request: one Map lookup. Each replica keeps the list in memory:
 * its own revocations enter at once; other replicas' arrive by polling the
 * store about once a second with one small read (only entries newer than the
 * last seen, less a margin for clocks that disagree). A store outage keeps the
 * last known list (logged once per outage): fail-safe for what was revoked,
 * and nothing new can be revoked while the store is down anyway.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'
import { raiseHighWater } from '../store/high-water.js'

export const REVOKED_GRANTS_POLL_MS = 1_000
/**
 * Each poll re-reads entries listed until up to this long before the newest
 * one seen: a replica whose clock runs behind writes entries that sort earlier.
 * Replicas' clocks must agree within this (they must within seconds anyway:
 * token `exp` is checked with a 5 s tolerance).
 */
export const REVOKED_GRANTS_CLOCK_MARGIN_MS = 30_000

/** The longest retention ever in force (ms), shared by the replicas through the store. */
const RETENTION_KEY = 'revoked-grants:retention-ms'

export interface RevokedGrantsOptions {
  readonly store: Store
  /** How long a revoked grant's tokens can still be presented: accessTokenTtl + clock tolerance. */
  readonly retentionMs: number
  readonly now: () => number
  readonly log: FastifyBaseLogger
  readonly pollMs?: number
}

export class RevokedGrants {
  /** grantId -> when its last access token expires (ms). */
  private readonly voided = new Map<string, number>()
  /** The newest `untilMs` read from the store; undefined until something was. */
  private newestSeenMs: number | undefined
  private isPolling = false
  private isStoreFailing = false
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly options: RevokedGrantsOptions) {}

  /** The per-request check. */
  has (grantId: string): boolean {
    const untilMs = this.voided.get(grantId)
    return untilMs !== undefined && untilMs > this.options.now()
  }

  /**
   * Revokes a grant: voids its access tokens on this replica at once, then in
   * the store (its records deleted and the grant listed for the other replicas).
   */
  async revoke (grantId: string): Promise<void> {
    const nowMs = this.options.now()
    this.remember(grantId, nowMs + this.options.retentionMs)
    const untilMs = nowMs + await raiseHighWater(this.options.store, RETENTION_KEY, this.options.retentionMs)
    this.remember(grantId, untilMs)
    await this.options.store.revokeByGrantId(grantId, untilMs)
  }

  /** Reads what other replicas revoked since the last poll. Never throws. */
  async poll (): Promise<void> {
    if (this.isPolling) return
    this.isPolling = true
    try {
      const afterMs = this.newestSeenMs === undefined ? this.options.now() : this.newestSeenMs - REVOKED_GRANTS_CLOCK_MARGIN_MS
      const listed = await this.options.store.revokedGrants(afterMs)
      for (const { grantId, untilMs } of listed) {
        this.remember(grantId, untilMs)
        if (this.newestSeenMs === undefined || untilMs > this.newestSeenMs) this.newestSeenMs = untilMs
      }
      this.prune()
      if (this.isStoreFailing) this.options.log.info({ revokedGrants: this.voided.size }, 'revoked-grant list refreshed from the store again')
      this.isStoreFailing = false
    } catch (err) {
      if (!this.isStoreFailing) this.options.log.warn({ err: { message: (err as Error).message }, revokedGrants: this.voided.size }, 'revoked-grant list cannot be refreshed from the store; keeping the last known list')
      this.isStoreFailing = true
    } finally {
      this.isPolling = false
    }
  }

  /** Loads the list, then polls until stop(). */
  async start (): Promise<void> {
    await this.poll()
    this.timer = setInterval(() => { void this.poll() }, this.options.pollMs ?? REVOKED_GRANTS_POLL_MS)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  private remember (grantId: string, untilMs: number): void {
    if (untilMs > (this.voided.get(grantId) ?? 0)) this.voided.set(grantId, untilMs)
  }

  private prune (): void {
    const now = this.options.now()
    for (const [grantId, untilMs] of this.voided) if (untilMs <= now) this.voided.delete(grantId)
  }
}
