/**
 * The route of each virtual server, `/<name>/mcp` (README "Virtual servers"): admission and the
 * token check against the virtual server's own resource, then the gateway answers initialize
 * and the lists itself and routes everything else to the member it belongs to. Registered by
 * the MCP routes' plugin, so body parsing and the error answers are theirs.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError, jsonRpcError, type JsonRpcId } from '../errors.js'
import type { VirtualServerConfig } from '../config/schema.js'
import { inspectBody, inspectValue, type McpInspection, type McpMessage } from '../mcp/jsonrpc.js'
import { memberOf, skipSpace } from '../mcp/scan-json.js'
import { KNOWN_REVISIONS, checkMirroredHeaders, isModernRevision } from '../mcp/headers.js'
import { paramHeadersOf, type ParamHeader } from '../mcp/param-headers.js'
import type { Authenticator } from '../resource-server/plugin.js'
import type { RequestIdentity } from '../resource-server/verify-token.js'
import type { AuditLog } from '../observability/audit.js'
import type { OriginPolicy } from '../mcp/origin.js'
import { sseMessageEvent } from '../upstreams/response-edit.js'
import type { StreamKeeper } from '../upstreams/stream-keeper.js'
import { admit } from '../routes/mcp/admit.js'
import { userOf } from '../routes/mcp/call.js'
import { VERSION } from '../version.js'
import { legacySseRoutes } from '../routes/legacy-sse.js'
import type { LegacySessions } from '../routes/legacy-sessions.js'
import { textOf, type MemberLink, type MemberResponse, type RawMessage } from './member-link.js'
import { SseEventReader } from '../upstreams/sse-events.js'
import { CALL_TOOL_NAME, SEARCH_TOOLS_NAME, ToolIndex, parseCallToolArgs, parseSearchArgs, searchResult, toolSearchTools } from './tool-search.js'
import { MAX_VIRTUAL_SESSIONS, MAX_VIRTUAL_SESSIONS_PER_USER, MODERN_REVISION, VirtualServer, refusalOf, type MemberRefusal, type VirtualContext } from './virtual-server.js'
import type { ClientHello, VirtualSession, VirtualSessionTable } from './session.js'
import { isEventStream } from '../net/media-type.js'

export interface VirtualRoutesOptions {
  readonly virtualServers: readonly VirtualServerConfig[]
  readonly publicUrl: string
  readonly link: MemberLink
  readonly now: () => number
  /** A virtual session's idle timeout: that of its longest-lived member. */
  readonly idleTimeoutOf: (virtual: VirtualServerConfig) => number
  readonly isClosing: () => boolean
  readonly isOriginAllowed: OriginPolicy
  /** Undefined when auth is disabled: every request is anonymous. */
  readonly authenticate: Authenticator | undefined
  readonly audit: AuditLog | undefined
  readonly streamKeeper: StreamKeeper | undefined
  /** Every build's sessions (SharedParts): a reload keeps them. */
  readonly sessions: VirtualSessionTable | undefined
  /** Registers what to do when a reload retires this build. */
  readonly onRetire: ((fn: () => void) => void) | undefined
  /** The 2024-11-05 transport's sessions, shared by every build (SharedParts). */
  readonly legacySessions: LegacySessions
  /** The longest message a virtual server relays: that of its member with the largest maxMessageBytes. */
  readonly maxMessageBytesOf: (virtual: VirtualServerConfig) => number
  /** A verified caller whose grant was revoked or whose user was blocked since (auth on): a retry never acts for it. */
  readonly isRevoked?: ((identity: RequestIdentity) => boolean) | undefined
}

/** The revision a virtual session speaks when the client asks for one the gateway does not know. */
const DEFAULT_PROTOCOL_VERSION = '2025-11-25'
/** Response headers of a member's refusal that are the client's to see. */
const RELAYED_HEADERS = /^(?:content-type|retry-after|ratelimit-.*|www-authenticate)$/
const SWEEP_INTERVAL_MS = 30_000

type Item = Record<string, unknown>

/** What a virtual server offers: whatever its members offer, merged, with list changes announced. */
const SERVER_CAPABILITIES = { tools: { listChanged: true }, prompts: { listChanged: true }, resources: { listChanged: true } }

declare module 'fastify' {
  interface FastifyRequest {
    /** A virtual server's caller as its onRequest verified it: null with auth off; false until verified. */
    virtualIdentity: RequestIdentity | null | false
  }
}

