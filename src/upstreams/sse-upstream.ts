/**
 * `transport: sse`: remote servers that speak only the 2024-11-05 HTTP+SSE transport (MCP
 * 2024-11-05 basic/transports, "HTTP with SSE"), bridged to Streamable HTTP for clients.
 *
 * Each client session is one upstream event stream: an initialize opens it (GET `url`), the
 * server's `endpoint` event names where messages go, and every message the client POSTs is
 * POSTed there. Answers come back on the upstream stream; they are matched to the client's
 * requests by JSON-RPC id and returned as the client's POST answer (JSON). Everything else the
 * server sends (notifications, sampling and elicitation requests) goes to the client's GET stream.
 *
 * The endpoint must be on the origin of `url` (RFC 6454 origin: scheme, host, port): a
 * hostile or compromised server must not be able to send the gateway's POSTs — with the
 * configured headers, the signed identity — anywhere else. Anything else is refused and the
 * stream closed. All traffic goes through one undici Pool for that origin, the same path HTTP
 * upstreams use; the configured `headers` and `identity` go with the stream and every POST.
 */
import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { Pool } from 'undici'
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError, type JsonRpcId } from '../errors.js'
import type { SseServerConfig } from '../config/schema.js'
import { READY_PROBE_CACHE_MS } from '../config/defaults.js'
import type { McpExchange, Upstream, UpstreamHealth, UpstreamLoad, UpstreamSession } from './types.js'
import { sendRpcError, writeJson } from './respond.js'
import { editJsonBody, sseMessageEvent } from './response-edit.js'
import type { SessionOwners } from './session-owners.js'
import type { KeptStream, StreamKeeper } from './stream-keeper.js'
import type { IdentitySigner } from './identity-token.js'
import { CallerHeaders } from './caller-headers.js'
import { probeTcp } from './tcp-probe.js'
import { SSE_EVENT_TOO_LARGE, SseEventReader } from './sse-events.js'
import { isStoreUnavailable } from '../store/types.js'
import { storeUnavailableError } from '../store/outage.js'
import { InFlight, InFlightMap, type Entry } from '../in-flight.js'
import { isEventStream } from '../net/media-type.js'

/** Idle sessions are looked for this often at most (a quarter of the idle timeout when shorter). */
const SWEEP_MAX_INTERVAL_MS = 60_000
const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' }

type Message = Record<string, unknown>

interface Waiter {
  readonly resolve: (message: Message) => void
  /** The id the client sent: its answer goes back with it. */
  readonly clientId: unknown
}

interface ClientStream {
  readonly res: ServerResponse
  readonly kept: KeptStream
  /** Bytes written since the stream last said it was full (write() false), until it drains. */
  unreadBytes: number
}

/** One client session: one upstream event stream and where its messages go. */
class Bridge {
  /** Client requests waiting for their answer, by the id the gateway gave them upstream (not a Map: src/in-flight.ts). */
  readonly waiting = new InFlightMap<string, Waiter>()
  private lastUpstreamId = 0
  readonly clientStreams = new Set<ClientStream>()
  /** Told when the session ends, so that requests waiting on it fail at once instead of timing out. */
  readonly onEnd = new InFlight<() => void>()
  id = ''
  /** The headers of the session's latest exchange: what a message the gateway sends on its own carries. */
  headers: Readonly<Record<string, string>> = {}
  lastUsedAt: number
  isClosed = false

  constructor (
    /** Path and query of the endpoint the server named (same origin as `url`, checked). */
    readonly endpoint: string,
    private readonly stream: Readable,
    private readonly toClient: (bridge: Bridge, message: Message) => void,
    now: number,
  ) {
    this.lastUsedAt = now
  }

  /**
   * An id for one client request on the upstream connection: unique on it, so two requests the
   * client numbered alike (concurrent POSTs) cannot take each other's answers.
   */
  nextUpstreamId (): string {
    return `portcullis-${++this.lastUpstreamId}`
  }

