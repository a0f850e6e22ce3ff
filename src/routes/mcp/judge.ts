import { gate } from '../../policy/gate.js'
import type { McpCall } from './call.js'

/**
 * Each message of the body on its own: tool/prompt/resource policy and scopes (403),
 * guardrails on a call's tool and arguments (-32602, 403 for an unapproved tool).
 */
export async function judge (call: McpCall): Promise<void> {
  const inspection = call.inspection
  if (inspection === null) return
  const { guardsCalls, gateOptions } = call.route
  // The approved tool definitions, fresh enough, before the gate judges calls and the answer's lists are edited.
  if (guardsCalls !== undefined && inspection.messages.some((m) => m.method === 'tools/list' || (m.method === 'tools/call' && guardsCalls.refusesCalls))) await guardsCalls.refresh()
  const trace = call.trace
  call.outcomes = gate(trace === null ? gateOptions : { ...gateOptions, step: (name, fn) => trace.step(name, fn) }, call.caller, inspection)
}