/** The identity a virtual route's onRequest stored, or undefined when none was (fail closed with auth on). */
function storedIdentity (request: FastifyRequest): RequestIdentity | null | undefined {
  const stored = request.virtualIdentity
  return stored === false ? undefined : stored
}

export async function virtualRoutes (app: FastifyInstance, opts: VirtualRoutesOptions): Promise<void> {
  app.decorateRequest('virtualIdentity', false)
  const servers = opts.virtualServers.map((config) => new VirtualServer(config, { link: opts.link, now: opts.now, idleTimeoutMs: opts.idleTimeoutOf(config), streamKeeper: opts.streamKeeper, sessions: opts.sessions?.of(config.name), isRevoked: opts.isRevoked, maxUnreadBytes: opts.maxMessageBytesOf(config) }))
  const sweep = setInterval(() => {
    for (const server of servers) void server.sweep()
  }, SWEEP_INTERVAL_MS)
  sweep.unref()
  // Retired by a reload: the newest build sweeps the shared sessions; the client streams this one relays end.
  opts.onRetire?.(() => {
    clearInterval(sweep)
    for (const server of servers) server.retire()
  })
  // GET streams never end by themselves: at close, those this build relays end (never another
  // build's: the sessions are shared). Member sessions end with their upstreams at shutdown.
  app.addHook('preClose', async () => {
    clearInterval(sweep)
    for (const server of servers) server.retire()
  })

  for (const [index, server] of servers.entries()) {
    const config = opts.virtualServers[index] as VirtualServerConfig
    const route = { isClosing: opts.isClosing, audit: opts.audit, isOriginAllowed: opts.isOriginAllowed }
    const target = { name: server.name, scopes: [] }
    app.route({
      method: ['GET', 'POST', 'DELETE'],
      url: `/${server.name}/mcp`,
      exposeHeadRoute: false,
      config: { mcpServer: server.name },
      // Before the body: shutting down, audit, Origin, then the token for this virtual server's resource.
      onRequest: async (request, reply) => {
        admit({ route, request, reply })
        request.virtualIdentity = opts.authenticate === undefined ? null : await opts.authenticate(request, target)
      },
      handler: async (request, reply) => {
        const stored = storedIdentity(request)
        // Fail closed: with auth on, a request whose identity was not stored is no anonymous one.
        if (stored === undefined && opts.authenticate !== undefined) throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'this MCP server needs an OAuth access token')
        const identity = stored ?? null
        const ctx: VirtualContext = { grant: { identity, virtualServer: server.name }, ip: request.ip, log: request.log, requestId: request.id }
        const exchange: Exchange = { server, ctx, request, reply, owner: { user: userOf(identity).id, client: identity?.clientId ?? '' }, opts, inspection: undefined }
        if (request.method === 'POST') return post(exchange)
        const session = server.sessionOf(sessionIdOf(request), exchange.owner, ctx)
        if (request.method === 'DELETE') {
          await server.end(session, ctx)
          return reply.code(200).send()
        }
        return openStream(exchange, session)
      },
    })

    // The 2024-11-05 HTTP+SSE transport (README "2024-11-05 clients"): each legacy session is a
    // session of the route above, reached in process, so its token check, policy and audit are that route's.
    await legacySseRoutes(app, {
      target: {
        name: server.name,
        idleTimeoutMs: opts.idleTimeoutOf(config),
        maxMessageBytes: opts.maxMessageBytesOf(config),
        maxLegacySessions: MAX_VIRTUAL_SESSIONS,
        maxSessionsPerUser: MAX_VIRTUAL_SESSIONS_PER_USER,
      },
      upstream: server,
      // Before the body: as above, with a challenge naming the resource as this client knows it (its /sse URL).
      onRequest: [async (request, reply) => {
        admit({ route, request, reply })
        request.virtualIdentity = opts.authenticate === undefined ? null : await opts.authenticate(request, target, true)
      }],
      // A virtual server has no access list or rate limit of its own: its members judge each request.
      checkAccess: async () => {},
      charge: async () => {},
      ownerOf: (request) => {
        const identity = storedIdentity(request)
        if (identity === undefined && opts.authenticate !== undefined) throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'this MCP server needs an OAuth access token')
        return { user: userOf(identity ?? null).id, client: identity?.clientId ?? '' }
      },
      streamKeeper: opts.streamKeeper,
      sessions: opts.legacySessions,
    })
  }
}

