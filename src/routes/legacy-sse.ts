/**
 * The 2024-11-05 HTTP+SSE transport for old clients (MCP 2024-11-05 basic/transports,
 * "HTTP with SSE"): `GET /<server>/sse` opens the event stream, whose first event,
 * `endpoint`, names `/<server>/messages?sessionId=…` for the client's POSTs; every answer
 * and every server-initiated message comes back on the stream as an `event: message`.
 *
 * Nothing is judged twice and nothing is judged differently: each legacy POST is handed,
 * as an in-process request, to the server's own `/<server>/mcp` route, with the legacy
 * session mapped to a Streamable HTTP session (`Mcp-Session-Id`). Token, Origin, body limits,
 * policy, rate limits, guardrails, audit and error codes are that route's. Its answer (JSON
 * or an event stream) is written to the legacy stream and the POST gets 202; an HTTP error
 * it answers (401 with its challenge, 403, 413, 429, …) is the POST's answer, as it is.
 * Server-initiated messages arrive on the session's own GET stream, opened the same way.
 *
 * A virtual server (virtual/routes.ts) is served the same way: its legacy sessions are sessions
 * of its own `/<name>/mcp` route, which ends their member sessions when the stream ends.
 *
 * A legacy session belongs to the user and client that opened it (as /mcp sessions do):
 * anyone else naming its sessionId is answered as for a session that does not exist.
 */
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError } from '../errors.js'
import { inspectBody } from '../mcp/jsonrpc.js'
import { KNOWN_REVISIONS } from '../mcp/headers.js'
import { FORWARDED_HEADER } from '../cluster/forward.js'
import type { ServerConfig } from '../config/schema.js'
import { DEFAULT_MAX_SSE_EVENT_BYTES, defaultMaxProcessesPerUser, UNUSED_SESSION_IDLE_DIVISOR } from '../config/defaults.js'
import { ANONYMOUS } from '../identity.js'
import type { SessionOwner } from '../upstreams/session-owners.js'
import { sseMessageEvent } from '../upstreams/response-edit.js'
import { SseEventReader } from '../upstreams/sse-events.js'
import type { StreamKeeper } from '../upstreams/stream-keeper.js'
import { OUTLIVES_GENERATION, type LegacyCaller, type LegacySession, type LegacySessions, type SessionEnder } from './legacy-sessions.js'
import { isEventStream } from '../net/media-type.js'

type Step = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

/**
 * What the 2024-11-05 routes need of the endpoint they stand in front of (a server or a virtual
 * server): its name (`/<name>/sse`, `/<name>/messages`, handed to `/<name>/mcp`) and its caps.
 */
export interface LegacyTarget {
  readonly name: string
  /** A new stream waits for its initialize at most a tenth of this (as an unused /mcp session lives). */
  readonly idleTimeoutMs: number
  /** One whole message: the most a client may leave unread, and the longest event relayed. */
  readonly maxMessageBytes: number
  /** Streams open on it, all callers together. */
  readonly maxLegacySessions: number
  /** Streams one user may hold on it (its /mcp sessions' per-user cap). */
  readonly maxSessionsPerUser: number
}

/** A server's caps, as its /mcp sessions have them. */
export function legacyTargetOf (server: ServerConfig): LegacyTarget {
  return {
    name: server.name,
    idleTimeoutMs: server.idleTimeoutMs,
    maxMessageBytes: 'maxMessageBytes' in server ? server.maxMessageBytes : DEFAULT_MAX_SSE_EVENT_BYTES,
    maxLegacySessions: server.maxLegacySessions,
    maxSessionsPerUser: server.transport === 'stdio' ? server.maxProcessesPerUser ?? defaultMaxProcessesPerUser(server.maxProcesses) : server.maxSessionsPerUser,
  }
}

export interface LegacySseOptions {
  readonly target: LegacyTarget
  /** How this build ends the Streamable HTTP session behind a legacy one (a server's upstream; a virtual server's sessions). */
  readonly upstream: SessionEnder
  /** The /mcp route's steps before the body: shutting down, audit writable, Origin and CORS, the token. */
  readonly onRequest: readonly Step[]
  /** The /mcp route's access check for a GET (servers[].access, a body refused). */
  readonly checkAccess: Step
  /** Opening a stream costs one request of the caller's budget for the server (its rate limit). */
  readonly charge: (request: FastifyRequest) => Promise<void>
  /** Whom a request's sessions belong to (the /mcp route's rule). */
  readonly ownerOf: (request: FastifyRequest) => SessionOwner
  readonly streamKeeper: StreamKeeper | undefined
  /** Every build's legacy sessions (SharedParts): a reload must not forget them. */
  readonly sessions: LegacySessions
}

