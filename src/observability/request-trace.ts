/**
 * The spans of one MCP request (README "Tracing"): a SERVER span for the request, children for
 * the token check, policy, rate limits and the upstream exchange (a CLIENT span: toward the
 * upstream the gateway is the MCP client). The route calls it at a few points; with telemetry
 * off the route holds no RequestTrace and none of this runs.
 *
 * Names and attributes follow the OpenTelemetry semantic conventions v1.41.0 for MCP
 * (docs/gen-ai/mcp.md, status Development; since moved to the open-telemetry/semantic-conventions-genai
 * repository) and the registry's mcp.*, gen_ai.*, jsonrpc.* and
 * rpc.* attributes. The names are written out here rather than imported from
 * @opentelemetry/semantic-conventions/incubating, as that package asks for unstable ones.
 *
 * Every value a client chose is bounded before it reaches a span: span names carry only names
 * from fixed lists (known methods, tools the gateway knows, OAuth endpoints), attribute values are
 * cut at ATTRIBUTE_VALUE_LENGTH_LIMIT (tracing.ts spanLimits), status messages here.
 *
 * Trace context: the gateway is a public endpoint (OpenTelemetry HTTP conventions, and otelhttp's
 * WithPublicEndpoint). A client's traceparent/tracestate headers (W3C Trace Context) become the
 * request span's parent only once its token check has passed; a request that is not
 * authenticated (auth off, a refused token, a relayed one) and every /oauth/* request start a
 * new trace of their own, with a Link to the client's span. Whether a trace is recorded is never
 * the client's choice (tracing.ts publicEndpointSampler). The context is passed on from the CLIENT span as headers to HTTP upstreams and, for stdio servers, inside
 * each forwarded message's params._meta (mcp.md "Context propagation").
 */
import { createHmac } from 'node:crypto'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type * as OtelApi from '@opentelemetry/api'
import type { Attributes, Context, Span, SpanKind, SpanStatusCode, Tracer } from '@opentelemetry/api'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ServerConfig } from '../config/schema.js'
import type { PortcullisError } from '../errors.js'
import type { McpInspection, McpMessage } from '../mcp/jsonrpc.js'
import { arrayElements, memberOf, objectMembers, skipSpace } from '../mcp/scan-json.js'
import { OAUTH_ROUTES } from '../auth-server/provider.js'
import { OTHER_TOOL_LABEL } from './metrics.js'
import { ATTRIBUTE_VALUE_LENGTH_LIMIT } from './tracing.js'
import type { MessageOutcome } from '../policy/gate.js'
import type { McpExchange } from '../upstreams/types.js'
import type { Tracing } from './tracing.js'
import { redactedUri } from '../mcp/redacted-uri.js'

/**
 * The api's span kinds and error status, as the values the OpenTelemetry specification fixes
 * (typed by the api's enums, so tsc checks them). Written here so that this module does not import
 * @opentelemetry/api (its ES module build, 51 files at start, which a gateway without
 * telemetry.otlp does not need); the api comes with the tracer (tracing.ts, TraceSettings.api).
 */
const INTERNAL: SpanKind.INTERNAL = 0
const SERVER: SpanKind.SERVER = 1
const CLIENT: SpanKind.CLIENT = 2
const ERROR: SpanStatusCode.ERROR = 2

/** Semantic conventions v1.41.0 attribute names (registry: mcp, gen-ai, jsonrpc, rpc, error, network, server, client, http). */
export const ATTR = {
  MCP_METHOD_NAME: 'mcp.method.name',
  MCP_SESSION_ID: 'mcp.session.id',
  MCP_PROTOCOL_VERSION: 'mcp.protocol.version',
  MCP_RESOURCE_URI: 'mcp.resource.uri',
  GEN_AI_TOOL_NAME: 'gen_ai.tool.name',
  GEN_AI_PROMPT_NAME: 'gen_ai.prompt.name',
  GEN_AI_OPERATION_NAME: 'gen_ai.operation.name',
  JSONRPC_REQUEST_ID: 'jsonrpc.request.id',
  RPC_RESPONSE_STATUS_CODE: 'rpc.response.status_code',
  ERROR_TYPE: 'error.type',
  NETWORK_TRANSPORT: 'network.transport',
  NETWORK_PROTOCOL_NAME: 'network.protocol.name',
  SERVER_ADDRESS: 'server.address',
  SERVER_PORT: 'server.port',
  CLIENT_ADDRESS: 'client.address',
  HTTP_REQUEST_METHOD: 'http.request.method',
  HTTP_RESPONSE_STATUS_CODE: 'http.response.status_code',
  HTTP_ROUTE: 'http.route',
  /** Ours: which configured server, the gate's decision and the rule or bucket that made it. */
  PORTCULLIS_SERVER: 'portcullis.server',
  PORTCULLIS_DECISION: 'portcullis.decision',
  PORTCULLIS_RULE: 'portcullis.rule',
  PORTCULLIS_BATCH_SIZE: 'portcullis.batch.size',
  PORTCULLIS_OAUTH_ENDPOINT: 'portcullis.oauth.endpoint',
} as const

