/**
 * A virtual server at run time (README "Virtual servers"): its client sessions, the member
 * sessions behind them, the merged lists, and where each call, answer and cancellation goes.
 * Every member request is the member route's own (./member-link.ts): this layer decides only
 * which member, under which name, and what reaches the client.
 */
import type { ServerResponse } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError, type JsonRpcId } from '../errors.js'
import type { VirtualServerConfig } from '../config/schema.js'
import { DEFAULT_MAX_SSE_EVENT_BYTES } from '../config/defaults.js'
import { compileGlob, type Matcher } from '../policy/glob.js'
import type { SessionOwner } from '../upstreams/session-owners.js'
import { ANONYMOUS } from '../identity.js'
import { sseMessageEvent } from '../upstreams/response-edit.js'
import { META_PROTOCOL_VERSION } from '../mcp/jsonrpc.js'
import { VERSION } from '../version.js'
import type { StreamKeeper } from '../upstreams/stream-keeper.js'
import type { RequestIdentity } from '../resource-server/verify-token.js'
import { messagesOf, readAll, type MemberLink, type MemberResponse, type RawMessage, type VirtualGrant } from './member-link.js'
import type { ParamHeader } from '../mcp/param-headers.js'
import { buildNameTable, MAX_TOOL_NAME_LENGTH, type NameTable } from './names.js'
import { VirtualSession, type ClientHello, type MemberSession, type MergedTools } from './session.js'

/** Who is asking, for this request: each member request carries it (the token may have been refreshed since the session began). */
export interface VirtualContext {
  readonly grant: VirtualGrant
  readonly ip: string
  readonly log: FastifyBaseLogger
  /** The client's request (its id in the members' audit records); none for the gateway's own retries. */
  readonly requestId?: string | undefined
}

/** A member's refusal (an HTTP error its route answered), relayed to the client as it is. */
export interface MemberRefusal {
  readonly status: number
  readonly headers: Readonly<Record<string, unknown>>
  readonly text: string
}

export interface VirtualServerDeps {
  readonly link: MemberLink
  readonly now: () => number
  /** A virtual session unused this long ends (with its member sessions). */
  readonly idleTimeoutMs: number
  /** A down member is asked again after this long, then twice as long each time, up to the maximum. */
  readonly retryDelayMs?: { readonly first: number, readonly max: number }
  /** Keep-alive comments on the client's event streams (streamKeepAliveMs). */
  readonly streamKeeper?: StreamKeeper | undefined
  /** The sessions every build shares (VirtualSessionTable); a map of its own when not given. */
  readonly sessions?: Map<string, VirtualSession>
  /** A verified caller whose grant was revoked or whose user was blocked since: never acted for again (auth on). */
  readonly isRevoked?: ((identity: RequestIdentity) => boolean) | undefined
  /** One whole message (the largest maxMessageBytes of the members): the most a client's GET stream may leave unread. */
  readonly maxUnreadBytes?: number
}

/** Sessions one user may hold on one virtual server (members cap their own sessions too). */
export const MAX_VIRTUAL_SESSIONS_PER_USER = 64
/** Sessions on one virtual server, all callers together (each is a little memory until it opens members). */
export const MAX_VIRTUAL_SESSIONS = 4096
const SESSION_CAP_RETRY_AFTER_S = '2'
/** The four list methods and the member capability each needs. */
export const LIST_KINDS = {
  'tools/list': { key: 'tools', capability: 'tools' },
  'prompts/list': { key: 'prompts', capability: 'prompts' },
  'resources/list': { key: 'resources', capability: 'resources' },
  'resources/templates/list': { key: 'resourceTemplates', capability: 'resources' },
} as const
export type ListMethod = keyof typeof LIST_KINDS
/** A member's list is paged (nextCursor); past this many pages it is cut (a member that never stops paging). */
const MAX_LIST_PAGES = 100
/**
 * Server->client request ids, rewritten to be unique per virtual session: `<member name>~<original
 * id as JSON>`. The name, not the member's position: a reload that reorders the members must not
 * send an answer in flight to another member. Server names are [a-z0-9-] (config schema): no `~`.
 */
const REWRITTEN_ID_RE = /^([a-z0-9][a-z0-9-]{0,39})~(.+)$/s
const TOOLS_LIST_CHANGED = { jsonrpc: '2.0', method: 'notifications/tools/list_changed' }
/** A down member is pinged again 1 s after it failed, then 2, 4 ... up to every 30 s, while the session lives. */
const RETRY_DELAY_MS = { first: 1_000, max: 30_000 }

type Item = Record<string, unknown>

/** 2026-07-28 (stateless) requests: the merged tool table per caller is kept this long, to route calls without listing every member. */
export const STATELESS_TOOLS_TTL_MS = 30_000
/** Callers (user + client) whose stateless tool table is kept; the oldest is dropped beyond. */
const MAX_STATELESS_TABLES = 1024

/** The one revision served without sessions. */
export const MODERN_REVISION = '2026-07-28'
/** The gateway's own `_meta` on its server/discover probe (as the stdio upstream's probe). */
const PROBE_META = { [META_PROTOCOL_VERSION]: MODERN_REVISION, 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'portcullis', version: VERSION } }
/** JSON-RPC "method not found". */
const METHOD_NOT_FOUND = -32601

