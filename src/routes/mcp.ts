/**
 * The MCP endpoint, /<server>/mcp. The request's path through the gateway,
 * in order (see DESIGN.md "The request path"):
 *
 *   onRequest   (tracing on: the request's span opens), shutting-down check, Origin (403), CORS headers, bearer token (401/403)
 *   body        read once as a Buffer, size-limited (413)
 *   preHandler  JSON-RPC inspection (400 -32700/-32600/-32602), 2026-07-28 header mirroring
 *               (400 -32020), then the gate: server access, tool/prompt/resource policy (403),
 *               rate limits and concurrency caps (429), each batch member on its own
 *   handler     the server's upstream adapter answers the exchange, lists filtered by policy,
 *               secrets masked in results (servers[].redactResults)
 *   close       the audit record for every request message; concurrency slots released
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError, jsonRpcError, jsonRpcErrorPayload, type JsonRpcErrorBody, type JsonRpcId } from '../errors.js'
import type { Config, ServerConfig } from '../config/schema.js'
import { inspectBody, isJudged, type McpInspection } from '../mcp/jsonrpc.js'
import { checkMirroredHeaders } from '../mcp/headers.js'
import { checkParamHeaders, ToolParamHeaders } from '../mcp/param-headers.js'
import type { McpExchange, Upstream } from '../upstreams/types.js'
import type { SessionOwner } from '../upstreams/session-owners.js'
import { ANONYMOUS, type UserIdentity } from '../identity.js'
import type { OriginPolicy } from '../mcp/origin.js'
import type { Authenticator } from '../resource-server/plugin.js'
import type { RequestIdentity } from '../resource-server/verify-token.js'
import { LIST_METHODS, namedToolsOf, ServerPolicy, type Caller } from '../policy/policy.js'
import { chargeRequest, gate, type MessageOutcome } from '../policy/gate.js'
import type { RateLimiter } from '../rate-limit/limiter.js'
import type { ResponseEdit, MessageTransform } from '../upstreams/response-edit.js'
import { MAX_AUDIT_RESULT_CHARS, type AuditLog } from '../observability/audit.js'
import { createRedactor, type RedactionCounts } from '../guardrails/redactor.js'
import type { Metrics } from '../observability/metrics.js'
import { hasFailed } from '../upstreams/respond.js'
import { StdioUpstream } from '../upstreams/stdio/stdio-upstream.js'
import type { SessionDirectory } from '../cluster/sessions.js'
import { FORWARDED_HEADER, ReplicaForwarder } from '../cluster/forward.js'
import type { ToolGuard } from '../guardrails/tool-guard.js'
import type { StreamKeeper } from '../upstreams/stream-keeper.js'
import { legacySseRoutes } from './legacy-sse.js'
import type { LegacySessions } from './legacy-sessions.js'
import type { Tracing } from '../observability/tracing.js'
import { RequestTrace, STEP } from '../observability/request-trace.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The inspected JSON-RPC body (POST only); what policy, limits and audit read. */
    mcpInspection: McpInspection | null
    /** Who is calling, from the verified access token (null when auth is disabled). */
    identity: RequestIdentity | null
    /** What goes upstream when the gate changed it (a batch without its refused members). */
    mcpForward: { body: Buffer, inspection: McpInspection } | null
    mcpEdit: ResponseEdit | null
    /** The request's spans (README "Tracing"); null with telemetry off. */
    mcpTrace: RequestTrace | null
  }
}

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
  readonly tracing?: Tracing
}

const MCP_METHODS = ['GET', 'POST', 'DELETE'] as const
const ALLOW = 'GET, POST, DELETE, OPTIONS'
/** Headers a browser-based MCP client sends and must be allowed to (CORS preflight). */
const CORS_ALLOW_HEADERS = 'authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, mcp-method, mcp-name'
/** Headers a browser-based client must be able to read. */
/** The audit file is retried every second; a client waits a little longer. */
const AUDIT_RETRY_AFTER_S = 5

const CORS_EXPOSE_HEADERS = 'mcp-session-id, mcp-protocol-version, www-authenticate, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy'
const CORS_MAX_AGE_S = '600'

const JSON_MEDIA_RE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

