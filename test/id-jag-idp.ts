/**
 * An enterprise identity provider that mints ID-JAGs: a real oidc-provider on
 * https://localhost:<port> (a self-signed certificate; the gateway trusts it
 * through the test-only outbound allowance), publishing discovery and its JWKS
 * as any OpenID provider does, with RFC 8693 token exchange registered
 * (requested_token_type=urn:ietf:params:oauth:token-type:id-jag), as the MCP
 * enterprise-managed authorization extension has the client call it.
 *
 * Not under test and so shortened: the user's sign-in at the IdP. `idToken()`
 * signs the ID token that sign-in would have returned, with the IdP's own key;
 * the exchange verifies it (issuer, audience = the requesting IdP client) as
 * the IdP would before vouching for the user.
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose'
import Provider, { errors, type KoaContextWithOIDC } from 'oidc-provider'
import type { OutboundTestAllowance } from '../src/net/guarded-fetch.js'
import { selfSignedCertificate, type Teardown } from './helpers.js'

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ID_JAG_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id-jag'
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token'
export const ID_JAG_LIFETIME_S = 300

export interface IdJagRequest {
  /** The gateway's issuer (the ID-JAG's aud). */
  readonly audience: string
  /** The MCP server's resource URL. */
  readonly resource: string
  readonly scope?: string
}

export interface IdJagIdp {
  readonly issuer: string
  readonly allowance: OutboundTestAllowance
  /** The client registered at this IdP; its id is also the client id it names in ID-JAGs (registered at the gateway too). */
  readonly client: { readonly id: string, readonly secret: string }
  /** What the user's sign-in at the IdP would return: an ID token signed by the IdP. */
  idToken: (sub: string, claims?: Record<string, unknown>) => Promise<string>
  /** The RFC 8693 exchange at the IdP's token endpoint: ID token in, ID-JAG out. */
  exchange: (idToken: string, request: IdJagRequest, client?: { id: string, secret: string }) => Promise<{ status: number, body: Record<string, unknown> }>
  /** Test knobs for a misbehaving IdP: claims and header typ of the ID-JAGs it signs next. */
  misbehave: { claims?: JWTPayload, typ?: string }
  /** Requests for /.well-known and the JWKS served so far. */
  readonly keyRequests: () => number
}

export async function startIdJagIdp (t: Teardown, options: { clients?: Array<{ id: string, secret: string }> } = {}): Promise<IdJagIdp> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-idp-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { keyPath, certPath } = selfSignedCertificate(dir)
  const cert = readFileSync(certPath, 'utf8')
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const kid = randomUUID()
  const privateJwk: JWK = { ...await exportJWK(privateKey), kid, alg: 'ES256', use: 'sig' }
  const publicKeys = createLocalJWKSet({ keys: [{ ...await exportJWK(publicKey), kid, alg: 'ES256' }] })
  const clients = options.clients ?? [{ id: 'mcp-agent', secret: 'idp-secret-'.padEnd(40, 'x') }]
  const misbehave: IdJagIdp['misbehave'] = {}

  let keyRequests = 0
  const server = createServer({ key: readFileSync(keyPath), cert })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const issuer = `https://localhost:${(server.address() as AddressInfo).port}`

  const provider = new Provider(issuer, {
    jwks: { keys: [privateJwk] },
    clients: clients.map((c) => ({ client_id: c.id, client_secret: c.secret, grant_types: [TOKEN_EXCHANGE], response_types: [], redirect_uris: [], id_token_signed_response_alg: 'ES256' })),
    features: { devInteractions: { enabled: false } },
  })

  /** Verifies the subject token (an ID token this IdP issued to the requesting client) and signs an ID-JAG for its user. */
  const tokenExchange = async (ctx: KoaContextWithOIDC): Promise<void> => {
    const params = ctx.oidc.params as Record<string, string | undefined>
    const clientId = ctx.oidc.client?.clientId as string
    if (params.requested_token_type !== ID_JAG_TOKEN_TYPE) throw new errors.InvalidRequest('this IdP only issues ID-JAGs')
    if (params.subject_token_type !== ID_TOKEN_TYPE || params.subject_token === undefined) throw new errors.InvalidRequest('subject_token must be an ID token')
    if (params.audience === undefined || params.resource === undefined) throw new errors.InvalidRequest('audience and resource are required')
    let user: JWTPayload
    try {
      user = (await jwtVerify(params.subject_token, publicKeys, { issuer, audience: clientId })).payload
    } catch {
      throw new errors.InvalidGrant('the subject token is not an ID token this IdP issued to this client')
    }
    const now = Math.floor(Date.now() / 1000)
    const idJag = await new SignJWT({
      sub: user.sub,
      aud: params.audience,
      resource: params.resource,
      client_id: clientId,
      jti: randomUUID(),
      ...(params.scope === undefined ? {} : { scope: params.scope }),
      ...Object.fromEntries(['email', 'email_verified', 'preferred_username', 'groups'].filter((c) => user[c] !== undefined).map((c) => [c, user[c]])),
      iss: issuer,
      iat: now,
      exp: now + ID_JAG_LIFETIME_S,
      ...misbehave.claims,
    }).setProtectedHeader({ alg: 'ES256', kid, typ: misbehave.typ ?? 'oauth-id-jag+jwt' }).sign(privateKey)
    ctx.body = { issued_token_type: ID_JAG_TOKEN_TYPE, access_token: idJag, token_type: 'N_A', expires_in: ID_JAG_LIFETIME_S, ...(params.scope === undefined ? {} : { scope: params.scope }) }
  }
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope'])
  const callback = provider.callback()
  server.on('request', (req, res) => {
    if (req.url?.startsWith('/.well-known/') === true || req.url?.startsWith('/jwks') === true) keyRequests++
    void callback(req, res)
  })

  const idToken = async (sub: string, claims: Record<string, unknown> = {}): Promise<string> =>
    new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid }).setIssuer(issuer).setSubject(sub).setAudience(clients[0]?.id as string).setIssuedAt().setExpirationTime('5m').sign(privateKey)

  const exchange: IdJagIdp['exchange'] = async (subjectToken, request, client = clients[0] as { id: string, secret: string }) => {
    const body = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG_TOKEN_TYPE, subject_token: subjectToken, subject_token_type: ID_TOKEN_TYPE, audience: request.audience, resource: request.resource, ...(request.scope === undefined ? {} : { scope: request.scope }) })
    const res = await fetchWithCa(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}` }, body }, cert)
    return { status: res.status, body: JSON.parse(res.text) as Record<string, unknown> }
  }

  return { issuer, allowance: { privateHosts: ['localhost'], ca: cert }, client: clients[0] as { id: string, secret: string }, idToken, exchange, misbehave, keyRequests: () => keyRequests }
}

/** A POST to the IdP, trusting its self-signed certificate (the MCP client's side of the exchange). */
async function fetchWithCa (url: string, init: { method: string, headers: Record<string, string>, body: URLSearchParams }, ca: string): Promise<{ status: number, text: string }> {
  const { Agent, fetch: undiciFetch } = await import('undici')
  const dispatcher = new Agent({ connect: { ca } })
  try {
    const res = await undiciFetch(url, { ...init, body: init.body.toString(), dispatcher })
    return { status: res.status, text: await res.text() }
  } finally {
    await dispatcher.close()
  }
}