/**
 * A 2025-era member's answer to a session-less server/discover: 400 with an error in the
 * spec's legacy block (-32000..-32019: the gateway's LEGACY_UPSTREAM, a 2025-era server's
 * "Bad Request: ... session"), or a stateless 2025-era server's "method not found".
 */
function isLegacySignal (status: number, errorCode: unknown): boolean {
  if (typeof errorCode !== 'number') return false
  if (status === 400) return errorCode <= -32000 && errorCode >= -32019
  return status === 200 && errorCode === METHOD_NOT_FOUND
}

export class VirtualServer {
  readonly sessions: Map<string, VirtualSession>
  /** Per member: does it speak 2026-07-28 (server/discover answered), and what it offers. Found once. */
  private readonly eras = new Map<string, { readonly isModern: boolean, readonly capabilities: Item }>()
  private readonly allow: Matcher[] | undefined
  private readonly deny: Matcher[]
  private internalIds = 0
  /** 2026-07-28 requests have no session to keep the merged tools in: kept here per caller, briefly. */
  private readonly statelessTools = new Map<string, { readonly tools: MergedTools, readonly atMs: number }>()
  /** The collisions last logged, per kind (tools, prompts). */
  private readonly reported = new Map<string, string>()

  constructor (readonly config: VirtualServerConfig, private readonly deps: VirtualServerDeps) {
    this.sessions = deps.sessions ?? new Map()
    this.allow = config.tools.allow?.map(compileGlob)
    this.deny = config.tools.deny.map(compileGlob)
  }

  get name (): string {
    return this.config.name
  }

  /** A new session for `owner` (initialize); no member is asked yet. */
  open (owner: SessionOwner, hello: ClientHello, ctx: VirtualContext): VirtualSession {
    if (this.sessions.size >= MAX_VIRTUAL_SESSIONS) {
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_BUSY', `virtual server "${this.name}" has ${this.sessions.size} sessions open; retry shortly`, { headers: { 'retry-after': SESSION_CAP_RETRY_AFTER_S } })
    }
    // Anonymous callers (auth off) are one user: only the server-wide cap holds them, as on the 2024-11-05 routes.
    let count = 0
    for (const s of this.sessions.values()) if (s.owner.user === owner.user) count++
    if (owner.user !== ANONYMOUS.id && count >= MAX_VIRTUAL_SESSIONS_PER_USER) {
      throw new PortcullisError('PORTCULLIS_ERR_TOO_MANY_SESSIONS', `you have ${count} sessions open on virtual server "${this.name}"; end one (DELETE) before starting another`, { headers: { 'retry-after': SESSION_CAP_RETRY_AFTER_S } })
    }
    const session = new VirtualSession(owner, hello, this.deps.now(), ctx)
    session.servedBy = this
    this.sessions.set(session.id, session)
    return session
  }

  /**
   * A 2026-07-28 request is served without a session, when every member speaks that revision;
   * otherwise the client gets the spec's fallback signal (400, not a modern error) and falls
   * back to initialize, whose session reaches every member.
   */
  async statelessSession (owner: SessionOwner, ctx: VirtualContext, meta: Item, id: JsonRpcId): Promise<VirtualSession> {
    const eras = await Promise.all(this.config.members.map(async (member) => [member, await this.eraOf(ctx, member)] as const))
    if (eras.some(([, era]) => era?.isModern === false)) throw new PortcullisError('PORTCULLIS_ERR_LEGACY_UPSTREAM', undefined, { id })
    const hello: ClientHello = { protocolVersion: MODERN_REVISION, capabilities: {}, clientInfo: {} }
    const session = new VirtualSession(owner, hello, this.deps.now(), ctx)
    session.stateless = { meta }
    const kept = this.statelessTools.get(callerKey(owner))
    if (kept !== undefined && this.deps.now() - kept.atMs < STATELESS_TOOLS_TTL_MS) session.tools = kept.tools
    for (const [member, era] of eras) {
      // A member that did not answer its probe is left out (and asked again next time).
      if (era === undefined) continue
      const open: MemberSession = { id: '', protocolVersion: MODERN_REVISION, capabilities: era.capabilities, stream: undefined, isEnding: false }
      const pending = Promise.resolve(open)
      session.opened.set(pending, open)
      session.members.set(member, pending)
    }
    return session
  }