/** Answers whose text reaches the model: where servers[].redactResults masks. */
const REDACTED_METHODS: ReadonlySet<string> = new Set(['tools/call', 'resources/read', 'prompts/get'])

function callerOf (request: FastifyRequest): { caller: Caller, key: string } {
  const identity = request.identity
  if (identity === null) {
    // No authorization: callers are told apart by address for rate limits.
    return { caller: { name: ANONYMOUS.name, groups: [], clientId: undefined, isClient: false, scopes: undefined }, key: `ip:${request.ip}` }
  }
  return {
    caller: { name: identity.name, groups: identity.groups ?? [], clientId: identity.clientId, isClient: identity.isClient, scopes: identity.scopes },
    key: identity.isClient ? `client:${identity.clientId}` : `sub:${identity.id}`,
  }
}

/**
 * Whom sessions, processes and per-user values belong to. A machine client
 * (client_credentials) is its own principal, kept apart from any user: its
 * `sub` is its client id, which must never make it a user of the same name.
 */
function userOf (identity: RequestIdentity | null): UserIdentity {
  if (identity === null) return ANONYMOUS
  if (identity.isClient) return { id: `client:${identity.clientId}`, name: identity.clientId, groups: [], isClient: true }
  return { id: identity.id, name: identity.name, groups: identity.groups ?? [], ...(identity.email === undefined ? {} : { email: identity.email }) }
}

/** A session belongs to the user and the client that opened it. */
function ownerOf (user: UserIdentity, identity: RequestIdentity | null): SessionOwner {
  return { user: user.id, client: identity?.clientId ?? '' }
}