/** The child steps of a request span. */
export const STEP = { TOKEN: 'token check', POLICY: 'policy', RATE_LIMITS: 'rate limits' } as const
export type StepName = typeof STEP[keyof typeof STEP]

/** The semantic conventions' word for a value outside a known list (http.request.method, error.type). */
export const OTHER = '_OTHER'

/**
 * The MCP methods a span may be named after: the well-known values of mcp.method.name (semantic
 * conventions registry), and the 2025-11-25 tasks and 2026-07-28 methods. Any other method is a
 * client's free string: its span is named OTHER (its mcp.method.name attribute keeps it, cut to length).
 */
const MCP_METHOD_NAMES: ReadonlySet<string> = new Set([
  'completion/complete', 'elicitation/create', 'initialize', 'logging/setLevel', 'ping',
  'prompts/get', 'prompts/list', 'resources/list', 'resources/read', 'resources/subscribe',
  'resources/templates/list', 'resources/unsubscribe', 'roots/list', 'sampling/createMessage',
  'tools/call', 'tools/list', 'subscriptions/listen', 'tasks/get', 'tasks/result', 'tasks/list', 'tasks/cancel',
  'notifications/cancelled', 'notifications/initialized', 'notifications/message', 'notifications/progress',
  'notifications/prompts/list_changed', 'notifications/resources/list_changed', 'notifications/resources/updated',
  'notifications/roots/list_changed', 'notifications/tools/list_changed', 'notifications/elicitation/complete',
  'notifications/tasks/status',
])

/** HTTP semantic conventions, http.request.method: the RFC 9110 methods and PATCH; anything else is OTHER. */
const HTTP_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE'])

/** What a request span needs from the app: the tracer, the session-id key, the tools it knows by name. */
export interface TraceSettings {
  /** @opentelemetry/api, as tracing.ts loaded it. */
  readonly api: typeof OtelApi
  readonly tracer: Tracer
  /** Keys hashSessionId. */
  readonly sessionKey: Buffer
  /** The tool's metrics label (Metrics.toolLabel): OTHER_TOOL_LABEL for a name the gateway does not know. */
  readonly toolLabel: (server: string, tool: string) => string
}

/**
 * mcp.session.id, keyed: a session id is a bearer of the session (whoever holds it may use it),
 * so the raw value never leaves the gateway. A plain hash would let anyone holding a candidate id
 * (a leaked log line, a guess at a weak upstream's ids) confirm it against the trace backend; an
 * HMAC with a deployment key (app.ts: from the stored keys, the same on every replica) cannot be
 * checked without the key, and still groups a session's requests across spans and replicas.
 */
export function hashSessionId (key: Buffer, sessionId: string): string {
  return createHmac('sha256', key).update(sessionId).digest('hex').slice(0, 32)
}

export class RequestTrace {
  /** The SERVER span, opened once it is known whether the client's trace may be continued. */
  private opened: { readonly span: Span, readonly context: Context } | undefined
  private readonly startTime = new Date()
  private readonly clientContext: Context
  private readonly attributes: Attributes
  private hasError = false

  /** The SERVER span of an MCP request; ended when the response closes. */
  constructor (private readonly settings: TraceSettings, request: FastifyRequest, res: ServerResponse, private readonly server: ServerConfig) {
    this.clientContext = settings.api.propagation.extract(settings.api.ROOT_CONTEXT, request.headers)
    this.attributes = {
      [ATTR.PORTCULLIS_SERVER]: server.name,
      [ATTR.HTTP_REQUEST_METHOD]: httpMethod(request.method),
      [ATTR.NETWORK_TRANSPORT]: 'tcp',
      [ATTR.NETWORK_PROTOCOL_NAME]: 'http',
      [ATTR.CLIENT_ADDRESS]: request.ip,
      ...this.sessionAttributes(request.headers),
    }
    res.once('close', () => this.end(res))
  }