interface Exchange {
  readonly server: VirtualServer
  readonly ctx: VirtualContext
  readonly request: FastifyRequest
  readonly reply: FastifyReply
  readonly owner: { readonly user: string, readonly client: string }
  readonly opts: VirtualRoutesOptions
  /** A 2026-07-28 request: the gateway's own results say they are complete (resultType). */
  readonly isModern?: boolean
  /** The POST body's inspection (post): a message going to its member unchanged goes as these bytes. */
  inspection: McpInspection | undefined
}

function sessionIdOf (request: FastifyRequest): string {
  const id = request.headers['mcp-session-id']
  if (typeof id !== 'string' || id === '') throw new PortcullisError('PORTCULLIS_ERR_SESSION_REQUIRED')
  return id
}

/** The client's GET: an event stream of its own, fed by each open member's. */
async function openStream (ex: Exchange, session: VirtualSession): Promise<FastifyReply> {
  const { reply } = ex
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' })
  res.flushHeaders()
  await ex.server.openClientStream(session, ex.ctx, res)
  return reply
}

/** Not async itself (no await): the promise of the answer's own function is returned, not wrapped in one more. */
function post (ex: Exchange): FastifyReply | Promise<FastifyReply> {
  const { request, server, ctx } = ex
  const inspection = inspectBody(request.body as Buffer | undefined)
  ex.inspection = inspection
  if (inspection.isBatch) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'a virtual server takes one JSON-RPC message per POST (JSON-RPC batches were removed in MCP 2025-06-18)')
  const message = inspection.messages[0]
  if (message === undefined) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST')
  // MCP 2026-07-28: whoever reads the body checks that Mcp-Method / Mcp-Name say what it says
  // (400 -32020), so that a proxy routing on the headers cannot be shown one thing and run another.
  checkMirroredHeaders(inspection, request.headers)
  if (message.method === 'initialize') return initialize(ex, message)
  // MCP 2026-07-28: no session; every request carries the client's _meta. Only a known modern
  // revision goes without one (any other string is refused here, before a member is asked).
  const modern = inspection.modernVersion
  if (modern !== undefined && request.headers['mcp-session-id'] === undefined) {
    if (isModernRevision(modern) && KNOWN_REVISIONS.has(modern)) return stateless(ex, message)
    if (!KNOWN_REVISIONS.has(modern)) {
      const supported = [...KNOWN_REVISIONS].filter((revision) => isModernRevision(revision)).join(', ')
      throw new PortcullisError('PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION', `_meta protocol version ${JSON.stringify(modern.slice(0, 40))}; supported without a session: ${supported}`, { id: message.id ?? null })
    }
  }
  const session = server.sessionOf(sessionIdOf(request), ex.owner, ctx)
  if (message.kind === 'response') return answerToMember(ex, session, message)
  if (message.kind === 'notification') return notify(ex, session, message)
  return dispatch(ex, session, message)
}

/** A 2026-07-28 request: server/discover answered here, anything else as in a session that lives for this request only. */
async function stateless (ex: Exchange, message: McpMessage): Promise<FastifyReply> {
  if (message.kind !== 'request') return ex.reply.code(202).send()
  const id = message.id ?? null
  const meta = asItem(message.params?._meta)
  const session = await ex.server.statelessSession(ex.owner, ex.ctx, meta, id)
  if (message.method === 'server/discover') {
    return answer(ex, id, {
      supportedVersions: [MODERN_REVISION],
      capabilities: SERVER_CAPABILITIES,
      resultType: 'complete',
      ttlMs: 0,
      cacheScope: 'private',
      _meta: { 'io.modelcontextprotocol/serverInfo': { name: `portcullis/${ex.server.name}`, version: VERSION } },
    })
  }
  return dispatch({ ...ex, isModern: true }, session, message)
}

