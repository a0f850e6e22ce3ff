/**
 * Rate limits decided after the body is read, on @fastify/rate-limit's
 * createRateLimit() and its stores: in-process (LRU, fixed windows) by
 * default, Redis when the gateway's store is Redis, so replicas share one
 * count (its Lua script increments and sets the expiry atomically).
 *
 * Buckets, each optional (see README "Rate limits"):
 *   user       per user per server, every JSON-RPC request but initialize
 *   user-tool  per user per tool, tools/call only
 *   tool       per tool across all users
 * A tool's `cost` is charged as that many units in each bucket the call
 * touches. Concurrency caps (calls in flight per user per tool) are counted
 * in-process, per replica.
 *
 * When the counter store fails (Redis unreachable), rateLimits.onStoreError
 * decides: `allow` lets requests through, `deny` refuses them (503); either
 * way a log line (at most one per interval) and a metric say so.
 */
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type {} from '@fastify/rate-limit'
import { describeRate, type Rate } from '../config/units.js'

export type BucketKind = 'user' | 'user-tool' | 'tool' | 'ip-login' | 'ip-token' | 'ip-registration'

export interface Bucket {
  readonly kind: BucketKind
  readonly key: string
  readonly rate: Rate
  readonly cost: number
  /** What the limit is on, as a model reads it: `tool "search"`, `server "github"`. */
  readonly subject: string
  /** The caller charged (`sub:<user id>`, `client:<id>`, `ip:<address>`); absent for buckets of all users. */
  readonly caller?: string
}

/** A caller's bucket as this replica last charged it (the admin API's rate-limit view). */
export interface BucketState {
  readonly kind: BucketKind
  /** What is counted: `<server>` (user) or `<server>:<tool>` (user-tool). */
  readonly on: string
  readonly subject: string
  readonly limit: number
  readonly windowS: number
  /** Units left when last charged; the window's full limit once it has ended. */
  readonly remaining: number
  readonly resetsAt: string | null
}

/**
 * Counters kept per rate by the in-process store (an LRU: past this, the least recently charged
 * is forgotten, and its window starts again). Set on each limiter: @fastify/rate-limit gives a
 * createRateLimit() store its own LRU, sized from the options of that call, not from the
 * plugin's (left out, 5,000: a batch of 5,000 made-up tool names reset every counter of its rate).
 * Redis keeps every counter until its window ends.
 */
export const LOCAL_COUNTERS_PER_RATE = 100_000

/** Callers whose last charges are remembered (then the oldest is forgotten), and buckets per caller. */
const MAX_TRACKED_CALLERS = 10_000
const MAX_BUCKETS_PER_CALLER = 200

export interface RateLimitRejection {
  readonly bucket: BucketKind
  readonly message: string
  readonly retryAfterS: number
  readonly headers: Readonly<Record<string, string>>
}

interface LimiterResult {
  readonly max?: number
  readonly remaining?: number
  readonly ttlInSeconds?: number
  readonly isExceeded?: boolean
}

type Limiter = (subject: { routeOptions: { config: object }, rateLimitKey: string }) => Promise<LimiterResult>

/** What this replica last saw of a caller's bucket (stateOf). */
interface ChargedBucket {
  bucket: Bucket
  /** Units left after the charge. */
  remaining: number
  resetAtMs: number
}

/** What the limiter reads of a request's route: no per-route settings (one object for every charge; it only reads it). */
const NO_ROUTE_OPTIONS = Object.freeze({ config: Object.freeze({}) })

/** One log line per this interval while the counter store keeps failing. */
const STORE_ERROR_LOG_INTERVAL_MS = 10_000

export interface LimiterHooks {
  /** A request refused by a bucket, or by a concurrency cap. */
  readonly onReject?: (bucket: BucketKind | 'concurrency') => void
  readonly onStoreError?: () => void
}

export class RateLimiter {
  private readonly limiters = new Map<string, Limiter>()
  private readonly inFlight = new Map<string, number>()
  /** caller -> bucket -> its state after the last charge here (insertion order: oldest caller first). */
  private readonly lastCharged = new Map<string, Map<string, ChargedBucket>>()
  /** The caller last moved to the end of lastCharged: its next charges need not move it again. */
  private newestCaller: string | undefined
  private lastStoreErrorLogAt = 0

  constructor (
    private readonly app: FastifyInstance,
    private onStoreError: 'allow' | 'deny',
    private readonly log: FastifyBaseLogger,
    private readonly hooks: LimiterHooks = {},
  ) {}

  /** rateLimits.onStoreError from a reloaded file (the counters themselves are kept). */
  useOnStoreError (mode: 'allow' | 'deny'): void {
    this.onStoreError = mode
  }

  private limiterFor (rate: Rate): Limiter {
    const id = `${rate.max}/${rate.windowMs}`
    let limiter = this.limiters.get(id)
    if (limiter === undefined) {
      const options = {
        max: rate.max,
        timeWindow: rate.windowMs,
        keyGenerator: (req: unknown) => (req as { rateLimitKey: string }).rateLimitKey,
        // Read by the in-process store (LocalStore.child), though missing from the plugin's types.
        cache: LOCAL_COUNTERS_PER_RATE,
      }
      limiter = this.app.createRateLimit(options) as unknown as Limiter
      this.limiters.set(id, limiter)
    }
    return limiter
  }

