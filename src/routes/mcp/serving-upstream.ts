import type { Upstream } from '../../upstreams/types.js'
import type { McpCall } from './call.js'

/**
 * The upstream serving this request: after a reload (README "Reloading"), the earlier upstream
 * of a changed stdio server when it still holds the session; else this server's.
 */
export function servingUpstream (call: McpCall): Upstream {
  const { drainingHolder, server, upstream } = call.route
  const sessionId = call.request.headers['mcp-session-id']
  return (typeof sessionId === 'string' ? drainingHolder?.(server.name, sessionId) : undefined) ?? upstream
}
