/**
 * Forwarding a request to the replica that holds its session (see sessions.ts).
 * A plain, streaming HTTP relay inside the gateway's own trust domain: the
 * request goes on as it came (its Authorization included: the owner checks it
 * again, applies policy and limits and writes the audit record, once), and the
 * answer — JSON or an SSE stream — comes back chunk by chunk.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyRequest } from 'fastify'
import { Pool, type Dispatcher } from 'undici'
import { PortcullisError } from '../errors.js'
import { sendRpcError } from '../upstreams/respond.js'
import { HOP_BY_HOP_HEADERS } from '../net/hop-by-hop.js'
import { isEventStream } from '../net/media-type.js'

/** Set on forwarded requests: the receiving replica never forwards them again (no loops). */
export const FORWARDED_HEADER = 'x-portcullis-forwarded-by'

/** Hop-by-hop headers and Host (the relay's own connection names its target). */
const HOP_BY_HOP: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, 'host'])
/**
 * Request headers the relay does not pass on: those that claim a client address (the relay
 * replaces them with the one it resolved), and `Expect` (RFC 9110 10.1.1), which asked this
 * replica, not the owner, to say "100 Continue" — Node said it, and the relay sends a body it
 * already holds. undici refuses to send `Expect` at all: passed on, it failed every such request
 * before the owner was asked, and the session was forgotten as if its owner were gone.
 */
const DROPPED_REQUEST_HEADERS: ReadonlySet<string> = new Set(['x-forwarded-for', 'forwarded', 'x-real-ip', 'expect'])
const NONE: ReadonlySet<string> = new Set()
const CONNECT_TIMEOUT_MS = 2_000
/** The least time the owner has to start its answer (headers); see relayHeadersTimeoutMs. */
const MIN_HEADERS_TIMEOUT_MS = 5 * 60_000
/** Past the longest request timeout of the stdio servers: the owner's own timeout answers first. */
const HEADERS_TIMEOUT_MARGIN_MS = 60_000
const MAX_POOLS = 64

/**
 * How long the relay waits for the owner's answer to start. A tools/call answered with one JSON
 * body starts only when the call ends, which the owner bounds by the server's requestTimeoutMs
 * (and then answers 504 itself): the relay waits longer than the longest of them, or it cut
 * calls the owner was still running.
 */
export function relayHeadersTimeoutMs (requestTimeoutsMs: readonly number[]): number {
  return Math.max(MIN_HEADERS_TIMEOUT_MS, ...requestTimeoutsMs.map((ms) => ms + HEADERS_TIMEOUT_MARGIN_MS))
}

/** End-to-end headers only; a request's content-length is undici's to set for the buffered body. */
function relayHeaders (headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>, isRequest = false, dropped: ReadonlySet<string> = NONE): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value !== undefined && !HOP_BY_HOP.has(name) && !dropped.has(name) && !(isRequest && name === 'content-length')) out[name] = value
  }
  return out
}

/**
 * The request body, whole (MCP messages are small), or undefined past bodyLimit. An
 * oversized body is still read to its end, unkept, so the client can read its 413
 * (leaving the loop early would destroy the socket under it).
 */
async function readBody (request: FastifyRequest, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request.raw) {
    size += (chunk as Buffer).length
    if (size <= limit) chunks.push(chunk as Buffer)
  }
  return size > limit ? undefined : Buffer.concat(chunks, size)
}

/** The owner's answer, chunk by chunk into the client's response (SSE streams stay streams). */
class RelayBack implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  private readonly onClientClose = (): void => {
    if (!this.res.writableFinished) this.controller?.abort(new Error('client closed the connection'))
  }

  constructor (
    private readonly res: ServerResponse,
    private readonly settle: (reached: boolean, err?: Error) => void,
  ) {
    res.on('close', this.onClientClose)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.res.destroyed) controller.abort(new Error('client closed the connection'))
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return
    this.res.writeHead(statusCode, relayHeaders(headers))
    if (isEventStream(headers['content-type'])) this.res.flushHeaders()
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', () => controller.resume())
    }
  }

  onResponseEnd (): void {
    this.res.end()
    this.finish(true)
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    // After an answer began, a stream cut short must look cut.
    if (this.res.headersSent) this.res.destroy()
    else if (isStillWorking(err) && !this.res.destroyed) {
      // The owner took the request and has not answered yet: it lives, and so may the session.
      sendRpcError({ res: this.res, inspection: undefined }, new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT', 'the replica holding this session did not answer in time'))
      this.finish(true, err)
      return
    }
    // Before any answer (refused, reset, unreachable), the owner was not reached.
    this.finish(this.res.headersSent || this.res.destroyed, err)
  }

  private finish (reached: boolean, err?: Error): void {
    this.res.off('close', this.onClientClose)
    this.settle(reached, err)
  }
}