/** The gateway answers initialize itself: no member is asked until the client needs one. */
function initialize (ex: Exchange, message: McpMessage): FastifyReply {
  const params = message.params ?? {}
  const asked = typeof params.protocolVersion === 'string' ? params.protocolVersion : DEFAULT_PROTOCOL_VERSION
  const protocolVersion = KNOWN_REVISIONS.has(asked) && !isModernRevision(asked) ? asked : DEFAULT_PROTOCOL_VERSION
  const capabilities = asItem(params.capabilities)
  // Kept for the session's life and sent to each member: bounded (client info beyond the bound
  // keeps its name, title and version; capabilities beyond it are refused).
  if (JSON.stringify(capabilities).length > MAX_HELLO_PART_CHARS) {
    throw new PortcullisError('PORTCULLIS_ERR_INVALID_PARAMS', `initialize's capabilities exceed ${MAX_HELLO_PART_CHARS} characters of JSON (a virtual server keeps them for the session)`, { id: message.id ?? null })
  }
  const hello: ClientHello = { protocolVersion, capabilities, clientInfo: boundedClientInfo(asItem(params.clientInfo)) }
  const session = ex.server.open(ex.owner, hello, ex.ctx)
  const result = {
    protocolVersion,
    capabilities: SERVER_CAPABILITIES,
    serverInfo: { name: `portcullis/${ex.server.name}`, version: VERSION },
  }
  return ex.reply.code(200).header('mcp-session-id', session.id).type('application/json').send({ jsonrpc: '2.0', id: message.id ?? null, result })
}

/** initialize's capabilities and clientInfo, each, as JSON: what a session keeps of them. */
const MAX_HELLO_PART_CHARS = 8192
const MAX_LOG_LEVEL_LENGTH = 32
const MAX_CLIENT_INFO_FIELD_CHARS = 256

/** The client's info as kept: whole when small, else only its name, title and version (icons can be large). */
function boundedClientInfo (info: Item): Item {
  if (JSON.stringify(info).length <= MAX_HELLO_PART_CHARS) return info
  const kept: Item = {}
  for (const key of ['name', 'title', 'version']) {
    const value = info[key]
    if (typeof value === 'string') kept[key] = value.slice(0, MAX_CLIENT_INFO_FIELD_CHARS)
  }
  return kept
}

/** A client's answer to a member's request (elicitation, sampling, roots) goes back to that member with its own id. */
async function answerToMember (ex: Exchange, session: VirtualSession, message: McpMessage): Promise<FastifyReply> {
  const target = ex.server.answerTarget(message.id)
  if (target === undefined) return ex.reply.code(202).send()
  const res = await ex.server.toMember(session, ex.ctx, target.member, { ...message.value, id: target.id })
  if ('body' in res) res.body.resume()
  return ex.reply.code(202).send()
}

/** A cancellation goes to the member running the request; other notifications to every open member. */
async function notify (ex: Exchange, session: VirtualSession, message: McpMessage): Promise<FastifyReply> {
  const { server, ctx } = ex
  if (message.method === 'notifications/initialized') return ex.reply.code(202).send()
  const members = message.method === 'notifications/cancelled'
    ? [session.inflight.get(idOf(message.params?.requestId))].filter((m) => m !== undefined)
    : [...session.members.keys()]
  await Promise.all(members.map(async (member) => {
    const res = await server.toMember(session, ctx, member, message.value)
    if ('body' in res) res.body.resume()
  }))
  return ex.reply.code(202).send()
}

function dispatch (ex: Exchange, session: VirtualSession, message: McpMessage): FastifyReply | Promise<FastifyReply> {
  // The request that is most of the traffic, without the switch's async frame.
  if (message.method === 'tools/call') {
    const params = message.params ?? {}
    return callTool(ex, session, message, String(params.name ?? ''), params.arguments)
  }
  return answerHere(ex, session, message)
}

async function answerHere (ex: Exchange, session: VirtualSession, message: McpMessage): Promise<FastifyReply> {
  const { server, ctx } = ex
  const id = message.id ?? null
  const params = message.params ?? {}
  switch (message.method) {
    case 'ping':
      return answer(ex, id, {})
    case 'tools/list': {
      const merged = await server.listTools(session, ctx)
      return answer(ex, id, listResult(ex, { tools: await isSearchActive(ex, session) ? toolSearchTools() : merged.tools }))
    }
    case 'prompts/list':
      return answer(ex, id, listResult(ex, { prompts: await server.listPrompts(session, ctx) }))
    case 'resources/list':
      return answer(ex, id, listResult(ex, { resources: await server.listResources(session, ctx) }))
    case 'resources/templates/list':
      return answer(ex, id, listResult(ex, { resourceTemplates: await server.listResourceTemplates(session, ctx) }))
    case 'prompts/get': {
      const found = await server.resolvePrompt(session, ctx, String(params.name ?? ''))
      if (found === undefined) throw new PortcullisError('PORTCULLIS_ERR_INVALID_PARAMS', `no prompt named ${JSON.stringify(String(params.name ?? '').slice(0, 100))} on virtual server "${server.name}"`, { id })
      return forward(ex, session, found.member, { ...message.value, params: { ...params, name: found.name } }, id)
    }
    case 'resources/read':
    case 'resources/subscribe':
    case 'resources/unsubscribe': {
      const member = await server.resourceMember(session, ctx, String(params.uri ?? ''))
      if (member === undefined) throw new PortcullisError('PORTCULLIS_ERR_INVALID_PARAMS', `no member of virtual server "${server.name}" serves ${JSON.stringify(String(params.uri ?? '').slice(0, 200))}`, { id })
      return forward(ex, session, member, message.value, id)
    }
    case 'completion/complete':
      return complete(ex, session, message)
    case 'logging/setLevel':
      // Remembered: a member opened later is told too (openMember).
      if (typeof params.level === 'string') session.logLevel = params.level.slice(0, MAX_LOG_LEVEL_LENGTH)
      await Promise.all([...session.members.keys()].map(async (member) => {
        const res = await server.toMember(session, ctx, member, message.value)
        if ('body' in res) res.body.resume()
      }))
      return answer(ex, id, {})
    default:
      return ex.reply.code(200).type('application/json').send({ jsonrpc: '2.0', id, error: { code: -32601, message: `Method not found: ${String(message.method).slice(0, 100)}` } })
  }
}