  /**
   * server/discover at the member (statelessly), once: which era it speaks. Undefined when that
   * is not known (not remembered; the member is left out of this request): a refusal for this
   * caller (access, scopes, limits) or a failure says nothing about the member's era. The probe
   * carries the gateway's own `_meta`, never a client's: what is remembered serves every caller.
   */
  private async eraOf (ctx: VirtualContext, member: string): Promise<{ isModern: boolean, capabilities: Item } | undefined> {
    const known = this.eras.get(member)
    if (known !== undefined) return known
    const probe = { jsonrpc: '2.0', id: this.internalId(), method: 'server/discover', params: { _meta: PROBE_META } }
    const res = await this.deps.link.send({ method: 'POST', member, protocolVersion: MODERN_REVISION, body: probe, ...ctx })
    let result: Item | undefined
    let errorCode: unknown
    for await (const message of messagesOf(res)) {
      if (message.id !== probe.id && message.id !== null) continue
      if (isItem(message.result)) result = message.result
      if (isItem(message.error)) errorCode = message.error.code
    }
    let era: { isModern: boolean, capabilities: Item } | undefined
    if (res.status === 200 && result !== undefined) {
      const versions = Array.isArray(result.supportedVersions) ? result.supportedVersions : []
      era = { isModern: versions.includes(MODERN_REVISION), capabilities: isItem(result.capabilities) ? result.capabilities : {} }
    } else if (isLegacySignal(res.status, errorCode)) {
      // What a 2025-era member answers: the gateway's LEGACY_UPSTREAM for a stdio member, a
      // 2025-era server's own 400 for a session-less request (both in the spec's legacy error
      // block), or a stateless one's "method not found". Falling back to sessions is always safe.
      era = { isModern: false, capabilities: {} }
    }
    if (era !== undefined) this.eras.set(member, era)
    else ctx.log.info({ virtualServer: this.name, member, status: res.status }, 'virtual member era unknown (server/discover failed)')
    return era
  }

  /** The session a request names; another caller's is answered exactly like an unknown one (404). */
  sessionOf (id: string, owner: SessionOwner, ctx: VirtualContext): VirtualSession {
    const session = this.sessions.get(id)
    if (session === undefined || session.isClosed || !session.isOwnedBy(owner)) throw new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND')
    session.lastUsedMs = this.deps.now()
    session.context = ctx
    // A fresh caller: down members whose retries stopped with an expired token are tried again.
    if (session.down.size > 0) for (const member of session.down) this.retryLater(session, member, (this.deps.retryDelayMs ?? RETRY_DELAY_MS).first)
    if (session.servedBy !== this) {
      // Begun under an earlier build (a reload): its lists are read again under this one's configuration.
      session.servedBy = this
      session.tools = undefined
      session.prompts = undefined
      session.resources = new Map()
      session.templates = []
    }
    return session
  }

  /**
   * The virtual server's own allow/deny (on top of each member's policy), on the merged name AND
   * on the full `<member><separator><name>` (before any shortening): the merged name alone
   * depends on what the other members list (prefix: auto keeps a name only one member lists,
   * a long name ends in a hash), so `deny: [memory__delete_*]` must hold whatever they list.
   * A deny matching either refuses; an allow matching either admits.
   */
  isToolAllowed (merged: string, origin?: { readonly member: string, readonly name: string }): boolean {
    // No rules of its own (most virtual servers): nothing to build per call.
    if (this.deny.length === 0 && this.allow === undefined) return true
    const names = origin === undefined ? [merged] : [merged, `${origin.member}${this.config.separator}${origin.name}`]
    // A deny also matches the member's own name: whether a tool is prefixed depends on what the other
    // members list, and a same-named tool appearing elsewhere must never unlock a denied plain name.
    const denied = origin === undefined ? names : [...names, origin.name]
    if (this.deny.some((m) => denied.some((name) => m(name)))) return false
    if (this.allow === undefined) return true
    // A merged name that reads as another member's (`b__evil`, listed by member a and kept as is)
    // is no name of b's: an allow written for b's tools admits it only by its full name.
    const allowed = origin !== undefined && this.isAnotherMembersName(merged, origin.member) ? names.slice(1) : names
    return this.allow.some((m) => allowed.some((name) => m(name)))
  }

  private isAnotherMembersName (merged: string, member: string): boolean {
    return this.config.members.some((other) => other !== member && merged.startsWith(`${other}${this.config.separator}`))
  }

  /** DELETE, idle or shutdown: every member session ends too, and the client's stream. */
  async end (session: VirtualSession, ctx: VirtualContext): Promise<void> {
    this.sessions.delete(session.id)
    await endVirtualSession(this.deps.link, this.name, session, ctx)
  }

  /**
   * The 2024-11-05 routes' way to end the session behind a legacy one whose stream closed
   * (routes/legacy-sse.ts: a SessionEnder), as the caller of its latest request.
   */
  async endSession (id: string): Promise<boolean> {
    const session = this.sessions.get(id)
    if (session === undefined) return false
    await this.end(session, session.context)
    return true
  }

  private async endMember (ctx: VirtualContext, member: string, open: MemberSession): Promise<void> {
    await endMemberSession(this.deps.link, this.name, ctx, member, open)
  }

  /** Sessions unused past the idle timeout end (a session with the client's stream open is in use). */
  async sweep (): Promise<void> {
    const cutoff = this.deps.now() - this.deps.idleTimeoutMs
    for (const session of [...this.sessions.values()]) {
      if (session.stream === undefined && session.lastUsedMs < cutoff) await this.end(session, session.context)
    }
  }

