import { RequestTrace } from '../../observability/request-trace.js'
import type { McpCall } from './call.js'

/** Tracing on: the request's span opens first, so every later step (and refusal) is inside it. */
export function openTrace (call: McpCall): void {
  const tracing = call.route.tracing
  if (tracing !== undefined) call.trace = new RequestTrace(tracing, call.request, call.reply.raw, call.route.server)
}