  /** A message from the upstream: an awaited answer (its client id restored), or one for the client's GET stream. */
  receive (message: Message): void {
    const isAnswer = typeof message.method !== 'string' && 'id' in message && ('result' in message || 'error' in message)
    if (!isAnswer) {
      this.toClient(this, message)
      return
    }
    const key = JSON.stringify(message.id)
    const waiter = this.waiting.get(key)
    // An answer nobody waits for (timed out, the client left, or never asked) is nobody's: a
    // client's GET stream is not the place for it.
    if (waiter === undefined) return
    this.waiting.delete(key)
    waiter.resolve({ ...message, id: waiter.clientId })
  }

  get isIdle (): boolean {
    return this.waiting.size === 0 && this.clientStreams.size === 0
  }

  /** Ends the upstream stream, the requests waiting on it and the client's GET streams. */
  close (): void {
    if (this.isClosed) return
    this.isClosed = true
    for (const ended of this.onEnd.values()) ended()
    this.stream.destroy()
    for (const { res } of this.clientStreams) res.end()
    this.clientStreams.clear()
  }
}

function keyOf (id: JsonRpcId): string {
  return JSON.stringify(id)
}

export class SseUpstream implements Upstream {
  readonly name: string
  readonly transport = 'sse'
  private readonly pool: Pool
  private readonly origin: string
  private readonly path: string
  private readonly headers: CallerHeaders
  private readonly bridges = new Map<string, Bridge>()
  private inFlight = 0
  /** Sessions being opened (initialize in flight): counted against maxSessions with the open ones. */
  private opening = 0
  private isClosed = false
  private lastProbe: { at: number, result: Promise<UpstreamHealth> } | undefined
  private readonly sweeper: NodeJS.Timeout

  constructor (
    private readonly config: SseServerConfig,
    private readonly owners: SessionOwners,
    private readonly keeper: StreamKeeper,
    private readonly log: FastifyBaseLogger,
    signer?: IdentitySigner,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.name = config.name
    this.headers = new CallerHeaders(config, signer, undefined)
    const url = new URL(config.url)
    this.origin = url.origin
    this.path = `${url.pathname}${url.search}`
    this.pool = new Pool(this.origin, { connections: null, connectTimeout: Math.min(config.timeoutMs, 10_000), headersTimeout: config.timeoutMs, bodyTimeout: config.timeoutMs })
    // Ended by the gateway (cap, unused, an administrator): the bridge leaves the map too, not just its stream.
    owners.onReclaim(this.name, async (sessionId) => {
      const bridge = this.bridges.get(sessionId)
      if (bridge !== undefined) this.endBridge(bridge)
    })
    this.sweeper = setInterval(() => this.sweep(), Math.min(SWEEP_MAX_INTERVAL_MS, Math.max(1_000, config.idleTimeoutMs / 4)))
    this.sweeper.unref()
  }

  async handle (ex: McpExchange): Promise<void> {
    if (this.isClosed) {
      sendRpcError(ex, new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN'))
      return
    }
    this.inFlight++
    try {
      await this.dispatch(ex)
    } catch (err) {
      const failure = err instanceof PortcullisError ? err : new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', undefined, { cause: err })
      if (!(err instanceof PortcullisError) || failure.status >= 500) {
        ex.log.warn({ server: this.name, err: { code: (err as { code?: string }).code, message: (err as Error).message } }, 'sse upstream request failed')
      }
      sendRpcError(ex, failure)
    } finally {
      this.inFlight--
    }
  }

  private async dispatch (ex: McpExchange): Promise<void> {
    const header = ex.headers['mcp-session-id']
    const sessionId = typeof header === 'string' ? header : undefined
    if (sessionId === undefined) {
      if (ex.method !== 'POST' || ex.inspection?.messages.some((m) => m.method === 'initialize') !== true) throw new PortcullisError('PORTCULLIS_ERR_SESSION_REQUIRED')
      return this.initialize(ex)
    }
    const bridge = await this.bridgeOf(sessionId, ex)
    if (ex.method === 'GET') return this.attachStream(bridge, ex)
    if (ex.method === 'DELETE') {
      this.endBridge(bridge)
      ex.res.writeHead(200).end()
      return
    }
    if (ex.inspection?.messages.some((m) => m.method === 'initialize') === true) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'this session is already initialized')
    const isUse = (ex.inspection?.requestIds.length ?? 0) > 0
    const release = this.owners.hold(this.name, sessionId, isUse)
    try {
      await this.exchange(bridge, ex, await this.headers.for(ex))
    } finally {
      release()
      bridge.lastUsedAt = this.now()
    }
  }