/**
 * tools/call: the virtual server's own allow/deny on the merged name first, then the member
 * under the tool's own name (where the member's policy, limits and audit judge it). With
 * toolSearch, search_tools answers here and call_tool is a call of the tool it names.
 */
function callTool (ex: Exchange, session: VirtualSession, message: McpMessage, name: string, args: unknown): Promise<FastifyReply> {
  return ex.server.config.toolSearch === undefined ? callMember(ex, session, message, name, args) : callToolWithSearch(ex, session, message, name, args)
}

async function callToolWithSearch (ex: Exchange, session: VirtualSession, message: McpMessage, name: string, args: unknown): Promise<FastifyReply> {
  const { server, ctx } = ex
  const id = message.id ?? null
  if (await isSearchActive(ex, session)) {
    if (name === SEARCH_TOOLS_NAME) {
      const parsed = parseSearchArgs(args)
      if ('error' in parsed) return answer(ex, id, toolError(parsed.error))
      const tools = session.tools ?? await server.listTools(session, ctx)
      return answer(ex, id, searchResult(new ToolIndex(tools.tools).search(parsed.query, parsed.limit)))
    }
    if (name === CALL_TOOL_NAME) {
      const parsed = parseCallToolArgs(args)
      if ('error' in parsed) return answer(ex, id, toolError(parsed.error))
      if (parsed.name === SEARCH_TOOLS_NAME || parsed.name === CALL_TOOL_NAME) return answer(ex, id, toolError(`call ${parsed.name} directly, not through ${CALL_TOOL_NAME}`))
      return callMember(ex, session, message, parsed.name, parsed.arguments)
    }
  }
  return callMember(ex, session, message, name, args)
}

/** toolSearch (README "Virtual servers"): the two tools stand in for the list while it is longer than `above`. */
async function isSearchActive (ex: Exchange, session: VirtualSession): Promise<boolean> {
  const search = ex.server.config.toolSearch
  if (search === undefined) return false
  const tools = session.tools ?? await ex.server.listTools(session, ex.ctx)
  return tools.tools.length > search.above
}

function callMember (ex: Exchange, session: VirtualSession, message: McpMessage, name: string, args: unknown): Promise<FastifyReply> {
  // The name is resolved first: the policy judges the member's tool behind it (see isToolAllowed).
  const known = ex.server.knownTool(session, name)
  if (known !== undefined) return callResolved(ex, session, message, name, args, known)
  return ex.server.resolveTool(session, ex.ctx, name).then((found) => callResolved(ex, session, message, name, args, found))
}

