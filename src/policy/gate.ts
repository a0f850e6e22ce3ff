/**
 * The gate every inspected MCP request passes after authentication: policy and guardrails
 * per message (a batch's members judged one by one). It decides only: what an allowed call
 * costs is charged after it (rate-limit/charge.ts). The outcome per request message is what
 * the route answers with and what the audit trail records.
 */
import { PortcullisError, type JsonRpcId } from '../errors.js'
import type { ToolRule } from '../config/schema.js'
import { isJudged, type McpInspection, type McpMessage } from '../mcp/jsonrpc.js'
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
  /** An allowed tool call: its rule (cost, rate limits, concurrency), for charging. */
  readonly rule?: ToolRule | undefined
  /** Frees a concurrency slot when the call completes. */
  readonly release?: () => void
}

export interface GateOptions {
  readonly policy: ServerPolicy
  /** The WWW-Authenticate challenge asking for these scopes (undefined when authorization is off). */
  readonly scopeChallenge: ((scopes: readonly string[], description: string) => string) | undefined
  /** Guardrails on a tools/call the policy allowed (pinned definitions, argument schemas): a refusal, or undefined. */
  readonly checkCall?: (tool: string, args: unknown, id: JsonRpcId) => { readonly decision: Decision, readonly reason: string, readonly error: PortcullisError } | undefined
  /** With tracing on: runs the policy step in a span of its own (README "Tracing"). */
  readonly step?: <T>(name: 'policy', fn: () => T) => T
}

const untraced = <T>(_name: string, fn: () => T): T => fn()


export function gate (options: GateOptions, caller: Caller, inspection: McpInspection): MessageOutcome[] {
  const outcomes: MessageOutcome[] = []
  for (const message of inspection.messages) {
    // A request method sent as a notification meets the same policy and limits as a request.
    if (!isJudged(message)) {
      outcomes.push({ message, decision: 'allowed', kind: undefined, name: undefined })
      continue
    }
    outcomes.push(judgeRequest(options, caller, message))
  }
  return outcomes
}

function judgeRequest (options: GateOptions, caller: Caller, message: McpMessage): MessageOutcome {
  const { policy } = options
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
  return { message, decision: 'allowed', kind, name, rule: tool }
}