  /**
   * The member's session, opened on first use with the client's own initialize (its
   * capabilities and clientInfo), then notifications/initialized. A refusal (the member's
   * access, scopes, limits, or its failure) is returned for the caller to relay or skip.
   */
  /** The member's session when it is open already (no await for the common case); else undefined. */
  private openedSession (session: VirtualSession, member: string): MemberSession | undefined {
    const pending = session.members.get(member)
    return pending === undefined ? undefined : session.opened.get(pending)
  }

  async memberSession (session: VirtualSession, ctx: VirtualContext, member: string): Promise<MemberSession | MemberRefusal> {
    let pending = session.members.get(member)
    while (pending !== undefined) {
      const open = await pending
      if (open !== undefined) return open
      // It could not be opened; another waiter may have begun opening it again since: that one is
      // awaited, not a second opened beside it (each would overwrite the other's, one left unowned).
      const latest = session.members.get(member)
      pending = latest === pending ? undefined : latest
    }
    if (session.stateless !== undefined) return { status: 502, headers: {}, text: '' }
    // A request in flight while the session ends (DELETE, the idle sweep) opens nothing: end() has
    // already ended the member sessions it knew of, and a new one would be left open, unowned.
    if (session.isClosed) throw new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND')
    let refusal: MemberRefusal | undefined
    const opening = this.openMember(session, ctx, member).then((result) => {
      if ('id' in result) {
        session.opened.set(opening, result)
        return result
      }
      refusal = result
      return undefined
    })
    session.members.set(member, opening)
    const open = await opening
    if (open !== undefined && session.isClosed) {
      // It finished opening after the session ended: ended at once (end() may not have seen it).
      await this.endMember(ctx, member, open)
      throw new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND')
    }
    if (open === undefined) {
      if (session.members.get(member) === opening) session.members.delete(member)
      const answered = refusal ?? { status: 502, headers: {}, text: '' }
      ctx.log.info({ virtualServer: this.name, member, status: answered.status }, 'virtual member session not opened')
      return answered
    }
    if (session.stream !== undefined) void this.relayMemberStream(session, ctx, member, open)
    return open
  }

  private async openMember (session: VirtualSession, ctx: VirtualContext, member: string): Promise<MemberSession | MemberRefusal> {
    const hello = session.hello
    const init = { jsonrpc: '2.0', id: this.internalId(), method: 'initialize', params: { protocolVersion: hello.protocolVersion, capabilities: hello.capabilities, clientInfo: hello.clientInfo } }
    const res = await this.deps.link.send({ method: 'POST', member, body: init, ...ctx })
    if (res.status !== 200) return refusalOf(res)
    // A member may assign no session (MCP Streamable HTTP, "Session Management": a server MAY; a
    // stateless one never does): its member session's id is '' and its requests carry none.
    const header = res.headers['mcp-session-id']
    const sessionId = typeof header === 'string' ? header : undefined
    let result: Item | undefined
    for await (const message of messagesOf(res)) if (message.id === init.id) result = message.result as Item | undefined
    if (result === undefined) return { status: 502, headers: {}, text: '' }
    const protocolVersion = typeof result.protocolVersion === 'string' ? result.protocolVersion : undefined
    const open: MemberSession = { id: sessionId ?? '', protocolVersion, capabilities: isItem(result.capabilities) ? result.capabilities : {}, stream: undefined, isEnding: false }
    const initialized = await this.deps.link.send({ method: 'POST', member, sessionId, protocolVersion, body: { jsonrpc: '2.0', method: 'notifications/initialized' }, ...ctx })
    await readAll(initialized.body)
    // The client set a log level before this member was opened: the member hears it too.
    if (session.logLevel !== undefined && open.capabilities.logging !== undefined) {
      const body = { jsonrpc: '2.0', id: this.internalId(), method: 'logging/setLevel', params: { level: session.logLevel } }
      const leveled = await this.deps.link.send({ method: 'POST', member, sessionId, protocolVersion, body, ...ctx })
      await readAll(leveled.body)
    }
    return open
  }

  /**
   * One message to a member, in the member's session; a session the member no longer holds
   * (404: idle, restarted, its process gone) is opened again once. Whether the member answered
   * marks it up or down (the client hears of a change through list_changed).
   */
  async toMember (session: VirtualSession, ctx: VirtualContext, member: string, body: unknown, paramHeaders?: readonly ParamHeader[], raw?: RawMessage): Promise<MemberResponse | MemberRefusal> {
    for (let attempt = 0; ; attempt++) {
      const open = this.openedSession(session, member) ?? await this.memberSession(session, ctx, member)
      if (!('id' in open)) {
        this.mark(session, member, open.status < 500)
        return open
      }
      const res = await this.deps.link.send({ method: 'POST', member, sessionId: open.id === '' ? undefined : open.id, protocolVersion: open.protocolVersion, body, raw, paramHeaders, ...ctx })
      if (res.status === 404 && attempt === 0 && session.stateless === undefined) {
        res.body.resume()
        this.forget(session, member, open)
        continue
      }
      this.mark(session, member, res.status < 500)
      return res
    }
  }

  /**
   * A member's session is gone: forgotten, so that its next use opens a new one. Only if the
   * entry is still that session: two requests failing together must not forget the session the
   * first one has opened since (it would be left open, unowned, its process running).
   */
  private forget (session: VirtualSession, member: string, open: MemberSession): void {
    open.isEnding = true
    open.stream?.destroy()
    const pending = session.members.get(member)
    if (pending !== undefined && session.opened.get(pending) === open) session.members.delete(member)
  }

