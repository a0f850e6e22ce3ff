/**
 * Remote Streamable HTTP upstreams. Each request is dispatched on an undici
 * Pool with a handler that writes straight into the client's response: no
 * intermediate streams, SSE relayed chunk by chunk, backpressure passed
 * through (pause/resume), client disconnects abort the upstream request.
 *
 * Headers to the upstream are an allow-list: the MCP transport headers and a
 * few harmless ones, plus the server's `forwardHeaders`, plus its configured
 * `headers`. The client's Authorization and Cookie are never forwarded
 * (MCP authorization, "Token Passthrough": forbidden).
 */
import { connect } from 'node:net'
import type { IncomingHttpHeaders } from 'node:http'
import { Pool, type Dispatcher } from 'undici'
import { PortcullisError } from '../errors.js'
import type { HttpServerConfig } from '../config/schema.js'
import { READY_PROBE_CACHE_MS, READY_PROBE_TIMEOUT_MS } from '../config/defaults.js'
import type { McpExchange, Upstream, UpstreamHealth } from './types.js'
import { endSseWithError, sendRpcError } from './respond.js'
import { editJsonBody, SseEditor } from './response-edit.js'

const FORWARDED_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  'accept', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'mcp-method', 'mcp-name',
  'user-agent', 'traceparent', 'tracestate',
])

/** Hop-by-hop headers (RFC 9110 7.6.1) and upstream cookies, which would land on the gateway's own origin. */
const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'upgrade',
  'set-cookie',
])

const POOL_CONNECTIONS = 128

export function upstreamRequestHeaders (incoming: IncomingHttpHeaders, extra: ReadonlySet<string>, configured: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name in incoming) {
    // MCP 2026-07-28: intermediaries MUST forward Mcp-Param-* headers they do not recognise.
    if (FORWARDED_REQUEST_HEADERS.has(name) || name.startsWith('mcp-param-') || extra.has(name)) {
      const value = incoming[name]
      if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value
    }
  }
  for (const name in configured) out[name.toLowerCase()] = configured[name] as string
  return out
}

function responseHeaders (upstream: Record<string, string | string[] | undefined>): { headers: Record<string, string | string[]>, isSse: boolean } {
  const headers: Record<string, string | string[]> = {}
  for (const name in upstream) {
    const value = upstream[name]
    if (value !== undefined && !DROPPED_RESPONSE_HEADERS.has(name)) headers[name] = value
  }
  const contentType = headers['content-type']
  const isSse = typeof contentType === 'string' && contentType.startsWith('text/event-stream')
  if (isSse) {
    // Tell nginx (and kin) not to buffer: events must reach the client as they happen.
    headers['x-accel-buffering'] = 'no'
    headers['cache-control'] ??= 'no-cache'
  }
  return { headers, isSse }
}

/** undici error codes -> the gateway's wire error. The cause stays in the log. */
function classifyFailure (err: unknown): PortcullisError {
  const code = (err as { code?: string } | null)?.code
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT', undefined, { cause: err })
  }
  return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', undefined, { cause: err })
}

const CLIENT_GONE = Object.assign(new Error('client closed the connection'), { code: 'PORTCULLIS_CLIENT_GONE' })
const SHUTTING_DOWN = Object.assign(new Error('gateway is shutting down'), { code: 'PORTCULLIS_SHUTDOWN' })

