/**
 * The gate every inspected MCP request passes after authentication: policy
 * per message (a batch's members judged one by one), then rate limits and
 * concurrency caps. The outcome per request message is what the route
 * answers with and what the audit trail records.
 */
import { PortcullisError, type JsonRpcId } from '../errors.js'
import type { Rate } from '../config/units.js'
import type { ServerConfig } from '../config/schema.js'
import { isJudged, type McpInspection, type McpMessage } from '../mcp/jsonrpc.js'
import { concurrencyRejection, type Bucket, type RateLimiter, type RateLimitRejection } from '../rate-limit/limiter.js'
import type { Caller, ServerPolicy, TargetKind } from './policy.js'

/** invalid: a guardrail refused the call's arguments or tool name (JSON-RPC -32602, the model can correct it). */
export type Decision = 'allowed' | 'denied' | 'rate_limited' | 'invalid'

export interface MessageOutcome {
  readonly message: McpMessage
  readonly decision: Decision
  readonly kind: TargetKind | undefined
  readonly name: string | undefined
  /** Set unless allowed: the gateway's answer for this message. */
  readonly error?: PortcullisError
  /** The rule or bucket that decided, for the audit trail. */
  readonly reason?: string
  /** Frees a concurrency slot when the call completes. */
  readonly release?: () => void
}

export interface GateOptions {
  readonly server: ServerConfig
  readonly policy: ServerPolicy
  readonly limiter: RateLimiter | undefined
  readonly defaults: { readonly perUser: Rate | undefined, readonly perUserPerTool: Rate | undefined, readonly sessionCost: number }
  /** The WWW-Authenticate challenge asking for these scopes (undefined when authorization is off). */
  readonly scopeChallenge: ((scopes: readonly string[], description: string) => string) | undefined
  /** Guardrails on a tools/call the policy allowed (pinned definitions, argument schemas): a refusal, or undefined. */
  readonly checkCall?: (tool: string, args: unknown, id: JsonRpcId) => { readonly decision: Decision, readonly reason: string, readonly error: PortcullisError } | undefined
  /** With tracing on: runs the policy and rate-limit steps each in a span of its own (README "Tracing"). */
  readonly step?: <T>(name: 'policy' | 'rate limits', fn: () => T) => T
}

const untraced = <T>(_name: string, fn: () => T): T => fn()


function limited (rejection: RateLimitRejection, id: McpMessage['id']): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_RATE_LIMITED', rejection.message, { headers: { ...rejection.headers }, id: id ?? null })
}

/** The caller's budget on the server (servers[].rateLimit, else rateLimits.perUser), charged `cost`. */
function perUserBucket (options: GateOptions, callerKey: string, cost: number): Bucket | undefined {
  const { server } = options
  const rate = server.rateLimit ?? options.defaults.perUser
  return rate === undefined || cost <= 0 ? undefined : { kind: 'user', key: `${server.name}:${callerKey}`, rate, cost, subject: `server "${server.name}"` }
}

/**
 * One request's charge on the caller's budget for a request without a JSON-RPC body to judge:
 * a 2024-11-05 GET /sse opens a stream and a session slot, and must not be free to repeat.
 */
export async function chargeRequest (options: GateOptions, callerKey: string): Promise<PortcullisError | undefined> {
  const bucket = perUserBucket(options, callerKey, 1)
  if (options.limiter === undefined || bucket === undefined) return undefined
  const outcome = await options.limiter.consume([bucket])
  if (outcome === 'store-unavailable') return new PortcullisError('PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE', undefined, { headers: { 'retry-after': '5' } })
  return outcome === undefined ? undefined : limited(outcome, null)
}

export async function gate (options: GateOptions, caller: Caller, callerKey: string, inspection: McpInspection): Promise<MessageOutcome[]> {
  const outcomes: MessageOutcome[] = []
  for (const message of inspection.messages) {
    // A request method sent as a notification meets the same policy and limits as a request.
    if (!isJudged(message)) {
      outcomes.push({ message, decision: 'allowed', kind: undefined, name: undefined })
      continue
    }
    outcomes.push(await gateRequest(options, caller, callerKey, message))
  }
  return outcomes
}

async function gateRequest (options: GateOptions, caller: Caller, callerKey: string, message: McpMessage): Promise<MessageOutcome> {
  const { server, policy, limiter } = options
  const step = options.step ?? untraced
  const id = message.id ?? null
  const verdict = step('policy', () => policy.judge(message, caller))
  if (!verdict.allowed) {
    if (verdict.reason === 'denied') {
      return { message, decision: 'denied', kind: undefined, name: message.target, reason: verdict.message, error: new PortcullisError('PORTCULLIS_ERR_POLICY_DENIED', verdict.message, { id }) }
    }
    const headers: Record<string, string> = options.scopeChallenge === undefined ? {} : { 'www-authenticate': options.scopeChallenge(verdict.requiredScopes, verdict.message) }
    return { message, decision: 'denied', kind: undefined, name: message.target, reason: verdict.message, error: new PortcullisError('PORTCULLIS_ERR_INSUFFICIENT_SCOPE', verdict.message, { id, headers }) }
  }
  const { kind, name, tool } = verdict
  // Before limits: a call the gateway refuses anyway costs the caller nothing.
  if (kind === 'tool' && name !== undefined && options.checkCall !== undefined) {
    const refusal = options.checkCall(name, message.params?.arguments, id)
    if (refusal !== undefined) return { message, kind, name, ...refusal }
  }
  if (limiter === undefined) return { message, decision: 'allowed', kind, name }

  // A new session weighs rateLimits.sessionCost (issue 12: a free initialize let one user open
  // 300 sessions, each a process, under a 200/min budget).
  const cost = message.method === 'initialize' ? options.defaults.sessionCost : tool?.cost ?? 1
  const buckets: Bucket[] = []
  const perUser = perUserBucket(options, callerKey, cost)
  if (perUser !== undefined) buckets.push(perUser)
  if (kind === 'tool' && name !== undefined) {
    const perTool = tool?.rateLimit ?? options.defaults.perUserPerTool
    if (perTool !== undefined) buckets.push({ kind: 'user-tool', key: `${server.name}:${name}:${callerKey}`, rate: perTool, cost, subject: `tool "${name}"` })
    if (tool?.globalRateLimit !== undefined) buckets.push({ kind: 'tool', key: `${server.name}:${name}`, rate: tool.globalRateLimit, cost, subject: `tool "${name}"` })
  }
  if (buckets.length > 0) {
    const outcome = await step('rate limits', () => limiter.consume(buckets))
    if (outcome === 'store-unavailable') {
      return { message, decision: 'rate_limited', kind, name, reason: 'store-unavailable', error: new PortcullisError('PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE', undefined, { id, headers: { 'retry-after': '5' } }) }
    }
    if (outcome !== undefined) return { message, decision: 'rate_limited', kind, name, reason: outcome.bucket, error: limited(outcome, id) }
  }
  if (kind === 'tool' && name !== undefined && tool?.concurrency !== undefined) {
    const slot = `${server.name}:${name}:${callerKey}`
    if (!limiter.acquire(slot, tool.concurrency)) {
      return { message, decision: 'rate_limited', kind, name, reason: 'concurrency', error: limited(concurrencyRejection(name, tool.concurrency), id) }
    }
    return { message, decision: 'allowed', kind, name, release: once(() => limiter.release(slot)) }
  }
  return { message, decision: 'allowed', kind, name }
}

function once (fn: () => void): () => void {
  let done = false
  return () => {
    if (!done) {
      done = true
      fn()
    }
  }
}