  /**
   * Up or down: a change reaches the client as tools/list_changed (its tools appear or disappear).
   * A down member is retried on a timer (retryLater), so that it comes back without waiting
   * for the client to list again.
   */
  mark (session: VirtualSession, member: string, isUp: boolean): void {
    const wasDown = session.down.has(member)
    if (isUp === !wasDown) return
    if (isUp) {
      session.down.delete(member)
      clearTimeout(session.retries.get(member))
      session.retries.delete(member)
    } else {
      session.down.add(member)
      this.retryLater(session, member, (this.deps.retryDelayMs ?? RETRY_DELAY_MS).first)
    }
    this.forgetTools(session)
    this.toClient(session, TOOLS_LIST_CHANGED)
  }

  /**
   * A ping to a down member after `delayMs` (doubling up to the maximum while it stays down),
   * as the session's latest caller; its answer marks it up (toMember). Not for a 2026-07-28
   * request's session (it lives for one request) nor once the session ends.
   */
  private retryLater (session: VirtualSession, member: string, delayMs: number): void {
    if (session.stateless !== undefined || session.isClosed || session.retries.has(member)) return
    const max = (this.deps.retryDelayMs ?? RETRY_DELAY_MS).max
    const timer = setTimeout(() => {
      // After a reload, the newest build's virtual server (its link, its configuration) asks.
      const server = session.servedBy instanceof VirtualServer ? session.servedBy : this
      void server.retry(session, member).then((isStopped) => {
        session.retries.delete(member)
        if (!isStopped && session.down.has(member)) server.retryLater(session, member, Math.min(delayMs * 2, max))
      })
    }, delayMs)
    timer.unref()
    session.retries.set(member, timer)
  }

  /** True when retrying stops until the caller's next request (its token has expired, or was revoked, since its last one). */
  private async retry (session: VirtualSession, member: string): Promise<boolean> {
    // A reload removed it from this virtual server: nothing to wait for.
    if (!this.config.members.includes(member)) session.down.delete(member)
    if (session.isClosed || !session.down.has(member)) return false
    // As the session's latest caller, but for no request of the client's (the audit's request id).
    const ctx = { ...session.context, requestId: undefined }
    // Never act for a caller whose token is no longer valid (revoked or expired callers make no new request).
    const identity = ctx.grant.identity
    if (identity !== null && identity.expiresAtS * 1000 <= this.deps.now()) return true
    if (identity !== null && this.deps.isRevoked?.(identity) === true) return true
    try {
      const res = await this.toMember(session, ctx, member, { jsonrpc: '2.0', id: this.internalId(), method: 'ping' })
      if ('body' in res) res.body.resume()
    } catch (err) {
      ctx.log.info({ virtualServer: this.name, member, err: { message: (err as Error).message } }, 'virtual member retry failed')
    }
    return false
  }

  /**
   * A list method at every member in parallel (each answer already filtered by that member's
   * policy for this caller, pages followed). A member that refuses this caller (403) offers
   * nothing; one that fails is left out and marked down.
   */
  async fanOut (session: VirtualSession, ctx: VirtualContext, method: ListMethod): Promise<Array<{ member: string, items: Item[] }>> {
    const { key, capability } = LIST_KINDS[method]
    const lists = await Promise.all(this.config.members.map(async (member) => {
      const open = await this.memberSession(session, ctx, member)
      if (!('id' in open)) {
        this.mark(session, member, open.status < 500)
        return { member, items: [] }
      }
      if (open.capabilities[capability] === undefined) return { member, items: [] }
      return { member, items: await this.listOf(session, ctx, member, method, key) }
    }))
    return lists
  }