/** The legacy client sends no Accept fit for Streamable HTTP, and no session header of its own. */
const DROPPED_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'expect', 'upgrade', 'te',
  'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id',
])
/** What of the /mcp route's error answer is not the POST's own (framing, and CORS the POST already carries). */
const DROPPED_ANSWER_HEADERS: ReadonlySet<string> = new Set([
  'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'date', 'vary', 'mcp-session-id',
])
/** The version a 2024-11-05 client speaks until initialize says otherwise. */
const LEGACY_PROTOCOL_VERSION = '2024-11-05'
const SESSION_CAP_RETRY_AFTER_S = '2'
/** The longest a new legacy stream may wait for its initialize POST. */
const LEGACY_INITIALIZE_MAX_WAIT_MS = 60_000

function isSameOwner (a: SessionOwner, b: SessionOwner): boolean {
  return a.user === b.user && a.client === b.client
}

export async function legacySseRoutes (app: FastifyInstance, opts: LegacySseOptions): Promise<void> {
  const { target: server, upstream, ownerOf, streamKeeper, sessions } = opts
  // As long as a /mcp session may stay unused after initialize (a tenth of idleTimeoutMs), at most a minute.
  const initializeDeadlineMs = Math.min(server.idleTimeoutMs / UNUSED_SESSION_IDLE_DIVISOR, LEGACY_INITIALIZE_MAX_WAIT_MS)
  // One whole message (servers[].maxMessageBytes where the server has one).
  const maxBufferedBytes = server.maxMessageBytes
  const mcpUrl = `/${server.name}/mcp`
  const messagesPath = `/${server.name}/messages`

  /**
   * One message to the client, as the 2024-11-05 transport frames it. Waiting for a slow client
   * would not hold the /mcp answer back: the in-process answer buffers whatever the route writes
   * meanwhile. So the client's own buffer is what is bounded: a client with more than one whole
   * message unread is not reading, and its session ends (it connects again).
   */
  const send = (session: LegacySession, message: unknown, log: FastifyRequest['log']): void => {
    if (session.isClosed) return
    if (session.unreadBytes > maxBufferedBytes) {
      log.warn({ server: server.name, session: session.id.slice(0, 8), unreadBytes: session.unreadBytes }, 'legacy sse client not reading; session closed')
      session.res.destroy()
      end(session, log)
      return
    }
    adoptVersion(session, message)
    const event = sseMessageEvent(message)
    if (!session.res.write(event)) session.unreadBytes += Buffer.byteLength(event)
    if (session.kept !== undefined) streamKeeper?.wrote(session.kept, event)
  }

  /** The Streamable HTTP session behind the legacy one; ended at once when the stream closed while it was being opened. */
  const adopt = (session: LegacySession, mcpSessionId: string, log: FastifyRequest['log']): void => {
    session.mcpSessionId = mcpSessionId
    if (session.isClosed) endMcpSession(session, mcpSessionId, log)
  }

  const endMcpSession = (session: LegacySession, mcpSessionId: string, log: FastifyRequest['log']): void => {
    session.upstream.endSession?.(mcpSessionId, 'the client closed its 2024-11-05 event stream').catch((err: Error) => {
      log.warn({ server: server.name, err: { message: err.message } }, 'legacy session end failed')
    })
  }

  /** The stream ends, the session ends: the Streamable HTTP session behind it too (a DELETE upstream). */
  const end = (session: LegacySession, log: FastifyRequest['log']): void => {
    if (session.isClosed) return
    session.isClosed = true
    sessions.delete(session.id)
    session.serverStream?.destroy()
    if (session.mcpSessionId !== undefined) endMcpSession(session, session.mcpSessionId, log)
  }

  /** The same request, in process, to the /mcp route: every check and record is that route's. */
  const toMcpRoute = (caller: LegacyCaller, session: LegacySession, to: { method: 'POST', body: Buffer } | { method: 'GET', signal: AbortSignal }) => {
    return app.inject({
      method: to.method,
      url: mcpUrl,
      headers: mcpHeaders(caller.headers, session, to.method),
      ...(to.method === 'POST' ? { payload: to.body } : { signal: to.signal }),
      // The client's address as this request judged it (trustProxy applied once): rate limits keyed by it and the audit's ip are the client's.
      remoteAddress: caller.ip,
      payloadAsStream: true,
    })
  }

  /**
   * A POST before the session behind it exists opens one: while that is in flight, another is
   * refused, else two initialize POSTs racing would open two upstream sessions and leak one.
   */
  const toMcpRouteOnce = async (request: FastifyRequest, session: LegacySession): ReturnType<typeof toMcpRoute> => {
    const post = { method: 'POST', body: request.body as Buffer } as const
    if (session.mcpSessionId !== undefined) return toMcpRoute(request, session, post)
    if (session.isOpening) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'an initialize is in flight on this session: wait for its answer on the event stream')
    session.isOpening = true
    try {
      return await toMcpRoute(request, session, post)
    } finally {
      session.isOpening = false
    }
  }

  /** Everything the /mcp route answered, as messages on the legacy stream. */
  const relayAnswer = async (session: LegacySession, contentType: string, body: Readable, log: FastifyRequest['log']): Promise<void> => {
    if (isEventStream(contentType)) {
      const reader = new SseEventReader(maxBufferedBytes)
      for await (const chunk of body) {
        for (const event of reader.push(chunk as Buffer)) {
          const message = event.event === 'message' ? parseMessage(event.data) : undefined
          if (message !== undefined) send(session, message, log)
        }
        if (session.isClosed) break
      }
      return
    }
    const text = await readAll(body)
    if (text === '') return
    const parsed: unknown = JSON.parse(text)
    for (const message of Array.isArray(parsed) ? parsed : [parsed]) send(session, message, log)
  }

  /** Server-initiated messages (notifications, sampling and elicitation requests) reach the legacy stream too. */
  const openServerStream = async (caller: LegacyCaller, session: LegacySession): Promise<void> => {
    const abort = new AbortController()
    const response = await toMcpRoute(caller, session, { method: 'GET', signal: abort.signal })
    // A server without a GET stream (405) sends only answers: there is nothing more to relay.
    if (response.statusCode !== 200) {
      response.stream().resume()
      return
    }
    const inner = (response.raw as unknown as { res: ServerResponse }).res
    session.serverStream = { destroy: () => { abort.abort(); inner.destroy() } }
    if (session.isClosed) session.serverStream.destroy()
    await relayAnswer(session, String(response.headers['content-type'] ?? ''), response.stream(), caller.log).catch((err: Error) => {
      caller.log.warn({ server: server.name, err: { message: err.message } }, 'legacy server stream relay failed')
    })
    if (session.isClosed) return
    // A reload replaced this build, whose upstream (rebuilt, as HTTP ones are) closed the stream
    // when the build closed: the newest build opens it again, and the client notices nothing.
    const newest = sessions.openerOf(server.name)
    if (newest !== undefined && newest !== reopen) return newest(session)
    // The session behind it stopped sending (ended, forgotten upstream, its upstream closed): a
    // legacy stream left open would look alive while nothing more can reach it. The client connects again.
    caller.log.info({ server: server.name, session: session.id.slice(0, 8) }, 'legacy server stream ended; session closed')
    session.res.end()
  }

  const reopen = async (session: LegacySession): Promise<void> => {
    if (session.caller !== undefined) await openServerStream(session.caller, session)
  }
  sessions.useOpener(server.name, reopen)

  app.route({
    method: 'GET',
    url: `/${server.name}/sse`,
    exposeHeadRoute: false,
    config: { mcpServer: server.name },
    onRequest: [...opts.onRequest],
    preHandler: [opts.checkAccess, opts.charge],
    handler: async (request, reply) => {
      const owner = ownerOf(request)
      refuseAboveServerCap(sessions, server)
      refuseAboveCap(owner, sessions, server)
      const session: LegacySession = { id: randomUUID(), server: server.name, owner, res: reply.raw, upstream, mcpSessionId: undefined, protocolVersion: LEGACY_PROTOCOL_VERSION, initializeId: undefined, caller: undefined, serverStream: undefined, isClosed: false, isOpening: false, kept: undefined, unreadBytes: 0 }
      sessions.add(session)
      reply.hijack()
      const res = reply.raw
      // The session is the shared table's now: a reload may retire this build while the stream lives on.
      res.emit(OUTLIVES_GENERATION)
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' })
      const endpoint = `event: endpoint\ndata: ${messagesPath}?sessionId=${session.id}\n\n`
      res.write(endpoint)
      // Keep-alive comments while the session is quiet (proxies drop silent connections).
      session.kept = streamKeeper?.add(res)
      // A stream that never initializes holds a session slot for nothing (anonymous callers have no per-user cap).
      const deadline = setTimeout(() => {
        if (session.mcpSessionId !== undefined || session.isOpening) return
        request.log.info({ server: server.name, session: session.id.slice(0, 8), deadlineMs: initializeDeadlineMs }, 'legacy sse session sent no initialize; closed')
        res.end()
      }, initializeDeadlineMs)
      deadline.unref()
      res.once('close', () => {
        clearTimeout(deadline)
        end(session, request.log)
      })
      res.on('drain', () => { session.unreadBytes = 0 })
      request.log.info({ server: server.name, session: session.id.slice(0, 8) }, 'legacy sse session opened')
    },
  })

  app.route({
    method: 'POST',
    url: `/${server.name}/messages`,
    config: { mcpServer: server.name },
    onRequest: [...opts.onRequest],
    handler: async (request, reply) => {
      const sessionId = (request.query as Record<string, unknown>).sessionId
      if (typeof sessionId !== 'string' || sessionId === '') {
        throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'the sessionId query parameter is missing: use the URL of the endpoint event')
      }
      // Read as /mcp reads it, so that an error answered here echoes the request's id as /mcp's would.
      const call = request.mcpCall
      const inspection = call?.inspection ?? inspectBody(request.body as Buffer | undefined)
      if (call !== null) call.inspection = inspection
      // A route without a call of its own (a virtual server's) echoes the one request's id itself.
      const echoed = call === null && !inspection.isBatch && inspection.requestIds[0] !== undefined ? { id: inspection.requestIds[0] } : {}
      const session = sessions.get(sessionId)
      // Another caller's session is answered exactly like an unknown one (as /mcp sessions are).
      if (session === undefined || session.server !== server.name || session.isClosed || !isSameOwner(session.owner, ownerOf(request))) {
        throw new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND', undefined, echoed)
      }
      // After a reload this build's upstream is the one in force (a kept one is the same object).
      session.upstream = upstream
      const caller = callerOf(request)
      session.caller = caller
      const initialize = inspection.messages.find((m) => m.method === 'initialize')
      if (initialize !== undefined && session.mcpSessionId === undefined) session.initializeId = JSON.stringify(initialize.id ?? null)
      const response = await toMcpRouteOnce(request, session)
      const body = response.stream()
      const status = response.statusCode
      if (status !== 200 && status !== 202) {
        reply.code(status).headers(answerHeaders(response.headers, server.name))
        await reply.send(await readAll(body))
        // The session behind it is gone (idle, ended by an administrator, forgotten upstream): so is
        // this one. Its stream ends, and the client connects again (a 2024-11-05 client knows no 404).
        if (status === 404 && session.mcpSessionId !== undefined) session.res.end()
        return reply
      }
      const opened = response.headers['mcp-session-id']
      const isOpening = session.mcpSessionId === undefined && typeof opened === 'string'
      if (isOpening) adopt(session, opened, request.log)
      // The answer goes to the stream; the client only needs to know its message was taken.
      void reply.code(202).send()
      try {
        await relayAnswer(session, String(response.headers['content-type'] ?? ''), body, request.log)
      } catch (err) {
        request.log.warn({ server: server.name, err: { message: (err as Error).message } }, 'legacy answer relay failed')
      }
      if (isOpening) {
        // The stream lives as long as the session: it holds the caller, never this request (its body).
        openServerStream(caller, session).catch((err: Error) => {
          caller.log.warn({ server: server.name, err: { message: err.message } }, 'legacy server stream failed')
        })
      }
      return reply
    },
  })
}

