/**
 * The spans of one MCP request (README "Tracing"): a SERVER span for the request, children for
 * the token check, policy, rate limits and the upstream exchange (a CLIENT span: toward the
 * upstream the gateway is the MCP client). The route calls it at a few points; with telemetry
 * off the route holds no RequestTrace and none of this runs.
 *
 * Names and attributes follow the OpenTelemetry semantic conventions v1.41.0 for MCP
 * (docs/gen-ai/mcp.md, status Development) and the registry's mcp.*, gen_ai.*, jsonrpc.* and
 * rpc.* attributes. The names are written out here rather than imported from
 * @opentelemetry/semantic-conventions/incubating, as that package asks for unstable ones.
 *
 * Trace context: taken from the client's traceparent/tracestate headers (W3C Trace Context);
 * passed on from the CLIENT span as headers to HTTP upstreams and, for stdio servers, inside
 * each forwarded message's params._meta (mcp.md "Context propagation").
 */
import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ServerConfig } from '../config/schema.js'
import type { PortcullisError } from '../errors.js'
import type { McpInspection, McpMessage } from '../mcp/jsonrpc.js'
import type { MessageOutcome } from '../policy/gate.js'
import type { McpExchange } from '../upstreams/types.js'
import type { Tracing } from './tracing.js'

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

/**
 * mcp.session.id, hashed: a session id is a bearer of the session (whoever holds it may use it),
 * so the raw value never leaves the gateway. SHA-256 of a random id cannot be reversed and stays
 * the same across spans and replicas, so a trace backend can still group a session's requests.
 */
export function hashSessionId (sessionId: string): string {
  return createHash('sha256').update(sessionId).digest('hex').slice(0, 32)
}

export class RequestTrace {
  private readonly span: Span
  private readonly context: Context
  private hasError = false

  /** The SERVER span of an MCP request, a child of the client's trace context; ended when the response closes. */
  constructor (private readonly tracer: Tracer, request: FastifyRequest, res: ServerResponse, server: ServerConfig) {
    const parent = propagation.extract(ROOT_CONTEXT, request.headers)
    this.span = tracer.startSpan(`${request.method} /${server.name}/mcp`, {
      kind: SpanKind.SERVER,
      attributes: {
        [ATTR.PORTCULLIS_SERVER]: server.name,
        [ATTR.HTTP_REQUEST_METHOD]: request.method,
        [ATTR.NETWORK_TRANSPORT]: 'tcp',
        [ATTR.NETWORK_PROTOCOL_NAME]: 'http',
        [ATTR.CLIENT_ADDRESS]: request.ip,
        ...sessionAttributes(request.headers),
      },
    }, parent)
    this.context = trace.setSpan(parent, this.span)
    res.once('close', () => this.end(res))
  }

  /** A child step; its span ends when `fn` returns or settles, and records the gateway error that ends it. */
  step<T>(name: StepName, fn: () => T): T {
    const span = this.startChild(name, SpanKind.INTERNAL, {})
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
    const only = inspection.isBatch ? undefined : inspection.messages[0]
    if (only === undefined) {
      this.span.updateName('batch')
      this.span.setAttribute(ATTR.PORTCULLIS_BATCH_SIZE, inspection.messages.length)
      return
    }
    this.span.updateName(spanName(only))
    this.span.setAttributes({ ...messageAttributes(only), ...(inspection.modernVersion === undefined ? {} : { [ATTR.MCP_PROTOCOL_VERSION]: inspection.modernVersion }) })
  }

  /** The gate's verdict: the first refusal decides (a batch's members are judged one by one). */
  judged (outcomes: readonly MessageOutcome[]): void {
    const refused = outcomes.find((o) => o.error !== undefined)
    const decisive = refused ?? outcomes[0]
    if (decisive === undefined) return
    this.span.setAttribute(ATTR.PORTCULLIS_DECISION, decisive.decision)
    if (decisive.reason !== undefined) this.span.setAttribute(ATTR.PORTCULLIS_RULE, decisive.reason)
    // mcp.md: error.type is the JSON-RPC error code the request was answered with.
    if (refused?.error !== undefined) this.refused(refused.error)
  }

