import { checkMirroredHeaders as checkHeaders } from '../../mcp/headers.js'
import { checkParamHeaders } from '../../mcp/param-headers.js'
import type { McpCall } from './call.js'

/**
 * 2026-07-28: the Mcp-Method / Mcp-Name headers say what the body says (400 -32020). For a stdio
 * server the gateway is its HTTP side and checks the Mcp-Param-* headers too; an HTTP upstream
 * reads the body and checks its own (the headers are forwarded).
 */
export function checkMirroredHeaders (call: McpCall): void {
  const inspection = call.inspection
  if (inspection === null) return
  const headers = call.request.headers
  checkHeaders(inspection, headers)
  const paramHeaders = call.route.paramHeaders
  if (paramHeaders !== undefined && inspection.modernVersion !== undefined) checkParamHeaders(inspection, headers, paramHeaders)
}
