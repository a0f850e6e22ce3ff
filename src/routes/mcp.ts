/**
 * The MCP endpoint, /<server>/mcp: the table of steps every request passes, in order (see
 * DESIGN.md "The request path"). Each step is a small function of the request's `McpCall`
 * in ./mcp/; adding a check is one file there and one line here. The steps before the body
 * run in the onRequest hook (a refusal never waits for a body), the rest in the handler.
 *
 * Which step answers which error (README "Error codes"):
 *
 *   SHUTTING_DOWN, AUDIT_UNAVAILABLE, FORBIDDEN_ORIGIN ........ admit
 *   SESSION_NOT_FOUND (a replica holding it is gone) .......... forwardToOwner
 *   UNAUTHORIZED, INSUFFICIENT_SCOPE (token), API_KEY_SERVER,
 *     STORE_UNAVAILABLE (API keys) ............................ authenticate
 *   BODY_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE .................... (body parser, between the two lists;
 *                                                               checkMemberBody for a virtual server's request)
 *   ACCESS_DENIED ............................................. checkAccess
 *   PARSE, INVALID_REQUEST, INVALID_PARAMS .................... inspect
 *   HEADER_MISMATCH ........................................... checkMirroredHeaders
 *   POLICY_DENIED, INSUFFICIENT_SCOPE (rule), INVALID_ARGUMENTS,
 *     UNKNOWN_TOOL, TOOL_NOT_APPROVED, STORE_UNAVAILABLE (guard) judge    } answered by
 *   RATE_LIMITED, RATE_LIMIT_UNAVAILABLE ...................... charge   } planResponse
 *   UPSTREAM_*, SESSION_*, TOO_MANY_SESSIONS, CAPACITY,
 *     USER_FIELD_MISSING, UNSUPPORTED_PROTOCOL_VERSION,
 *     LEGACY_UPSTREAM, STORE_UNAVAILABLE (session owner) ...... relay (the server's upstream adapter)
 *   METHOD_NOT_ALLOWED ........................................ the PUT/PATCH/HEAD route below
 *   UNKNOWN_SERVER ............................................ no route (app.ts's not-found handler)
 *   INTERNAL .................................................. any step's bug (the error handler)
 *   ADMIN_*, RELOAD_INVALID_CONFIG ............................ not this route: the admin API
 *
 * The 2024-11-05 routes (legacy-sse.ts) run admit and authenticateLegacy, then checkAccess and
 * inspect for their GET; their own refusals are SESSION_NOT_FOUND and TOO_MANY_SESSIONS.
 *
 * A virtual server's route (../virtual/routes.ts) runs admit and the token check for its own
 * resource, then reaches each member through that member's route above, in process
 * (./mcp/member-entry.ts): admit, checkMemberCaller (the caller revoked since: UNAUTHORIZED;
 * an API key not made for the member: API_KEY_SERVER; the member's own scopes:
 * INSUFFICIENT_SCOPE), checkMemberBody (BODY_TOO_LARGE), then the steps from checkAccess on. A member's refusal
 * is relayed as it is. Its own refusals are SESSION_REQUIRED, SESSION_NOT_FOUND,
 * TOO_MANY_SESSIONS, UPSTREAM_BUSY, POLICY_DENIED (its tools allow/deny), UNKNOWN_TOOL,
 * INVALID_PARAMS, INVALID_REQUEST (a batch), HEADER_MISMATCH (2026-07-28 headers that do not
 * mirror the body), LEGACY_UPSTREAM (a 2026-07-28 request while a
 * member speaks only the 2025 era), UNSUPPORTED_PROTOCOL_VERSION (a session-less request's
 * unknown `_meta` version) and UPSTREAM_UNAVAILABLE (a member's JSON answer with another id).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError, type JsonRpcId } from '../errors.js'
import type { Config, ServerConfig } from '../config/schema.js'
import type { Upstream } from '../upstreams/types.js'
import type { OriginPolicy } from '../mcp/origin.js'
import type { Authenticator } from '../resource-server/plugin.js'
import { ToolParamHeaders } from '../mcp/param-headers.js'
import { namedToolsOf, ServerPolicy } from '../policy/policy.js'
import type { RateLimiter } from '../rate-limit/limiter.js'
import type { AuditLog } from '../observability/audit.js'
import { createRedactor } from '../guardrails/redactor.js'
import type { Metrics } from '../observability/metrics.js'
import type { SessionDirectory } from '../cluster/sessions.js'
import type { ReplicaForwarder } from '../cluster/forward.js'
import type { ToolGuard } from '../guardrails/tool-guard.js'
import type { StreamKeeper } from '../upstreams/stream-keeper.js'
import type { TraceSettings } from '../observability/request-trace.js'
import { legacySseRoutes, legacyTargetOf } from './legacy-sse.js'
import type { LegacySessions } from './legacy-sessions.js'
import { chargeRequest } from '../rate-limit/charge.js'
import { McpCall, runSteps, type McpRoute, type Step } from './mcp/call.js'
import { openTrace } from './mcp/open-trace.js'
import { admit } from './mcp/admit.js'
import { forwardToOwner } from './mcp/forward-to-owner.js'
import { authenticate, authenticateLegacy, checkMemberBody, checkMemberCaller } from './mcp/authenticate.js'
import { checkAccess } from './mcp/check-access.js'
import { inspect } from './mcp/inspect.js'
import { checkMirroredHeaders } from './mcp/check-mirrored-headers.js'
import { judge } from './mcp/judge.js'
import { charge } from './mcp/charge.js'
import { record } from './mcp/record.js'
import { planResponse } from './mcp/plan-response.js'
import { relay } from './mcp/relay.js'
import { errorAnswer } from './mcp/error-answer.js'
import { memberEntry } from './mcp/member-entry.js'
import { MemberLink, type MemberEntry } from '../virtual/member-link.js'
import { virtualRoutes } from '../virtual/routes.js'
import { endVirtualSession } from '../virtual/virtual-server.js'
import type { VirtualSessionTable } from '../virtual/session.js'
import type { RequestIdentity } from '../resource-server/verify-token.js'

/** Before the body is read: shutting down, audit, Origin, another replica's session, the token. */
const BEFORE_BODY: readonly Step[] = [admit, forwardToOwner, authenticate]
/** Tracing on: the request's span opens first, so every later step (and refusal) is inside it. */
const BEFORE_BODY_TRACED: readonly Step[] = [openTrace, ...BEFORE_BODY]
/** With the body: who may do what, then the upstream answers. */
const WITH_BODY: readonly Step[] = [
  checkAccess,
  inspect,
  checkMirroredHeaders,
  judge,
  charge,
  record, // from here on, whatever answers: the audit record and metrics when the response closes
  planResponse,
  relay,
]
/**
 * A virtual server's request to a member (./mcp/member-entry.ts): its token was checked by the
 * virtual route. admit again (a few flag reads): a retry on a timer or an idle session's end
 * was admitted by no request, and fails closed on the audit as every request does. Not
 * forwardToOwner: virtual sessions live on one replica, and the member sessions behind them are
 * opened from it, so held here. With tracing on, the member's request has spans of its own (a
 * trace of its own: the virtual route has none).
 */
