/**
 * Fastify glue for the authorization server. oidc-provider reads its own
 * request bodies, so its routes live in a context without body parsers and
 * get the raw request. Two requests are normalised on the way in (see
 * rewrite.ts): /oauth/authorize (query rewritten in place) and /oauth/token
 * (read, rewritten, and replayed as a fresh request), and a refresh naming a
 * resource it was not granted is refused before oidc-provider rotates — and
 * so burns — the refresh token. An IdP user's refresh, and a code exchange (the
 * code may come from a kept sign-in, with no visit to the IdP), is also where the
 * gateway re-checks them with their identity provider (offboarding.ts), before
 * oidc-provider issues anything: a refusal or an unreachable IdP stops it.
 */
import { IncomingMessage, type ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import type Provider from 'oidc-provider'
import { OAUTH_ROUTES, presentAsPublic, STORE_RETRY_AFTER_S, STORE_UNAVAILABLE_MESSAGE } from './provider.js'
import { isStoreUnavailable } from '../store/types.js'
import type { ResourceCatalog } from './resources.js'
import { rewriteAuthorizationParams, rewriteTokenParams } from './rewrite.js'
import type { RevalidationOutcome } from './offboarding.js'
import type { Bucket, RateLimiter } from '../rate-limit/limiter.js'
import type { Rate } from '../config/units.js'
import { MAX_REGISTRATION_BODY_BYTES } from '../config/defaults.js'
import { messagePage, PAGE_HEADERS } from './pages.js'

/** oidc-provider's own limit for form bodies. */
const MAX_TOKEN_BODY_BYTES = 56 * 1024

export interface AuthServerRoutesOptions {
  readonly provider: Provider
  readonly catalog: ResourceCatalog
  readonly limiter: RateLimiter
  /** Authorization, token and registration requests per client IP (brute force on secrets and codes; stored interactions). */
  readonly tokenRate: Rate
  /** New dynamic registrations per client IP (each one is a stored record). */
  readonly registrationRate: Rate
  /** Re-checks an IdP user with their identity provider before a refresh (offboarding.ts). */
  readonly revalidate?: (accountId: string, grantId: string) => Promise<RevalidationOutcome>
  /**
   * The same before a code exchange (offboarding.ts atCodeExchange): a code can come from a
   * sign-in the authorization server kept, with no visit to the IdP behind it.
   */
  readonly revalidateCode?: (accountId: string, grantId: string) => Promise<RevalidationOutcome>
}

async function readBody (req: IncomingMessage, maxBytes = MAX_TOKEN_BODY_BYTES): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length'] ?? '0')
  if (declared > maxBytes) return undefined
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > maxBytes) return undefined
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

/** A copy of `req` with another body, readable from the start. */
function withBody (req: IncomingMessage, body: Buffer): IncomingMessage {
  const copy = new IncomingMessage(req.socket)
  copy.method = req.method
  copy.url = req.url
  copy.httpVersion = req.httpVersion
  copy.httpVersionMajor = req.httpVersionMajor
  copy.httpVersionMinor = req.httpVersionMinor
  copy.headers = { ...req.headers, 'content-length': String(body.length) }
  delete copy.headers['transfer-encoding']
  copy.push(body)
  copy.push(null)
  // Normally set by the HTTP parser; without it, the message's auto-destroy at end-of-stream
  // would take the client's socket down with it.
  copy.complete = true
  return copy
}

/** Letter case and trailing slashes aside, as oidc-provider's router matches a path. */
function routeKey (path: string): string {
  return path.toLowerCase().replace(/\/+$/, '')
}

/**
 * The endpoint of oidc-provider's a path reaches, where the gateway checks something first.
 * Its router ignores letter case and a trailing slash: /oauth/TOKEN and /oauth/token/ are the
 * token endpoint, and skipped the token rate limit and the refresh-time revalidation with the
 * identity provider when the gateway compared paths exactly.
 */
