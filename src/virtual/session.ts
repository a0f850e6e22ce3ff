/**
 * One client session of a virtual server (README "Virtual servers"): the gateway answered its
 * initialize itself, and opens a session at each member lazily, the first time the client's
 * request needs that member (a stdio member's process starts then). Sessions are held in this
 * replica's memory (sticky routing, as the 2024-11-05 transport's sessions).
 */
import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { JsonRpcId } from '../errors.js'
import type { SessionOwner } from '../upstreams/session-owners.js'
import type { KeptStream } from '../upstreams/stream-keeper.js'
import type { NameTable } from './names.js'
import type { VirtualContext } from './virtual-server.js'

/** The client's initialize params, passed to every member's initialize (its capabilities decide what a member offers). */
export interface ClientHello {
  readonly protocolVersion: string
  readonly capabilities: Record<string, unknown>
  readonly clientInfo: Record<string, unknown>
}

/** A member's session behind the virtual one. */
export interface MemberSession {
  readonly id: string
  readonly protocolVersion: string | undefined
  /** What the member's initialize answer offers (a member without prompts is not asked for them). */
  readonly capabilities: Record<string, unknown>
  /** The member's server->client stream, relayed to the client's (while the client has one open). */
  stream: { readonly destroy: () => void } | undefined
  /** The virtual layer ended it (DELETE, the client's stream closed): its end is not a failure. */
  isEnding: boolean
}

/** A merged list as the client last saw it: how its names resolve. */
export interface MergedTools {
  readonly table: NameTable
  /** The merged tool definitions, after the virtual policy (what toolSearch searches). */
  readonly tools: ReadonlyArray<Record<string, unknown> & { name: string }>
}

export class VirtualSession {
  readonly id = randomUUID()
  lastUsedMs: number
  /** Per member: its session, being opened or open (undefined: it could not be opened). */
  readonly members = new Map<string, Promise<MemberSession | undefined>>()
  /** What each entry of `members` resolved to, known synchronously (a forgotten session is told from a newer one). */
  readonly opened = new WeakMap<Promise<MemberSession | undefined>, MemberSession>()
  /** Members that failed the last time they were asked (left out of lists until they answer again). */
  readonly down = new Set<string>()
  /** Per down member: its next retry (a timer, unref'd). */
  readonly retries = new Map<string, NodeJS.Timeout>()
  /** The client's GET stream, where server-initiated messages and list_changed go. */
  stream: ServerResponse | undefined = undefined
  /** Its keep-alive entry (streamKeepAliveMs). */
  kept: KeptStream | undefined = undefined
  /** Bytes written to it since it last said it was full (write() false), until it drains. */
  unreadBytes = 0
  /** The build's virtual server relaying the members' streams to it. */
  streamServer: object | undefined = undefined
  tools: MergedTools | undefined = undefined
  prompts: NameTable | undefined = undefined
  /** Resource URI -> member, from the last resources/list; templates by their literal prefix. */
  resources = new Map<string, string>()
  templates: ReadonlyArray<{ readonly prefix: string, readonly member: string }> = []
  /** The client's requests in flight at a member (JSON of the id -> member): where a cancellation goes. */
  readonly inflight = new Map<JsonRpcId, string>()
  /** The client's last logging/setLevel: sent to each member opened after it too. */
  logLevel: string | undefined = undefined
  isClosed = false
  /**
   * A 2026-07-28 request's own, never stored: its members are reached without sessions, each
   * request carrying the client's `_meta` (protocol version, capabilities, client info).
   */
  stateless: { readonly meta: Readonly<Record<string, unknown>> } | undefined = undefined
  /**
   * The build whose virtual server last served the session: a reload's new build reads the
   * merged lists again (its configuration may name and filter them differently), and the old
   * build, when retired, ends the client's GET stream it relays (the client opens it again).
   */
  servedBy: object | undefined = undefined

  /** `context`: the latest request's caller and address (an idle session's members are ended as that caller). */
  constructor (readonly owner: SessionOwner, readonly hello: ClientHello, now: number, public context: VirtualContext) {
    this.lastUsedMs = now
  }

  isOwnedBy (owner: SessionOwner): boolean {
    return this.owner.user === owner.user && this.owner.client === owner.client
  }
}

/**
 * Every build's virtual sessions, by virtual server name (SharedParts): a reload builds a new
 * app, whose route must still know the sessions an earlier build began (their member sessions
 * live on in the shared upstreams). A virtual server a reload removed loses its sessions.
 */
export class VirtualSessionTable {
  private readonly byServer = new Map<string, Map<string, VirtualSession>>()
  private ender: ((virtualServer: string, session: VirtualSession) => Promise<void>) | undefined

  /** How a session ends (with its member sessions): through the build in force's member routes. */
  useEnder (ender: (virtualServer: string, session: VirtualSession) => Promise<void>): void {
    this.ender = ender
  }

  /** A revoked or offboarded user: every virtual session of theirs ends, with its member sessions. */
  async endUser (userId: string): Promise<void> {
    const ending: Array<Promise<void>> = []
    for (const [name, sessions] of this.byServer) {
      for (const session of [...sessions.values()]) {
        if (session.owner.user !== userId) continue
        sessions.delete(session.id)
        if (this.ender !== undefined) ending.push(this.ender(name, session))
        else session.isClosed = true
      }
    }
    await Promise.all(ending)
  }

  of (virtualServer: string): Map<string, VirtualSession> {
    let sessions = this.byServer.get(virtualServer)
    if (sessions === undefined) {
      sessions = new Map()
      this.byServer.set(virtualServer, sessions)
    }
    return sessions
  }

  /** A build's virtual servers: sessions of any other are dropped, and returned (for their member sessions to be ended). */
  keepOnly (names: readonly string[]): Array<{ readonly virtualServer: string, readonly session: VirtualSession }> {
    const dropped: Array<{ virtualServer: string, session: VirtualSession }> = []
    for (const [name, sessions] of [...this.byServer.entries()]) {
      if (names.includes(name)) continue
      this.byServer.delete(name)
      for (const session of sessions.values()) dropped.push({ virtualServer: name, session })
    }
    return dropped
  }
}
