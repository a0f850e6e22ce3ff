/** Writing the gateway's own JSON-RPC errors on a raw response (adapters work below Fastify). */
import type { ServerResponse } from 'node:http'
import { jsonRpcError, jsonRpcErrorPayload, type PortcullisError } from '../errors.js'
import type { McpInspection } from '../mcp/jsonrpc.js'

/** Answers the whole exchange with `err` (status, headers, JSON-RPC body with the request ids). */
export function sendRpcError (res: ServerResponse, err: PortcullisError, inspection: McpInspection | undefined, data?: Record<string, unknown>): void {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.destroy()
    return
  }
  const ids = err.rpcId !== undefined ? [err.rpcId] : inspection?.requestIds ?? []
  const body = JSON.stringify(jsonRpcErrorPayload(err, ids, inspection?.isBatch === true && err.rpcId === undefined, data))
  res.writeHead(err.status, {
    ...err.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  })
  res.end(body)
}

/**
 * For a failure after an SSE response has started: one `message` event per
 * request id carrying the error, so the client's pending requests settle
 * instead of hanging, then the stream ends.
 */
export function endSseWithError (res: ServerResponse, err: PortcullisError, inspection: McpInspection | undefined): void {
  if (res.destroyed || res.writableEnded) return
  for (const id of inspection?.requestIds ?? []) {
    res.write(`event: message\ndata: ${JSON.stringify(jsonRpcError(err, id))}\n\n`)
  }
  res.end()
}