  /** The caller's own session, or 404 exactly as for one that does not exist. */
  private async bridgeOf (sessionId: string, ex: McpExchange): Promise<Bridge> {
    let check
    try {
      check = await this.owners.check(this.name, sessionId, ex.owner)
    } catch (err) {
      if (!isStoreUnavailable(err)) throw err
      throw storeUnavailableError()
    }
    const bridge = this.bridges.get(sessionId)
    if (check === 'not-found' || bridge === undefined || bridge.isClosed) throw new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND')
    return bridge
  }

  /** initialize: a new upstream stream, its endpoint, the answer; the client learns the session id only once its owner is recorded. */
  private async initialize (ex: McpExchange): Promise<void> {
    // servers[].maxSessions: all callers together (with auth off they are one user, whom no per-user cap holds).
    const open = this.bridges.size + this.opening
    if (open >= this.config.maxSessions) {
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_BUSY', `server "${this.name}" has ${open} sessions open (servers[].maxSessions is ${this.config.maxSessions}); retry shortly`, { headers: { 'retry-after': '2' } })
    }
    // servers[].maxSessionsPerUser: each session holds an upstream connection.
    const release = this.owners.admit(this.name, ex.owner.user, this.config.maxSessionsPerUser)
    if (release instanceof PortcullisError) throw release
    this.opening++
    try {
      const headers = await this.headers.for(ex)
      const bridge = await this.connect(headers)
      try {
        const id = randomUUID()
        bridge.id = id
        const answer = await this.exchangeAnswer(bridge, ex, headers)
        await this.owners.record(this.name, id, ex.owner)
        this.bridges.set(id, bridge)
        this.writeAnswer(ex, answer, { 'mcp-session-id': id })
      } catch (err) {
        bridge.close()
        throw err
      }
    } finally {
      this.opening--
      release()
    }
  }

  /** Opens the upstream event stream and waits (timeoutMs) for its endpoint event. */
  private async connect (headers: Readonly<Record<string, string>>): Promise<Bridge> {
    const { statusCode, headers: answered, body } = await this.pool.request({
      path: this.path,
      method: 'GET',
      headers: { ...headers, accept: 'text/event-stream' },
      headersTimeout: this.config.timeoutMs,
      // The stream is silent between messages for as long as the session lasts.
      bodyTimeout: 0,
    })
    const type = String(answered['content-type'] ?? '')
    if (statusCode !== 200 || !isEventStream(type)) {
      // Read to the end (bounded by timeoutMs), not destroyed: undici reports a destroyed body as an error.
      await body.dump().catch(() => {})
      this.log.warn({ server: this.name, status: statusCode, contentType: type.slice(0, 100) }, 'sse upstream refused its event stream')
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE')
    }
    return this.awaitEndpoint(body)
  }

  /** The session starts at the endpoint event (on url's origin, else refused); every later message event goes to it. */
  private awaitEndpoint (body: Readable): Promise<Bridge> {
    return new Promise((resolve, reject) => {
      const reader = new SseEventReader(this.config.maxMessageBytes)
      let bridge: Bridge | undefined
      let isFailed = false
      const fail = (reason: string): void => {
        clearTimeout(timer)
        body.destroy()
        // Destroying the stream closes it: the first reason is the one to tell.
        if (bridge === undefined && !isFailed) {
          isFailed = true
          this.log.warn({ server: this.name, reason }, 'sse upstream stream failed before its endpoint event')
          reject(new PortcullisError(reason === 'timeout' ? 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT' : 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE'))
        }
      }
      const timer = setTimeout(() => fail('timeout'), this.config.timeoutMs)
      body.on('data', (chunk: Buffer) => {
        let events
        try {
          events = reader.push(chunk)
        } catch (err) {
          if ((err as { code?: string }).code !== SSE_EVENT_TOO_LARGE) throw err
          // servers[].maxMessageBytes: a stream that never ends its event must not grow without bound.
          this.log.error({ server: this.name, maxMessageBytes: this.config.maxMessageBytes }, 'sse upstream sent an event larger than maxMessageBytes; its session ends')
          if (bridge === undefined) return fail('message too large')
          // Requests waiting on the session fail at once (a JSON-RPC error to each client).
          this.endBridge(bridge)
          return
        }
        for (const event of events) {
          if (bridge === undefined && event.event === 'endpoint') {
            const endpoint = this.sameOriginEndpoint(event.data)
            if (endpoint === undefined) return fail('endpoint on another origin')
            clearTimeout(timer)
            bridge = new Bridge(endpoint, body, (b, message) => this.toClient(b, message), this.now())
            resolve(bridge)
          } else if (bridge !== undefined && event.event === 'message') {
            for (const message of parseMessages(event.data)) bridge.receive(message)
          }
        }
      })
      // Every error, not just the first: closing the session destroys the body, which undici reports as one.
      body.on('error', (err: Error) => fail(err.message))
      body.once('close', () => {
        if (bridge === undefined) fail('stream ended')
        else this.lost(bridge)
      })
    })
  }

