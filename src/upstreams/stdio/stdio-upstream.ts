/**
 * stdio upstreams: unmodified stdio MCP servers spawned by the gateway and
 * bridged to Streamable HTTP.
 *
 * 2025-era clients (initialize + Mcp-Session-Id) get sessions. Each session
 * is bound to the user who created it and runs on a Channel:
 *   isolation session  one child per session, messages verbatim
 *   isolation user     one child per user, shared by that user's sessions
 *   isolation shared   one child for everyone
 * On user/shared channels a child's one real `initialize` handshake is made
 * with the first session's request; later sessions asking the same protocol
 * version are answered from it (another version gets a child of its own).
 *
 * 2026-07-28 clients (no sessions, per-request _meta) are served statelessly
 * by a child that speaks that revision: one per user (one for everyone when
 * isolation is shared). The era is found once with a `server/discover` probe
 * on a child started for the caller (the first exchange pins a child's era),
 * which then serves that caller only. When the
 * server only speaks the 2025 era, a modern request gets the spec's fallback
 * signal: HTTP 400 whose body is not a modern JSON-RPC error, so the client
 * falls back to `initialize`.
 *
 * One user cannot take every slot (issue 12): `maxProcessesPerUser` caps both
 * the user's processes and the user's open sessions. Under isolation session
 * each session is a process, so the two are one count; under isolation user
 * the user's sessions share the user's process(es) (one per protocol version
 * asked, and one for stateless requests), and the cap bounds both how many
 * sessions they hold and how many such processes run; under isolation shared
 * it bounds the user's sessions. At the cap the user's own oldest idle session
 * (or, for processes, an idle process of theirs no session uses) is ended
 * first; with nothing idle the user gets 429. A session that sends no request
 * after `initialize` is ended after idleTimeoutMs / 10.
 *
 * This class routes: sessions, eras, GET streams and exchanges onto channels.
 * The processes under the channels (spawning, warm ones, the crash pause, the
 * process caps, retirement) are the ProcessPool's (process-pool.ts).
 */
import { initializeDeclaresUrlElicitation } from '../../mcp/capabilities.js'
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError } from '../../errors.js'
import type { StdioServerConfig } from '../../config/schema.js'
import type { LinkedTokenSource } from '../upstream-credentials.js'
import { ANONYMOUS, type UserIdentity } from '../../identity.js'
import { UNUSED_SESSION_IDLE_DIVISOR } from '../../config/defaults.js'
import { checkProtocolVersionHeader, isModernRevision, FIRST_MODERN_REVISION, KNOWN_REVISIONS } from '../../mcp/headers.js'
import { META_PROTOCOL_VERSION, type McpMessage } from '../../mcp/jsonrpc.js'
import type { McpExchange, Upstream, UpstreamHealth, UpstreamLoad, UpstreamSession } from '../types.js'
import { ownerKey, ownerOf, type SessionOwner } from '../session-owners.js'
import type { KeptStream, StreamKeeper } from '../stream-keeper.js'
import { sendRpcError, writeJson } from '../respond.js'
import { Channel, type ChannelClient, type DeliveryKind, type ReplySink } from './channel.js'
import { checkServerCommand } from './resolve-command.js'
import type { McpChild } from './child-process.js'
import { atUserCap, ProcessPool } from './process-pool.js'
import { EditingSink, isStreamSink, PostReply, SSE_HEADERS, sseEvent, unreadBytesOf } from './reply.js'
import type { ResponseEdit } from '../response-edit.js'
import { InFlight } from '../../in-flight.js'

/** Messages kept for a session that has no open stream, until it opens one. */
const MAX_BACKLOG_MESSAGES = 100
const SWEEP_MIN_INTERVAL_MS = 1_000
const SWEEP_MAX_INTERVAL_MS = 30_000
type Era = 'legacy' | 'modern'

export interface StdioUpstreamOptions {
  readonly config: StdioServerConfig
  readonly log: FastifyBaseLogger
  readonly version: string
  /** Injectable clock for idle expiry (tests drive it instead of sleeping). */
  readonly now?: () => number
  /** A process exited without being asked to (a crash, or a server quitting by itself). */
  readonly onUnexpectedExit?: () => void
  /** Told when 2025-era sessions open, are used and end (the replicas' session directory). */
  readonly sessionHooks?: SessionHooks
  /** Keep-alive comments on idle GET streams. */
  readonly streamKeeper?: StreamKeeper
  /** How often a pending handshake logs "still starting" (tests use a short one: no fake timers across processes). */
  readonly startingLogIntervalMs?: number
  /** `${user.credentials.<server>}` in env: the caller's linked token at that server (upstreamAuth). */
  readonly linkedToken?: LinkedTokenSource
}