/** Relays one upstream response into the client's response. */
class Relay implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  private abortReason: Error | undefined
  private isSse = false
  private credentialFailure: number | undefined
  /** pass: bytes straight through; buffer: a JSON body to edit; sse: events to edit; replace: answer with the batch errors only. */
  private mode: 'pass' | 'buffer' | 'sse' | 'replace' = 'pass'
  private chunks: Buffer[] = []
  private editor: SseEditor | undefined
  private bufferedStatus = 0
  private bufferedHeaders: Record<string, string | string[]> = {}
  private readonly onClientClose = (): void => {
    if (!this.ex.res.writableFinished) this.abort(CLIENT_GONE)
  }

  /** A GET: the long-lived server->client stream. */
  get isStream (): boolean {
    return this.ex.method === 'GET'
  }

  constructor (
    private readonly ex: McpExchange,
    private readonly server: string,
    private readonly done: () => void,
  ) {
    ex.res.on('close', this.onClientClose)
  }

  abort (reason: Error): void {
    this.abortReason ??= reason
    this.controller?.abort(reason)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.abortReason !== undefined) controller.abort(this.abortReason)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, upstreamHeaders: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return
    const { res } = this.ex
    if (statusCode === 401 || (statusCode === 403 && upstreamHeaders['www-authenticate'] !== undefined)) {
      // The upstream refused the gateway's own credentials. A 401 would send the
      // client into a pointless OAuth dance with *our* authorization server.
      this.credentialFailure = statusCode
      return
    }
    const { headers, isSse } = responseHeaders(upstreamHeaders)
    this.isSse = isSse
    const edit = this.ex.edit
    if (edit !== undefined && statusCode < 300) {
      if (statusCode === 202 && edit.extra.length > 0) {
        this.mode = 'replace'
        return
      }
      if (!isSse && /json/i.test(String(headers['content-type'] ?? ''))) {
        this.mode = 'buffer'
        this.bufferedStatus = statusCode
        delete headers['content-length']
        this.bufferedHeaders = headers
        return
      }
      if (isSse) {
        this.mode = 'sse'
        this.editor = new SseEditor(edit)
        // An edited stream is not the upstream's length (RFC 9112 6.3: a wrong Content-Length
        // desynchronises the keep-alive connection); without one, Node frames it chunked.
        delete headers['content-length']
      }
    }
    res.writeHead(statusCode, headers)
    // Send the headers now: a client waits for them to know an event stream is open.
    if (isSse) res.flushHeaders()
    if (this.editor !== undefined) res.write(this.editor.prelude())
    if (res.destroyed) controller.abort(CLIENT_GONE)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.credentialFailure !== undefined || this.mode === 'replace') return
    if (this.mode === 'buffer') {
      this.chunks.push(chunk)
      return
    }
    const { res } = this.ex
    const data = this.editor === undefined ? chunk : this.editor.push(chunk)
    if (data.length > 0 && !res.write(data)) {
      controller.pause()
      res.once('drain', () => controller.resume())
    }
  }

  onResponseEnd (): void {
    if (this.credentialFailure !== undefined) {
      this.ex.log.error({ server: this.server, status: this.credentialFailure }, 'upstream rejected the gateway credentials')
      sendRpcError(this.ex.res, new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', 'the upstream refused the gateway\'s credentials'), this.ex.inspection)
    } else if (this.mode === 'replace' || this.mode === 'buffer') {
      const edit = this.ex.edit
      const body = edit === undefined ? Buffer.concat(this.chunks)
        : this.mode === 'replace' ? Buffer.from(JSON.stringify(edit.extra)) : editJsonBody(Buffer.concat(this.chunks), edit)
      const headers = this.mode === 'replace' ? { 'content-type': 'application/json' } : this.bufferedHeaders
      this.ex.res.writeHead(this.mode === 'replace' ? 200 : this.bufferedStatus, { ...headers, 'content-length': String(body.length) })
      this.ex.res.end(body)
    } else {
      if (this.editor !== undefined) this.ex.res.write(this.editor.flush())
      this.ex.res.end()
    }
    this.finish()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    const { res, log, inspection } = this.ex
    const reason = this.abortReason
    if (reason === CLIENT_GONE) {
      // Nothing to answer; aborting upstream is how a proxy passes the disconnect on
      // (and in 2026-07-28, closing the stream is the cancellation).
    } else if (reason === SHUTTING_DOWN) {
      const failure = new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN')
      if (!res.headersSent) sendRpcError(res, failure, inspection)
      else if (this.isSse) endSseWithError(res, failure, inspection)
      else res.destroy()
    } else {
      const failure = classifyFailure(err)
      log.warn({ server: this.server, err: { code: (err as { code?: string }).code, message: err.message }, headersSent: res.headersSent }, 'upstream request failed')
      if (!res.headersSent) sendRpcError(res, failure, inspection)
      else if (this.isSse) endSseWithError(res, failure, inspection)
      // A JSON body cut short must not look complete: drop the connection.
      else res.destroy()
    }
    this.finish()
  }

  private finish (): void {
    this.ex.res.off('close', this.onClientClose)
    this.done()
  }
}

