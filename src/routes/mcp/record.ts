import { isJudged, METHOD_TARGETS, type McpMessage } from '../../mcp/jsonrpc.js'
import type { Decision, MessageOutcome } from '../../policy/gate.js'
import type { AuditEntry } from '../../observability/audit.js'
import type { McpCall } from './call.js'
import { auditTarget } from '../../mcp/redacted-uri.js'

/**
 * The decisions on the body, whatever answers it: on the trace and the denial metric now; when
 * the response closes (or now, when it already has), the concurrency slots are released, tool
 * calls counted, and the audit record written for every request message.
 */
export function record (call: McpCall): void {
  const outcomes = call.outcomes
  if (outcomes.length === 0) return
  call.trace?.judged(outcomes)
  const { metrics, server } = call.route
  for (const o of outcomes) {
    if (o.decision === 'denied') metrics.policyDenials.inc({ server: server.name, reason: 'rule' })
  }
  const res = call.reply.raw
  // The client may have left while an earlier step waited (a batch's rate-limit check on Redis,
  // after another member took a concurrency slot): 'close' has fired, and a listener added now
  // would never run, holding the slot for good and writing no audit record.
  if (res.closed) finish(call)
  else res.once('close', () => { finish(call) })
}

function finish (call: McpCall): void {
  const { reply, outcomes } = call
  const { metrics, audit, server, captured, redactions } = call.route
  for (const o of outcomes) {
    o.release?.()
    if (o.message.method === 'tools/call') {
      metrics.toolCalls.inc({ server: server.name, tool: metrics.toolLabel(server.name, o.message.target ?? ''), outcome: callOutcome(call, o) })
    }
  }
  if (audit === undefined) return
  for (const o of outcomes) {
    if (!isJudged(o.message)) continue
    const args = o.message.params?.arguments
    audit.record(auditEntry(call, o.message, { kind: o.kind, decision: o.decision, reason: o.reason }, reply.raw.statusCode, {
      arguments: audit.includeArguments ? args : undefined,
      result: captured.get(o),
      redacted: redactions.get(o),
    }))
  }
}

/**
 * One message's audit record: what the record step writes when the response closes, and what a
 * step that refuses before the body is judged (checkAccess) writes at once.
 */
export function auditEntry (call: McpCall, message: McpMessage, judged: { readonly kind?: string | undefined, readonly decision: Decision, readonly reason?: string | undefined }, status: number, extra?: Pick<AuditEntry, 'arguments' | 'result' | 'redacted'>): AuditEntry {
  const { request, reply, identity } = call
  const { server } = call.route
  return {
    requestId: request.id,
    server: server.name,
    ...(call.virtualServer === undefined ? {} : { virtualServer: call.virtualServer }),
    transport: server.transport,
    method: message.method ?? '',
    jsonrpcId: message.id ?? null,
    ...(message.target === undefined ? {} : { target: auditTarget(judged.kind ?? kindOf(message.method), message.target) }),
    user: identity === null ? null : { sub: identity.id, username: identity.name },
    clientId: identity?.clientId ?? null,
    ...(identity?.keyId === undefined ? {} : { keyId: identity.keyId }),
    ip: request.ip,
    decision: judged.decision,
    ...(judged.reason === undefined ? {} : { reason: judged.reason }),
    status,
    latencyMs: Math.round(reply.elapsedTime * 10) / 10,
    ...(extra?.arguments === undefined ? {} : { arguments: extra.arguments }),
    ...(extra?.result === undefined ? {} : { result: extra.result }),
    ...(extra?.redacted === undefined ? {} : { redacted: extra.redacted }),
  }
}

/**
 * answered (the upstream answered: a result, or its own error), failed (the gateway answered
 * for it: upstream down, timed out, crashed), cancelled (the client left first), denied, rate_limited.
 */
function callOutcome (call: McpCall, o: MessageOutcome): string {
  if (o.decision !== 'allowed') return o.decision
  const res = call.reply.raw
  if (res.statusCode >= 400 || call.hasFailed(o.message.id ?? null)) return 'failed'
  return res.writableFinished ? 'answered' : 'cancelled'
}

function kindOf (method: string | undefined): string {
  return (method === undefined ? undefined : METHOD_TARGETS[method]?.kind) ?? 'resource'
}