  /**
   * The token check. A caller it admits continues the client's trace; one it refuses gets a
   * trace of its own (linked to the client's): an unauthenticated caller must not be able to
   * write into someone else's trace.
   */
  async admit<T>(check: () => Promise<T>): Promise<T> {
    const startTime = new Date()
    let result: T
    try {
      result = await check()
    } catch (err) {
      const span = this.startChild(STEP.TOKEN, INTERNAL, {}, this.open(false), startTime)
      failed(span, err)
      span.end()
      throw err
    }
    this.startChild(STEP.TOKEN, INTERNAL, {}, this.open(true), startTime).end()
    return result
  }

  /** A child step; its span ends when `fn` returns or settles, and records the gateway error that ends it. */
  step<T>(name: StepName, fn: () => T): T {
    const span = this.startChild(name, INTERNAL, {})
    let result: T
    try {
      result = fn()
    } catch (err) {
      failed(span, err)
      span.end()
      throw err
    }
    if (result instanceof Promise) {
      return result.then((value: unknown) => {
        span.end()
        return value
      }, (err: unknown) => {
        failed(span, err)
        span.end()
        throw err
      }) as T
    }
    span.end()
    return result
  }

  /** What the body asks: the span is named and described after it (a batch after its size). */
  describe (inspection: McpInspection): void {
    const span = this.span()
    const only = inspection.isBatch ? undefined : inspection.messages[0]
    if (only === undefined) {
      span.updateName('batch')
      span.setAttribute(ATTR.PORTCULLIS_BATCH_SIZE, inspection.messages.length)
      return
    }
    span.updateName(this.spanName(only))
    span.setAttributes({ ...messageAttributes(only), ...(inspection.modernVersion === undefined ? {} : { [ATTR.MCP_PROTOCOL_VERSION]: inspection.modernVersion }) })
  }

  /** The gate's verdict: the first refusal decides (a batch's members are judged one by one). */
  judged (outcomes: readonly MessageOutcome[]): void {
    const refused = outcomes.find((o) => o.error !== undefined)
    const decisive = refused ?? outcomes[0]
    if (decisive === undefined) return
    this.span().setAttribute(ATTR.PORTCULLIS_DECISION, decisive.decision)
    if (decisive.reason !== undefined) this.span().setAttribute(ATTR.PORTCULLIS_RULE, decisive.reason)
    // mcp.md: error.type is the JSON-RPC error code the request was answered with.
    if (refused?.error !== undefined) this.refused(refused.error)
  }

  /** The gateway refused the request itself (token, Origin, body, policy): its JSON-RPC error code (mcp.md "error.type"). */
  refused (err: PortcullisError): void {
    if (this.hasError) return
    const code = String(err.rpcCode)
    const span = this.span()
    span.setAttributes({ [ATTR.ERROR_TYPE]: code, [ATTR.RPC_RESPONSE_STATUS_CODE]: code })
    // A message may quote the client (a media type, a tool name): cut like an attribute.
    span.setStatus({ code: ERROR, message: truncate(err.message) })
    this.hasError = true
  }

  /**
   * The upstream exchange as a CLIENT span (the gateway is the upstream's MCP client; mcp.md
   * "Client"), its context handed on: as traceparent/tracestate headers to an HTTP upstream,
   * in params._meta of each forwarded message to a stdio server.
   *
   * The span lasts until the response closes, not until `handle` returns: a stdio GET stream
   * (and any SSE answer) is served after the adapter's handle has returned. An exception from
   * `handle` ends it at once, failed.
   */
  async exchange (server: ServerConfig, ex: McpExchange, handle: (ex: McpExchange) => Promise<void>): Promise<void> {
    const only = ex.inspection?.isBatch === false ? ex.inspection.messages[0] : undefined
    const span = this.startChild(only === undefined ? (ex.inspection === undefined ? `${ex.method} /${server.name}/mcp` : 'batch') : this.spanName(only), CLIENT, {
      ...(only === undefined ? {} : messageAttributes(only)),
      ...this.sessionAttributes(ex.headers),
      ...upstreamAttributes(server),
    })
    const { api } = this.settings
    const spanContext = api.trace.setSpan(this.context(), span)
    const carrier: Record<string, string> = {}
    api.propagation.inject(spanContext, carrier)
    const traced = server.transport === 'http' ? { ...ex, traceHeaders: carrier } : { ...ex, ...withTraceMeta(ex, carrier) }
    // Once: at the response's close, or at once on an exception (whichever comes first).
    let isEnded = false
    const finish = (err?: unknown): void => {
      if (isEnded) return
      isEnded = true
      // After an exception the response has not been answered yet: no status to record.
      if (err !== undefined) failed(span, err)
      else recordStatus(span, ex.res.statusCode)
      span.end()
    }
    // Before the request span's own listener: the child ends first.
    if (ex.res.closed) finish()
    else ex.res.prependOnceListener('close', () => finish())
    try {
      await api.context.with(spanContext, () => handle(traced))
    } catch (err) {
      finish(err)
      throw err
    }
  }

