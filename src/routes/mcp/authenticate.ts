import type { McpCall } from './call.js'

/** After the Origin check, before any body is read: who is calling (401; 403 for a token not meant for this server). */
export async function authenticate (call: McpCall): Promise<void> {
  const { authenticate: check, server } = call.route
  if (check === undefined) return
  const trace = call.trace
  call.identity = await (trace === null ? check(call.request, server) : trace.admit(() => check(call.request, server)))
}

/** The same check on the 2024-11-05 routes; a challenge names the resource as their clients know it. */
export async function authenticateLegacy (call: McpCall): Promise<void> {
  const check = call.route.authenticate
  if (check !== undefined) call.identity = await check(call.request, call.route.server, true)
}