/**
 * What the session keeps of a POST (for its server stream, now and after a reload): its headers
 * (copied), its address and its logger, so that the request, its body and its parsed body
 * (mcpCall.inspection, several times the body's size) are freed once the POST is answered.
 */
function callerOf (request: FastifyRequest): LegacyCaller {
  return { headers: { ...request.headers }, ip: request.ip, log: request.log }
}

/** servers[].maxLegacySessions: all callers together (with auth off they are one user, whom no per-user cap holds). */
function refuseAboveServerCap (sessions: LegacySessions, server: LegacyTarget): void {
  const count = sessions.countOn(server.name)
  if (count < server.maxLegacySessions) return
  throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_BUSY', `server "${server.name}" has ${count} 2024-11-05 event streams open (servers[].maxLegacySessions is ${server.maxLegacySessions}); retry shortly`, { headers: { 'retry-after': SESSION_CAP_RETRY_AFTER_S } })
}

/** A user's legacy sessions on the server are capped as their /mcp sessions are (anonymous: the server-wide budgets only). */
function refuseAboveCap (owner: SessionOwner, sessions: LegacySessions, server: LegacyTarget): void {
  if (owner.user === ANONYMOUS.id) return
  const cap = server.maxSessionsPerUser
  const count = sessions.countOf(server.name, owner.user)
  if (count < cap) return
  throw new PortcullisError('PORTCULLIS_ERR_TOO_MANY_SESSIONS', `you have ${count} event stream${count === 1 ? '' : 's'} open on server "${server.name}" (its per-user session cap is ${cap}); close one`, { headers: { 'retry-after': SESSION_CAP_RETRY_AFTER_S } })
}