  /** traceparent/tracestate of the request span, for the replica this request is relayed to (its spans then continue or link to this one). */
  relayHeaders (): Record<string, string> {
    const carrier: Record<string, string> = {}
    this.settings.api.propagation.inject(this.context(), carrier)
    return carrier
  }

  /**
   * The SERVER span, opened on first use: as a child of the client's span when the caller is
   * admitted, else as a new root linked to the client's span (the link keeps the relation
   * visible without letting the client choose this trace).
   */
  private open (isAdmitted: boolean): { readonly span: Span, readonly context: Context } {
    if (this.opened !== undefined) return this.opened
    const { api } = this.settings
    const parent = isAdmitted ? this.clientContext : api.ROOT_CONTEXT
    const client = api.trace.getSpanContext(this.clientContext)
    const span = this.settings.tracer.startSpan(`${this.attributes[ATTR.HTTP_REQUEST_METHOD] as string} /${this.server.name}/mcp`, {
      kind: SERVER,
      attributes: this.attributes,
      startTime: this.startTime,
      ...(isAdmitted || client === undefined ? {} : { root: true, links: [{ context: client }] }),
    }, parent)
    this.opened = { span, context: api.trace.setSpan(parent, span) }
    return this.opened
  }

  /** Without a token check (auth off) a request is never admitted: it is not authenticated. */
  private span (): Span {
    return this.open(false).span
  }

  private context (): Context {
    return this.open(false).context
  }

  private startChild (name: string, kind: SpanKind, attributes: Attributes, parent = this.open(false), startTime?: Date): Span {
    return this.settings.tracer.startSpan(name, { kind, attributes, ...(startTime === undefined ? {} : { startTime }) }, parent.context)
  }

  /** mcp.md: "{mcp.method.name} {target}" when the target is low-cardinality — a tool the gateway knows by name; else the method alone. */
  private spanName (m: McpMessage): string {
    if (m.method === undefined) return 'response'
    if (!MCP_METHOD_NAMES.has(m.method)) return OTHER
    const isKnownTool = m.method === 'tools/call' && m.target !== undefined && this.settings.toolLabel(this.server.name, m.target) !== OTHER_TOOL_LABEL
    return isKnownTool ? `${m.method} ${m.target as string}` : m.method
  }

  /** The session (keyed hash) and protocol version the client's headers name. */
  private sessionAttributes (headers: IncomingHttpHeaders): Attributes {
    const session = headers['mcp-session-id']
    const version = headers['mcp-protocol-version']
    return {
      ...(typeof session === 'string' ? { [ATTR.MCP_SESSION_ID]: hashSessionId(this.settings.sessionKey, session) } : {}),
      ...(typeof version === 'string' ? { [ATTR.MCP_PROTOCOL_VERSION]: version } : {}),
    }
  }

  private end (res: ServerResponse): void {
    const span = this.span()
    const status = res.statusCode
    span.setAttribute(ATTR.HTTP_RESPONSE_STATUS_CODE, status)
    // An initialize learns its session id from the answer.
    const opened = res.getHeader('mcp-session-id')
    if (typeof opened === 'string') span.setAttribute(ATTR.MCP_SESSION_ID, hashSessionId(this.settings.sessionKey, opened))
    if (status >= 400 && !this.hasError) failed(span, String(status))
    span.end()
  }
}

/** The keys of _meta the gateway sets: the client's own are dropped, the gateway's span is the child's parent. */
const TRACE_META_KEYS = ['traceparent', 'tracestate']

interface Splice { readonly start: number, readonly end: number, readonly text: string }

/**
 * The forwarded body with the CLIENT span's trace context in each request's and notification's
 * params._meta (replacing what the client put there: the gateway's span is the child's parent).
 * Responses (answers to the child's own requests) carry no _meta of ours.
 *
 * The context is spliced into the body's text; every other byte goes as it came. Re-serialising
 * the parsed body would change what the upstream reads: integers beyond 2^53 (ids and arguments
 * alike) lose digits, `1.0` becomes `1`.
 */
