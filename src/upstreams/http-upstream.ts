/**
 * Remote Streamable HTTP upstreams. Each request is dispatched on an undici
 * Pool with a handler that writes straight into the client's response: no
 * intermediate streams, SSE relayed chunk by chunk, backpressure passed
 * through (pause/resume), client disconnects abort the upstream request.
 *
 * Headers to the upstream are an allow-list: the MCP transport headers and a
 * few harmless ones, plus the server's `forwardHeaders`, plus its configured
 * `headers` (`${user.*}` rendered for the caller), plus the signed identity
 * header when `identity` is set, plus the caller's own Authorization at the
 * upstream when `upstreamAuth` is set. The client's Authorization and Cookie are never
 * forwarded (MCP authorization, "Token Passthrough": forbidden), nor a client's
 * own copy of the identity header (the configuration cannot allow-list it).
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import { Pool, type Dispatcher } from 'undici'
import { PortcullisError } from '../errors.js'
import { FORWARDED_CLIENT_HEADERS, type HttpServerConfig } from '../config/schema.js'
import { READY_PROBE_CACHE_MS } from '../config/defaults.js'
import type { McpExchange, Upstream, UpstreamHealth, UpstreamLoad, UpstreamSession } from './types.js'
import { endSseWithError, sendRpcError } from './respond.js'
import { editJsonBody, SseEditor } from './response-edit.js'
import type { SessionOwners } from './session-owners.js'
import type { KeptStream, StreamKeeper } from './stream-keeper.js'
import { isStoreUnavailable } from '../store/types.js'
import { storeUnavailableError } from '../store/outage.js'
import type { IdentitySigner } from './identity-token.js'
import { CallerHeaders } from './caller-headers.js'
import { probeTcp } from './tcp-probe.js'
import { HOP_BY_HOP_HEADERS } from '../net/hop-by-hop.js'
import { EVENT_STREAM, isEventStream } from '../net/media-type.js'
import type { UpstreamCredentials } from './upstream-credentials.js'
import { declaresUrlElicitation } from '../mcp/capabilities.js'
import { InFlight } from '../in-flight.js'
import { parseBearerChallenge, type BearerChallenge } from '../upstream-auth/www-authenticate.js'

/**
 * Hop-by-hop headers (RFC 9110 7.6.1), upstream cookies, which would land on the gateway's own
 * origin, and the headers a front proxy obeys from its upstream (nginx's X-Accel-*, X-Sendfile):
 * an MCP server must not make nginx re-send the client's request, Authorization and all, to a
 * path of the gateway's it chooses. X-Accel-Buffering is the gateway's own (set below for SSE).
 */
const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP_HEADERS, 'proxy-authenticate', 'set-cookie',
  'x-accel-redirect', 'x-accel-expires', 'x-accel-limit-rate', 'x-accel-charset', 'x-sendfile', 'x-lighttpd-send-file',
])

/** undici's default for an HTTP/2 connection: exchanges one connection carries at once. */
const H2_STREAMS_PER_CONNECTION = 100
const BUSY_RETRY_AFTER_S = '1'
/** The most of an upstream's scope challenge repeated to the client (the upstream's own text). */
const MAX_SCOPE_CHARS = 200
/** Ending a reclaimed session upstream is a courtesy: it must not hang on a silent upstream. */
const RECLAIM_TIMEOUT_MS = 10_000