  private async listOf (session: VirtualSession, ctx: VirtualContext, member: string, method: string, key: string): Promise<Item[]> {
    const items: Item[] = []
    let cursor: unknown
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const id = this.internalId()
      const meta = session.stateless === undefined ? {} : { _meta: session.stateless.meta }
      const res = await this.toMember(session, ctx, member, { jsonrpc: '2.0', id, method, params: cursor === undefined ? meta : { cursor, ...meta } })
      if (!('body' in res)) return items
      if (res.status !== 200) {
        res.body.resume()
        return items
      }
      let result: Item | undefined
      for await (const message of messagesOf(res)) if (message.id === id && isItem(message.result)) result = message.result
      const listed = result?.[key]
      ctx.log.debug({ virtualServer: this.name, member, method, count: Array.isArray(listed) ? listed.length : undefined }, 'virtual member listed')
      if (Array.isArray(listed)) items.push(...listed.filter(isItem))
      cursor = result?.nextCursor
      if (typeof cursor !== 'string' || cursor === '') return items
    }
    ctx.log.warn({ virtualServer: this.name, member, method }, 'virtual member list cut: too many pages')
    return items
  }

  /** tools/list: the members' tools under their merged names, then the virtual allow/deny. */
  async listTools (session: VirtualSession, ctx: VirtualContext): Promise<MergedTools> {
    const lists = await this.fanOut(session, ctx, 'tools/list')
    const { table, items } = this.merge(lists)
    this.reportCollisions(ctx, 'tools', table)
    const tools = table.entries.flatMap((entry) => {
      const tool = items.get(`${entry.member}\n${entry.name}`)
      return tool === undefined || !this.isToolAllowed(entry.merged, entry) ? [] : [{ ...tool, name: entry.merged }]
    })
    const merged = { table, tools }
    session.tools = merged
    if (session.stateless !== undefined) {
      const key = callerKey(session.owner)
      this.statelessTools.delete(key)
      if (this.statelessTools.size >= MAX_STATELESS_TABLES) this.statelessTools.delete(this.statelessTools.keys().next().value ?? '')
      this.statelessTools.set(key, { tools: merged, atMs: this.deps.now() })
    }
    return merged
  }

  /** The merged tools are read again before a name is resolved from them (a member's list changed, or its state). */
  forgetTools (session: VirtualSession): void {
    session.tools = undefined
    if (session.stateless !== undefined) this.statelessTools.delete(callerKey(session.owner))
  }

  async listPrompts (session: VirtualSession, ctx: VirtualContext): Promise<Item[]> {
    const lists = await this.fanOut(session, ctx, 'prompts/list')
    const { table, items } = this.merge(lists)
    this.reportCollisions(ctx, 'prompts', table)
    session.prompts = table
    return table.entries.flatMap((entry) => {
      const prompt = items.get(`${entry.member}\n${entry.name}`)
      return prompt === undefined ? [] : [{ ...prompt, name: entry.merged }]
    })
  }

  /** Resources keep their URIs (their own schemes); a table says which member serves each. */
  async listResources (session: VirtualSession, ctx: VirtualContext): Promise<Item[]> {
    const lists = await this.fanOut(session, ctx, 'resources/list')
    const routes = new Map<string, string>()
    const out: Item[] = []
    for (const { member, items } of lists) {
      for (const item of items) {
        const uri = item.uri
        // The first member listing a URI serves it: a second could never be reached by it.
        if (typeof uri !== 'string' || routes.has(uri)) continue
        routes.set(uri, member)
        out.push(item)
      }
    }
    session.resources = routes
    return out
  }

  async listResourceTemplates (session: VirtualSession, ctx: VirtualContext): Promise<Item[]> {
    const lists = await this.fanOut(session, ctx, 'resources/templates/list')
    const templates: Array<{ prefix: string, member: string }> = []
    const out: Item[] = []
    for (const { member, items } of lists) {
      for (const item of items) {
        if (typeof item.uriTemplate !== 'string') continue
        templates.push({ prefix: literalPrefix(item.uriTemplate), member })
        out.push(item)
      }
    }
    // The longest literal prefix first: the most specific template wins.
    session.templates = templates.sort((a, b) => b.prefix.length - a.prefix.length)
    return out
  }

  /** Which member serves a URI: the listed ones, then templates by literal prefix; the lists are read again once when unknown. */
  async resourceMember (session: VirtualSession, ctx: VirtualContext, uri: string): Promise<string | undefined> {
    const known = (): string | undefined => session.resources.get(uri) ?? session.templates.find((t) => t.prefix !== '' && uri.startsWith(t.prefix))?.member
    const found = known()
    if (found !== undefined) return found
    await Promise.all([this.listResources(session, ctx), this.listResourceTemplates(session, ctx)])
    return known()
  }

  /**
   * A merged tool name -> member and its own name; the list is read again once when unknown.
   * Under prefix: always a name routes on its prefix (the member's own route still judges the
   * name), unless the name may be a shortened one or several members' names could prefix it:
   * a 2026-07-28 request without any list, any request when the list does not name it. A tool
   * its member hides from the list but refuses with a reason of its own (pinTools enforce: a
   * changed or added definition) is then refused through the virtual server with the member's
   * error, as at the member's URL, not as a name the virtual server does not know.
   */
  async resolveTool (session: VirtualSession, ctx: VirtualContext, merged: string): Promise<{ member: string, name: string } | undefined> {
    return this.knownTool(session, merged) ?? (await this.listTools(session, ctx)).table.resolve(merged) ?? this.byPrefix(merged)
  }

  /** resolveTool without asking the members: from the session's kept list (or, stateless, the prefix), else undefined. */
  knownTool (session: VirtualSession, merged: string): { member: string, name: string } | undefined {
    return session.tools?.table.resolve(merged) ?? (session.stateless === undefined ? undefined : this.byPrefix(merged))
  }

  private byPrefix (merged: string): { member: string, name: string } | undefined {
    const { prefix, separator, members } = this.config
    if (prefix !== 'always' || (merged.length === MAX_TOOL_NAME_LENGTH && SHORTENED_RE.test(merged))) return undefined
    const holders = members.filter((member) => merged.startsWith(`${member}${separator}`) && merged.length > member.length + separator.length)
    const member = holders.length === 1 ? holders[0] : undefined
    return member === undefined ? undefined : { member, name: merged.slice(member.length + separator.length) }
  }

  async resolvePrompt (session: VirtualSession, ctx: VirtualContext, merged: string): Promise<{ member: string, name: string } | undefined> {
    const found = session.prompts?.resolve(merged)
    if (found !== undefined) return found
    await this.listPrompts(session, ctx)
    return session.prompts?.resolve(merged)
  }

  /**
   * prefix: never — a name several members list is hidden (no member wins). The issue asked for
   * a configuration error, but lists are only known at run time: the operator hears of it here,
   * once per change.
   */
  private reportCollisions (ctx: VirtualContext, kind: string, table: NameTable): void {
    const collisions = JSON.stringify(table.collisions)
    if (collisions === this.reported.get(kind)) return
    this.reported.set(kind, collisions)
    if (table.collisions.length > 0) ctx.log.warn({ virtualServer: this.name, kind, collisions: table.collisions }, 'virtual server names listed by several members are hidden (prefix: never)')
  }

  private merge (lists: ReadonlyArray<{ member: string, items: Item[] }>): { table: NameTable, items: Map<string, Item> } {
    const items = new Map<string, Item>()
    const named: Array<{ member: string, name: string }> = []
    for (const { member, items: listed } of lists) {
      for (const item of listed) {
        if (typeof item.name !== 'string') continue
        items.set(`${member}\n${item.name}`, item)
        named.push({ member, name: item.name })
      }
    }
    return { table: buildNameTable(named, { prefix: this.config.prefix, separator: this.config.separator }), items }
  }

  /**
   * A member's message on its way to the client. A server->client request (elicitation,
   * sampling, roots) gets an id unique in the virtual session, so that the client's answer
   * can be routed back to that member with its own id.
   */
  fromMember (member: string, message: Item): Item {
    if (typeof message.method !== 'string' || !('id' in message)) return message
    return { ...message, id: `${member}~${JSON.stringify(message.id)}` }
  }

  /** A client's answer to a rewritten server request: its member and the original id; undefined for any other id. */
  answerTarget (id: JsonRpcId | undefined): { member: string, id: JsonRpcId } | undefined {
    if (typeof id !== 'string') return undefined
    const match = REWRITTEN_ID_RE.exec(id)
    const member = match?.[1]
    if (match === null || member === undefined || !this.config.members.includes(member)) return undefined
    try {
      const original: unknown = JSON.parse(match[2] ?? '')
      return typeof original === 'string' || typeof original === 'number' ? { member, id: original } : undefined
    } catch {
      return undefined
    }
  }

  /**
   * This build is retired by a reload: the client GET streams it relays end (the client opens
   * them again, on the new build, which relays the members' streams from then on).
   */
  retire (): void {
    for (const session of this.sessions.values()) {
      if (session.streamServer === this) session.stream?.end()
    }
  }

  /**
   * A message on the client's GET stream (dropped while it has none: it reads the lists again
   * when it reconnects). Every member's stream and this server's own list changes meet on it,
   * and the members' streams are read on whatever the client does: pausing them would bound
   * nothing (a stdio member's route writes its stream without waiting) and an sse member's
   * route would close its stream, which reads here as that member being down. So, as on a
   * 2024-11-05 stream (routes/legacy-sse.ts), the client's buffer is what is bounded: a client
   * with more than one whole message unread is not reading, its stream ends (the member streams
   * relayed to it with it) and it opens a new one.
   */
  toClient (session: VirtualSession, message: unknown): void {
    const stream = session.stream
    if (stream === undefined || stream.writableEnded || stream.destroyed) return
    const maxUnreadBytes = this.deps.maxUnreadBytes ?? DEFAULT_MAX_SSE_EVENT_BYTES
    if (session.unreadBytes > maxUnreadBytes) {
      session.context.log.warn({ virtualServer: this.name, session: session.id.slice(0, 8), unreadBytes: session.unreadBytes }, 'virtual client stream not reading; closed')
      stream.destroy()
      return
    }
    const event = sseMessageEvent(message)
    if (!stream.write(event)) session.unreadBytes += Buffer.byteLength(event)
    if (session.kept !== undefined) this.deps.streamKeeper?.wrote(session.kept, event)
  }

  /**
   * The client's GET stream: the one of each open member is opened too and relayed to it
   * (notifications, list changes, server requests); a member opened later joins it.
   */
  async openClientStream (session: VirtualSession, ctx: VirtualContext, res: ServerResponse): Promise<void> {
    session.stream?.end()
    session.stream = res
    session.unreadBytes = 0
    session.streamServer = this
    session.kept = this.deps.streamKeeper?.add(res)
    res.on('drain', () => { if (session.stream === res) session.unreadBytes = 0 })
    res.once('close', () => {
      if (session.stream !== res) return
      session.stream = undefined
      for (const pending of session.members.values()) {
        void pending.then((open) => {
          if (open?.stream === undefined) return
          const stream = open.stream
          open.stream = undefined
          stream.destroy()
        })
      }
    })
    for (const [member, pending] of session.members) {
      const open = await pending
      if (open !== undefined && open.stream === undefined) void this.relayMemberStream(session, ctx, member, open)
    }
  }

  /**
   * A member's server->client stream, relayed to the client's (notifications and requests only).
   * When it ends by itself (the
   * member's process crashed, its session is gone, a proxy closed it) the member is down: its
   * session is ended (DELETE, best effort) and forgotten, its tools leave the list (list_changed), and its next use opens a new one.
   */
  private async relayMemberStream (session: VirtualSession, ctx: VirtualContext, member: string, open: MemberSession): Promise<void> {
    // Without a session (a stateless member) there is no stream of the session's to relay.
    if (open.id === '') return
    const abort = new AbortController()
    let res: MemberResponse | undefined
    let isDestroyed = false
    open.stream = { destroy: () => { isDestroyed = true; abort.abort(); res?.destroy() } }
    try {
      res = await this.deps.link.send({ method: 'GET', member, sessionId: open.id, protocolVersion: open.protocolVersion, ...ctx, signal: abort.signal })
      if (isDestroyed) res.destroy()
      // A member without a GET stream (405) sends only answers.
      if (res.status !== 200) {
        res.body.resume()
        if (open.stream !== undefined && !isDestroyed) open.stream = undefined
        return
      }
      for await (const message of messagesOf(res)) {
        // A GET stream carries no answers (the client's requests are answered on their POST): a
        // message without a method could only forge another member's answer to the client.
        if (typeof message.method !== 'string') {
          ctx.log.debug({ virtualServer: this.name, member }, 'virtual member stream message dropped: an answer on a GET stream')
          continue
        }
        if (message.method === 'notifications/tools/list_changed') this.forgetTools(session)
        forgetList(session, message.method)
        this.toClient(session, this.fromMember(member, message))
      }
    } catch (err) {
      if (!isDestroyed) ctx.log.info({ virtualServer: this.name, member, err: { message: (err as Error).message } }, 'virtual member stream failed')
    }
    if (isDestroyed || open.isEnding || session.isClosed) return
    ctx.log.info({ virtualServer: this.name, member }, 'virtual member stream ended; member marked down')
    open.stream = undefined
    // The stream may have ended with the session still held (a proxy closing an idle stream): it is
    // ended (best effort) before being forgotten, never left open at the member, unowned.
    const ending = this.endMember(ctx, member, open)
    this.forget(session, member, open)
    this.mark(session, member, false)
    await ending
  }

  private internalId (): string {
    this.internalIds = (this.internalIds + 1) % Number.MAX_SAFE_INTEGER
    return `portcullis-virtual-${this.internalIds}`
  }
}