export async function mcpRoutes (app: FastifyInstance, opts: McpRoutesOptions): Promise<void> {
  const { config, upstreams, isClosing, isOriginAllowed, authenticate, limiter, audit, metrics } = opts

  app.decorateRequest('mcpInspection', null)
  app.decorateRequest('identity', null)
  app.decorateRequest('mcpForward', null)
  app.decorateRequest('mcpEdit', null)
  app.decorateRequest('mcpTrace', null)

  // Bodies are read once, as bytes: inspected here and forwarded verbatim.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (request, body, done) => {
    const type = request.headers['content-type']
    if (type === undefined || JSON_MEDIA_RE.test(type)) done(null, body)
    else done(new PortcullisError('PORTCULLIS_ERR_UNSUPPORTED_MEDIA_TYPE', `got ${type.slice(0, 100)}`), undefined)
  })

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    const err = toPortcullisError(error)
    if (err.status >= 500) request.log.error({ err: error }, 'mcp request failed')
    request.mcpTrace?.refused(err)
    const inspection = request.mcpInspection
    const ids = err.rpcId !== undefined ? [err.rpcId] : inspection?.requestIds ?? []
    return reply.code(err.status).headers(err.headers).type('application/json')
      .send(jsonRpcErrorPayload(err, ids, inspection?.isBatch === true && err.rpcId === undefined))
  })

  const onRequest = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (isClosing()) {
      throw new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN', undefined, { headers: { connection: 'close', 'retry-after': '1' } })
    }
    // Fail closed: a request whose audit record cannot be written is not served.
    if (audit !== undefined && !audit.isWritable()) {
      throw new PortcullisError('PORTCULLIS_ERR_AUDIT_UNAVAILABLE', undefined, { headers: { 'retry-after': String(AUDIT_RETRY_AFTER_S) } })
    }
    const origin = request.headers.origin
    if (!isOriginAllowed(origin)) {
      request.log.info({ origin }, 'origin refused')
      throw new PortcullisError('PORTCULLIS_ERR_FORBIDDEN_ORIGIN')
    }
    if (origin !== undefined) {
      // Raw headers survive reply.hijack(); the upstream adapter writes the rest.
      reply.raw.setHeader('access-control-allow-origin', origin)
      reply.raw.setHeader('access-control-expose-headers', CORS_EXPOSE_HEADERS)
      reply.raw.setHeader('vary', 'Origin')
    }
  }

  /** A CORS preflight answered for an allowed Origin; `allow`: the route's methods. */
  const preflight = (allow: string) => async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const origin = request.headers.origin
    if (!isOriginAllowed(origin)) throw new PortcullisError('PORTCULLIS_ERR_FORBIDDEN_ORIGIN')
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
    const upstream = upstreams.get(server.name)
    if (upstream === undefined) throw new Error(`no upstream adapter for server ${server.name}`)
    const url = `/${server.name}/mcp`
    const policy = new ServerPolicy(server)
    // Mcp-Param-* headers: the gateway is a stdio server's HTTP side and checks them itself;
    // an HTTP upstream reads the body and checks its own (the headers are forwarded).
    const paramHeaders = server.transport === 'stdio' ? new ToolParamHeaders() : undefined
    const redactor = createRedactor(server.redactResults)
    // Tool labels in metrics: names policy gives, and (below) names the upstream lists.
    metrics.nameTools(server.name, namedToolsOf(server))
    const challenge = opts.scopeChallenge
    const guard = opts.toolGuards.get(server.name)
    const guardsCalls = guard?.isActive === true ? guard : undefined
    const gateOptions = {
      server,
      policy,
      limiter,
      defaults: { perUser: config.rateLimits.perUser, perUserPerTool: config.rateLimits.perUserPerTool, sessionCost: config.rateLimits.sessionCost },
      scopeChallenge: challenge === undefined ? undefined : (scopes: readonly string[], description: string) => challenge(server, scopes, description),
      ...(guardsCalls === undefined ? {} : { checkCall: (tool: string, args: unknown, id: JsonRpcId) => guardsCalls.checkCall(tool, args, id) }),
    }

    // After the Origin check, before any body is read: who is calling, and may they reach this server?
    const checkToken = async (request: FastifyRequest): Promise<void> => {
      if (authenticate === undefined) return
      const trace = request.mcpTrace
      request.identity = await (trace === null ? authenticate(request, server) : trace.step(STEP.TOKEN, () => authenticate(request, server)))
    }

    // The same check on the 2024-11-05 routes; a challenge names the resource as their clients know it.
    const checkLegacyToken = async (request: FastifyRequest): Promise<void> => {
      if (authenticate !== undefined) request.identity = await authenticate(request, server, true)
    }

    // Tracing on: the request's span opens first, so every later step (and refusal) is inside it.
    const tracing = opts.tracing
    const startTrace = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      if (tracing !== undefined) request.mcpTrace = new RequestTrace(tracing.tracer, request, reply.raw, server)
    }

    // A session another replica holds: relay the request, unread, to its owner, which does
    // everything else (token, policy, limits, audit) once. Never twice: forwarded requests stay.
    const replicas = opts.replicas
    const holdsSessions = upstream instanceof StdioUpstream ? upstream : undefined
    /** The upstream serving this request: a draining one when it holds the session, else this server's. */
    const upstreamOf = (request: FastifyRequest): Upstream => {
      const sessionId = request.headers['mcp-session-id']
      return (typeof sessionId === 'string' ? opts.drainingHolder?.(server.name, sessionId) : undefined) ?? upstream
    }
    const forwardToOwner = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      const sessionId = request.headers['mcp-session-id']
      if (replicas === undefined || holdsSessions === undefined || typeof sessionId !== 'string' || request.headers[FORWARDED_HEADER] !== undefined) return
      if (holdsSessions.hasSession(sessionId) || upstreamOf(request) !== upstream) return
      const owner = await replicas.directory.ownerOf(server.name, sessionId)
      if (owner === undefined) return
      reply.hijack()
      if (!await replicas.forwarder.forward(request, reply.raw, owner)) {
        await replicas.directory.forget(server.name, sessionId, owner)
        ReplicaForwarder.sessionGone(reply.raw)
      }
    }

    const enforce = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      const { caller, key } = callerOf(request)
      const reach = policy.reach(caller)
      if (!reach.allowed) {
        metrics.policyDenials.inc({ server: server.name, reason: 'access' })
        throw new PortcullisError('PORTCULLIS_ERR_ACCESS_DENIED', reach.message)
      }
      if (request.method !== 'POST') {
        refuseBody(request)
        if (request.method === 'GET' && (policy.filtersLists || redactor !== undefined || guard?.hidesTools === true)) {
          // A GET with Last-Event-ID replays earlier answers, lists and results among them: edited as they were live, for the caller resuming the stream.
          await guard?.refresh()
          request.mcpEdit = { watch: new Map(), extra: [], any: replayEdit(caller) }
        }
        return
      }
      const inspection = inspectBody(request.body as Buffer | undefined)
      request.mcpInspection = inspection
      request.mcpTrace?.describe(inspection)
      checkMirroredHeaders(inspection, request.headers)
      if (paramHeaders !== undefined && inspection.modernVersion !== undefined) checkParamHeaders(inspection, request.headers, paramHeaders)

      // The approved tool definitions, fresh enough, before the gate judges calls and the answer's lists are edited.
      if (guardsCalls !== undefined && inspection.messages.some((m) => m.method === 'tools/list' || (m.method === 'tools/call' && guardsCalls.refusesCalls))) await guardsCalls.refresh()
      const trace = request.mcpTrace
      const outcomes = await gate(trace === null ? gateOptions : { ...gateOptions, step: (name, fn) => trace.step(name, fn) }, caller, key, inspection)
      trace?.judged(outcomes)
      reply.raw.once('close', () => finish(request, reply, outcomes, reply.elapsedTime))
      for (const o of outcomes) {
        if (o.decision === 'denied') metrics.policyDenials.inc({ server: server.name, reason: 'rule' })
      }

      const refused = outcomes.filter((o) => o.error !== undefined)
      // A refused notification is dropped, not answered: JSON-RPC 2.0 section 4.1 gives a
      // notification no response, and its client gets the 202 any notification gets.
      const refusedRequests = refused.filter((o) => o.message.kind === 'request')
      if (!inspection.isBatch) {
        const only = refused[0]
        if (only !== undefined && refusedRequests.length === 0) return reply.code(202).send()
        if (only?.error !== undefined) throw only.error
      }
      const extra: JsonRpcErrorBody[] = refusedRequests.map((o) => jsonRpcError(o.error as PortcullisError, o.message.id ?? null))
      if (refused.length > 0) {
        const kept = outcomes.filter((o) => o.error === undefined).map((o) => o.message)
        if (kept.length === 0) {
          if (extra.length === 0) return reply.code(202).send()
          reply.code(200).type('application/json').send(extra)
          return reply
        }
        const keptIds = kept.filter((m) => m.kind === 'request').map((m) => m.id ?? null)
        request.mcpForward = { body: Buffer.from(JSON.stringify(kept.map((m) => m.value))), inspection: { ...inspection, messages: kept, requestIds: keptIds } }
      }
      const session = request.headers['mcp-session-id']
      request.mcpEdit = responseEdit(outcomes, extra, caller, typeof session === 'string' ? session : undefined)
    }

    /** A replayed answer's request is unknown: lists and results are told apart by their shape. Lists differ per caller (user and group rules). */
    const replayEdit = (caller: Caller): MessageTransform => (message) => {
      const pinned = guard?.onReplayedList(message.result)
      const filtered = policy.filtersLists ? policy.filterAnyList(pinned ?? message.result, caller) ?? pinned : pinned
      const listed = filtered === undefined ? message : { ...message, result: filtered }
      const masked = maskResult(listed) ?? listed
      return masked === message ? undefined : masked
    }

    /** Secrets and personal data masked in a result; the counts go to the metric (and the caller), never the values. */
    const maskResult = (message: Record<string, unknown>, onMasked?: (counts: RedactionCounts) => void): Record<string, unknown> | undefined => {
      if (redactor === undefined || !('result' in message)) return undefined
      const counts: RedactionCounts = {}
      const result = redactor.redactResult(message.result, counts)
      if (result === message.result) return undefined
      for (const [kind, n] of Object.entries(counts)) metrics.resultsRedacted.inc({ server: server.name, kind }, n)
      onMasked?.(counts)
      return { ...message, result }
    }

    /** What was masked in each answer, for its audit record. */
    const redactions = new WeakMap<MessageOutcome, RedactionCounts>()

    /** Results recorded for a debugging audit (audit.includeResults), until the record is written. */
    const captured = new WeakMap<MessageOutcome, string>()

    /** List results to filter, results to record: only when needed, so most answers pass as bytes. */
    const responseEdit = (outcomes: readonly MessageOutcome[], extra: JsonRpcErrorBody[], caller: Caller, session: string | undefined): ResponseEdit | null => {
      const watch = new Map<JsonRpcId, MessageTransform>()
      for (const o of outcomes) {
        if (o.error !== undefined || o.message.kind !== 'request') continue
        const method = o.message.method ?? ''
        const id = o.message.id ?? null
        // The upstream's own list (before filtering) says which tool names are real: metric labels.
        const learn: MessageTransform | undefined = method === 'tools/list'
          ? (message) => {
              const tools = (message.result as { tools?: unknown } | undefined)?.tools
              if (Array.isArray(tools)) metrics.learnTools(server.name, tools.map((tool: unknown) => (tool as { name?: unknown } | null)?.name))
              // A stdio server's list also teaches which arguments its tools mirror in Mcp-Param-* headers.
              paramHeaders?.learn(message.result)
              return undefined
            }
          : undefined
        // Pinned definitions: the upstream's own list is compared with the approved set (enforce hides what changed).
        const pin: MessageTransform | undefined = method === 'tools/list' && guardsCalls !== undefined
          ? (message) => {
              const pinned = guardsCalls.onList(message.result, { cursor: o.message.params?.cursor, session })
              return pinned === undefined ? undefined : { ...message, result: pinned }
            }
          : undefined
        const filter: MessageTransform | undefined = LIST_METHODS[method] !== undefined && policy.filtersLists
          ? (message) => {
              const filtered = policy.filterList(method, message.result, caller)
              return filtered === undefined ? undefined : { ...message, result: filtered }
            }
          : undefined
        const mask: MessageTransform | undefined = redactor !== undefined && REDACTED_METHODS.has(method)
          ? (message) => maskResult(message, (counts) => redactions.set(o, counts))
          : undefined
        const record: MessageTransform | undefined = audit?.includeResults === true
          ? (message) => {
              captured.set(o, JSON.stringify(message.result ?? message.error ?? null).slice(0, MAX_AUDIT_RESULT_CHARS))
              return undefined
            }
          : undefined
        if (learn !== undefined || pin !== undefined || filter !== undefined || mask !== undefined || record !== undefined) {
          watch.set(id, (message) => {
            learn?.(message)
            const pinned = pin?.(message) ?? message
            const filtered = filter?.(pinned) ?? pinned
            // Masked before it is recorded: a debugging audit never holds what the client was spared.
            const edited = mask?.(filtered) ?? filtered
            record?.(edited)
            return edited === message ? undefined : edited
          })
        }
      }
      return watch.size === 0 && extra.length === 0 ? null : { watch, extra }
    }

    const finish = (request: FastifyRequest, reply: FastifyReply, outcomes: readonly MessageOutcome[], latencyMs: number): void => {
      for (const o of outcomes) {
        o.release?.()
        if (o.message.method === 'tools/call') {
          metrics.toolCalls.inc({ server: server.name, tool: metrics.toolLabel(server.name, o.message.target ?? ''), outcome: callOutcome(o, reply) })
        }
      }
      if (audit === undefined) return
      const identity = request.identity
      for (const o of outcomes) {
        if (!isJudged(o.message)) continue
        const args = o.message.params?.arguments
        const result = captured.get(o)
        const redacted = redactions.get(o)
        audit.record({
          requestId: request.id,
          server: server.name,
          transport: server.transport,
          method: o.message.method ?? '',
          jsonrpcId: o.message.id ?? null,
          ...(o.message.target === undefined ? {} : { target: { kind: o.kind ?? kindOf(o.message.method), name: o.message.target } }),
          user: identity === null ? null : { sub: identity.id, username: identity.name },
          clientId: identity?.clientId ?? null,
          ...(identity?.keyId === undefined ? {} : { keyId: identity.keyId }),
          ip: request.ip,
          decision: o.decision,
          ...(o.reason === undefined ? {} : { reason: o.reason }),
          status: reply.raw.statusCode,
          latencyMs: Math.round(latencyMs * 10) / 10,
          ...(audit.includeArguments && args !== undefined ? { arguments: args } : {}),
          ...(result === undefined ? {} : { result }),
          ...(redacted === undefined ? {} : { redacted }),
        })
      }
    }

    app.route({
      method: [...MCP_METHODS],
      url,
      exposeHeadRoute: false,
      config: { mcpServer: server.name },
      onRequest: tracing === undefined ? [onRequest, forwardToOwner, checkToken] : [startTrace, onRequest, forwardToOwner, checkToken],
      preHandler: enforce,
      handler: async (request, reply) => {
        reply.hijack()
        const forward = request.mcpForward
        const user = userOf(request.identity)
        const exchange: McpExchange = {
          method: request.method as typeof MCP_METHODS[number],
          headers: request.headers,
          body: forward?.body ?? request.body as Buffer | undefined,
          inspection: forward?.inspection ?? request.mcpInspection ?? undefined,
          user,
          owner: ownerOf(user, request.identity),
          req: request.raw,
          res: reply.raw,
          log: request.log,
          ...(request.mcpEdit === null ? {} : { edit: request.mcpEdit }),
        }
        const trace = request.mcpTrace
        const target = upstreamOf(request)
        await (trace === null ? target.handle(exchange) : trace.exchange(server, exchange, (ex) => target.handle(ex)))
      },
    })

    // CORS preflight: for /mcp, and for the 2024-11-05 routes a browser-based old client posts to.
    for (const [path, allow] of [[url, ALLOW], [`/${server.name}/sse`, 'GET, OPTIONS'], [`/${server.name}/messages`, 'POST, OPTIONS']] as const) {
      app.route({ method: 'OPTIONS', url: path, config: { mcpServer: server.name }, handler: preflight(allow) })
    }

    // The 2024-11-05 HTTP+SSE transport: its messages go through this route, judged as they would be here.
    await legacySseRoutes(app, {
      server,
      upstream,
      onRequest: [onRequest, checkLegacyToken],
      checkAccess: enforce,
      charge: async (request) => {
        const refusal = await chargeRequest(gateOptions, callerOf(request).key)
        if (refusal !== undefined) throw refusal
      },
      ownerOf: (request) => ownerOf(userOf(request.identity), request.identity),
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
}

/**
 * GET opens the server->client stream and DELETE ends a session: neither has a body in the
 * MCP transport. One sent anyway would reach the upstream unjudged, so it is refused.
 */
function refuseBody (request: FastifyRequest): void {
  const length = request.headers['content-length']
  if ((length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined) {
    throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `a ${request.method} request to an MCP endpoint carries no body (send JSON-RPC messages with POST)`)
  }
}

/**
 * answered (the upstream answered: a result, or its own error), failed (the gateway answered
 * for it: upstream down, timed out, crashed), cancelled (the client left first), denied, rate_limited.
 */
function callOutcome (o: MessageOutcome, reply: FastifyReply): string {
  if (o.decision !== 'allowed') return o.decision
  const res = reply.raw
  if (res.statusCode >= 400 || hasFailed(res, o.message.id ?? null)) return 'failed'
  return res.writableFinished ? 'answered' : 'cancelled'
}

function kindOf (method: string | undefined): string {
  if (method === 'tools/call') return 'tool'
  if (method === 'prompts/get') return 'prompt'
  return 'resource'
}

/** Echo the requested headers when they are MCP ones or Mcp-Param-*; list ours otherwise. */
function allowedRequestHeaders (requested: string | undefined): string {
  if (requested === undefined) return CORS_ALLOW_HEADERS
  const allowed = new Set(CORS_ALLOW_HEADERS.split(', '))
  const names = requested.split(',').map((h) => h.trim().toLowerCase()).filter((h) => h !== '')
  return names.every((h) => allowed.has(h) || h.startsWith('mcp-param-')) ? names.join(', ') : CORS_ALLOW_HEADERS
}

/** Fastify's own errors (body limit, content length, media type) in the gateway's vocabulary. */
function toPortcullisError (error: Error & { statusCode?: number, code?: string }): PortcullisError {
  if (error instanceof PortcullisError) return error
  const status = error.statusCode
  if (status === 413) return new PortcullisError('PORTCULLIS_ERR_BODY_TOO_LARGE')
  if (status === 415) return new PortcullisError('PORTCULLIS_ERR_UNSUPPORTED_MEDIA_TYPE')
  if (status !== undefined && status >= 400 && status < 500) return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', error.message)
  return new PortcullisError('PORTCULLIS_ERR_INTERNAL', undefined, { cause: error })
}