const AS_MEMBER: readonly Step[] = [admit, checkMemberCaller, checkMemberBody, ...WITH_BODY]
const AS_MEMBER_TRACED: readonly Step[] = [openTrace, ...AS_MEMBER]
/** The 2024-11-05 routes: the same admission and token check (no trace), then access for their GET. */
const LEGACY_BEFORE_BODY: readonly Step[] = [admit, authenticateLegacy]
const LEGACY_ACCESS: readonly Step[] = [checkAccess, inspect]

export interface McpRoutesOptions {
  readonly config: Config
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly isClosing: () => boolean
  readonly isOriginAllowed: OriginPolicy
  /** Undefined when auth is disabled: every request is anonymous. */
  readonly authenticate: Authenticator | undefined
  readonly limiter: RateLimiter | undefined
  readonly audit: AuditLog | undefined
  readonly metrics: Metrics
  /** The WWW-Authenticate challenge for a server and the scopes an operation needs (auth on). */
  readonly scopeChallenge: ((server: ServerConfig, scopes: readonly string[], description: string) => string) | undefined
  /** Per server: pinned tool definitions and argument validation (README "Guardrails"). */
  readonly toolGuards: ReadonlyMap<string, ToolGuard>
  /**
   * After a reload (README "Reloading"): the earlier upstream of a changed stdio server that
   * still holds this session. Its requests go there, not to the new definition.
   */
  readonly drainingHolder?: (server: string, sessionId: string) => Upstream | undefined
  /** Several replicas (cluster.advertiseUrl): stdio sessions held elsewhere are forwarded to their owner. */
  readonly replicas?: { readonly directory: SessionDirectory, readonly forwarder: ReplicaForwarder }
  /** Keep-alive comments on the 2024-11-05 transport's event streams. */
  readonly streamKeeper?: StreamKeeper
  /** The 2024-11-05 transport's sessions, shared by every build (SharedParts). */
  readonly legacySessions: LegacySessions
  /** Set when telemetry.otlp is: each request gets its spans. */
  readonly tracing?: TraceSettings
  readonly now?: () => number
  /** Virtual servers' sessions, shared by every build (SharedParts). */
  readonly virtualSessions?: VirtualSessionTable
  /** Registers what to do when a reload retires this build (or it closes). */
  readonly onRetire?: (fn: () => void) => void
  /** Registers what to change in shared parts once this build is in force. */
  readonly onActivate?: (fn: () => void) => void
  /** A verified identity whose grant was revoked or whose user was blocked since (auth on). */
  readonly isRevoked?: (identity: RequestIdentity) => boolean
}

