import { isJudged, METHOD_TARGETS } from '../../mcp/jsonrpc.js'
import type { MessageOutcome } from '../../policy/gate.js'
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
  const { request, reply, outcomes } = call
  const { metrics, audit, server, captured, redactions } = call.route
  for (const o of outcomes) {
    o.release?.()
    if (o.message.method === 'tools/call') {
      metrics.toolCalls.inc({ server: server.name, tool: metrics.toolLabel(server.name, o.message.target ?? ''), outcome: callOutcome(call, o) })
    }
  }
  if (audit === undefined) return
  const latencyMs = reply.elapsedTime
  const identity = call.identity
  for (const o of outcomes) {
    if (!isJudged(o.message)) continue
    const args = o.message.params?.arguments
    const result = captured.get(o)
    const redacted = redactions.get(o)
    audit.record({
      requestId: request.id,
      server: server.name,
      ...(call.virtualServer === undefined ? {} : { virtualServer: call.virtualServer }),
      transport: server.transport,
      method: o.message.method ?? '',
      jsonrpcId: o.message.id ?? null,
      ...(o.message.target === undefined ? {} : { target: auditTarget(o.kind ?? kindOf(o.message.method), o.message.target) }),
      user: identity === null ? null : { sub: identity.id, username: identity.name },
      clientId: identity?.clientId ?? null,
      ...(identity?.keyId === undefined ? {} : { keyId: identity.keyId }),
      ip: request.ip,
      decision: o.decision,
      ...(o.reason === undefined ? {} : { reason: o.reason }),
      status: reply.raw.statusCode,
      latencyMs: Math.round(latencyMs * 10) / 10,
      ...(audit.includeArguments && args !== undefined ? { arguments: args } : {}),
      ...(result === undefined ? {} : { result }),
      ...(redacted === undefined ? {} : { redacted }),
    })
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