  /** The endpoint as a path for the Pool, or undefined (logged) when it names another origin. */
  private sameOriginEndpoint (data: string): string | undefined {
    const path = sameOriginPath(data, this.config.url)
    if (path === undefined) this.log.warn({ server: this.name, endpointOrigin: originOf(data, this.config.url).slice(0, 200) }, 'sse upstream endpoint names another origin; refused')
    return path
  }

  /** The client's messages to the endpoint; its requests' answers back as the POST's answer (202 when it carried none). */
  private async exchange (bridge: Bridge, ex: McpExchange, headers: Readonly<Record<string, string>>): Promise<void> {
    const extra = ex.edit?.extra ?? []
    if ((ex.inspection?.requestIds.length ?? 0) === 0) {
      await this.postEach(bridge, messagesOf(ex.body), ex.traceHeaders === undefined ? headers : { ...headers, ...ex.traceHeaders })
      if (extra.length === 0) ex.res.writeHead(202).end()
      else this.writeAnswer(ex, extra)
      return
    }
    this.writeAnswer(ex, await this.exchangeAnswer(bridge, ex, headers))
  }

  /** POSTs the client's messages and waits for every request's answer (timeoutMs, or the client leaving). */
  private async exchangeAnswer (bridge: Bridge, ex: McpExchange, headers: Readonly<Record<string, string>>): Promise<Message | Message[]> {
    const { outgoing, upstreamIds, answers } = this.numbered(bridge, messagesOf(ex.body))
    let timer: NodeJS.Timeout | undefined
    let ended: Entry<() => void> | undefined
    const abandoned = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT')), this.config.timeoutMs)
      ended = bridge.onEnd.add(() => reject(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE')))
      // The client left: nobody to answer (its answers, when they come, are dropped).
      ex.res.once('close', () => reject(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', 'the client left')))
    })
    // Whichever way it goes, nobody else waits on this promise.
    abandoned.catch(() => {})
    try {
      await this.postEach(bridge, outgoing, ex.traceHeaders === undefined ? headers : { ...headers, ...ex.traceHeaders })
      const messages = await Promise.race([Promise.all(answers), abandoned])
      return ex.inspection?.isBatch === true ? messages : messages[0] as Message
    } finally {
      clearTimeout(timer)
      if (ended !== undefined) bridge.onEnd.delete(ended)
      for (const id of upstreamIds) bridge.waiting.delete(keyOf(id))
    }
  }

  /** The client's requests, each under an id of the bridge's own, with the promise of its answer. */
  private numbered (bridge: Bridge, messages: readonly Message[]): { outgoing: Message[], upstreamIds: string[], answers: Array<Promise<Message>> } {
    const upstreamIds: string[] = []
    const answers: Array<Promise<Message>> = []
    const outgoing = messages.map((message) => {
      if (typeof message.method !== 'string' || !('id' in message)) return message
      const id = bridge.nextUpstreamId()
      upstreamIds.push(id)
      answers.push(new Promise<Message>((resolve) => bridge.waiting.set(keyOf(id), { resolve, clientId: message.id })))
      return { ...message, id }
    })
    return { outgoing, upstreamIds, answers }
  }

  /** One POST per message: a batch is split (servers of the 2024-11-05 era often take one message a POST). */
  private async postEach (bridge: Bridge, messages: readonly Message[], headers: Readonly<Record<string, string>>): Promise<void> {
    for (const message of messages) await this.post(bridge, Buffer.from(JSON.stringify(message)), headers)
  }

  private async post (bridge: Bridge, body: Buffer | undefined, headers: Readonly<Record<string, string>>): Promise<void> {
    bridge.headers = headers
    const answer = await this.pool.request({
      path: bridge.endpoint,
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: body ?? null,
      headersTimeout: this.config.timeoutMs,
      bodyTimeout: this.config.timeoutMs,
    })
    await answer.body.dump()
    if (answer.statusCode >= 300) {
      // A 401/403 is the gateway's own credential refused: a 502, never a 401 to the client.
      this.log.warn({ server: this.name, status: answer.statusCode }, 'sse upstream refused a message')
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE')
    }
  }

  /** The answer as JSON, edited as the route asked (lists filtered, results masked, batch errors added). */
  private writeAnswer (ex: McpExchange, answer: unknown, headers: Record<string, string> = {}): void {
    let body: Buffer = Buffer.from(JSON.stringify(answer))
    if (ex.edit !== undefined) body = editJsonBody(body, ex.edit)
    writeJson(ex.res, 200, body, headers)
  }

  /** The client's GET: server-initiated messages of the session from now on. */
  private attachStream (bridge: Bridge, ex: McpExchange): Promise<void> {
    const { res } = ex
    res.writeHead(200, SSE_HEADERS)
    res.flushHeaders()
    const stream: ClientStream = { res, kept: this.keeper.add(res), unreadBytes: 0 }
    res.on('drain', () => { stream.unreadBytes = 0 })
    bridge.clientStreams.add(stream)
    const release = this.owners.hold(this.name, bridge.id, true)
    return new Promise((resolve) => {
      res.once('close', () => {
        bridge.clientStreams.delete(stream)
        release()
        bridge.lastUsedAt = this.now()
        resolve()
      })
    })
  }

  /** A notification or server request: on one of the client's GET streams (Streamable HTTP: each message on one stream only). */
  private toClient (bridge: Bridge, message: Message): void {
    const stream = bridge.clientStreams.values().next().value
    if (stream === undefined) {
      if (typeof message.method === 'string' && 'id' in message) this.refuseServerRequest(bridge, message)
      else this.log.debug({ server: this.name, method: message.method }, 'sse upstream message with no client stream open; dropped')
      return
    }
    // The upstream stream also carries the session's answers, so it is never paused for one slow
    // reader: a client stream with more than one whole message unread since it was full is
    // closed instead (the client opens a new GET), rather than buffered for without bound.
    if (stream.unreadBytes > this.config.maxMessageBytes) {
      this.log.warn({ server: this.name, session: bridge.id.slice(0, 8), unreadBytes: stream.unreadBytes }, 'sse client stream not reading; closed')
      bridge.clientStreams.delete(stream)
      stream.res.destroy()
      return
    }
    const event = sseMessageEvent(message)
    if (!stream.res.write(event)) stream.unreadBytes += Buffer.byteLength(event)
    this.keeper.wrote(stream.kept, event)
  }

  /**
   * A server request (sampling, elicitation, roots) with no client stream to carry it: answered
   * with an error at once (JSON-RPC 2.0 section 5: every request gets a response), so the server
   * does not wait out its own timeout while the client's call waits on it.
   */
  private refuseServerRequest (bridge: Bridge, message: Message): void {
    this.log.info({ server: this.name, method: message.method }, 'sse upstream request with no client stream open; refused')
    const refusal = { jsonrpc: '2.0', id: message.id, error: { code: -32603, message: `Portcullis cannot deliver ${String(message.method)}: the client has no stream open for server requests` } }
    this.post(bridge, Buffer.from(JSON.stringify(refusal)), bridge.headers).catch((err: Error) => {
      this.log.warn({ server: this.name, err: { message: err.message } }, 'sse upstream refusal could not be sent')
    })
  }

  /** The upstream stream ended: the session is over (the client's next request gets 404 and starts again). */
  private lost (bridge: Bridge): void {
    if (bridge.isClosed) return
    this.endBridge(bridge)
    this.log.info({ server: this.name, session: bridge.id.slice(0, 8) }, 'sse upstream stream ended')
  }

  private endBridge (bridge: Bridge): void {
    bridge.close()
    if (this.bridges.get(bridge.id) === bridge) {
      this.bridges.delete(bridge.id)
      this.owners.forget(this.name, bridge.id)
    }
  }

  /** Sessions with nothing in flight and no stream open for idleTimeoutMs end (their upstream connection closes). */
  sweep (): void {
    const now = this.now()
    for (const bridge of [...this.bridges.values()]) {
      if (bridge.isIdle && now - bridge.lastUsedAt >= this.config.idleTimeoutMs) this.endBridge(bridge)
    }
  }

  load (): UpstreamLoad {
    let streams = 0
    for (const bridge of this.bridges.values()) streams += bridge.clientStreams.size
    return { streams, exchanges: this.inFlight }
  }

  probe (): Promise<UpstreamHealth> {
    const now = Date.now()
    if (this.lastProbe === undefined || now - this.lastProbe.at > READY_PROBE_CACHE_MS) {
      this.lastProbe = { at: now, result: probeTcp(this.name, this.transport, this.config.url) }
    }
    return this.lastProbe.result.then((health) => ({ ...health, sessions: this.bridges.size }))
  }

  /** Whether this instance bridges the session (after a reload, a draining one may: reload/upstream-pool.ts). */
  holdsSession (sessionId: string): boolean {
    return this.bridges.has(sessionId)
  }

  liveSessions (): UpstreamSession[] {
    // Its own only: after a reload changed the definition, a draining instance and the new one share the name.
    return this.owners.sessionsOn(this.name).filter((session) => this.bridges.has(session.sessionId))
  }

  async endUser (userId: string): Promise<void> {
    for (const session of this.owners.sessionsOn(this.name)) {
      if (session.user === userId) this.owners.end(this.name, session.sessionId, 'the user was revoked or offboarded')
    }
  }

  async endSession (sessionId: string, reason: string): Promise<boolean> {
    return this.owners.end(this.name, sessionId, reason)
  }

  closeStreams (): void {
    for (const bridge of this.bridges.values()) {
      for (const { res } of bridge.clientStreams) res.end()
    }
  }

  async close (): Promise<void> {
    this.isClosed = true
    clearInterval(this.sweeper)
    for (const bridge of [...this.bridges.values()]) this.endBridge(bridge)
    await this.pool.destroy()
  }
}

/** The JSON-RPC message objects of one upstream event (a batch answer is an array of them); anything else is none (validated at the edge). */
function parseMessages (data: string): Message[] {
  let value: unknown
  try {
    value = JSON.parse(data)
  } catch {
    return []
  }
  return (Array.isArray(value) ? value : [value]).filter(isMessage)
}

function isMessage (value: unknown): value is Message {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** The client's body as messages (the route validated it as JSON-RPC: one message or a batch). */
function messagesOf (body: Buffer | undefined): Message[] {
  return body === undefined ? [] : parseMessages(body.toString('utf8'))
}

/**
 * The endpoint event's URI, resolved against `url` (2024-11-05: "a URI for the client to use"),
 * as a path — or undefined when it names another origin (RFC 6454: scheme, host, port; WHATWG
 * URL parsing, so `//host`, backslashes, case and default ports are read as a browser reads
 * them): the gateway's POSTs (configured headers, signed identity) never go where the server's
 * operator did not configure. Userinfo is not part of the origin and is not kept.
 */
export function sameOriginPath (data: string, url: string): string | undefined {
  let target: URL
  try {
    target = new URL(data.trim(), url)
  } catch {
    return undefined
  }
  if (target.origin !== new URL(url).origin) return undefined
  return `${target.pathname}${target.search}`
}

/** The origin an endpoint names, for the log (never its userinfo, path or query). */
function originOf (data: string, url: string): string {
  try {
    return new URL(data.trim(), url).origin
  } catch {
    return 'not a URI'
  }
}