  /** The gateway refused the request itself (token, Origin, body, policy): its JSON-RPC error code (mcp.md "error.type"). */
  refused (err: PortcullisError): void {
    if (this.hasError) return
    const code = String(err.rpcCode)
    this.span.setAttributes({ [ATTR.ERROR_TYPE]: code, [ATTR.RPC_RESPONSE_STATUS_CODE]: code })
    this.span.setStatus({ code: SpanStatusCode.ERROR, message: err.message })
    this.hasError = true
  }

  /**
   * The upstream exchange as a CLIENT span (the gateway is the upstream's MCP client; mcp.md
   * "Client"), its context handed on: as traceparent/tracestate headers to an HTTP upstream,
   * in params._meta of each forwarded message to a stdio server.
   */
  async exchange (server: ServerConfig, ex: McpExchange, handle: (ex: McpExchange) => Promise<void>): Promise<void> {
    const only = ex.inspection?.isBatch === false ? ex.inspection.messages[0] : undefined
    const span = this.startChild(only === undefined ? (ex.inspection === undefined ? `${ex.method} /${server.name}/mcp` : 'batch') : spanName(only), SpanKind.CLIENT, {
      ...(only === undefined ? {} : messageAttributes(only)),
      ...sessionAttributes(ex.headers),
      ...upstreamAttributes(server),
    })
    const spanContext = trace.setSpan(this.context, span)
    const carrier: Record<string, string> = {}
    propagation.inject(spanContext, carrier)
    const traced = server.transport === 'http' ? { ...ex, traceHeaders: carrier } : { ...ex, ...withTraceMeta(ex, carrier) }
    try {
      await context.with(spanContext, () => handle(traced))
    } finally {
      const status = ex.res.statusCode
      span.setAttribute(ATTR.HTTP_RESPONSE_STATUS_CODE, status)
      if (status >= 500) failed(span, String(status))
      span.end()
    }
  }

  private startChild (name: string, kind: SpanKind, attributes: Attributes): Span {
    return this.tracer.startSpan(name, { kind, attributes }, this.context)
  }

  private end (res: ServerResponse): void {
    const status = res.statusCode
    this.span.setAttribute(ATTR.HTTP_RESPONSE_STATUS_CODE, status)
    // An initialize learns its session id from the answer.
    const opened = res.getHeader('mcp-session-id')
    if (typeof opened === 'string') this.span.setAttribute(ATTR.MCP_SESSION_ID, hashSessionId(opened))
    if (status >= 400 && !this.hasError) failed(this.span, String(status))
    this.span.end()
  }
}

/**
 * The forwarded body with the CLIENT span's trace context in each request's and notification's
 * params._meta (replacing what the client put there: the gateway's span is the child's parent).
 * Responses (answers to the child's own requests) carry no _meta of ours.
 */
export function withTraceMeta (ex: Pick<McpExchange, 'body' | 'inspection'>, carrier: Readonly<Record<string, string>>): Pick<McpExchange, 'body' | 'inspection'> {
  const inspection = ex.inspection
  if (inspection === undefined || carrier.traceparent === undefined) return { body: ex.body, inspection }
  const messages = inspection.messages.map((m): McpMessage => {
    if (m.method === undefined) return m
    const params = m.params ?? {}
    const meta = (params._meta !== null && typeof params._meta === 'object' ? params._meta : {}) as Record<string, unknown>
    const value = { ...m.value, params: { ...params, _meta: { ...meta, ...carrier } } }
    return { ...m, params: value.params, value }
  })
  const values = messages.map((m) => m.value)
  return { body: Buffer.from(JSON.stringify(inspection.isBatch ? values : values[0])), inspection: { ...inspection, messages } }
}