  /**
   * Charges every bucket; the first one over its limit refuses the call.
   * Undefined: allowed. A store failure is answered per onStoreError.
   */
  async consume (buckets: readonly Bucket[]): Promise<RateLimitRejection | 'store-unavailable' | undefined> {
    for (const bucket of buckets) {
      const limiter = this.limiterFor(bucket.rate)
      const id = `${bucket.kind}:${bucket.key}`
      const subject = { routeOptions: NO_ROUTE_OPTIONS, rateLimitKey: id }
      let result: LimiterResult | undefined
      try {
        for (let unit = 0; unit < bucket.cost; unit++) {
          result = await limiter(subject)
          if (result.isExceeded === true) break
        }
      } catch (err) {
        this.hooks.onStoreError?.()
        const now = Date.now()
        if (now - this.lastStoreErrorLogAt >= STORE_ERROR_LOG_INTERVAL_MS) {
          this.lastStoreErrorLogAt = now
          this.log.error({ err: { message: (err as Error).message, code: (err as { code?: string }).code }, onStoreError: this.onStoreError }, this.onStoreError === 'allow'
            ? 'rate-limit store unreachable: requests are let through unlimited'
            : 'rate-limit store unreachable: requests are refused')
        }
        if (this.onStoreError === 'deny') return 'store-unavailable'
        continue
      }
      if (result !== undefined) this.remember(bucket, id, result)
      if (result?.isExceeded === true) {
        this.hooks.onReject?.(bucket.kind)
        return rejection(bucket, result.ttlInSeconds ?? Math.ceil(bucket.rate.windowMs / 1000))
      }
    }
    return undefined
  }

  /**
   * A caller's buckets as this replica last charged them. With Redis the counts are the shared
   * ones as of that charge (other replicas' later charges are not seen until the next one here).
   */
  stateOf (caller: string): BucketState[] {
    const now = Date.now()
    return [...this.lastCharged.get(caller)?.values() ?? []].map(({ bucket, remaining, resetAtMs }) => {
      const isOver = resetAtMs <= now
      const on = bucket.key.endsWith(`:${caller}`) ? bucket.key.slice(0, -caller.length - 1) : bucket.key
      return { kind: bucket.kind, on, subject: bucket.subject, limit: bucket.rate.max, windowS: Math.round(bucket.rate.windowMs / 1000), remaining: isOver ? bucket.rate.max : remaining, resetsAt: isOver ? null : new Date(resetAtMs).toISOString() }
    })
  }

  /**
   * Per request a call charges up to three buckets of one caller: the caller moves to the newest
   * end once, and a bucket charged before keeps its entry. Moving it for every bucket (a Map
   * delete and set each) and a new entry per charge were most of what the limits cost a call
   * (docs/benchmarks.md, 2026-12-02).
   */
  private remember (bucket: Bucket, id: string, result: LimiterResult): void {
    const caller = bucket.caller
    if (caller === undefined) return
    let buckets = this.lastCharged.get(caller)
    if (buckets === undefined) {
      if (this.lastCharged.size >= MAX_TRACKED_CALLERS) this.lastCharged.delete(this.lastCharged.keys().next().value as string)
      buckets = new Map()
      this.lastCharged.set(caller, buckets)
    } else if (this.newestCaller !== caller) {
      this.lastCharged.delete(caller)
      this.lastCharged.set(caller, buckets)
    }
    this.newestCaller = caller
    const remaining = Math.max(0, result.remaining ?? 0)
    const resetAtMs = Date.now() + (result.ttlInSeconds ?? Math.ceil(bucket.rate.windowMs / 1000)) * 1000
    const charged = buckets.get(id)
    if (charged !== undefined) {
      charged.bucket = bucket
      charged.remaining = remaining
      charged.resetAtMs = resetAtMs
      return
    }
    if (buckets.size >= MAX_BUCKETS_PER_CALLER) buckets.delete(buckets.keys().next().value as string)
    buckets.set(id, { bucket, remaining, resetAtMs })
  }

  /** Takes a slot for a call in flight; false when the cap is reached. Release with `release`. */
  acquire (key: string, cap: number): boolean {
    const current = this.inFlight.get(key) ?? 0
    if (current >= cap) {
      this.hooks.onReject?.('concurrency')
      return false
    }
    this.inFlight.set(key, current + 1)
    return true
  }

  release (key: string): void {
    const current = this.inFlight.get(key) ?? 0
    if (current <= 1) this.inFlight.delete(key)
    else this.inFlight.set(key, current - 1)
  }
}

function rejection (bucket: Bucket, retryAfterS: number): RateLimitRejection {
  const retry = Math.max(1, retryAfterS)
  const scope = bucket.kind === 'tool' ? `${bucket.subject} (all users together)` : bucket.subject
  return {
    bucket: bucket.kind,
    message: `rate limit for ${scope}: ${describeRate(bucket.rate)}; retry in ${retry} s`,
    retryAfterS: retry,
    headers: {
      'retry-after': String(retry),
      'ratelimit-limit': String(bucket.rate.max),
      'ratelimit-remaining': '0',
      'ratelimit-reset': String(retry),
      'ratelimit-policy': `${bucket.rate.max};w=${Math.round(bucket.rate.windowMs / 1000)}`,
    },
  }
}

/** A concurrency cap that was reached. */
export function concurrencyRejection (tool: string, cap: number): RateLimitRejection {
  return {
    bucket: 'user-tool',
    message: `tool "${tool}" allows ${cap} call${cap === 1 ? '' : 's'} in flight per user; wait for the running one${cap === 1 ? '' : 's'} to finish`,
    retryAfterS: 1,
    headers: { 'retry-after': '1' },
  }
}
