import type { McpExchange } from '../../upstreams/types.js'
import type { McpCall } from './call.js'
import { servingUpstream } from './serving-upstream.js'

/** The server's upstream adapter answers the exchange (its faults: 502/503/504 with the ids); the reply is its from here. */
export async function relay (call: McpCall): Promise<void> {
  const { request, reply } = call
  reply.hijack()
  call.isAnswered = true
  const forward = call.forward
  const user = call.user
  const exchange: McpExchange = {
    method: request.method as McpExchange['method'],
    headers: request.headers,
    body: forward?.body ?? request.body as Buffer | undefined,
    inspection: forward?.inspection ?? call.inspection ?? undefined,
    user,
    owner: call.ownerOf(user),
    failures: call,
    res: reply.raw,
    isInProcess: call.virtualServer !== undefined,
    log: request.log,
    ...(call.edit === null ? {} : { edit: call.edit }),
  }
  const trace = call.trace
  const target = servingUpstream(call)
  await (trace === null ? target.handle(exchange) : trace.exchange(call.route.server, exchange, (ex) => target.handle(ex)))
}
