/** Writing the gateway's own JSON-RPC errors on a raw response (adapters work below Fastify). */
import type { ServerResponse } from 'node:http'
import { jsonRpcError, jsonRpcErrorPayload, type JsonRpcId, type PortcullisError } from '../errors.js'
import type { McpInspection } from '../mcp/jsonrpc.js'

/**
 * Where an exchange notes the requests the gateway answered with its own error after letting
 * them through (upstream unavailable, timed out, crashed): all of them, or by JSON-RPC id; and
 * the requests it stopped waiting for because the client cancelled them. Metrics and the audit
 * count these calls as failed and cancelled. The route's McpCall keeps it; adapters only write.
 */
export interface FailureRecord {
  markFailed: (id?: JsonRpcId) => void
  markCancelled: (id: JsonRpcId) => void
}

/** The part of an exchange the gateway's own error answer needs (a forwarded request has no inspection and no record). */
export interface AnsweredExchange {
  readonly res: ServerResponse
  readonly inspection: McpInspection | undefined
  readonly failures?: FailureRecord
}

/** Answers the whole exchange with `err` (status, headers, JSON-RPC body with the request ids and the error's data). */
export function sendRpcError (ex: AnsweredExchange, err: PortcullisError, data: Readonly<Record<string, unknown>> | undefined = err.data): void {
  const { res, inspection } = ex
  ex.failures?.markFailed()
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.destroy()
    return
  }
  const ids = err.rpcId !== undefined ? [err.rpcId] : inspection?.requestIds ?? []
  const body = JSON.stringify(jsonRpcErrorPayload(err, ids, inspection?.isBatch === true && err.rpcId === undefined, data))
  writeJson(res, statusFor(err, ids), body, err.headers)
}

/** A complete JSON answer on a raw response (adapters work below Fastify): status, headers, type and length. */
export function writeJson (res: ServerResponse, status: number, body: string | Buffer, headers: Readonly<Record<string, string>> = {}): void {
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
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
export function endSseWithError (ex: AnsweredExchange, err: PortcullisError): void {
  const { res, inspection } = ex
  ex.failures?.markFailed()
  if (res.destroyed || res.writableEnded) return
  for (const id of inspection?.requestIds ?? []) {
    res.write(`event: message\ndata: ${JSON.stringify(jsonRpcError(err, id))}\n\n`)
  }
  res.end()
}
