import { isJudged, METHOD_TARGETS, type McpMessage } from '../../mcp/jsonrpc.js'
import type { Decision, MessageOutcome } from '../../policy/gate.js'
import type { AuditEntry, CallOutcome } from '../../observability/audit.js'
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
      const outcome = o.decision === 'allowed' ? endOf(call, o) : o.decision
      metrics.toolCalls.inc({ server: server.name, tool: metrics.toolLabel(server.name, o.message.target ?? ''), outcome })
    }
  }
  if (audit === undefined) return
  for (const o of outcomes) {
    if (!isJudged(o.message)) continue
    const args = o.message.params?.arguments
    // A request allowed says how it ended: its status is the stream's, 200 even when the client left.
    const outcome = o.decision === 'allowed' && o.message.id !== undefined ? endOf(call, o) : undefined
    audit.record(auditEntry(call, o.message, { kind: o.kind, decision: o.decision, reason: o.reason, outcome }, reply.raw.statusCode, {
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
export function auditEntry (call: McpCall, message: McpMessage, judged: { readonly kind?: string | undefined, readonly decision: Decision, readonly reason?: string | undefined, readonly outcome?: CallOutcome | undefined }, status: number, extra?: Pick<AuditEntry, 'arguments' | 'result' | 'redacted'>): AuditEntry {
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
    ...(judged.outcome === undefined ? {} : { outcome: judged.outcome }),
    latencyMs: Math.round(reply.elapsedTime * 10) / 10,
    ...(extra?.arguments === undefined ? {} : { arguments: extra.arguments }),
    ...(extra?.result === undefined ? {} : { result: extra.result }),
    ...(extra?.redacted === undefined ? {} : { redacted: extra.redacted }),
  }
}

/**
 * How an allowed message ended: answered (the upstream answered: a result, or its own error),
 * failed (the gateway answered for it: upstream down, timed out, crashed), cancelled (the client
 * left first).
 */
function endOf (call: McpCall, o: MessageOutcome): CallOutcome {
  const res = call.reply.raw
  const id = o.message.id ?? null
  if (res.statusCode >= 400 || call.hasFailed(id)) return 'failed'
  return res.writableFinished && !call.wasCancelled(id) ? 'answered' : 'cancelled'
}

function kindOf (method: string | undefined): string {
  return (method === undefined ? undefined : METHOD_TARGETS[method]?.kind) ?? 'resource'
}
