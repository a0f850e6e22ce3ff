/**
 * The gateway as an OAuth resource server: RFC 9728 protected resource
 * metadata for every MCP server, and the bearer check every /<name>/mcp
 * request passes before its body is read.
 *
 *   no token            401  WWW-Authenticate: Bearer resource_metadata="…", scope="…"
 *   invalid token       401  … error="invalid_token", error_description="…"
 *   missing scope       403  … error="insufficient_scope", scope="<every scope needed>"
 *
 * Tokens are only ever read from the Authorization header (MCP authorization:
 * never from the query string), and never forwarded upstream.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError } from '../errors.js'
import type { ServerConfig } from '../config/schema.js'
import type { ResourceCatalog, ResourceTarget } from '../auth-server/resources.js'
import { bearerChallenge } from './challenge.js'
import { TokenError, type RequestIdentity, type TokenVerifier } from './verify-token.js'
import { isApiKey, type ApiKeyVerifier } from './verify-api-key.js'

/** RFC 6750 2.1: `Bearer` then a b64token. */
const BEARER_RE = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

/** `legacy`: the request came to the server's 2024-11-05 routes, whose challenge names the /sse metadata (ResourceCatalog.legacyUrlOf). */
export type Authenticator = (request: FastifyRequest, server: ResourceTarget, legacy?: boolean) => Promise<RequestIdentity>

/** What a bearer check concluded: ok, missing, insufficient_scope, or why the token was refused. */
export type TokenCheckResult = 'ok' | 'missing' | 'insufficient_scope' | 'api_key_server' | TokenError['reason']

/**
 * `apiKeys`: personal API keys (`Bearer pcs_…`) are checked there instead of as JWTs; a key
 * names the servers it reaches, and any other server answers 403 PORTCULLIS_ERR_API_KEY_SERVER
 * — a JSON-RPC error, not an OAuth challenge: no sign-in or step-up could widen a key, and an
 * MCP client answering a challenge would start a browser flow a script cannot finish.
 */
export function createAuthenticator (catalog: ResourceCatalog, verifier: TokenVerifier, isGatewayWideAllowed: boolean, onResult: (result: TokenCheckResult) => void = () => {}, apiKeys?: ApiKeyVerifier): Authenticator {
  // The audiences a server's token may carry, built once per server (not per request).
  const audiencesOf = new Map<string, readonly string[]>()
  const audiences = (name: string): readonly string[] => {
    let known = audiencesOf.get(name)
    if (known === undefined) {
      known = isGatewayWideAllowed ? [catalog.urlOf(name), catalog.publicUrl] : [catalog.urlOf(name)]
      audiencesOf.set(name, known)
    }
    return known
  }
  return async (request, server, legacy = false) => {
    // What a challenge names: only worked out for a refusal (a virtual server's scopes are its members').
    const metadataUrl = (): string => legacy ? catalog.legacyMetadataUrlOf(server.name) : catalog.metadataUrlOf(server.name)
    const header = request.headers.authorization
    if (header === undefined || header === '') {
      onResult('missing')
      throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'this MCP server needs an OAuth access token', {
        headers: { 'www-authenticate': bearerChallenge({ resourceMetadata: metadataUrl(), scopes: catalog.challengeScopes(server) }) },
      })
    }
    const token = BEARER_RE.exec(header)?.[1]
    let identity: RequestIdentity
    try {
      if (token === undefined) throw new TokenError('malformed', 'the Authorization header is not "Bearer <token>"')
      if (apiKeys !== undefined && isApiKey(token)) {
        identity = await apiKeys.verify(token)
      } else {
        identity = await verifier.verify(token, audiences(server.name))
      }
    } catch (err) {
      if (!(err instanceof TokenError)) throw err
      onResult(err.reason)
      request.log.info({ server: server.name, reason: err.reason }, 'access token refused')
      throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', err.message, {
        headers: { 'www-authenticate': bearerChallenge({ resourceMetadata: metadataUrl(), scopes: catalog.challengeScopes(server), error: 'invalid_token', description: err.message }) },
      })
    }
    if (identity.keyId !== undefined && !identity.servers?.includes(server.name)) {
      onResult('api_key_server')
      request.log.info({ server: server.name, user: identity.name, keyId: identity.keyId }, 'API key not valid for this server')
      throw new PortcullisError('PORTCULLIS_ERR_API_KEY_SERVER', `this API key reaches ${identity.servers?.join(', ') ?? 'no server'}, not "${server.name}"`)
    }
    const required = catalog.requiredScopes(server)
    const missing = required.filter((scope) => !identity.scopes.has(scope))
    if (missing.length > 0) {
      onResult('insufficient_scope')
      request.log.info({ server: server.name, user: identity.name, missing }, 'access token lacks a required scope')
      throw new PortcullisError('PORTCULLIS_ERR_INSUFFICIENT_SCOPE', `needs ${missing.join(', ')}`, {
        headers: { 'www-authenticate': bearerChallenge({ resourceMetadata: metadataUrl(), scopes: required, error: 'insufficient_scope', description: `this MCP server needs the scope(s): ${required.join(' ')}` }) },
      })
    }
    onResult('ok')
    return identity
  }
}