function callResolved (ex: Exchange, session: VirtualSession, message: McpMessage, name: string, args: unknown, found: { member: string, name: string } | undefined): Promise<FastifyReply> {
  const { server } = ex
  const id = message.id ?? null
  if (!server.isToolAllowed(name, found)) {
    recordDenial(ex, message, name)
    throw new PortcullisError('PORTCULLIS_ERR_POLICY_DENIED', `tool "${name}" is denied on virtual server "${server.name}"`, { id })
  }
  if (found === undefined) throw new PortcullisError('PORTCULLIS_ERR_UNKNOWN_TOOL', `no tool named ${JSON.stringify(name.slice(0, 100))} on virtual server "${server.name}"; list the tools again`, { id })
  const params = { ...(message.params ?? {}), name: found.name, ...(args === undefined ? {} : { arguments: args }) }
  // 2026-07-28: the member checks Mcp-Param-* against the arguments (x-mcp-header in the tool's
  // schema, which the merged definition keeps): sent as the client mirrored them for the merged name.
  const definition = ex.isModern === true ? session.tools?.tools.find((tool) => tool.name === name) : undefined
  const paramHeaders = definition === undefined ? undefined : paramHeadersOf(definition.inputSchema)
  // The client's own message (not call_tool's inner one): its own bytes go, with the member's
  // name for the tool spliced in when it differs. Every other byte goes as it came (a re-encode
  // would round integers beyond 2^53 and turn `1.0` into `1`), and nothing is serialised again.
  // Not with Mcp-Param-* headers: those are written from the parsed arguments, which the
  // client's text of a number (1.0, 1e3, 20 digits) need not match.
  const inspection = ex.inspection
  const isClientMessage = message.params?.arguments === args && inspection?.messages[0] === message && (paramHeaders === undefined || paramHeaders.length === 0)
  const value = { ...message.value, params }
  const raw = isClientMessage && inspection !== undefined
    ? message.params?.name === found.name ? { bytes: ex.request.body as Buffer, inspection } : renamed(ex.request.body as Buffer, value)
    : undefined
  return forward(ex, session, found.member, value, id, paramHeaders, raw)
}

/**
 * A message's bytes with params.name replaced by the member's name for the tool, and their
 * inspection; undefined when the text has no params.name to replace (then the message is
 * encoded again). The body passed inspectBody: valid JSON, no key twice in an object.
 */
function renamed (bytes: Buffer, value: Item): RawMessage | undefined {
  const text = bytes.toString('utf8')
  const params = memberOf(text, skipSpace(text, 0), 'params')
  if (params === undefined || text.charCodeAt(params.valueStart) !== OPEN_OBJECT) return undefined
  const name = memberOf(text, params.valueStart, 'name')
  const to = asItem(value.params).name
  if (name === undefined || typeof to !== 'string') return undefined
  return { bytes: Buffer.from(text.slice(0, name.valueStart) + JSON.stringify(to) + text.slice(name.end)), inspection: inspectValue(value) }
}

const OPEN_OBJECT = 0x7b

/** completion/complete names a prompt (merged name) or a resource (URI): routed as those are. */
async function complete (ex: Exchange, session: VirtualSession, message: McpMessage): Promise<FastifyReply> {
  const { server, ctx } = ex
  const id = message.id ?? null
  const params = message.params ?? {}
  const ref = asItem(params.ref)
  if (ref.type === 'ref/prompt') {
    const found = await server.resolvePrompt(session, ctx, String(ref.name ?? ''))
    if (found !== undefined) return forward(ex, session, found.member, { ...message.value, params: { ...params, ref: { ...ref, name: found.name } } }, id)
  } else if (ref.type === 'ref/resource') {
    const member = await server.resourceMember(session, ctx, String(ref.uri ?? ''))
    if (member !== undefined) return forward(ex, session, member, message.value, id)
  }
  throw new PortcullisError('PORTCULLIS_ERR_INVALID_PARAMS', 'the completion\'s ref names no prompt or resource of this virtual server', { id })
}

/** A refusal by the virtual server's own rules is audited as the members' are. */
function recordDenial (ex: Exchange, message: McpMessage, name: string): void {
  const identity = ex.ctx.grant.identity
  ex.opts.audit?.record({
    requestId: ex.request.id,
    server: ex.server.name,
    virtualServer: ex.server.name,
    transport: 'virtual',
    method: 'tools/call',
    jsonrpcId: message.id ?? null,
    target: { kind: 'tool', name },
    user: identity === null ? null : { sub: identity.id, username: identity.name },
    clientId: identity?.clientId ?? null,
    ip: ex.request.ip,
    decision: 'denied',
    reason: `virtualServers.${ex.server.name}.tools`,
    status: 403,
    latencyMs: Math.round(ex.reply.elapsedTime * 10) / 10,
  })
}

/**
 * One request to its member, and the member's answer to the client: a refusal as the member
 * route answered it, JSON as it is, an event stream event by event (progress passes; a
 * member's own request gets an id the client's answer can be routed back by).
 */