/**
 * Who the client is was decided once, on the legacy request (trustProxy read its X-Forwarded-*
 * headers, its address is passed as remoteAddress): the in-process request must not decide it
 * again from headers, nor claim to come from another replica (a client could send that header).
 */
function isProxyHeader (name: string): boolean {
  return name.startsWith('x-forwarded-') || name === FORWARDED_HEADER
}

/** The client's headers for the /mcp route, as a Streamable HTTP client in that session would send them. */
export function mcpHeaders (incoming: IncomingHttpHeaders, session: LegacySession, method: 'POST' | 'GET'): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const name in incoming) {
    const value = incoming[name]
    if (value !== undefined && !DROPPED_REQUEST_HEADERS.has(name) && !isProxyHeader(name)) out[name] = value
  }
  out.accept = method === 'POST' ? 'application/json, text/event-stream' : 'text/event-stream'
  if (session.mcpSessionId !== undefined) {
    out['mcp-session-id'] = session.mcpSessionId
    out['mcp-protocol-version'] = session.protocolVersion
  }
  return out
}

/**
 * The /mcp route's error answer headers, for the POST. A challenge (a 403 insufficient_scope
 * from policy) names the resource as this client knows it: its /sse metadata, whose resource is
 * the URL it connected to (the SDK refuses any other) — as the legacy 401 does.
 */
