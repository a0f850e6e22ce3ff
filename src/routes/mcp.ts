/**
 * The MCP endpoint, /<server>/mcp. The request's path through the gateway,
 * in order (see DESIGN.md "The request path"):
 *
 *   onRequest   shutting-down check, Origin check (403), CORS headers
 *               [authentication slots in here: before the body is read]
 *   body        read once as a Buffer, size-limited (413)
 *   preHandler  JSON-RPC inspection (400 -32700/-32600/-32602), 2026-07-28 header mirroring (400 -32020)
 *               [policy and rate limits slot in here: they use request.mcpInspection]
 *   handler     the server's upstream adapter answers the exchange
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError, jsonRpcErrorPayload } from '../errors.js'
import type { Config } from '../config/schema.js'
import { inspectBody, type McpInspection } from '../mcp/jsonrpc.js'
import { checkMirroredHeaders } from '../mcp/headers.js'
import type { Upstream } from '../upstreams/types.js'
import { ANONYMOUS, type UserIdentity } from '../identity.js'
import type { OriginPolicy } from '../mcp/origin.js'
import type { Authenticator } from '../resource-server/plugin.js'
import type { RequestIdentity } from '../resource-server/verify-token.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The inspected JSON-RPC body (POST only); what policy, limits and audit read. */
    mcpInspection: McpInspection | null
    /** Who is calling, from the verified access token (null when auth is disabled). */
    identity: RequestIdentity | null
  }
}

export interface McpRoutesOptions {
  readonly config: Config
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly isClosing: () => boolean
  readonly isOriginAllowed: OriginPolicy
  /** Undefined when auth is disabled: every request is anonymous. */
  readonly authenticate: Authenticator | undefined
}

const MCP_METHODS = ['GET', 'POST', 'DELETE'] as const
const ALLOW = 'GET, POST, DELETE, OPTIONS'
/** Headers a browser-based MCP client sends and must be allowed to (CORS preflight). */
const CORS_ALLOW_HEADERS = 'authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, mcp-method, mcp-name'
/** Headers a browser-based client must be able to read. */
const CORS_EXPOSE_HEADERS = 'mcp-session-id, mcp-protocol-version, www-authenticate, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy'
const CORS_MAX_AGE_S = '600'

const JSON_MEDIA_RE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

export async function mcpRoutes (app: FastifyInstance, opts: McpRoutesOptions): Promise<void> {
  const { config, upstreams, isClosing, isOriginAllowed, authenticate } = opts

  app.decorateRequest('mcpInspection', null)
  app.decorateRequest('identity', null)

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
    const inspection = request.mcpInspection
    const ids = err.rpcId !== undefined ? [err.rpcId] : inspection?.requestIds ?? []
    return reply.code(err.status).headers(err.headers).type('application/json')
      .send(jsonRpcErrorPayload(err, ids, inspection?.isBatch === true && err.rpcId === undefined))
  })

  const onRequest = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (isClosing()) {
      throw new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN', undefined, { headers: { connection: 'close', 'retry-after': '1' } })
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

  const inspect = async (request: FastifyRequest): Promise<void> => {
    if (request.method !== 'POST') return
    const inspection = inspectBody(request.body as Buffer | undefined)
    request.mcpInspection = inspection
    checkMirroredHeaders(inspection, request.headers)
  }

  for (const server of config.servers) {
    const upstream = upstreams.get(server.name)
    if (upstream === undefined) throw new Error(`no upstream adapter for server ${server.name}`)
    const url = `/${server.name}/mcp`
    // After the Origin check, before any body is read: who is calling, and may they reach this server?
    const checkToken = async (request: FastifyRequest): Promise<void> => {
      if (authenticate !== undefined) request.identity = await authenticate(request, server)
    }

    app.route({
      method: [...MCP_METHODS],
      url,
      exposeHeadRoute: false,
      onRequest: [onRequest, checkToken],
      preHandler: inspect,
      handler: async (request, reply) => {
        reply.hijack()
        await upstream.handle({
          method: request.method as typeof MCP_METHODS[number],
          headers: request.headers,
          body: request.body as Buffer | undefined,
          inspection: request.mcpInspection ?? undefined,
          user: userOf(request.identity),
          req: request.raw,
          res: reply.raw,
          log: request.log,
        })
      },
    })

    app.route({
      method: 'OPTIONS',
      url,
      handler: async (request, reply) => {
        const origin = request.headers.origin
        if (!isOriginAllowed(origin)) throw new PortcullisError('PORTCULLIS_ERR_FORBIDDEN_ORIGIN')
        reply.header('allow', ALLOW)
        if (origin !== undefined) {
          reply.headers({
            'access-control-allow-origin': origin,
            'access-control-allow-methods': ALLOW,
            'access-control-allow-headers': allowedRequestHeaders(request.headers['access-control-request-headers']),
            'access-control-max-age': CORS_MAX_AGE_S,
            vary: 'Origin',
          })
        }
        return reply.code(204).send()
      },
    })

    app.route({
      method: ['PUT', 'PATCH', 'HEAD'],
      url,
      handler: async () => {
        throw new PortcullisError('PORTCULLIS_ERR_METHOD_NOT_ALLOWED', 'use POST, GET or DELETE', { headers: { allow: ALLOW } })
      },
    })
  }
}

function userOf (identity: RequestIdentity | null): UserIdentity {
  if (identity === null) return ANONYMOUS
  return { id: identity.id, name: identity.name, groups: identity.groups ?? [], ...(identity.email === undefined ? {} : { email: identity.email }) }
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
