import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError, jsonRpcErrorPayload, type JsonRpcErrorBody } from '../../errors.js'
import type { McpCall } from './call.js'

/** A step's error as the route answers it: status, headers, and the JSON-RPC error with the request ids. */
export interface ErrorAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly payload: JsonRpcErrorBody | JsonRpcErrorBody[]
}

/**
 * The one answer to a failed request, on a socket (the route's error handler) and in process (a
 * virtual server's request, ./member-entry.ts): a gateway fault is logged, never shown.
 */
export function errorAnswer (error: Error & { statusCode?: number }, call: McpCall | null, log: FastifyBaseLogger): ErrorAnswer {
  const err = toPortcullisError(error)
  if (err.status >= 500) log.error({ err: error }, 'mcp request failed')
  call?.trace?.refused(err)
  const inspection = call?.inspection
  const ids = err.rpcId !== undefined ? [err.rpcId] : inspection?.requestIds ?? []
  return { status: err.status, headers: err.headers, payload: jsonRpcErrorPayload(err, ids, inspection?.isBatch === true && err.rpcId === undefined) }
}

/** Fastify's own errors (body limit, content length, media type) in the gateway's vocabulary. */
function toPortcullisError (error: Error & { statusCode?: number, code?: string }): PortcullisError {
  if (error instanceof PortcullisError) return error
  const status = error.statusCode
  if (status === 413) return new PortcullisError('PORTCULLIS_ERR_BODY_TOO_LARGE')
  if (status === 415) return new PortcullisError('PORTCULLIS_ERR_UNSUPPORTED_MEDIA_TYPE')
  if (status !== undefined && status >= 400 && status < 500) return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', error.message)
  return new PortcullisError('PORTCULLIS_ERR_INTERNAL', undefined, { cause: error })
}