function answerHeaders (headers: Record<string, unknown>, serverName: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (DROPPED_ANSWER_HEADERS.has(name) || name.startsWith('access-control-')) continue
    if (typeof value === 'string' || Array.isArray(value)) out[name] = value as string | string[]
    else if (typeof value === 'number') out[name] = String(value)
  }
  const challenge = out['www-authenticate']
  if (typeof challenge === 'string') out['www-authenticate'] = legacyChallenge(challenge, serverName)
  return out
}

function legacyChallenge (challenge: string, serverName: string): string {
  return challenge.replace(`/.well-known/oauth-protected-resource/${serverName}/mcp"`, `/.well-known/oauth-protected-resource/${serverName}/sse"`)
}

async function readAll (body: Readable): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/**
 * One message of an event stream's `message` event, or undefined: an event without data (a
 * 2025-11-25 priming event carries only its id) or that is not JSON is not a message to relay.
 */
function parseMessage (data: string): unknown {
  if (data === '') return undefined
  try {
    return JSON.parse(data)
  } catch {
    return undefined
  }
}

/**
 * The protocol version the session speaks is the one the answer to its own initialize names
 * (MCP lifecycle: the server's answer decides), and only a revision the gateway knows: any
 * other message naming a protocolVersion (a tool result, say) must not change the header.
 */
function adoptVersion (session: LegacySession, message: unknown): void {
  if (session.initializeId === undefined || message === null || typeof message !== 'object') return
  const { id, result } = message as { id?: unknown, result?: { protocolVersion?: unknown } }
  if (JSON.stringify(id ?? null) !== session.initializeId) return
  session.initializeId = undefined
  const version = result?.protocolVersion
  if (typeof version === 'string' && KNOWN_REVISIONS.has(version)) session.protocolVersion = version
}