export function withTraceMeta (ex: Pick<McpExchange, 'body' | 'inspection'>, carrier: Readonly<Record<string, string>>): Pick<McpExchange, 'body' | 'inspection'> {
  const { body, inspection } = ex
  if (body === undefined || inspection === undefined || carrier.traceparent === undefined) return { body, inspection }
  const text = body.toString('utf8')
  const top = skipSpace(text, 0)
  const starts = inspection.isBatch ? arrayElements(text, top) : [top]
  const splices = inspection.messages.flatMap((m, i) => {
    const start = starts[i]
    return m.method === undefined || start === undefined ? [] : [metaSplice(text, start, carrier)]
  })
  let out = text
  for (const s of splices.sort((a, b) => b.start - a.start)) out = out.slice(0, s.start) + s.text + out.slice(s.end)
  const messages = inspection.messages.map((m): McpMessage => {
    if (m.method === undefined) return m
    const params = m.params ?? {}
    const meta = (params._meta !== null && typeof params._meta === 'object' ? params._meta : {}) as Record<string, unknown>
    const kept = Object.fromEntries(Object.entries(meta).filter(([key]) => !TRACE_META_KEYS.includes(key)))
    const value = { ...m.value, params: { ...params, _meta: { ...kept, ...carrier } } }
    return { ...m, params: value.params, value }
  })
  return { body: Buffer.from(out), inspection: { ...inspection, messages } }
}

