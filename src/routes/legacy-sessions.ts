/**
 * The 2024-11-05 transport's sessions (routes/legacy-sse.ts), shared by every build of the app
 * (SharedParts): a reload builds a new app, and a legacy client's next POST reaches that app's
 * route, which must still know the session its event stream (accepted by an earlier build) holds.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type { Upstream } from '../upstreams/types.js'
import type { SessionOwner } from '../upstreams/session-owners.js'
import type { KeptStream } from '../upstreams/stream-keeper.js'

/**
 * Emitted on the response of a legacy event stream once it belongs to the shared table: the
 * build that accepted it may be retired and closed while the stream lives on (reload/gateway.ts
 * stops counting it as that build's request in flight).
 */
export const OUTLIVES_GENERATION = 'portcullis:outlives-generation'

/**
 * What opening a session's server stream needs of the client's request: its headers (its token),
 * its address as the gateway judged it (trustProxy applied) and its logger. Never the request
 * itself: that holds its body and the body parsed (mcpCall.inspection), up to bodyLimit, which a
 * session kept would pin for as long as its event stream stays open.
 */
export interface LegacyCaller {
  readonly headers: IncomingHttpHeaders
  readonly ip: string
  readonly log: FastifyBaseLogger
}

export interface LegacySession {
  readonly id: string
  /** The server (or virtual server) whose /sse opened it: its sessionId is good only on that server's /messages. */
  readonly server: string
  readonly owner: SessionOwner
  readonly res: ServerResponse
  /** How the build that last served a POST of the session (after a reload: the newest) ends the session behind it. */
  upstream: SessionEnder
  /** The Streamable HTTP session behind it, once initialize was answered. */
  mcpSessionId: string | undefined
  protocolVersion: string
  /** The id of the session's initialize (as JSON) until its answer came: only that answer sets protocolVersion. */
  initializeId: string | undefined
  /** Who sent the session's latest POST: a server stream reopened after a reload is sent as that caller. */
  caller: LegacyCaller | undefined
  /** The server->client stream of the Streamable HTTP session. */
  serverStream: { readonly destroy: () => void } | undefined
  isClosed: boolean
  /** A POST that may open the session behind it is in flight (only one at a time). */
  isOpening: boolean
  kept: KeptStream | undefined
  /** Bytes written since the stream last said it was full (write() false), until it drains. */
  unreadBytes: number
}

/** What ends the Streamable HTTP session behind a legacy one: a server's upstream, or a virtual server's sessions. */
export type SessionEnder = Pick<Upstream, 'endSession'>

/** Opens a session's server->client stream through one build's /mcp route. */
export type ServerStreamOpener = (session: LegacySession) => Promise<void>

export class LegacySessions {
  private readonly sessions = new Map<string, LegacySession>()
  /** Per server, the newest build's way to open a server stream (a reload's build replaces the last). */
  private readonly openers = new Map<string, ServerStreamOpener>()

  useOpener (server: string, opener: ServerStreamOpener): void {
    this.openers.set(server, opener)
  }

  openerOf (server: string): ServerStreamOpener | undefined {
    return this.openers.get(server)
  }

  get (id: string): LegacySession | undefined {
    return this.sessions.get(id)
  }

  add (session: LegacySession): void {
    this.sessions.set(session.id, session)
  }

  delete (id: string): void {
    this.sessions.delete(id)
  }

  /** Sessions open on `server`, all callers together (servers[].maxLegacySessions). */
  countOn (server: string): number {
    let count = 0
    for (const s of this.sessions.values()) if (s.server === server) count++
    return count
  }

  /** Sessions `user` holds on `server` (the per-user cap). */
  countOf (server: string, user: string): number {
    let count = 0
    for (const s of this.sessions.values()) if (s.server === server && s.owner.user === user) count++
    return count
  }

  /** Shutdown: an event stream never ends by itself, so without this the listener would wait for it. */
  closeAll (): void {
    for (const session of this.sessions.values()) session.res.end()
  }
}
