/**
 * What the calls the gate allowed cost (policy/gate.ts decides, this charges): rate-limit
 * buckets per user, per user and tool, per tool, then a concurrency slot per tool. A call
 * over a limit becomes rate_limited (429); one over the store's availability, with
 * rateLimits.onStoreError deny, 503. The slot of an allowed call is freed by `release`.
 */
import { PortcullisError } from '../errors.js'
import type { Rate } from '../config/units.js'
import type { ServerConfig } from '../config/schema.js'
import { isJudged, type McpMessage } from '../mcp/jsonrpc.js'
import type { MessageOutcome } from '../policy/gate.js'
import { STORE_RETRY_AFTER_S } from '../store/outage.js'
import { concurrencyRejection, type Bucket, type RateLimiter, type RateLimitRejection } from './limiter.js'

export interface ChargeOptions {
  readonly server: ServerConfig
  readonly limiter: RateLimiter
  readonly defaults: { readonly perUser: Rate | undefined, readonly perUserPerTool: Rate | undefined, readonly sessionCost: number }
  /** With tracing on: runs the rate-limit step in a span of its own (README "Tracing"). */
  readonly step?: <T>(name: 'rate limits', fn: () => T) => T
}

const untraced = <T>(_name: string, fn: () => T): T => fn()

/**
 * The outcomes with each allowed call charged, in the body's order: refused ones are left as they
 * are. When no limit applies to any of them (no rate limits configured, the usual case) they are
 * returned as they are, at once: no promise, no tick, no copy per request.
 */
export function charge (options: ChargeOptions, callerKey: string, outcomes: readonly MessageOutcome[]): readonly MessageOutcome[] | Promise<MessageOutcome[]> {
  const first = outcomes.findIndex((o) => isCharged(options, o))
  return first === -1 ? outcomes : chargeFrom(options, callerKey, outcomes, first)
}

async function chargeFrom (options: ChargeOptions, callerKey: string, outcomes: readonly MessageOutcome[], first: number): Promise<MessageOutcome[]> {
  const charged = outcomes.slice(0, first)
  for (let i = first; i < outcomes.length; i++) {
    const o = outcomes[i] as MessageOutcome
    charged.push(isCharged(options, o) ? await chargeOne(options, callerKey, o) : o)
  }
  return charged
}

/** Whether an outcome meets a bucket or a concurrency cap (chargeOne would change or count it). */
function isCharged (options: ChargeOptions, o: MessageOutcome): boolean {
  if (o.decision !== 'allowed' || !isJudged(o.message)) return false
  const { kind, name, rule: tool } = o
  if ((options.server.rateLimit ?? options.defaults.perUser) !== undefined && costOf(options, o) > 0) return true
  return kind === 'tool' && name !== undefined &&
    ((tool?.rateLimit ?? options.defaults.perUserPerTool) !== undefined || tool?.globalRateLimit !== undefined || tool?.concurrency !== undefined)
}

/** A new session weighs rateLimits.sessionCost, a tool call its `cost`, anything else 1. */
function costOf (options: ChargeOptions, { message, rule: tool }: MessageOutcome): number {
  // issue 12: a free initialize let one user open 300 sessions, each a process, under a 200/min budget.
  return message.method === 'initialize' ? options.defaults.sessionCost : tool?.cost ?? 1
}

/** The caller's budget on the server (servers[].rateLimit, else rateLimits.perUser), charged `cost`. */
function perUserBucket (options: ChargeOptions, callerKey: string, cost: number): Bucket | undefined {
  const { server } = options
  const rate = server.rateLimit ?? options.defaults.perUser
  return rate === undefined || cost <= 0 ? undefined : { kind: 'user', key: `${server.name}:${callerKey}`, rate, cost, subject: `server "${server.name}"`, caller: callerKey }
}

/**
 * One request's charge on the caller's budget for a request without a JSON-RPC body to judge:
 * a 2024-11-05 GET /sse opens a stream and a session slot, and must not be free to repeat.
 */
export async function chargeRequest (options: ChargeOptions, callerKey: string): Promise<PortcullisError | undefined> {
  const bucket = perUserBucket(options, callerKey, 1)
  if (bucket === undefined) return undefined
  const outcome = await options.limiter.consume([bucket])
  if (outcome === 'store-unavailable') return new PortcullisError('PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE', undefined, { headers: { 'retry-after': String(STORE_RETRY_AFTER_S) } })
  return outcome === undefined ? undefined : limited(outcome, null)
}

async function chargeOne (options: ChargeOptions, callerKey: string, outcome: MessageOutcome): Promise<MessageOutcome> {
  const { server, limiter } = options
  const { message, kind, name, rule: tool } = outcome
  const id = message.id ?? null
  const cost = costOf(options, outcome)
  const buckets: Bucket[] = []
  const perUser = perUserBucket(options, callerKey, cost)
  if (perUser !== undefined) buckets.push(perUser)
  if (kind === 'tool' && name !== undefined) {
    const perTool = tool?.rateLimit ?? options.defaults.perUserPerTool
    if (perTool !== undefined) buckets.push({ kind: 'user-tool', key: `${server.name}:${name}:${callerKey}`, rate: perTool, cost, subject: `tool "${name}"`, caller: callerKey })
    if (tool?.globalRateLimit !== undefined) buckets.push({ kind: 'tool', key: `${server.name}:${name}`, rate: tool.globalRateLimit, cost, subject: `tool "${name}"` })
  }
  if (buckets.length > 0) {
    const step = options.step ?? untraced
    const result = await step('rate limits', () => limiter.consume(buckets))
    if (result === 'store-unavailable') {
      return { message, decision: 'rate_limited', kind, name, reason: 'store-unavailable', error: new PortcullisError('PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE', undefined, { id, headers: { 'retry-after': String(STORE_RETRY_AFTER_S) } }) }
    }
    if (result !== undefined) return { message, decision: 'rate_limited', kind, name, reason: result.bucket, error: limited(result, id) }
  }
  if (kind === 'tool' && name !== undefined && tool?.concurrency !== undefined) {
    const slot = `${server.name}:${name}:${callerKey}`
    if (!limiter.acquire(slot, tool.concurrency)) {
      return { message, decision: 'rate_limited', kind, name, reason: 'concurrency', error: limited(concurrencyRejection(name, tool.concurrency), id) }
    }
    return { ...outcome, release: once(() => limiter.release(slot)) }
  }
  return outcome
}

function limited (rejection: RateLimitRejection, id: McpMessage['id']): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_RATE_LIMITED', rejection.message, { headers: { ...rejection.headers }, id: id ?? null })
}

function once (fn: () => void): () => void {
  let isDone = false
  return () => {
    if (!isDone) {
      isDone = true
      fn()
    }
  }
}