/** The splice that puts `carrier` into params._meta of the message object opening at `open`. */
function metaSplice (text: string, open: number, carrier: Readonly<Record<string, string>>): Splice {
  const ours = Object.entries(carrier).map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value)}`)
  const params = memberOf(text, open, 'params')
  if (params === undefined) return firstMember(text, open, `"params":{"_meta":{${ours.join(',')}}}`)
  // params by position (an array) is JSON-RPC but never MCP: there is no _meta to write.
  if (text[params.valueStart] !== '{') return { start: open, end: open, text: '' }
  const meta = memberOf(text, params.valueStart, '_meta')
  if (meta === undefined) return firstMember(text, params.valueStart, `"_meta":{${ours.join(',')}}`)
  const kept = text[meta.valueStart] === '{' ? objectMembers(text, meta.valueStart).filter((m) => !TRACE_META_KEYS.includes(m.key)).map((m) => text.slice(m.start, m.end)) : []
  return { start: meta.valueStart, end: meta.end, text: `{${[...kept, ...ours].join(',')}}` }
}

/** Inserts `member` as the first member of the object opening at `open`. */
function firstMember (text: string, open: number, member: string): Splice {
  const isEmpty = text[skipSpace(text, open + 1)] === '}'
  return { start: open + 1, end: open + 1, text: isEmpty ? member : `${member},` }
}

/** The app-wide part: a span for each OAuth endpoint request, and what is buffered sent when the app closes. */
export function instrumentApp (app: FastifyInstance, tracing: Tracing): void {
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.startsWith('/oauth/')) traceOAuthRequest(tracing, request, reply.raw)
  })
  app.addHook('onClose', async () => {
    await tracing.flush()
  })
}

/** The authorization server's endpoint paths, longest first (so /oauth/device/auth is not /oauth/device). */
const OAUTH_PATHS = Object.values(OAUTH_ROUTES).sort((a, b) => b.length - a.length)
/** The catch-all route oidc-provider is mounted on (auth-server/plugin.ts): its pattern names no endpoint. */
const OAUTH_CATCH_ALL = '/oauth/*'

/**
 * The endpoint an /oauth/* request is for, from a fixed list: a route of its own (its pattern,
 * e.g. idp/:name/callback), an oidc-provider endpoint (register for /oauth/register/<client id>),
 * else OTHER — never a segment of the client's path.
 */
export function oauthEndpoint (path: string, route: string | undefined): string {
  if (route !== undefined && route !== OAUTH_CATCH_ALL && route.startsWith('/oauth/')) return route.slice('/oauth/'.length)
  const known = OAUTH_PATHS.find((p) => path === p || path.startsWith(`${p}/`))
  return known === undefined ? OTHER : known.slice('/oauth/'.length)
}

/**
 * One server span per /oauth/* request, named after its endpoint; no query string, no body, never
 * a token or code. Always a trace of its own, linked to the client's: these requests are not
 * authenticated by the gateway's tokens.
 */
function traceOAuthRequest (tracing: Tracing, request: FastifyRequest, res: ServerResponse): void {
  const route = request.routeOptions.url
  const endpoint = oauthEndpoint(request.url.split('?', 1)[0] ?? '', route)
  const method = httpMethod(request.method)
  const { api, tracer } = tracing
  const client = api.trace.getSpanContext(api.propagation.extract(api.ROOT_CONTEXT, request.headers))
  const span = tracer.startSpan(endpoint === OTHER ? method : `${method} /oauth/${endpoint}`, {
    kind: SERVER,
    root: true,
    ...(client === undefined ? {} : { links: [{ context: client }] }),
    attributes: {
      [ATTR.PORTCULLIS_OAUTH_ENDPOINT]: endpoint,
      [ATTR.HTTP_REQUEST_METHOD]: method,
      ...(route === undefined ? {} : { [ATTR.HTTP_ROUTE]: route }),
      [ATTR.CLIENT_ADDRESS]: request.ip,
    },
  }, api.ROOT_CONTEXT)
  res.once('close', () => {
    const status = res.statusCode
    span.setAttribute(ATTR.HTTP_RESPONSE_STATUS_CODE, status)
    // HTTP semantic conventions: a server span is an error on 5xx; a refused grant is the client's.
    if (status >= 500) failed(span, String(status))
    span.end()
  })
}

function httpMethod (method: string): string {
  return HTTP_METHODS.has(method) ? method : OTHER
}

function messageAttributes (m: McpMessage): Attributes {
  const attributes: Attributes = {}
  if (m.method !== undefined) attributes[ATTR.MCP_METHOD_NAME] = m.method
  // mcp.md: not captured for a null or omitted id.
  if (m.id !== undefined && m.id !== null) attributes[ATTR.JSONRPC_REQUEST_ID] = String(m.id)
  if (m.target !== undefined) {
    if (m.method === 'tools/call') {
      attributes[ATTR.GEN_AI_TOOL_NAME] = m.target
      attributes[ATTR.GEN_AI_OPERATION_NAME] = 'execute_tool'
    } else if (m.method === 'prompts/get') attributes[ATTR.GEN_AI_PROMPT_NAME] = m.target
    else {
      const uri = redactedUri(m.target)
      if (uri !== undefined) attributes[ATTR.MCP_RESOURCE_URI] = uri
    }
  }
  const version = m.method === 'initialize' ? m.params?.protocolVersion : undefined
  if (typeof version === 'string') attributes[ATTR.MCP_PROTOCOL_VERSION] = version
  return attributes
}

export { redactedUri }

/** mcp.md "Client": where the upstream is; network.transport is pipe for stdio. */
function upstreamAttributes (server: ServerConfig): Attributes {
  if (server.transport !== 'http') return { [ATTR.PORTCULLIS_SERVER]: server.name, [ATTR.NETWORK_TRANSPORT]: 'pipe' }
  const url = new URL(server.url)
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port)
  return { [ATTR.PORTCULLIS_SERVER]: server.name, [ATTR.NETWORK_TRANSPORT]: 'tcp', [ATTR.NETWORK_PROTOCOL_NAME]: 'http', [ATTR.SERVER_ADDRESS]: url.hostname, [ATTR.SERVER_PORT]: port }
}

/** The status the exchange answered with; a 5xx (an upstream or the gateway failing) fails the span, a 4xx is the caller's. */
function recordStatus (span: Span, status: number): void {
  span.setAttribute(ATTR.HTTP_RESPONSE_STATUS_CODE, status)
  if (status >= 500) failed(span, String(status))
}

/** A status message is not an attribute (spanLimits does not cut it): cut here alike. */
function truncate (text: string): string {
  return text.length > ATTRIBUTE_VALUE_LENGTH_LIMIT ? text.slice(0, ATTRIBUTE_VALUE_LENGTH_LIMIT) : text
}

/** A gateway error's code (PORTCULLIS_ERR_*) or a status, as error.type; the span marked failed. */
function failed (span: Span, err: unknown): void {
  const type = typeof err === 'string' ? err : (err as { code?: unknown } | null)?.code
  span.setAttribute(ATTR.ERROR_TYPE, typeof type === 'string' ? type : OTHER)
  span.setStatus({ code: ERROR, ...(err instanceof Error ? { message: truncate(err.message) } : {}) })
}
