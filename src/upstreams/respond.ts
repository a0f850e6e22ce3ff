/** Writing the gateway's own JSON-RPC errors on a raw response (adapters work below Fastify). */
import type { ServerResponse } from 'node:http'
import { jsonRpcError, jsonRpcErrorPayload, type JsonRpcId, type PortcullisError } from '../errors.js'
import type { McpInspection } from '../mcp/jsonrpc.js'

/**
 * Requests the gateway answered with its own error after letting them through
 * (upstream unavailable, timed out, crashed), by response: `true` for all of
 * them, or the ids. Metrics count these calls as failed. Only failures write here.
 */
const failures = new WeakMap<ServerResponse, Set<JsonRpcId> | true>()

export function markFailed (res: ServerResponse, id?: JsonRpcId): void {
  if (id === undefined) {
    failures.set(res, true)
    return
  }
  const ids = failures.get(res)
  if (ids === true) return
  if (ids === undefined) failures.set(res, new Set([id]))
  else ids.add(id)
}

/** Did the gateway fail this request (by JSON-RPC id) of the exchange answered on `res`? */
export function hasFailed (res: ServerResponse, id: JsonRpcId): boolean {
  const ids = failures.get(res)
  return ids === true || (ids !== undefined && ids.has(id))
}

/** Answers the whole exchange with `err` (status, headers, JSON-RPC body with the request ids and the error's data). */
export function sendRpcError (res: ServerResponse, err: PortcullisError, inspection: McpInspection | undefined, data: Readonly<Record<string, unknown>> | undefined = err.data): void {
  markFailed(res)
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.destroy()
    return
  }
  const ids = err.rpcId !== undefined ? [err.rpcId] : inspection?.requestIds ?? []
  const body = JSON.stringify(jsonRpcErrorPayload(err, ids, inspection?.isBatch === true && err.rpcId === undefined, data))
  res.writeHead(statusFor(err, ids), {
    ...err.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  })
  res.end(body)
}

/**
 * The errors that are HTTP 200 on purpose (link and sign-in required, guardrails) reach the
 * client's model only as the answer to a request. An exchange without one — a GET stream, a
 * POST of notifications or responses only — would read a 200 as an (empty) event stream or an
 * acknowledgement, and reconnect or carry on: it gets the same body as a 403 instead, which
 * the client reports (MCP 2025-11-25 basic/transports: a server that cannot accept the
 * input answers an HTTP error status).
 */
export function statusFor (err: PortcullisError, requestIds: readonly JsonRpcId[]): number {
  return err.status === 200 && requestIds.length === 0 ? 403 : err.status
}

/**
 * For a failure after an SSE response has started: one `message` event per
 * request id carrying the error, so the client's pending requests settle
 * instead of hanging, then the stream ends.
 */
export function endSseWithError (res: ServerResponse, err: PortcullisError, inspection: McpInspection | undefined): void {
  markFailed(res)
  if (res.destroyed || res.writableEnded) return
  for (const id of inspection?.requestIds ?? []) {
    res.write(`event: message\ndata: ${JSON.stringify(jsonRpcError(err, id))}\n\n`)
  }
  res.end()
}