function routeOf (path: string): 'token' | 'authorization' | 'registration' | undefined {
  const key = routeKey(path)
  if (key === OAUTH_ROUTES.token) return 'token'
  if (key === OAUTH_ROUTES.authorization) return 'authorization'
  if (key === OAUTH_ROUTES.registration || key.startsWith(`${OAUTH_ROUTES.registration}/`)) return 'registration'
  return undefined
}

/** POST /oauth/register (a new client), not a registered client's own URL. */
function isRegistrationItself (path: string): boolean {
  return routeKey(path) === OAUTH_ROUTES.registration
}

/**
 * Requests an anonymous caller can make that the store keeps something for: a token request, a
 * registration, and an authorization request (oidc-provider keeps an Interaction of up to
 * 16 KiB of parameters for 10 minutes per request, before anyone signs in). Counted per client IP.
 */
function isCountedPerIp (method: string | undefined, route: ReturnType<typeof routeOf>): boolean {
  if (route === 'authorization') return method === 'GET' || method === 'POST'
  return method === 'POST' && (route === 'token' || route === 'registration')
}

/** A refusal at the authorization endpoint, as the gateway's other pages say it. */
function refusalPage (res: ServerResponse, status: number, _error: string, description: string): void {
  const body = messagePage(status === 429 ? 'Too many requests' : 'Temporarily unavailable', `Sign-in could not start: ${description}.`, 'Wait, then start again from the application.')
  res.writeHead(status, { ...PAGE_HEADERS, 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function oauthError (res: ServerResponse, status: number, error: string, description: string): void {
  const body = JSON.stringify({ error, error_description: description })
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/** Answers a revalidation that stops the grant (true), or leaves the request to go on (false). */
function refusedByRevalidation (res: ServerResponse, outcome: RevalidationOutcome): boolean {
  if (outcome.kind === 'refused' || outcome.kind === 'sign-in-again') {
    oauthError(res, 400, 'invalid_grant', outcome.reason)
    return true
  }
  if (outcome.kind === 'unavailable') {
    res.setHeader('retry-after', String(STORE_RETRY_AFTER_S))
    oauthError(res, 503, 'temporarily_unavailable', outcome.reason)
    return true
  }
  return false
}

/** The account and grant of a live, unused token or code (oidc-provider refuses the rest itself). */
function liveGrantOf (token: { accountId?: string, grantId?: string, isExpired: boolean, consumed?: unknown } | undefined): { accountId: string, grantId: string } | undefined {
  if (token?.accountId === undefined || token.grantId === undefined || token.isExpired || token.consumed !== undefined) return undefined
  return { accountId: token.accountId, grantId: token.grantId }
}

export async function authServerRoutes (app: FastifyInstance, opts: AuthServerRoutesOptions): Promise<void> {
  const { provider, catalog } = opts
  const callback = provider.callback()
  const publicOrigin = new URL(catalog.publicUrl)

  const tokenRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readBody(req)
    if (body === undefined) return oauthError(res, 413, 'invalid_request', 'request body too large')
    // Only form bodies are token requests; anything else goes on untouched for oidc-provider to refuse.
    if (!/^application\/x-www-form-urlencoded\b/i.test(req.headers['content-type'] ?? '')) return callback(withBody(req, body), res)
    const params = new URLSearchParams(body.toString('utf8'))
    rewriteTokenParams(params, catalog)
    const resource = params.get('resource')
    const refreshToken = params.get('refresh_token')
    if (params.get('grant_type') === 'refresh_token' && refreshToken !== null) {
      const token = await provider.RefreshToken.find(refreshToken)
      if (token !== undefined && resource !== null && !token.resourceIndicators.has(resource)) {
        return oauthError(res, 400, 'invalid_target', 'the refresh token was not granted for this resource')
      }
      // Only a live token of a live grant gets this far (oidc-provider refuses the rest itself).
      const live = liveGrantOf(token)
      if (live !== undefined && opts.revalidate !== undefined && refusedByRevalidation(res, await opts.revalidate(live.accountId, live.grantId))) return
    }
    const code = params.get('code')
    if (params.get('grant_type') === 'authorization_code' && code !== null && opts.revalidateCode !== undefined) {
      const live = liveGrantOf(await provider.AuthorizationCode.find(code))
      if (live !== undefined && refusedByRevalidation(res, await opts.revalidateCode(live.accountId, live.grantId))) return
    }
    callback(withBody(req, Buffer.from(params.toString())), res)
  }

  app.removeAllContentTypeParsers()
  // Leave the body unread: oidc-provider reads it.
  app.addContentTypeParser('*', (_request, _payload, done) => { done(null) })

  const handler = async (request: { raw: IncomingMessage, method: string, url: string, ip: string }, reply: { hijack: () => void, raw: ServerResponse }): Promise<void> => {
    reply.hijack()
    const req = request.raw
    presentAsPublic(req, publicOrigin, request.ip)
    const url = req.url ?? ''
    const queryAt = url.indexOf('?')
    const rawPath = queryAt === -1 ? url : url.slice(0, queryAt)
    const route = routeOf(rawPath)
    // oidc-provider gets the path the checks below were decided on.
    if ((route === 'token' || route === 'authorization') && rawPath !== OAUTH_ROUTES[route]) req.url = OAUTH_ROUTES[route] + (queryAt === -1 ? '' : url.slice(queryAt))
    const path = route === 'token' || route === 'authorization' ? OAUTH_ROUTES[route] : rawPath
    if (isCountedPerIp(req.method, route)) {
      const buckets: Bucket[] = [{ kind: 'ip-token', key: request.ip, rate: opts.tokenRate, cost: 1, subject: 'authorization, token and registration requests from your address' }]
      if (route === 'registration' && isRegistrationItself(rawPath)) buckets.push({ kind: 'ip-registration', key: request.ip, rate: opts.registrationRate, cost: 1, subject: 'client registrations from your address' })
      const limited = await opts.limiter.consume(buckets)
      // The authorization endpoint is a browser's page: it is refused with one.
      const refuse = route === 'authorization' ? refusalPage : oauthError
      if (limited === 'store-unavailable') return refuse(reply.raw, 503, 'temporarily_unavailable', 'rate limits cannot be checked right now; retry shortly')
      if (limited !== undefined) {
        for (const [name, value] of Object.entries(limited.headers)) reply.raw.setHeader(name, value)
        return refuse(reply.raw, 429, 'temporarily_unavailable', limited.message)
      }
    }
    if (path === OAUTH_ROUTES.authorization && req.method === 'GET') {
      const url = new URL(req.url ?? '/', 'http://gateway.invalid')
      if (rewriteAuthorizationParams(url.searchParams, catalog)) req.url = `${url.pathname}?${url.searchParams.toString()}`
    } else if (path === OAUTH_ROUTES.token && req.method === 'POST') {
      try {
        await tokenRequest(req, reply.raw)
      } catch (err) {
        if (!isStoreUnavailable(err)) throw err
        reply.raw.setHeader('retry-after', String(STORE_RETRY_AFTER_S))
        oauthError(reply.raw, 503, 'temporarily_unavailable', STORE_UNAVAILABLE_MESSAGE)
      }
      return
    }
    if (route === 'registration' && (req.method === 'POST' || req.method === 'PUT')) {
      // Read here, capped: oidc-provider would accept up to its own 56 KiB per registration.
      const body = await readBody(req, MAX_REGISTRATION_BODY_BYTES)
      if (body === undefined) return oauthError(reply.raw, 413, 'invalid_client_metadata', `the registration body is larger than ${MAX_REGISTRATION_BODY_BYTES / 1024} KiB`)
      return callback(withBody(req, body), reply.raw)
    }
    callback(req, reply.raw)
  }

  const methods = ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS']
  app.route({ method: methods, url: '/oauth/*', handler })
  for (const url of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    app.route({ method: ['GET', 'OPTIONS'], url, handler })
  }
}
