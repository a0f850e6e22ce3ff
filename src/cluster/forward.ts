/**
 * Forwarding a request to the replica that holds its session (see sessions.ts).
 * A plain, streaming HTTP relay inside the gateway's own trust domain: the
 * request goes on as it came (its Authorization included: the owner checks it
 * again, applies policy and limits and writes the audit record, once), and the
 * answer — JSON or an SSE stream — comes back chunk by chunk.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import { pipeline } from 'node:stream/promises'
import type { FastifyRequest } from 'fastify'
import { Pool } from 'undici'
import { PortcullisError } from '../errors.js'
import { sendRpcError } from '../upstreams/respond.js'

/** Set on forwarded requests: the receiving replica never forwards them again (no loops). */
export const FORWARDED_HEADER = 'x-portcullis-forwarded-by'

const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'te', 'trailer', 'upgrade', 'host'])
const CONNECT_TIMEOUT_MS = 2_000
const HEADERS_TIMEOUT_MS = 5 * 60_000
const MAX_POOLS = 64

function relayHeaders (headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value
  }
  return out
}

export class ReplicaForwarder {
  private readonly pools = new Map<string, Pool>()

  constructor (private readonly selfUrl: string) {}

  private poolFor (origin: string): Pool {
    let pool = this.pools.get(origin)
    if (pool === undefined) {
      if (this.pools.size >= MAX_POOLS) {
        const [oldest, stale] = this.pools.entries().next().value as [string, Pool]
        this.pools.delete(oldest)
        void stale.close()
      }
      pool = new Pool(origin, { connections: 32, connectTimeout: CONNECT_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, bodyTimeout: 0 })
      this.pools.set(origin, pool)
    }
    return pool
  }

  /**
   * Relays the request (its body still unread) to `owner` and its answer back.
   * Resolves false when the owner could not be reached (nothing was sent yet).
   */
  async forward (request: FastifyRequest, res: ServerResponse, owner: string): Promise<boolean> {
    const abort = new AbortController()
    res.once('close', () => { if (!res.writableFinished) abort.abort() })
    const headers = relayHeaders(request.headers)
    headers[FORWARDED_HEADER] = this.selfUrl
    headers['x-forwarded-for'] = [request.headers['x-forwarded-for'], request.ip].filter((v) => v !== undefined).join(', ')
    let answer
    try {
      answer = await this.poolFor(owner).request({
        method: request.method as 'GET' | 'POST' | 'DELETE',
        path: request.url,
        headers,
        body: request.method === 'POST' ? request.raw : null,
        signal: abort.signal,
      })
    } catch (err) {
      if (abort.signal.aborted) return true
      request.log.warn({ owner, err: { message: (err as Error).message } }, 'session owner unreachable')
      return false
    }
    res.writeHead(answer.statusCode, relayHeaders(answer.headers))
    res.flushHeaders()
    await pipeline(answer.body, res).catch(() => { if (!res.destroyed) res.destroy() })
    return true
  }

  /** The session is gone with its owner: 404, so the client initializes again. */
  static sessionGone (res: ServerResponse): void {
    sendRpcError(res, new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND'), undefined)
  }

  async close (): Promise<void> {
    await Promise.all([...this.pools.values()].map((pool) => pool.close()))
    this.pools.clear()
  }
}