async function forward (ex: Exchange, session: VirtualSession, member: string, body: Item, id: JsonRpcId, paramHeaders?: readonly ParamHeader[], raw?: RawMessage): Promise<FastifyReply> {
  const { server, ctx } = ex
  const reply = ex.reply
  const key = id
  session.inflight.set(key, member)
  try {
    const res = await server.toMember(session, ctx, member, body, paramHeaders, raw)
    if (!('body' in res)) return sendRefusal(ex, member, res, id)
    if (res.status >= 400) return sendRefusal(ex, member, await refusalOf(res), id)
    if (res.status === 202) {
      res.body.resume()
      return reply.code(202).send()
    }
    const expected: Expected = { id, progressToken: asItem(asItem(body.params)._meta).progressToken }
    if (!isEventStream(res.headers['content-type'])) {
      const text = await textOf(res)
      const parsed = parsedMessages(text)
      const messages = parsed.filter((message) => isForRequest(ex, member, message, expected))
      // The answer carries the client's own id already: relayed as the member route wrote it,
      // unless it holds a server->client request (whose id is rewritten), or is not one message.
      if (parsed.length === 1 && messages.length === 1 && !('method' in (messages[0] as Item))) return reply.code(200).type('application/json').send(text)
      if (messages.length === 0) throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `member "${member}" of virtual server "${server.name}" gave no answer to the request`, { id })
      const relayed = messages.map((message) => server.fromMember(member, message))
      return reply.code(200).type('application/json').send(relayed.length === 1 ? relayed[0] : relayed)
    }
    await relayStream(ex, session, member, res, expected)
    return reply
  } finally {
    session.inflight.delete(key)
  }
}

async function relayStream (ex: Exchange, session: VirtualSession, member: string, res: MemberResponse, expected: Expected): Promise<void> {
  const { reply, server } = ex
  reply.hijack()
  const out = reply.raw
  // The client left: the member's answer is not read further (the member route sees its client go).
  if (out.destroyed) {
    res.destroy()
    return
  }
  out.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' })
  out.once('close', () => { if (!out.writableFinished) res.destroy() })
  const keeper = ex.opts.streamKeeper
  const kept = keeper?.add(out)
  const reader = new SseEventReader()
  // Each write of the member route's goes out as it is made: no stream or promise in between.
  // A client that does not read makes the member route wait, as at the member's own URL (an
  // HTTP upstream is paused): its socket holds, past its highWaterMark, one chunk's events at
  // most. An in-process client (a 2024-11-05 session's) drains as its own reader reads.
  let isWaiting = false
  const resumeOnDrain = (): void => {
    if (isWaiting) return
    isWaiting = true
    out.once('drain', () => {
      isWaiting = false
      res.resumeWriter()
    })
  }
  await new Promise<void>((resolve) => {
    res.consume({
      data: (chunk) => {
        if (out.destroyed) {
          res.destroy()
          return true
        }
        let isReady = true
        try {
          for (const { event: name, data } of reader.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) {
            if (name !== 'message' || data === '') continue
            const event = relayedEvent(ex, session, member, data, expected)
            if (event === undefined) continue
            if (!out.write(event)) isReady = false
            if (kept !== undefined) keeper?.wrote(kept, event)
          }
        } catch (err) {
          ex.ctx.log.info({ virtualServer: server.name, member, err: { message: (err as Error).message } }, 'virtual member answer relay ended early')
          res.destroy()
        }
        // Its socket is full: the member route waits for 'drain' (a client that leaves instead closes out, and res with it).
        if (!isReady) resumeOnDrain()
        return isReady
      },
      end: resolve,
    })
  })
  out.end()
}

/** The request a member's answer stream is for: its id and its progress token (the client's own). */
interface Expected {
  readonly id: JsonRpcId
  readonly progressToken: unknown
}

/**
 * One event of a member's answer stream, for the client. Only what belongs to the forwarded
 * request passes: its answer (its id) and its progress (its token) — a member must not answer,
 * or report progress on, another member's request of the client's (others are dropped). The
 * answer and the progress notifications are written as the member route wrote them (no
 * re-encode); a server->client request gets a rewritten id, and a tools/list_changed forgets a
 * 2026-07-28 caller's kept tool table (its request's stream is where it hears of changes).
 */