/**
 * A virtual session ends: its retries stop, the client's stream ends, and every member session
 * is DELETEd through `link` (DELETE, idle, or a reload that removed its virtual server: then
 * through the newest build's routes).
 */
export async function endVirtualSession (link: MemberLink, virtualServer: string, session: VirtualSession, ctx: VirtualContext): Promise<void> {
  if (session.isClosed) return
  session.isClosed = true
  for (const timer of session.retries.values()) clearTimeout(timer)
  session.retries.clear()
  session.stream?.end()
  session.stream = undefined
  await Promise.all([...session.members.entries()].map(async ([member, pending]) => {
    const open = await pending
    if (open !== undefined) await endMemberSession(link, virtualServer, ctx, member, open)
  }))
  session.members.clear()
}

/** A member session's DELETE (once: one already ending or forgotten is left alone). */
async function endMemberSession (link: MemberLink, virtualServer: string, ctx: VirtualContext, member: string, open: MemberSession): Promise<void> {
  if (open.isEnding) return
  open.isEnding = true
  open.stream?.destroy()
  // A member that assigned no session has none to end.
  if (open.id === '') return
  const res = await link.send({ method: 'DELETE', member, sessionId: open.id, protocolVersion: open.protocolVersion, ...ctx }).catch((err: Error) => {
    ctx.log.warn({ virtualServer, member, err: { message: err.message } }, 'virtual member session end failed')
    return undefined
  })
  res?.body.resume()
}

/** A member route's HTTP error, whole, for the client (JSON-RPC error with its id, status and Retry-After). */
export async function refusalOf (res: MemberResponse): Promise<MemberRefusal> {
  return { status: res.status === 200 ? 502 : res.status, headers: res.headers, text: await readAll(res.body) }
}

/** A session's caller: whose stateless tool table it is. */
function callerKey (owner: SessionOwner): string {
  return `${owner.user}\n${owner.client}`
}

/** A merged name that may be shortened (names.ts): 55 characters, '_' and 8 hex digits. */
const SHORTENED_RE = /_[0-9a-f]{8}$/

/** A member's list changed: the merged one is read again before a name is resolved from it. */
function forgetList (session: VirtualSession, method: unknown): void {
  if (method === 'notifications/tools/list_changed') session.tools = undefined
  else if (method === 'notifications/prompts/list_changed') session.prompts = undefined
  else if (method === 'notifications/resources/list_changed') session.resources = new Map()
}

function isItem (value: unknown): value is Item {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** An RFC 6570 template's text before its first expression: what every URI it matches starts with. */
export function literalPrefix (template: string): string {
  const brace = template.indexOf('{')
  return brace === -1 ? template : template.slice(0, brace)
}