export interface ResourceMetadataOptions {
  readonly catalog: ResourceCatalog
  readonly servers: readonly ServerConfig[]
  /** Virtual servers (README "Virtual servers"): a resource of their own each. */
  readonly virtualServers: ReadonlyArray<{ readonly name: string }>
  readonly isGatewayWideAllowed: boolean
}

const WELL_KNOWN = '/.well-known/oauth-protected-resource'

export async function resourceMetadataRoutes (app: FastifyInstance, opts: ResourceMetadataOptions): Promise<void> {
  const { catalog } = opts
  const documentFor = (resource: string, name: string, canonical = resource): Record<string, unknown> => ({
    resource,
    authorization_servers: [catalog.publicUrl],
    scopes_supported: catalog.grantableScopes(canonical),
    bearer_methods_supported: ['header'],
    resource_name: name,
  })
  // Metadata is public; any origin may read it (browser-based clients discover through it).
  const send = (reply: FastifyReply, status: number, body: unknown): FastifyReply =>
    reply.code(status).headers({ 'access-control-allow-origin': '*', 'cache-control': 'public, max-age=300' }).send(body)

  app.options(`${WELL_KNOWN}*`, async (_request, reply) => reply.code(204).headers({
    'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET, OPTIONS', 'access-control-allow-headers': '*', 'access-control-max-age': '600',
  }).send())

  app.get<{ Params: { name: string } }>(`${WELL_KNOWN}/:name/mcp`, async (request, reply) => {
    const server = opts.servers.find((s) => s.name === request.params.name) ?? opts.virtualServers.find((s) => s.name === request.params.name)
    if (server === undefined) return send(reply, 404, { error: 'not_found', error_description: `no MCP server named ${JSON.stringify(request.params.name.slice(0, 64))}` })
    return send(reply, 200, documentFor(catalog.urlOf(server.name), server.name))
  })

  // The same server (or virtual server) for 2024-11-05 clients, as the resource their URL names (ResourceCatalog.legacyUrlOf).
  app.get<{ Params: { name: string } }>(`${WELL_KNOWN}/:name/sse`, async (request, reply) => {
    const server = opts.servers.find((s) => s.name === request.params.name) ?? opts.virtualServers.find((s) => s.name === request.params.name)
    if (server === undefined) return send(reply, 404, { error: 'not_found', error_description: `no MCP server named ${JSON.stringify(request.params.name.slice(0, 64))}` })
    return send(reply, 200, documentFor(catalog.legacyUrlOf(server.name), server.name, catalog.urlOf(server.name)))
  })

  // The root form: one server, or the gateway as a whole when tokens for it are allowed.
  app.get(WELL_KNOWN, async (_request, reply) => {
    const only = opts.servers.length === 1 ? opts.servers[0] : undefined
    if (only !== undefined) return send(reply, 200, documentFor(catalog.urlOf(only.name), only.name))
    if (opts.isGatewayWideAllowed) return send(reply, 200, documentFor(catalog.publicUrl, 'all MCP servers'))
    return send(reply, 404, {
      error: 'not_found',
      error_description: 'this gateway protects several MCP servers; their metadata is at /.well-known/oauth-protected-resource/<name>/mcp',
      resources: opts.servers.map((s) => catalog.metadataUrlOf(s.name)),
    })
  })
}
