import { PortcullisError } from '../../errors.js'
import { inspectBody } from '../../mcp/jsonrpc.js'
import type { McpCall } from './call.js'

/**
 * A POST's body as JSON-RPC (400: -32700 not JSON, -32600 not JSON-RPC, -32602 bad params).
 * GET opens the server->client stream and DELETE ends a session: neither has a body in the
 * MCP transport. One sent anyway would reach the upstream unjudged, so it is refused (400).
 */
export function inspect (call: McpCall): void {
  const request = call.request
  if (request.method !== 'POST') {
    const length = request.headers['content-length']
    if ((length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined) {
      throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `a ${request.method} request to an MCP endpoint carries no body (send JSON-RPC messages with POST)`)
    }
    return
  }
  // A virtual server's request to this member comes inspected already (member-entry.ts).
  const inspection = call.inspection ?? inspectBody(request.body as Buffer | undefined)
  call.inspection = inspection
  call.trace?.describe(inspection)
}