export class HttpUpstream implements Upstream {
  readonly name: string
  readonly transport = 'http'
  private readonly pool: Pool
  private readonly origin: string
  private readonly path: string
  private readonly extraHeaders: ReadonlySet<string>
  private readonly relays = new Set<Relay>()
  private isClosed = false
  private closing: Promise<void> | undefined
  private lastProbe: { at: number, result: Promise<UpstreamHealth> } | undefined

  constructor (private readonly config: HttpServerConfig) {
    this.name = config.name
    const url = new URL(config.url)
    this.origin = url.origin
    this.path = `${url.pathname}${url.search}`
    this.extraHeaders = new Set(config.forwardHeaders.map((h) => h.toLowerCase()))
    this.pool = new Pool(this.origin, {
      connections: POOL_CONNECTIONS,
      connectTimeout: Math.min(config.timeoutMs, 10_000),
      // Per-request timeouts are set in dispatch(); these are only the pool's fallbacks.
      headersTimeout: config.timeoutMs,
      bodyTimeout: config.timeoutMs,
    })
  }

  handle (ex: McpExchange): Promise<void> {
    if (this.isClosed) {
      sendRpcError(ex.res, new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN'), ex.inspection)
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const relay = new Relay(ex, this.name, () => {
        this.relays.delete(relay)
        resolve()
      })
      this.relays.add(relay)
      this.pool.dispatch({
        path: this.path,
        method: ex.method,
        headers: upstreamRequestHeaders(ex.headers, this.extraHeaders, this.config.headers),
        body: ex.body ?? null,
        headersTimeout: this.config.timeoutMs,
        // A GET is the long-lived server->client stream: silence is normal there, so only
        // the client's disconnect or shutdown ends it. A POST's silence is bounded.
        bodyTimeout: ex.method === 'GET' ? 0 : this.config.timeoutMs,
        blocking: true,
      }, relay)
    })
  }

  /** A TCP connect to the upstream, cached for READY_PROBE_CACHE_MS so /readyz scrapes stay cheap. */
  probe (): Promise<UpstreamHealth> {
    const now = Date.now()
    if (this.lastProbe === undefined || now - this.lastProbe.at > READY_PROBE_CACHE_MS) {
      this.lastProbe = { at: now, result: this.connectProbe() }
    }
    return this.lastProbe.result
  }

  private connectProbe (): Promise<UpstreamHealth> {
    const url = new URL(this.config.url)
    const port = Number(url.port !== '' ? url.port : url.protocol === 'https:' ? 443 : 80)
    const started = performance.now()
    return new Promise((resolve) => {
      const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port, timeout: READY_PROBE_TIMEOUT_MS })
      const settle = (error?: string): void => {
        socket.destroy()
        resolve(error === undefined
          ? { name: this.name, transport: this.transport, isReachable: true, latencyMs: Math.round(performance.now() - started) }
          : { name: this.name, transport: this.transport, isReachable: false, error })
      }
      socket.once('connect', () => settle())
      socket.once('timeout', () => settle('connect timeout'))
      socket.once('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message))
    })
  }

  closeStreams (): void {
    for (const relay of this.relays) if (relay.isStream) relay.abort(SHUTTING_DOWN)
  }

  close (): Promise<void> {
    this.isClosed = true
    for (const relay of this.relays) relay.abort(SHUTTING_DOWN)
    this.closing ??= this.pool.destroy()
    return this.closing
  }
}