const MCP_METHODS = ['GET', 'POST', 'DELETE'] as const
const ALLOW = 'GET, POST, DELETE, OPTIONS'
/** Headers a browser-based MCP client sends and must be allowed to (CORS preflight). */
const CORS_ALLOW_HEADERS = 'authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, mcp-method, mcp-name'
const CORS_MAX_AGE_S = '600'

const JSON_MEDIA_RE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

/** The fastify hook that starts a call and runs `steps` (the route's only hook: the handler runs the rest). */
function beginCall (route: McpRoute, steps: readonly Step[]) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const call = new McpCall(route, request, reply)
    request.mcpCall = call
    await runSteps(call, steps)
  }
}

/** A fastify hook continuing the call its route's onRequest hook began. */
function continueCall (steps: readonly Step[]) {
  return async (request: FastifyRequest): Promise<void> => {
    await runSteps(request.mcpCall as McpCall, steps)
  }
}

/** The route's handler: the rest of the steps, the last of which answers. */
function finishCall (steps: readonly Step[]) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    await runSteps(request.mcpCall as McpCall, steps)
    // A step that sent an answer of its own (planResponse): fastify waits for it to go out.
    return reply.sent ? undefined : reply
  }
}

export async function mcpRoutes (app: FastifyInstance, opts: McpRoutesOptions): Promise<void> {
  const { config, metrics } = opts
  // Virtual servers reach their members' routes in process. Also without virtual servers when
  // sessions are shared (a reload): a removed virtual server's member sessions are ended through
  // this build's member routes.
  const members = new Map<string, MemberEntry>()
  const link = new MemberLink((member) => members.get(member))

  app.decorateRequest('mcpCall', null)

  // Bodies are read once, as bytes: inspected here and forwarded verbatim.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (request, body, done) => {
    const type = request.headers['content-type']
    if (type === undefined || JSON_MEDIA_RE.test(type)) done(null, body)
    else done(new PortcullisError('PORTCULLIS_ERR_UNSUPPORTED_MEDIA_TYPE', `got ${type.slice(0, 100)}`), undefined)
  })

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    const answer = errorAnswer(error, request.mcpCall, request.log)
    return reply.code(answer.status).headers(answer.headers).type('application/json').send(answer.payload)
  })

  /** A CORS preflight answered for an allowed Origin; `allow`: the route's methods. */
  const preflight = (allow: string) => async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const origin = request.headers.origin
    if (!opts.isOriginAllowed(origin)) throw new PortcullisError('PORTCULLIS_ERR_FORBIDDEN_ORIGIN')
    reply.header('allow', allow)
    if (origin !== undefined) {
      reply.headers({
        'access-control-allow-origin': origin,
        'access-control-allow-methods': allow,
        'access-control-allow-headers': allowedRequestHeaders(request.headers['access-control-request-headers']),
        'access-control-max-age': CORS_MAX_AGE_S,
        vary: 'Origin',
      })
    }
    return reply.code(204).send()
  }

  for (const server of config.servers) {
    const route = routeOf(server, opts)
    members.set(server.name, memberEntry(route, opts.tracing === undefined ? AS_MEMBER : AS_MEMBER_TRACED))
    const url = `/${server.name}/mcp`
    // Tool labels in metrics: names policy gives, and (plan-response) names the upstream lists.
    metrics.nameTools(server.name, namedToolsOf(server))

    app.route({
      method: [...MCP_METHODS],
      url,
      exposeHeadRoute: false,
      config: { mcpServer: server.name },
      onRequest: beginCall(route, opts.tracing === undefined ? BEFORE_BODY : BEFORE_BODY_TRACED),
      handler: finishCall(WITH_BODY),
    })

    // CORS preflight: for /mcp, and for the 2024-11-05 routes a browser-based old client posts to.
    for (const [path, allow] of [[url, ALLOW], [`/${server.name}/sse`, 'GET, OPTIONS'], [`/${server.name}/messages`, 'POST, OPTIONS']] as const) {
      app.route({ method: 'OPTIONS', url: path, config: { mcpServer: server.name }, handler: preflight(allow) })
    }

    // The 2024-11-05 HTTP+SSE transport: its messages go through this route, judged as they would be here.
    await legacySseRoutes(app, {
      target: legacyTargetOf(server),
      upstream: route.upstream,
      onRequest: [beginCall(route, LEGACY_BEFORE_BODY)],
      checkAccess: continueCall(LEGACY_ACCESS),
      // Opening a stream costs one unit of the caller's budget (checkAccess has named the caller).
      charge: async (request) => {
        const options = route.chargeOptions
        const refusal = options === undefined ? undefined : await chargeRequest(options, (request.mcpCall as McpCall).callerKey)
        if (refusal !== undefined) throw refusal
      },
      ownerOf: (request) => (request.mcpCall as McpCall).ownerOf(),
      streamKeeper: opts.streamKeeper,
      sessions: opts.legacySessions,
    })

    app.route({
      method: ['PUT', 'PATCH', 'HEAD'],
      url,
      config: { mcpServer: server.name },
      handler: async () => {
        throw new PortcullisError('PORTCULLIS_ERR_METHOD_NOT_ALLOWED', 'use POST, GET or DELETE', { headers: { allow: ALLOW } })
      },
    })
  }

  if (config.virtualServers.length > 0) {
    // README "Virtual servers": one endpoint whose members are reached through their own routes above.
    await virtualRoutes(app, {
      virtualServers: config.virtualServers,
      publicUrl: config.publicUrl,
      link,
      now: opts.now ?? (() => Date.now()),
      idleTimeoutOf: (virtual) => Math.max(...virtual.members.map((name) => config.servers.find((s) => s.name === name)?.idleTimeoutMs ?? 0)),
      isClosing: opts.isClosing,
      isOriginAllowed: opts.isOriginAllowed,
      authenticate: opts.authenticate,
      audit: opts.audit,
      streamKeeper: opts.streamKeeper,
      sessions: opts.virtualSessions,
      onRetire: opts.onRetire,
      legacySessions: opts.legacySessions,
      maxMessageBytesOf: (virtual) => Math.max(...config.servers.filter((s) => virtual.members.includes(s.name)).map((s) => legacyTargetOf(s).maxMessageBytes)),
      isRevoked: opts.isRevoked,
    })
  }
  if (opts.virtualSessions !== undefined) {
    // Sessions of virtual servers this build no longer has are forgotten once it is in force (not by a failed build).
    const names = config.virtualServers.map((virtual) => virtual.name)
    const table = opts.virtualSessions
    opts.onActivate?.(() => {
      // A revoked or offboarded user's virtual sessions end through this build's member routes.
      table.useEnder(async (virtualServer, session) => endVirtualSession(link, virtualServer, session, session.context))
      // Their member sessions end now (not at the members' idle timeout), through this build's routes.
      for (const { virtualServer, session } of table.keepOnly(names)) void endVirtualSession(link, virtualServer, session, session.context)
    })
  }
  if (config.virtualServers.length > 0) {
    for (const virtual of config.virtualServers) {
      for (const [path, allow] of [[`/${virtual.name}/mcp`, ALLOW], [`/${virtual.name}/sse`, 'GET, OPTIONS'], [`/${virtual.name}/messages`, 'POST, OPTIONS']] as const) {
        app.route({ method: 'OPTIONS', url: path, config: { mcpServer: virtual.name }, handler: preflight(allow) })
      }
      app.route({
        method: ['PUT', 'PATCH', 'HEAD'],
        url: `/${virtual.name}/mcp`,
        config: { mcpServer: virtual.name },
        handler: async () => {
          throw new PortcullisError('PORTCULLIS_ERR_METHOD_NOT_ALLOWED', 'use POST, GET or DELETE', { headers: { allow: ALLOW } })
        },
      })
    }
  }
}