export function upstreamRequestHeaders (incoming: IncomingHttpHeaders, extra: ReadonlySet<string>, configured: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name in incoming) {
    // MCP 2026-07-28: intermediaries MUST forward Mcp-Param-* headers they do not recognise.
    if (FORWARDED_CLIENT_HEADERS.has(name) || name.startsWith('mcp-param-') || extra.has(name)) {
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
    // CORS is the gateway's (routes/mcp/admit.ts answers the Origin it allowed): an upstream's own
    // Access-Control-* would replace it (writeHead's headers win over those already set).
    if (value !== undefined && !DROPPED_RESPONSE_HEADERS.has(name) && !name.startsWith('access-control-')) headers[name] = value
  }
  const isSse = isEventStream(headers['content-type'])
  if (isSse) {
    // Spelled as every reader of the answer inside the gateway (virtual, 2024-11-05 routes) and
    // outside it expects; the parameters (a charset) as the upstream wrote them.
    const type = headers['content-type'] as string
    const params = type.indexOf(';')
    headers['content-type'] = params === -1 ? EVENT_STREAM : EVENT_STREAM + type.slice(params)
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

/**
 * An answer to edit that came content-coded (gzip, br...): the editor reads text, so the coded
 * bytes would pass unedited, and clients decode them. The gateway asks for `identity` whenever it
 * edits; an upstream that codes anyway is answered 502, never passed through.
 */
const ENCODED_ANSWER = Object.assign(new Error('the upstream content-coded an answer the gateway must edit, though asked for identity'), { code: 'PORTCULLIS_UPSTREAM_ENCODED' })

/** A Content-Encoding naming any coding but identity (RFC 9110 8.4). */
function isContentCoded (value: string | string[] | undefined): boolean {
  if (value === undefined) return false
  return (Array.isArray(value) ? value : [value]).join(',').split(',').some((coding) => {
    const name = coding.trim().toLowerCase()
    return name !== '' && name !== 'identity'
  })
}

/**
 * An answer to edit is held whole (a JSON body) or event by event (SSE): past the server's
 * maxMessageBytes it is refused. Unbounded, one answer held the gateway's memory at several
 * times its size, and one past V8's longest string (~512 MB) could not be read and passed unedited.
 */
function tooLargeToEdit (maxBytes: number): Error {
  return Object.assign(new Error(`an answer the gateway must edit is larger than servers[].maxMessageBytes (${maxBytes} bytes)`), { code: 'PORTCULLIS_UPSTREAM_TOO_LARGE' })
}

/** The most of an upstream's Location repeated in the log. */
const MAX_LOCATION_CHARS = 200

/**
 * An upstream's redirect (a server mounted at /mcp/ answering /mcp with a 307, as Starlette
 * does) is not passed on: the client would follow it past the gateway, to the upstream's own,
 * often internal, address, with the request's body and session id. The operator gets its
 * Location in the log (correct servers[].url); the client a 502.
 */
function redirected (statusCode: number, location: string | string[] | undefined): Error {
  const to = (Array.isArray(location) ? location[0] : location)?.slice(0, MAX_LOCATION_CHARS) ?? 'nowhere'
  return Object.assign(new Error(`the upstream answered ${statusCode} to ${to}: set servers[].url to the address it serves at`), { code: 'PORTCULLIS_UPSTREAM_REDIRECTED' })
}

const CLIENT_GONE = Object.assign(new Error('client closed the connection'), { code: 'PORTCULLIS_CLIENT_GONE' })
const SHUTTING_DOWN = Object.assign(new Error('gateway is shutting down'), { code: 'PORTCULLIS_SHUTDOWN' })

/** Relays one upstream response into the client's response. */
class Relay implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  private abortReason: Error | undefined
  private isSse = false
  private credentialFailure: number | undefined
  /** A 403 insufficient_scope: the credential is valid but lacks a scope (answered, never renewed). */
  private scopeRefusal: BearerChallenge | undefined
  /** Set when the answer was a refused caller credential that may be renewed: nothing was written. */
  isCredentialRejected = false
  /** pass: bytes straight through; buffer: a JSON body to edit; sse: events to edit; replace: answer with the batch errors only. */
  private mode: 'pass' | 'buffer' | 'sse' | 'replace' = 'pass'
  private chunks: Buffer[] = []
  private bufferedBytes = 0
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

  /** Events that arrived while the answer's headers waited for a session's owner to be recorded. */
  private held: Array<() => void> | undefined
  /** Set when the answer is an event stream. */
  private kept: KeptStream | undefined

  constructor (
    private readonly ex: McpExchange,
    private readonly server: string,
    private readonly done: () => void,
    private readonly hooks: RelayHooks,
  ) {
    ex.res.on('close', this.onClientClose)
    // The client may have left while the request waited (an owner check on the store, a
    // caller's credential): then the upstream request is cancelled as soon as it starts.
    if (ex.res.closed) this.onClientClose()
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
    const recording = this.hooks.onAnswer(statusCode, upstreamHeaders)
    if (recording !== undefined) {
      // The client must not learn a session id before its owner is on record (another
      // replica may get its next request): hold the answer until the record is written.
      this.held = []
      controller.pause()
      void recording.then(() => {
        const held = this.held ?? []
        this.held = undefined
        this.startResponse(controller, statusCode, upstreamHeaders)
        for (const replay of held) replay()
        controller.resume()
      })
      return
    }
    this.startResponse(controller, statusCode, upstreamHeaders)
  }

  private startResponse (controller: Dispatcher.DispatchController, statusCode: number, upstreamHeaders: Record<string, string | string[] | undefined>): void {
    const { res } = this.ex
    this.scopeRefusal = statusCode === 403 ? scopeChallenge(upstreamHeaders['www-authenticate']) : undefined
    // Checked first: renewing a valid token would not add the scope, and a link without a
    // refresh token would be dropped for it.
    if (this.scopeRefusal !== undefined) return
    if (statusCode === 401 || (statusCode === 403 && upstreamHeaders['www-authenticate'] !== undefined)) {
      // The upstream refused the gateway's own credentials. A 401 would send the
      // client into a pointless OAuth dance with *our* authorization server.
      this.credentialFailure = statusCode
      return
    }
    // 304 is no redirect: it answers a conditional request (never sent by MCP clients, harmless).
    if (statusCode >= 300 && statusCode < 400 && statusCode !== 304) {
      this.abort(redirected(statusCode, upstreamHeaders.location))
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
      if (isContentCoded(headers['content-encoding'])) {
        this.abort(ENCODED_ANSWER)
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
        // An edited stream is not the upstream's length either (RFC 9112 6.3: a wrong
        // Content-Length desynchronises the keep-alive connection); without one, Node frames it chunked.
        this.editor = new SseEditor(edit)
      }
    }
    // Keep-alive comments may go between the events of any stream: it is never sent with the upstream's length.
    if (isSse) delete headers['content-length']
    res.writeHead(statusCode, headers)
    if (isSse) {
      // A GET stream may stay silent for minutes: send its headers now, the client waits for
      // them to know the stream is open. A POST's stream carries the answer, and its headers go
      // out with the first event in one write (a write of its own cost ~10% of the gateway's CPU
      // per call); a silent one is flushed by the first keep-alive comment.
      if (this.ex.method === 'GET') res.flushHeaders()
      this.kept = this.hooks.onStream(res)
    }
    if (this.editor !== undefined) this.write(res, this.editor.prelude())
    if (res.destroyed) controller.abort(CLIENT_GONE)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.held !== undefined) {
      this.held.push(() => this.onResponseData(controller, chunk))
      return
    }
    if (this.credentialFailure !== undefined || this.scopeRefusal !== undefined || this.mode === 'replace' || this.abortReason !== undefined) return
    const maxBytes = this.hooks.maxEditedBytes
    if (this.mode === 'buffer') {
      this.bufferedBytes += chunk.length
      if (this.bufferedBytes > maxBytes) {
        this.chunks = []
        this.abort(tooLargeToEdit(maxBytes))
        return
      }
      this.chunks.push(chunk)
      return
    }
    const { res } = this.ex
    const data = this.editor === undefined ? chunk : this.editor.push(chunk)
    // One event not yet ended, held to be edited whole (characters: at most its bytes).
    if (this.editor !== undefined && this.editor.pendingLength > maxBytes) {
      this.abort(tooLargeToEdit(maxBytes))
      return
    }
    if (data.length > 0 && !this.write(res, data)) {
      controller.pause()
      res.once('drain', () => controller.resume())
    }
  }

  /** Writes to the client; an event stream's keep-alive clock starts again. */
  private write (res: ServerResponse, data: Buffer | string): boolean {
    const isWritten = res.write(data)
    if (this.kept !== undefined) this.hooks.wrote(this.kept, data)
    return isWritten
  }

  onResponseEnd (controller?: Dispatcher.DispatchController, trailers?: Record<string, string | string[] | undefined>): void {
    if (this.held !== undefined) {
      this.held.push(() => this.onResponseEnd(controller, trailers))
      return
    }
    if (this.scopeRefusal !== undefined) {
      sendRpcError(this.ex, this.hooks.insufficientScope(this.scopeRefusal.scope))
    } else if (this.credentialFailure !== undefined && this.hooks.mayRenewCredential) {
      // The caller's own credential was refused: the upstream gets a renewed one, once (handle()).
      this.isCredentialRejected = true
    } else if (this.credentialFailure !== undefined) {
      this.ex.log.error({ server: this.server, status: this.credentialFailure }, 'upstream rejected the gateway credentials')
      sendRpcError(this.ex, new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', 'the upstream refused the gateway\'s credentials'))
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

  onResponseError (controller: Dispatcher.DispatchController, err: Error): void {
    if (this.held !== undefined) {
      this.held.push(() => this.onResponseError(controller, err))
      return
    }
    const { res, log } = this.ex
    const reason = this.abortReason
    if (reason === CLIENT_GONE) {
      // Nothing to answer; aborting upstream is how a proxy passes the disconnect on
      // (and in 2026-07-28, closing the stream is the cancellation).
    } else if (reason === SHUTTING_DOWN) {
      const failure = new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN')
      if (!res.headersSent) sendRpcError(this.ex, failure)
      else if (this.isSse) endSseWithError(this.ex, failure)
      else res.destroy()
    } else {
      const failure = classifyFailure(err)
      log.warn({ server: this.server, err: { code: (err as { code?: string }).code, message: err.message }, headersSent: res.headersSent }, 'upstream request failed')
      if (!res.headersSent) sendRpcError(this.ex, failure)
      else if (this.isSse) endSseWithError(this.ex, failure)
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

/** What a relay tells its upstream about the answer. */
interface RelayHooks {
  /** A promise to wait for before the client may see the answer (a new session being recorded). */
  onAnswer: (statusCode: number, headers: Record<string, string | string[] | undefined>) => Promise<void> | undefined
  /** servers[].maxMessageBytes: the most of an answer (JSON) or of one event (SSE) held to be edited. */
  maxEditedBytes: number
  /** The answer is an event stream (counted while open, kept alive). */
  onStream: (res: ServerResponse) => KeptStream | undefined
  wrote: (stream: KeptStream, data: Buffer | string) => void
  /** A refused credential is the caller's own (upstreamAuth) and may be renewed: write nothing for it. */
  readonly mayRenewCredential: boolean
  /** The error for a 403 insufficient_scope naming `scope` (the upstream's, if it named one). */
  insufficientScope: (scope: string | undefined) => PortcullisError
}

/**
 * The Bearer challenge of a 403 when it is RFC 6750 3.1 insufficient_scope (MCP 2025-11-25
 * "Scope Challenge Handling"): the token was accepted, only its scope falls short.
 */
function scopeChallenge (header: string | string[] | undefined): BearerChallenge | undefined {
  const challenge = parseBearerChallenge(Array.isArray(header) ? header.join(', ') : header)
  return challenge.error === 'insufficient_scope' ? challenge : undefined
}

function headerValue (headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

export class HttpUpstream implements Upstream {
  readonly name: string
  readonly transport = 'http'
  private readonly pool: Pool
  private readonly origin: string
  private readonly path: string
  private readonly extraHeaders: ReadonlySet<string>
  /** In flight, for shutdown to answer (an InFlight, not a Set: see src/in-flight.ts). */
  private readonly relays = new InFlight<Relay>()
  /** Exchanges in flight: over HTTP/1.1 each holds one upstream connection. */
  private inFlight = 0
  /** Event streams open to clients: GET streams and POST answers that turned into SSE. */
  private streams = 0
  private readonly maxInFlight: number
  private isClosed = false
  private closing: Promise<void> | undefined
  private lastProbe: { at: number, result: Promise<UpstreamHealth> } | undefined
  /** The configured headers, rendered for each caller (identity, upstreamAuth). */
  private readonly headers: CallerHeaders

  constructor (
    private readonly config: HttpServerConfig,
    private readonly owners: SessionOwners,
    private readonly keeper: StreamKeeper,
    signer?: IdentitySigner,
    /** servers[].upstreamAuth: the caller's own Authorization at the upstream. */
    private readonly credentials?: UpstreamCredentials,
  ) {
    this.name = config.name
    this.headers = new CallerHeaders(config, signer, credentials)
    // Fail closed: a server configured for each caller's own credential never goes out without one.
    if (config.upstreamAuth !== undefined && credentials === undefined) throw new Error(`server ${config.name}: upstreamAuth is set but no credential source was built for it`)
    const url = new URL(config.url)
    this.origin = url.origin
    this.path = `${url.pathname}${url.search}`
    this.extraHeaders = new Set(config.forwardHeaders.map((h) => h.toLowerCase()))
    const maxConnections = config.maxConnections
    this.maxInFlight = maxConnections === undefined ? Infinity : config.http2 ? maxConnections * H2_STREAMS_PER_CONNECTION : maxConnections
    this.pool = new Pool(this.origin, {
      // No fixed cap by default: long-lived streams each hold a connection (HTTP/1.1), and a
      // small pool shared with ordinary requests let 128 streams stop a server for everyone.
      // Where the operator caps it, the gateway refuses at the cap instead of queueing (a hang).
      connections: maxConnections ?? null,
      allowH2: config.http2,
      connectTimeout: Math.min(config.timeoutMs, 10_000),
      // Per-request timeouts are set in dispatch(); these are only the pool's fallbacks.
      headersTimeout: config.timeoutMs,
      bodyTimeout: config.timeoutMs,
    })
    owners.onReclaim(this.name, (sessionId) => this.endUpstreamSession(sessionId))
  }

  /**
   * Tells the upstream a session is over (Streamable HTTP "Session Management": a client that no
   * longer needs a session SHOULD send DELETE). Only the gateway's own static headers go with
   * it: the gateway holds no client credentials, and no caller here to render `${user.*}` or
   * sign an identity for (an upstream that insists on them ends the session at its own timeout).
   */
  private async endUpstreamSession (sessionId: string): Promise<void> {
    if (this.isClosed) return
    const { body } = await this.pool.request({
      path: this.path,
      method: 'DELETE',
      headers: upstreamRequestHeaders({ 'mcp-session-id': sessionId }, new Set(), this.headers.staticHeaders),
      headersTimeout: RECLAIM_TIMEOUT_MS,
      bodyTimeout: RECLAIM_TIMEOUT_MS,
    })
    await body.dump()
  }

  async handle (ex: McpExchange): Promise<void> {
    if (this.isClosed) {
      sendRpcError(ex, new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN'))
      return
    }
    const sessionId = headerValue(ex.headers, 'mcp-session-id')
    if (sessionId !== undefined) {
      let check
      try {
        // Usually known here and answered at once: awaited only when the store is asked.
        check = this.owners.check(this.name, sessionId, ex.owner)
        if (typeof check !== 'string') check = await check
      } catch (err) {
        if (!isStoreUnavailable(err)) throw err
        ex.log.warn({ server: this.name, err: { message: err.message } }, 'upstream session owner unknown: store unreachable')
        sendRpcError(ex, storeUnavailableError())
        return
      }
      // Another caller's session is answered exactly like an unknown one.
      if (check === 'not-found') {
        sendRpcError(ex, new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND'))
        return
      }
    }
    let configured
    try {
      // The configured object itself unless a caller's header must be signed or fetched (CallerHeaders.for).
      configured = this.headers.for(ex)
      if (configured instanceof Promise) configured = await configured
    } catch (err) {
      const failure = err instanceof PortcullisError ? err : new PortcullisError('PORTCULLIS_ERR_INTERNAL', undefined, { cause: err })
      if (failure.status >= 500) ex.log.error({ server: this.name, err: { message: (err as Error).message } }, 'could not prepare the upstream credentials')
      sendRpcError(ex, failure)
      return
    }
    const busy = this.refusal(ex.method === 'GET')
    if (busy !== undefined) {
      ex.log.warn({ server: this.name, inFlight: this.inFlight, streams: this.streams }, 'upstream at its connection or stream budget; refused')
      sendRpcError(ex, busy)
      return
    }
    const opens = sessionId === undefined && ex.method === 'POST' && ex.inspection?.messages.some((m) => m.method === 'initialize') === true
    const admitted = opens ? this.owners.admit(this.name, ex.owner.user, this.config.maxSessionsPerUser) : undefined
    if (admitted instanceof PortcullisError) {
      ex.log.info({ server: this.name, user: ex.user.name }, 'user at maxSessionsPerUser with no idle session; refused')
      sendRpcError(ex, admitted)
      return
    }
    // Use: a request, or a GET stream. A notification alone (notifications/initialized) is not.
    const isUse = ex.method === 'GET' || (ex.method === 'POST' && (ex.inspection?.requestIds.length ?? 0) > 0)
    const release = sessionId === undefined ? undefined : this.owners.hold(this.name, sessionId, isUse)
    const isGet = ex.method === 'GET'
    this.inFlight++
    if (isGet) this.streams++
    try {
      const isRejected = await this.dispatch(ex, sessionId, isGet, configured, this.credentials !== undefined)
      if (isRejected) await this.redispatch(ex, sessionId, isGet, configured)
    } finally {
      this.inFlight--
      if (isGet) this.streams--
      release?.()
      admitted?.()
    }
  }

  /**
   * The upstream refused the caller's own credential (upstreamAuth): it may have expired or been
   * revoked early. One renewed credential, one more try; a second refusal is a 502, and a
   * credential that cannot be renewed is whatever error the source gives (the link to connect
   * the account again) — never a 401 from the gateway.
   */
  private async redispatch (ex: McpExchange, sessionId: string | undefined, isGet: boolean, configured: Readonly<Record<string, string>>): Promise<void> {
    const credentials = this.credentials
    if (credentials === undefined) return
    let renewed
    try {
      renewed = { ...configured, authorization: await credentials.renew(ex, configured.authorization ?? '') }
    } catch (err) {
      const failure = err instanceof PortcullisError ? err : new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', undefined, { cause: err })
      if (!(err instanceof PortcullisError)) ex.log.error({ server: this.name, err: { message: (err as Error).message } }, 'could not renew the caller\'s upstream credential')
      sendRpcError(ex, failure)
      return
    }
    await this.dispatch(ex, sessionId, isGet, renewed, false)
  }

  /**
   * A 403 insufficient_scope: not a refused credential (README "Upstream credentials"). The
   * scope is the upstream's word, shortened; what can add it depends on where the credential
   * comes from.
   */
  private insufficientScope (ex: McpExchange, scope: string | undefined): PortcullisError {
    const named = scope?.slice(0, MAX_SCOPE_CHARS)
    const auth = this.config.upstreamAuth?.type
    const remedy = auth === 'oauth'
      ? 'your linked account there was not granted it: an administrator can add it to the server\'s upstreamAuth.scopes, after which you link your account again'
      : auth === undefined
        ? 'the credential configured for this server lacks it: ask an administrator'
        : 'an administrator can add it to the server\'s upstreamAuth.scopes'
    ex.log.info({ server: this.name, scope: named }, 'upstream refused a call for a missing scope; credential kept')
    return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_INSUFFICIENT_SCOPE', `MCP server "${this.name}" needs ${named === undefined ? 'a scope it did not name' : `the scope "${named}"`}; ${remedy}`, {
      data: { server: this.name, ...(named === undefined ? {} : { scope: named }) },
    })
  }

  /** 503 at once at a budget the operator set (servers[].maxConnections, maxStreams): never a queue. */
  private refusal (isStream: boolean): PortcullisError | undefined {
    const headers = { 'retry-after': BUSY_RETRY_AFTER_S }
    if (this.inFlight >= this.maxInFlight) {
      return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_BUSY', `MCP server "${this.name}" has ${this.inFlight} requests in flight (servers[].maxConnections)`, { headers })
    }
    const maxStreams = this.config.maxStreams
    if (isStream && maxStreams !== undefined && this.streams >= maxStreams) {
      return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_BUSY', `MCP server "${this.name}" has ${this.streams} event streams open (servers[].maxStreams)`, { headers })
    }
    return undefined
  }

  load (): UpstreamLoad {
    return { streams: this.streams, exchanges: this.inFlight }
  }

  liveSessions (): UpstreamSession[] {
    return this.owners.sessionsOn(this.name)
  }

  /**
   * A revoked or offboarded user's sessions this replica holds end: forgotten (their client
   * gets 404) and DELETEd upstream, so the upstream does not keep them until its own timeout.
   */
  async endUser (userId: string): Promise<void> {
    for (const session of this.owners.sessionsOn(this.name)) {
      if (session.user === userId) this.owners.end(this.name, session.sessionId, 'the user was revoked or offboarded')
    }
  }

  /** Forgotten here and in the store (its client gets 404 and starts over), and DELETEd upstream. */
  async endSession (sessionId: string, reason: string): Promise<boolean> {
    return this.owners.end(this.name, sessionId, reason)
  }

  /** Resolves true when the upstream refused a renewable caller credential and nothing was written. */
  private dispatch (ex: McpExchange, sessionId: string | undefined, isGet: boolean, configured: Readonly<Record<string, string>>, mayRenewCredential: boolean): Promise<boolean> {
    let isCountedPost = false
    const hooks: RelayHooks = {
      mayRenewCredential,
      maxEditedBytes: this.config.maxMessageBytes,
      insufficientScope: (scope) => this.insufficientScope(ex, scope),
      onStream: (res) => {
        // A GET was counted when admitted; a POST answer turning into a stream counts from now.
        if (!isGet) {
          isCountedPost = true
          this.streams++
        }
        return ex.isInProcess === true ? undefined : this.keeper.add(res)
      },
      wrote: (stream, data) => this.keeper.wrote(stream, data),
      onAnswer: (statusCode, headers) => {
        if (sessionId !== undefined) {
          // The session ended: by the client's DELETE, or the upstream no longer knows it.
          if (statusCode === 404 || (ex.method === 'DELETE' && statusCode < 300)) this.owners.forget(this.name, sessionId)
          return undefined
        }
        const opened = headerValue(headers, 'mcp-session-id')
        if (opened === undefined || statusCode >= 300) return undefined
        // upstreamAuth: a later "link your account" error may take the URL-elicitation form.
        if (this.credentials !== undefined && declaresUrlElicitation(ex.inspection)) {
          return Promise.all([this.owners.record(this.name, opened, ex.owner), this.owners.noteUrlElicitation(this.name, opened)]).then(() => undefined)
        }
        return this.owners.record(this.name, opened, ex.owner)
      },
    }
    const headers = upstreamRequestHeaders(ex.headers, this.extraHeaders, configured)
    // An answer the gateway edits must come as text (RFC 9110 12.5.3: without Accept-Encoding any
    // coding is acceptable), whatever a forwarded Accept-Encoding asked for.
    if (ex.edit !== undefined) headers['accept-encoding'] = 'identity'
    return new Promise((resolve) => {
      const relay: Relay = new Relay(ex, this.name, () => {
        this.relays.delete(entry)
        if (isCountedPost) this.streams--
        resolve(relay.isCredentialRejected)
      }, hooks)
      const entry = this.relays.add(relay)
      this.pool.dispatch({
        path: this.path,
        method: ex.method,
        headers: ex.traceHeaders === undefined ? headers : { ...headers, ...ex.traceHeaders },
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
      this.lastProbe = { at: now, result: probeTcp(this.name, this.transport, this.config.url) }
    }
    // The reachability check is cached; what the server carries is told as it is now.
    return this.lastProbe.result.then((health) => ({ ...health, ...this.budgets() }))
  }

  /** Streams and exchanges now, and whether a budget the operator set is reached. */
  private budgets (): Record<string, number | boolean> {
    const { maxStreams, maxConnections } = this.config
    return {
      streams: this.streams,
      exchanges: this.inFlight,
      ...(maxStreams === undefined ? {} : { maxStreams, isAtStreamBudget: this.streams >= maxStreams }),
      ...(maxConnections === undefined ? {} : { maxConnections, isAtConnectionBudget: this.inFlight >= this.maxInFlight }),
    }
  }

  closeStreams (): void {
    for (const relay of this.relays.values()) if (relay.isStream) relay.abort(SHUTTING_DOWN)
  }

  close (): Promise<void> {
    this.isClosed = true
    for (const relay of this.relays.values()) relay.abort(SHUTTING_DOWN)
    this.closing ??= this.pool.destroy()
    return this.closing
  }
}