export interface SessionHooks {
  /** Settles once the session is findable by other replicas (never rejects). */
  opened: (server: string, sessionId: string) => Promise<void>
  used: (server: string, sessionId: string) => void
  closed: (server: string, sessionId: string) => void
}

function withEdit (reply: PostReply, edit: ResponseEdit | undefined): PostReply | EditingSink {
  return edit === undefined || edit.watch.size === 0 ? reply : new EditingSink(reply, edit)
}

const isOpen = (reply: PostReply): boolean => reply.isOpen

function headerValue (headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/** A 2025-era MCP session: its id, owner, channel and server->client stream. */
class LegacySession implements ChannelClient {
  readonly label: string
  lastActivityAt: number
  readonly openedAt: number
  /** A request (or a GET stream) came after initialize; until then the session is reclaimed early. */
  isUsed = false
  isAlive = true
  /** POST answers in flight (a list, not a Set: src/in-flight.ts says why). */
  readonly activeReplies = new InFlight<PostReply>()
  private stream: ServerResponse | undefined
  /** Keep-alive comments while the GET stream is idle. */
  private keeper: StreamKeeper | undefined
  private kept: KeptStream | undefined
  private readonly backlog: string[] = []

  constructor (
    readonly id: string,
    readonly user: UserIdentity,
    /** The user and client that opened it (ownerKey): nobody else may use it. */
    readonly owner: string,
    readonly channel: Channel,
    now: number,
    private readonly onLost: (session: LegacySession) => void,
    /** The GET stream's bound: more than this unread and the client is not reading (see deliver). */
    private readonly reading: { readonly maxUnreadBytes: number, readonly log: FastifyBaseLogger },
  ) {
    this.label = `session ${id.slice(0, 8)}`
    this.lastActivityAt = now
    this.openedAt = now
  }

  /** No request in flight and no open GET stream. */
  get isIdle (): boolean {
    return !this.hasOpenStream && this.activeReplies.find(isOpen) === undefined
  }

  deliver (json: string, kind: DeliveryKind, hint: ReplySink | undefined): void {
    const hinted = isStreamSink(hint) && hint.isOpen ? hint : undefined
    // Requests and logs raised while one of our calls runs belong on that call's stream.
    if (kind === 'related' && hinted !== undefined) return hinted.push(json)
    if (this.stream !== undefined && !this.stream.destroyed) {
      const event = sseEvent(json)
      const stream = this.stream
      stream.write(event)
      if (this.kept !== undefined) this.keeper?.wrote(this.kept, event)
      // The process cannot wait for one client (others share it): a client with more than one
      // whole message unread is not reading, and its stream ends; it opens a new one, and what
      // comes meanwhile waits in the bounded backlog.
      const unread = unreadBytesOf(stream)
      if (unread > this.reading.maxUnreadBytes) {
        this.reading.log.warn({ session: this.id.slice(0, 8), unreadBytes: unread }, 'stdio client stream not reading; closed')
        this.stream = undefined
        stream.destroy()
      }
      return
    }
    const anyOpen: { push: (json: string) => void } | undefined = hinted ?? this.activeReplies.find(isOpen)
    if (anyOpen !== undefined) return anyOpen.push(json)
    if (this.backlog.length >= MAX_BACKLOG_MESSAGES) this.backlog.shift()
    this.backlog.push(json)
  }

  onChannelClosed (): void {
    this.isAlive = false
    this.endStream()
    this.onLost(this)
  }

  /** The GET stream; a new one replaces an old one (a reconnecting client). */
  openStream (res: ServerResponse, keeper: StreamKeeper | undefined): void {
    this.endStream()
    res.writeHead(200, SSE_HEADERS)
    res.flushHeaders()
    this.stream = res
    this.keeper = keeper
    this.kept = keeper?.add(res)
    for (const json of this.backlog.splice(0)) res.write(sseEvent(json))
    res.once('close', () => { if (this.stream === res) this.stream = undefined })
  }

  get hasOpenStream (): boolean {
    return this.stream !== undefined && !this.stream.destroyed
  }

  endStream (): void {
    const stream = this.stream
    this.stream = undefined
    if (stream !== undefined && !stream.writableEnded) stream.end()
  }
}

/** One 2026-07-28 request: its messages go on its own response stream only. */
class ModernRequest implements ChannelClient {
  readonly label = 'stateless request'
  constructor (private readonly reply: PostReply) {}

  deliver (json: string, kind: DeliveryKind): void {
    // List changes reach 2026 clients through subscriptions/listen, not through unrelated calls.
    if (kind === 'related') this.reply.push(json)
  }

  onChannelClosed (): void {}
}

/** Collects the one answer to a request the gateway forwards on a client's behalf (initialize). */
function captureSink (): { sink: ReplySink, answer: Promise<string> } {
  let resolve: (json: string) => void = () => {}
  let reject: (err: PortcullisError) => void = () => {}
  const answer = new Promise<string>((res, rej) => { resolve = res; reject = rej })
  const sink: ReplySink = {
    isOpen: true,
    deliver: (json, _id, isFinal) => { if (isFinal) resolve(json) },
    fail: (err) => reject(err),
    abandon: () => reject(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE')),
  }
  return { sink, answer }
}

export class StdioUpstream implements Upstream {
  readonly name: string
  readonly transport = 'stdio'
  private readonly config: StdioServerConfig
  private readonly log: FastifyBaseLogger
  private readonly now: () => number
  private readonly sessions = new Map<string, LegacySession>()
  /** Legacy channels of isolation user/shared, and modern channels, by key. */
  private readonly sharedChannels = new Map<string, Promise<Channel>>()
  private readonly modernChannels = new Map<string, Promise<Channel>>()
  /** Per user: sessions being opened, not yet in `sessions`. */
  private readonly opening = new Map<string, number>()
  /** The processes: spawning, warm ones, crash pause, caps, retirement. */
  private readonly pool: ProcessPool
  private era: Era | undefined
  private eraProbe: Promise<Era> | undefined
  /** Stateless (2026-era) requests being answered: they belong to no session, load() counts them. */
  private modernExchanges = 0
  private readonly sweeper: NodeJS.Timeout

  constructor (private readonly options: StdioUpstreamOptions) {
    this.config = options.config
    this.name = options.config.name
    this.log = options.log
    this.now = options.now ?? (() => Date.now())
    // Before any timer: a start that cannot honour user/group, or lacks linked credentials, fails here.
    this.pool = new ProcessPool({
      config: this.config,
      log: this.log,
      now: this.now,
      ...(options.onUnexpectedExit === undefined ? {} : { onUnexpectedExit: options.onUnexpectedExit }),
      ...(options.startingLogIntervalMs === undefined ? {} : { startingLogIntervalMs: options.startingLogIntervalMs }),
      ...(options.linkedToken === undefined ? {} : { linkedToken: options.linkedToken }),
      releaseIdleOf: (user) => this.releaseIdleOf(user),
    })
    const interval = Math.min(SWEEP_MAX_INTERVAL_MS, Math.max(SWEEP_MIN_INTERVAL_MS, Math.floor(this.config.idleTimeoutMs / 2)))
    this.sweeper = setInterval(() => this.sweep(), interval)
    this.sweeper.unref()
    this.pool.refillWarm()
  }

  async handle (ex: McpExchange): Promise<void> {
    try {
      if (this.pool.isClosed) throw new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN')
      // 2025 era: the gateway is this server's HTTP side, so it answers for the version header.
      if (ex.inspection?.modernVersion === undefined) checkProtocolVersionHeader(ex.headers)
      const sessionId = headerValue(ex.headers, 'mcp-session-id')
      if (ex.method === 'POST') await this.handlePost(ex, sessionId)
      else if (ex.method === 'GET') this.handleGet(ex, sessionId)
      else await this.handleDelete(ex, sessionId)
    } catch (err) {
      const failure = err instanceof PortcullisError ? err : new PortcullisError('PORTCULLIS_ERR_INTERNAL', undefined, { cause: err })
      if (failure.status >= 500) ex.log.warn({ server: this.name, err: failure.cause ?? failure, code: failure.code }, 'stdio request failed')
      sendRpcError(ex, failure)
    }
  }

  // --- 2025 era: sessions ---------------------------------------------------

  private session (sessionId: string, owner: SessionOwner): LegacySession {
    const session = this.sessions.get(sessionId)
    // Another user's session id is as good as unknown: no hint that it exists.
    if (session === undefined || !session.isAlive || session.owner !== ownerKey(owner)) {
      throw new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND')
    }
    session.lastActivityAt = this.now()
    this.options.sessionHooks?.used(this.name, session.id)
    return session
  }

  /** Whether a session with this id lives here (whoever owns it). */
  holdsSession (sessionId: string): boolean {
    return this.sessions.get(sessionId)?.isAlive === true
  }

  private async handlePost (ex: McpExchange, sessionId: string | undefined): Promise<void> {
    const inspection = ex.inspection
    if (inspection === undefined) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST')
    const first = inspection.messages[0]
    if (sessionId !== undefined) return this.postToSession(this.session(sessionId, ex.owner), ex)
    // Whatever the era or isolation, a caller lacking a per-user value is refused before any process starts for them.
    this.pool.requireUserValues(ex.user)
    if (!inspection.isBatch && inspection.modernVersion !== undefined) return this.handleModern(ex)
    if (!inspection.isBatch && first?.kind === 'request' && first.method === 'initialize') return this.initialize(ex, first)
    throw new PortcullisError('PORTCULLIS_ERR_SESSION_REQUIRED')
  }

  private async postToSession (session: LegacySession, ex: McpExchange): Promise<void> {
    const inspection = ex.inspection
    if (inspection === undefined) return
    if (inspection.messages.some((m) => m.method === 'initialize')) {
      throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'this session is already initialized')
    }
    if (inspection.requestIds.length > 0) session.isUsed = true
    const raw = inspection.isBatch ? undefined : ex.body?.toString('utf8')
    const extra = ex.edit?.extra ?? []
    const ids = [...inspection.requestIds, ...extra.map((e) => e.id)]
    const reply = ids.length > 0 ? this.boundedReply(ex, new PostReply(ex, ids, inspection.isBatch || extra.length > 0)) : undefined
    const active = reply === undefined ? undefined : session.activeReplies.add(reply)
    const sink = reply === undefined ? undefined : withEdit(reply, ex.edit)
    const { channel } = session
    // The gateway's own answers for refused batch members go first.
    for (const error of extra) reply?.deliver(JSON.stringify(error), error.id, true)
    for (const m of inspection.messages) {
      if (m.kind === 'request' && sink !== undefined) channel.forwardRequest(session, m.value, raw, sink)
      else if (m.kind === 'notification') {
        // On a shared child the gateway already completed the one handshake.
        if (m.method === 'notifications/initialized' && channel.initializeResult !== undefined) continue
        channel.forwardNotification(session, m.value, raw)
      } else if (m.kind === 'response') channel.forwardResponse(session, m.value, raw)
    }
    if (reply === undefined) {
      ex.res.writeHead(202).end()
      return
    }
    try {
      await reply.done()
    } finally {
      if (active !== undefined) session.activeReplies.delete(active)
    }
  }

  private async initialize (ex: McpExchange, first: McpMessage): Promise<void> {
    const release = await this.admitSession(ex.user)
    try {
      await this.openSession(ex, first)
    } finally {
      release()
    }
  }

  /** The user's live sessions, least recently used first. */
  private sessionsOf (user: UserIdentity): LegacySession[] {
    return [...this.sessions.values()].filter((s) => s.isAlive && s.user.id === user.id).sort((a, b) => a.lastActivityAt - b.lastActivityAt)
  }

  /**
   * maxProcessesPerUser for sessions: at the cap the user's own oldest idle session ends; with
   * none idle, 429. Other users' sessions are never touched. Returns the release of the slot.
   */
  private async admitSession (user: UserIdentity): Promise<() => void> {
    // Authorization off: every caller is the one anonymous user; only maxProcesses applies.
    if (user.id === ANONYMOUS.id) return () => {}
    for (;;) {
      const own = this.sessionsOf(user)
      const opening = this.opening.get(user.id) ?? 0
      if (own.length + opening < this.pool.maxPerUser) break
      const idle = own.find((s) => s.isIdle)
      if (idle === undefined) throw atUserCap(this.log, this.name, this.pool.maxPerUser, own.length + opening, 'session')
      await this.closeSession(idle, 'the user reached maxProcessesPerUser')
    }
    this.opening.set(user.id, (this.opening.get(user.id) ?? 0) + 1)
    let isReleased = false
    return () => {
      if (isReleased) return
      isReleased = true
      const left = (this.opening.get(user.id) ?? 1) - 1
      if (left <= 0) this.opening.delete(user.id)
      else this.opening.set(user.id, left)
    }
  }

  /**
   * The pool's question when the user is at maxProcessesPerUser for processes: end what of
   * theirs is idle (their oldest idle session under isolation session; a process of theirs no
   * session and no request uses otherwise). False when nothing is idle (the pool answers 429).
   */
  private async releaseIdleOf (user: UserIdentity): Promise<boolean> {
    const session = this.config.isolation === 'session' ? this.sessionsOf(user).find((s) => s.isIdle) : undefined
    if (session !== undefined) {
      await this.closeSession(session, 'the user reached maxProcessesPerUser')
      return true
    }
    return this.retireIdleChannelOf(user)
  }

  /** Retires one of the user's shared-channel or stateless processes that nothing uses; false if none. */
  private async retireIdleChannelOf (user: UserIdentity): Promise<boolean> {
    for (const map of [this.sharedChannels, this.modernChannels]) {
      for (const [key, promise] of map) {
        const channel = await promise.catch(() => undefined)
        if (channel === undefined || !channel.isAlive || this.pool.userOf(channel.child) !== user.id) continue
        if (channel.clients.size > 0 || channel.inFlight > 0) continue
        for (const [other, p] of map) if (p === promise) map.delete(other)
        if (map.get(key) === promise) map.delete(key)
        await this.retire(channel)
        return true
      }
    }
    return false
  }

  /** How much a client may leave unread on a stream of this server's: one whole message (maxMessageBytes). */
  private readingBound (ex: McpExchange): { readonly maxUnreadBytes: number, readonly log: FastifyBaseLogger } {
    return { maxUnreadBytes: this.config.maxMessageBytes, log: ex.log.child({ server: this.name }) }
  }

  /** A POST's answer stream, cut when its client leaves more than one whole message unread (reply.ts). */
  private boundedReply (ex: McpExchange, reply: PostReply): PostReply {
    reply.maxUnreadBytes = this.config.maxMessageBytes
    reply.onNotReading = (unreadBytes) => { ex.log.warn({ server: this.name, unreadBytes }, 'stdio client answer stream not reading; closed') }
    return reply
  }

  private async openSession (ex: McpExchange, first: McpMessage): Promise<void> {
    const user = ex.user
    let session: LegacySession
    let answer: string
    if (this.config.isolation === 'session') {
      const child = await this.pool.acquire(user, 'session', initializeDeclaresUrlElicitation(first))
      const channel = this.newChannel(child, true)
      session = new LegacySession(randomUUID(), user, ownerKey(ex.owner), channel, this.now(), (s) => this.forget(s), this.readingBound(ex))
      channel.attach(session)
      const handshake = captureSink()
      // The handshake's only bound is the start-up timeout (a cold npx can take a while).
      channel.forwardRequest(session, first.value, ex.body?.toString('utf8'), handshake.sink, 0)
      try {
        answer = await this.pool.withStartupTimeout(handshake.answer, channel.child)
      } catch (err) {
        void this.retire(channel)
        throw err
      }
      if (!answer.includes('"result"')) {
        // The server refused the handshake: its error goes to the client, the process goes away.
        void this.retire(channel)
        return writeJson(ex.res, 200, answer)
      }
      this.pool.recordSuccess()
    } else {
      const channel = await this.sharedChannel(user, first)
      session = new LegacySession(randomUUID(), user, ownerKey(ex.owner), channel, this.now(), (s) => this.forget(s), this.readingBound(ex))
      channel.attach(session)
      answer = JSON.stringify({ jsonrpc: '2.0', id: first.id, result: channel.initializeResult })
    }
    this.sessions.set(session.id, session)
    // On record before the client learns the id: its next request may reach another replica.
    await this.options.sessionHooks?.opened(this.name, session.id)
    this.log.debug({ server: this.name, session: session.label, pid: session.channel.child.pid }, 'stdio session opened')
    writeJson(ex.res, 200, answer, { 'mcp-session-id': session.id })
  }

  /**
   * The child (and its one handshake) behind isolation user/shared sessions
   * that ask for this protocol version.
   *
   * MCP basic/lifecycle "Version Negotiation": a server that supports the
   * requested version MUST answer with it, otherwise with another version it
   * supports. Only the child knows what it supports, and a stdio connection
   * has exactly one handshake, so one child's answer is only known for the
   * version it was asked. A session asking another version therefore gets a
   * child (and handshake) of its own: every session is told the child's
   * answer to its own request, never another session's. The child also
   * supports the version it answered, so its connection serves sessions
   * asking that version too. Capabilities, serverInfo and instructions are
   * the child's and are shared. The cost is a process per distinct version
   * asked (in practice the few published revisions), bounded by maxProcesses
   * like every other process.
   */
  private sharedChannel (user: UserIdentity, first: McpMessage): Promise<Channel> {
    const owner = this.config.isolation === 'user' ? `user:${user.id}` : 'shared'
    const requested = first.params?.protocolVersion
    // Versions the gateway does not know share one key: a child answers every version it does not
    // support with the same one of its own, and a client must not start a process per made-up string.
    const versionKey = (version: unknown): string => `${owner}|${typeof version === 'string' && KNOWN_REVISIONS.has(version) ? version : '?'}`
    return this.reuseOrCreate(this.sharedChannels, versionKey(requested), async () => {
      const child = await this.pool.acquire(user, this.config.isolation === 'user' ? 'user' : 'shared', initializeDeclaresUrlElicitation(first))
      const channel = this.newChannel(child, false)
      let response: Record<string, unknown>
      try {
        response = await this.pool.withStartupTimeout(channel.call(first.value as Record<string, unknown>, this.config.startupTimeoutMs), channel.child)
      } catch (err) {
        void this.retire(channel)
        throw err
      }
      const result = response.result
      if (result === null || typeof result !== 'object') {
        void this.retire(channel)
        throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `MCP server "${this.name}" refused initialize`)
      }
      channel.initializeResult = result as Record<string, unknown>
      const answered = channel.initializeResult.protocolVersion
      if (answered !== requested && !this.sharedChannels.has(versionKey(answered))) this.sharedChannels.set(versionKey(answered), Promise.resolve(channel))
      channel.forwardNotification({ label: 'gateway', deliver: () => {}, onChannelClosed: () => {} }, { jsonrpc: '2.0', method: 'notifications/initialized' }, undefined)
      this.pool.recordSuccess()
      return channel
    })
  }

  private handleGet (ex: McpExchange, sessionId: string | undefined): void {
    if (sessionId === undefined) throw new PortcullisError('PORTCULLIS_ERR_SESSION_REQUIRED')
    const session = this.session(sessionId, ex.owner)
    session.isUsed = true
    session.openStream(ex.res, this.options.streamKeeper)
  }

  private async handleDelete (ex: McpExchange, sessionId: string | undefined): Promise<void> {
    if (sessionId === undefined) throw new PortcullisError('PORTCULLIS_ERR_SESSION_REQUIRED')
    const session = this.session(sessionId, ex.owner)
    await this.closeSession(session, 'deleted by the client')
    ex.res.writeHead(200).end()
  }

  private forget (session: LegacySession): void {
    if (this.sessions.delete(session.id)) this.options.sessionHooks?.closed(this.name, session.id)
  }

  private async closeSession (session: LegacySession, reason: string): Promise<void> {
    if (this.sessions.delete(session.id)) this.options.sessionHooks?.closed(this.name, session.id)
    session.isAlive = false
    session.endStream()
    this.log.debug({ server: this.name, session: session.label, reason }, 'stdio session closed')
    // Its requests in flight are answered now, as a request to an ended session would be.
    const ended = new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND', `the session ended (${reason}) while this request was in flight`)
    if (this.config.isolation === 'session') await this.retire(session.channel, ended)
    else session.channel.detach(session, ended)
  }

  // --- 2026-07-28: stateless requests ----------------------------------------

  private async handleModern (ex: McpExchange): Promise<void> {
    // Counted from the start (era detection, spawning included): a draining upstream must not close under it.
    this.modernExchanges++
    try {
      await this.answerModern(ex)
    } finally {
      this.modernExchanges--
    }
  }

  private async answerModern (ex: McpExchange): Promise<void> {
    const inspection = ex.inspection
    const message = inspection?.messages[0]
    if (inspection === undefined || message === undefined) return
    const era = await this.detectEra(ex.user)
    if (era === 'legacy') {
      throw new PortcullisError('PORTCULLIS_ERR_LEGACY_UPSTREAM', undefined, { id: message.id ?? null })
    }
    const channel = await this.modernChannel(ex.user)
    if (message.kind !== 'request') {
      channel.forwardNotification({ label: 'stateless', deliver: () => {}, onChannelClosed: () => {} }, message.value, undefined)
      ex.res.writeHead(202).end()
      return
    }
    const reply = this.boundedReply(ex, new PostReply(ex, inspection.requestIds, false))
    const client = new ModernRequest(reply)
    channel.attach(client)
    // 2026-07-28: closing the response stream is the client's cancellation.
    reply.onClientGone = () => channel.cancel(client, message.id ?? null)
    // Its text too: the channel changes only the id and progress token in it (readdress.ts).
    channel.forwardRequest(client, message.value, ex.body?.toString('utf8'), withEdit(reply, ex.edit))
    await reply.done()
    channel.detach(client)
  }

  /**
   * Stateless requests carry no session, so a process serving them can only
   * belong to a user: each user gets a modern process of their own unless the
   * server is `shared` (which has no per-user values: the schema refuses them).
   * Under `session` isolation this is also what keeps one user's stateless
   * calls from reaching state another user left in a process.
   */
  private modernKey (user: UserIdentity): string {
    return this.config.isolation === 'shared' ? 'modern' : `user:${user.id}`
  }

  private modernChannel (user: UserIdentity): Promise<Channel> {
    return this.reuseOrCreate(this.modernChannels, this.modernKey(user), async () => {
      const child = await this.pool.acquire(user, 'modern')
      return this.newChannel(child, false)
    })
  }

  /** Which era the server speaks, found once with server/discover on a child of its own. */
  private detectEra (user: UserIdentity): Promise<Era> {
    if (this.era !== undefined) return Promise.resolve(this.era)
    this.eraProbe ??= this.probeEra(user).then((era) => {
      this.era = era
      this.log.info({ server: this.name, era }, era === 'modern' ? 'stdio server speaks MCP 2026-07-28' : 'stdio server speaks 2025-era MCP only')
      return era
    }, (err: unknown) => {
      this.eraProbe = undefined
      throw err
    })
    return this.eraProbe
  }

  private async probeEra (user: UserIdentity): Promise<Era> {
    const child = await this.pool.acquire(user, 'probe')
    const channel = this.newChannel(child, false)
    let response: Record<string, unknown> | undefined
    const stopWatching = this.pool.watchStartup(child)
    try {
      response = await channel.call({
        jsonrpc: '2.0',
        id: 0,
        method: 'server/discover',
        params: { _meta: { [META_PROTOCOL_VERSION]: FIRST_MODERN_REVISION, 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'portcullis', version: this.options.version } } },
      }, this.config.startupTimeoutMs)
    } catch {
      // No answer, or the child died: either way it does not speak the modern era.
      if (child.exitInfo?.error !== undefined) throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `MCP server "${this.name}" failed to start`)
    } finally {
      stopWatching()
    }
    const versions = (response?.result as { supportedVersions?: unknown } | undefined)?.supportedVersions
    if (Array.isArray(versions) && versions.some((v) => typeof v === 'string' && isModernRevision(v))) {
      // Pinned to the modern era by this first exchange, and started with the prober's own
      // per-user values: it becomes the modern channel of that user only (modernKey), never
      // of the next caller. Another user's first stateless request starts their own process.
      this.pool.assignRole(child, 'modern')
      this.modernChannels.set(this.modernKey(user), Promise.resolve(channel))
      this.pool.recordSuccess()
      return 'modern'
    }
    void this.retire(channel)
    return 'legacy'
  }

  // --- channels over the pool's processes ------------------------------------

  private async reuseOrCreate (map: Map<string, Promise<Channel>>, key: string, create: () => Promise<Channel>): Promise<Channel> {
    const existing = map.get(key)
    if (existing !== undefined) {
      const channel = await existing.catch(() => undefined)
      if (channel?.isAlive === true) return channel
      if (map.get(key) !== existing) return this.reuseOrCreate(map, key, create)
    }
    const created = create()
    map.set(key, created)
    created.catch(() => { if (map.get(key) === created) map.delete(key) })
    return created
  }

  private newChannel (child: McpChild, isExclusive: boolean): Channel {
    return new Channel(child, { server: this.name, isExclusive, requestTimeoutMs: this.config.requestTimeoutMs, log: this.log, now: this.now })
  }

  /** The channel's process ends on purpose; what is in flight on it fails with `err` (by default: shutting down). */
  private async retire (channel: Channel, err = new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN')): Promise<void> {
    await this.pool.retire(channel.child, () => channel.failAll(err))
  }

  /** Ends what has been idle for idleTimeoutMs. Runs on a timer; tests call it with their own clock. */
  sweep (): void {
    const now = this.now()
    const idleMs = this.config.idleTimeoutMs
    for (const session of [...this.sessions.values()]) {
      const isBusy = session.activeReplies.find(isOpen) !== undefined
      if (!isBusy && now - session.lastActivityAt >= idleMs) void this.closeSession(session, 'idle')
      // Opened and never used (no request, no GET stream): reclaimed at a tenth of the idle timeout.
      else if (!session.isUsed && session.isIdle && now - session.openedAt >= idleMs / UNUSED_SESSION_IDLE_DIVISOR) void this.closeSession(session, 'no request after initialize')
    }
    for (const map of [this.sharedChannels, this.modernChannels]) {
      for (const [key, promise] of map) {
        void promise.then((channel) => {
          const hasSessions = [...channel.clients].length > 0
          if (!hasSessions && channel.inFlight === 0 && now - Math.max(channel.lastActivityAt, this.lastSessionActivity(channel)) >= idleMs) {
            if (map.get(key) === promise) map.delete(key)
            void this.retire(channel)
          }
        }, () => {})
      }
    }
    this.pool.refillWarm()
  }

  private lastSessionActivity (channel: Channel): number {
    let last = 0
    for (const s of this.sessions.values()) if (s.channel === channel) last = Math.max(last, s.lastActivityAt)
    return last
  }

  /** Open GET streams, and POST answers in flight. */
  load (): UpstreamLoad {
    let streams = 0
    let exchanges = this.modernExchanges
    for (const session of this.sessions.values()) {
      if (session.hasOpenStream) streams++
      exchanges += session.activeReplies.size
    }
    return { streams, exchanges }
  }

  /** Processes alive now (warm, in sessions, being retired). */
  get processCount (): number {
    return this.pool.size
  }

  probe (): Promise<UpstreamHealth> {
    const now = this.now()
    const { processes, backoffUntil, startingForMs } = this.pool.health()
    // Checked on each probe (a few stat calls): a program installed or removed later shows here.
    const command = checkServerCommand(this.config)
    return Promise.resolve({
      name: this.name,
      transport: this.transport,
      isReachable: command.isStartable && now >= backoffUntil,
      isStartable: command.isStartable,
      ...(command.isStartable ? {} : { error: command.reason }),
      ...(command.isStartable && now < backoffUntil ? { error: 'paused after repeated crashes', retryInMs: backoffUntil - now } : {}),
      // Its first process has not answered its handshake yet (a cold `npx -y` download, say).
      ...(startingForMs === undefined ? {} : { status: 'starting', startingForMs }),
      isolation: this.config.isolation,
      era: this.era ?? 'unknown',
      sessions: this.sessions.size,
      maxProcesses: this.config.maxProcesses,
      processes,
    })
  }

  /** Offboarding: the user's sessions end, then every process started for them (their requests in flight fail). */
  async endUser (userId: string): Promise<void> {
    for (const session of [...this.sessions.values()]) {
      if (session.user.id === userId) await this.closeSession(session, 'the user was offboarded')
    }
    for (const map of [this.sharedChannels, this.modernChannels]) {
      for (const [key, promise] of [...map]) {
        const channel = await promise.catch(() => undefined)
        if (channel === undefined || this.pool.userOf(channel.child) !== userId) continue
        if (map.get(key) === promise) map.delete(key)
        await this.retire(channel)
      }
    }
    this.log.info({ server: this.name, user: userId }, 'stdio sessions and processes of an offboarded user ended')
  }

  /** 2025-era sessions (2026-07-28 clients have none: each request stands alone). */
  liveSessions (): UpstreamSession[] {
    return [...this.sessions.values()].filter((s) => s.isAlive).map((s) => ({
      sessionId: s.id,
      user: s.user.id,
      client: ownerOf(s.owner).client,
      openedAtMs: s.openedAt,
      lastUsedAtMs: s.lastActivityAt,
      ...(s.channel.child.pid === undefined ? {} : { pid: s.channel.child.pid }),
    }))
  }

  async endSession (sessionId: string, reason: string): Promise<boolean> {
    const session = this.sessions.get(sessionId)
    if (session === undefined) return false
    await this.closeSession(session, reason)
    return true
  }

  closeStreams (): void {
    for (const session of this.sessions.values()) session.endStream()
  }

  async close (): Promise<void> {
    if (this.pool.isClosed && this.pool.size === 0) return
    this.pool.stop()
    clearInterval(this.sweeper)
    const shuttingDown = new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN')
    const channels = new Set<Channel>()
    for (const session of this.sessions.values()) {
      session.endStream()
      channels.add(session.channel)
    }
    for (const map of [this.sharedChannels, this.modernChannels]) {
      for (const promise of map.values()) {
        const channel = await promise.catch(() => undefined)
        if (channel !== undefined) channels.add(channel)
      }
    }
    for (const channel of channels) channel.failAll(shuttingDown)
    for (const id of this.sessions.keys()) this.options.sessionHooks?.closed(this.name, id)
    this.sessions.clear()
    await this.pool.terminateAll()
  }
}