/** undici's headers timeout: the request reached the owner, which has not begun its answer. */
function isStillWorking (err: Error): boolean {
  return (err as Error & { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT'
}

export class ReplicaForwarder {
  private readonly pools = new Map<string, Pool>()

  constructor (
    private readonly selfUrl: string,
    private readonly bodyLimit: number,
    /** relayHeadersTimeoutMs of the stdio servers' request timeouts. */
    private readonly headersTimeoutMs: number = MIN_HEADERS_TIMEOUT_MS,
  ) {}

  private poolFor (origin: string): Pool {
    let pool = this.pools.get(origin)
    if (pool === undefined) {
      if (this.pools.size >= MAX_POOLS) {
        const [oldest, stale] = this.pools.entries().next().value as [string, Pool]
        this.pools.delete(oldest)
        void stale.close()
      }
      // No connection cap: relayed GET streams each hold one, and a small pool shared with
      // ordinary requests would let long-lived streams starve them (a queue, i.e. a hang).
      pool = new Pool(origin, { connections: null, connectTimeout: CONNECT_TIMEOUT_MS, headersTimeout: this.headersTimeoutMs, bodyTimeout: 0 })
      this.pools.set(origin, pool)
    }
    return pool
  }

  /**
   * Relays the request (its body still unread) to `owner` and its answer back.
   * Resolves false when the owner could not be reached (nothing was answered yet). With tracing
   * on, `traceHeaders` (this replica's request span) replace the client's trace context, so the
   * owner's span continues, or links to, this replica's.
   */
  async forward (request: FastifyRequest, res: ServerResponse, owner: string, traceHeaders?: Readonly<Record<string, string>>): Promise<boolean> {
    const body = request.method === 'POST' ? await readBody(request, this.bodyLimit) : null
    if (body === undefined) {
      sendRpcError({ res, inspection: undefined }, new PortcullisError('PORTCULLIS_ERR_BODY_TOO_LARGE'))
      return true
    }
    const headers = relayHeaders(request.headers, true, DROPPED_REQUEST_HEADERS)
    headers[FORWARDED_HEADER] = this.selfUrl
    // The client's address as this replica resolved it (trustProxy applied), and nothing the client
    // said about itself: a client-written X-Forwarded-For would reach the owner's logs and limits.
    headers['x-forwarded-for'] = request.ip
    if (traceHeaders !== undefined) {
      delete headers.traceparent
      delete headers.tracestate
      Object.assign(headers, traceHeaders)
    }
    return new Promise((resolve) => {
      const handler = new RelayBack(res, (reached, err) => {
        if (err !== undefined && isStillWorking(err)) request.log.warn({ owner, timeoutMs: this.headersTimeoutMs }, 'session owner did not answer in time')
        else if (!reached && err !== undefined) request.log.warn({ owner, err: { message: err.message } }, 'session owner unreachable')
        resolve(reached)
      })
      this.poolFor(owner).dispatch({ origin: owner, method: request.method as 'GET' | 'POST' | 'DELETE', path: request.url, headers, body }, handler)
    })
  }

  /** The session is gone with its owner: 404, so the client initializes again. */
  static sessionGone (res: ServerResponse): void {
    sendRpcError({ res, inspection: undefined }, new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND'))
  }

  async close (): Promise<void> {
    await Promise.all([...this.pools.values()].map((pool) => pool.close()))
    this.pools.clear()
  }
}