function relayedEvent (ex: Exchange, session: VirtualSession, member: string, data: string, expected: Expected): string | undefined {
  // Data on several lines (JSON may hold newlines) is written again as one line: SSE framing.
  const isOneLine = !data.includes('\n')
  const parsed = parseJson(data)
  const message = asItem(parsed)
  // Not one JSON-RPC message (a batch, not JSON): dropped.
  if (message !== parsed) return undefined
  if (!isForRequest(ex, member, message, expected)) return undefined
  if (message.method === 'notifications/tools/list_changed') ex.server.forgetTools(session)
  const isRequest = typeof message.method === 'string' && 'id' in message
  return isOneLine && !isRequest ? `event: message\ndata: ${data}\n\n` : sseMessageEvent(ex.server.fromMember(member, message))
}

/**
 * An answer with the forwarded request's id (and no method key at all: a client would read one
 * with a method as a request), progress with its token, or any other message with a method.
 */
function isForRequest (ex: Exchange, member: string, message: Item, expected: Expected): boolean {
  const method = message.method
  const isOwn = typeof method !== 'string'
    ? !('method' in message) && message.id === expected.id
    : method !== 'notifications/progress' || (expected.progressToken !== undefined && asItem(message.params).progressToken === expected.progressToken)
  if (!isOwn) ex.ctx.log.debug({ virtualServer: ex.server.name, member, method }, 'virtual member message dropped: not for the request it answers')
  return isOwn
}

function parseJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** The JSON-RPC messages of a member's JSON text: one, a batch, or none when it is not JSON. */
function parsedMessages (text: string): Item[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return []
  }
  return (Array.isArray(parsed) ? parsed : [parsed]).filter((message): message is Item => message !== null && typeof message === 'object' && !Array.isArray(message))
}

/**
 * A member's 404 (its session gone even after one new one) or 401 would tell the client its
 * virtual session is gone or to sign in again — neither is true: the gateway's own hop failed.
 * Answered as the member being unavailable (STYLE.md: never a client-fault code for an internal failure).
 */
const MISLEADING_STATUSES = new Set([401, 404])

/** The member route's refusal for the client: its status, Retry-After and rate-limit headers, its JSON-RPC error with the client's id. */
function sendRefusal (ex: Exchange, member: string, refusal: MemberRefusal, id: JsonRpcId): FastifyReply {
  const { reply, server } = ex
  if (MISLEADING_STATUSES.has(refusal.status)) {
    ex.ctx.log.warn({ virtualServer: server.name, member, status: refusal.status }, 'virtual member refused the in-process request')
    const err = new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `member "${member}" of virtual server "${server.name}" is unavailable`, { id })
    return reply.code(err.status).type('application/json').send(jsonRpcError(err, id))
  }
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(refusal.headers)) {
    if (RELAYED_HEADERS.test(name) && (typeof value === 'string' || typeof value === 'number')) headers[name] = String(value)
  }
  // A step-up challenge names this virtual server's resource: the client's token is for it.
  const challenge = headers['www-authenticate']
  if (challenge !== undefined) headers['www-authenticate'] = challenge.replace(/resource_metadata="[^"]*"/, `resource_metadata="${ex.opts.publicUrl}/.well-known/oauth-protected-resource/${server.name}/mcp"`)
  const body = withId(refusal.text, id) ?? jsonRpcError(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE'), id)
  return reply.code(refusal.status).headers(headers).type('application/json').send(body)
}

/** A member's JSON-RPC error body, answering the client's id (it may have answered the virtual layer's own initialize). */
function withId (text: string, id: JsonRpcId): Item | undefined {
  try {
    const parsed: unknown = JSON.parse(text)
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? { ...parsed as Item, id } : undefined
  } catch {
    return undefined
  }
}

function answer (ex: Exchange, id: JsonRpcId, result: object): FastifyReply {
  return ex.reply.code(200).type('application/json').send({ jsonrpc: '2.0', id, result: ex.isModern === true ? { ...result, resultType: 'complete' } : result })
}

/** MCP 2026-07-28: a list says how long it may be cached, and for whom (each caller's lists differ: members filter them by policy). */
function listResult (ex: Exchange, result: Item): Item {
  return ex.isModern === true ? { ...result, ttlMs: 0, cacheScope: 'private' } : result
}

/** A tool-level error the model reads (MCP: isError results, not protocol errors, for what the model can fix). */
function toolError (text: string): Item {
  return { content: [{ type: 'text', text }], isError: true }
}

/** A JSON-RPC id as the in-flight table keys it: a string or a number as it is (Map tells 5 from "5"), anything else as null. */
function idOf (value: unknown): JsonRpcId {
  return typeof value === 'string' || typeof value === 'number' ? value : null
}

function asItem (value: unknown): Item {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Item : {}
}