/** The app-wide part: a span for each OAuth endpoint request, and what is buffered sent when the app closes. */
export function instrumentApp (app: FastifyInstance, tracing: Tracing): void {
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.startsWith('/oauth/')) traceOAuthRequest(tracing.tracer, request, reply.raw)
  })
  app.addHook('onClose', async () => {
    await tracing.flush()
  })
}

/** One server span per /oauth/* request, named after its endpoint; no query string, no body, never a token or code. */
function traceOAuthRequest (tracer: Tracer, request: FastifyRequest, res: ServerResponse): void {
  const path = request.url.split('?', 1)[0] ?? ''
  // The first segment only: /oauth/register/<client id> is the "register" endpoint.
  const endpoint = path.split('/')[2] ?? ''
  const route = `/oauth/${endpoint}`
  const span = tracer.startSpan(`${request.method} ${route}`, {
    kind: SpanKind.SERVER,
    attributes: {
      [ATTR.PORTCULLIS_OAUTH_ENDPOINT]: endpoint,
      [ATTR.HTTP_REQUEST_METHOD]: request.method,
      [ATTR.HTTP_ROUTE]: route,
      [ATTR.CLIENT_ADDRESS]: request.ip,
    },
  }, propagation.extract(ROOT_CONTEXT, request.headers))
  res.once('close', () => {
    const status = res.statusCode
    span.setAttribute(ATTR.HTTP_RESPONSE_STATUS_CODE, status)
    // HTTP semantic conventions: a server span is an error on 5xx; a refused grant is the client's.
    if (status >= 500) failed(span, String(status))
    span.end()
  })
}

function spanName (m: McpMessage): string {
  const method = m.method ?? 'response'
  // mcp.md: "{mcp.method.name} {target}" with a tool or prompt name; a resource URI is high-cardinality.
  const target = m.method === 'tools/call' || m.method === 'prompts/get' ? m.target : undefined
  return target === undefined ? method : `${method} ${target}`
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
    else attributes[ATTR.MCP_RESOURCE_URI] = m.target
  }
  const version = m.method === 'initialize' ? m.params?.protocolVersion : undefined
  if (typeof version === 'string') attributes[ATTR.MCP_PROTOCOL_VERSION] = version
  return attributes
}

/** The session (hashed) and protocol version the client's headers name. */
function sessionAttributes (headers: IncomingHttpHeaders): Attributes {
  const session = headers['mcp-session-id']
  const version = headers['mcp-protocol-version']
  return {
    ...(typeof session === 'string' ? { [ATTR.MCP_SESSION_ID]: hashSessionId(session) } : {}),
    ...(typeof version === 'string' ? { [ATTR.MCP_PROTOCOL_VERSION]: version } : {}),
  }
}

/** mcp.md "Client": where the upstream is; network.transport is pipe for stdio. */
function upstreamAttributes (server: ServerConfig): Attributes {
  if (server.transport !== 'http') return { [ATTR.PORTCULLIS_SERVER]: server.name, [ATTR.NETWORK_TRANSPORT]: 'pipe' }
  const url = new URL(server.url)
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port)
  return { [ATTR.PORTCULLIS_SERVER]: server.name, [ATTR.NETWORK_TRANSPORT]: 'tcp', [ATTR.NETWORK_PROTOCOL_NAME]: 'http', [ATTR.SERVER_ADDRESS]: url.hostname, [ATTR.SERVER_PORT]: port }
}

/** A gateway error's code (PORTCULLIS_ERR_*) or a status, as error.type; the span marked failed. */
function failed (span: Span, err: unknown): void {
  const type = typeof err === 'string' ? err : (err as { code?: unknown } | null)?.code
  span.setAttribute(ATTR.ERROR_TYPE, typeof type === 'string' ? type : '_OTHER')
  span.setStatus({ code: SpanStatusCode.ERROR, ...(err instanceof Error ? { message: err.message } : {}) })
}