/** What one server's steps share, built once. */
function routeOf (server: ServerConfig, opts: McpRoutesOptions): McpRoute {
  const { config, limiter } = opts
  const upstream = opts.upstreams.get(server.name)
  if (upstream === undefined) throw new Error(`no upstream adapter for server ${server.name}`)
  const policy = new ServerPolicy(server)
  const guard = opts.toolGuards.get(server.name)
  const guardsCalls = guard?.isActive === true ? guard : undefined
  const challenge = opts.scopeChallenge
  return {
    config,
    server,
    upstream,
    policy,
    isClosing: opts.isClosing,
    isOriginAllowed: opts.isOriginAllowed,
    authenticate: opts.authenticate,
    audit: opts.audit,
    metrics: opts.metrics,
    gateOptions: {
      policy,
      scopeChallenge: challenge === undefined ? undefined : (scopes: readonly string[], description: string) => challenge(server, scopes, description),
      ...(guardsCalls === undefined ? {} : { checkCall: (tool: string, args: unknown, id: JsonRpcId) => guardsCalls.checkCall(tool, args, id) }),
    },
    chargeOptions: limiter === undefined
      ? undefined
      : { server, limiter, defaults: { perUser: config.rateLimits.perUser, perUserPerTool: config.rateLimits.perUserPerTool, sessionCost: config.rateLimits.sessionCost } },
    // Mcp-Param-* headers: the gateway is a stdio server's HTTP side and checks them itself.
    paramHeaders: server.transport === 'stdio' ? new ToolParamHeaders() : undefined,
    redactor: createRedactor(server.redactResults),
    guard,
    guardsCalls,
    tracing: opts.tracing,
    drainingHolder: opts.drainingHolder,
    replicas: opts.replicas,
    redactions: new WeakMap(),
    captured: new WeakMap(),
    isRevoked: opts.isRevoked,
  }
}

/** Echo the requested headers when they are MCP ones or Mcp-Param-*; list ours otherwise. */
function allowedRequestHeaders (requested: string | undefined): string {
  if (requested === undefined) return CORS_ALLOW_HEADERS
  const allowed = new Set(CORS_ALLOW_HEADERS.split(', '))
  const names = requested.split(',').map((h) => h.trim().toLowerCase()).filter((h) => h !== '')
  return names.every((h) => allowed.has(h) || h.startsWith('mcp-param-')) ? names.join(', ') : CORS_ALLOW_HEADERS
}
