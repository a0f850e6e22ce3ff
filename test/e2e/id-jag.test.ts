// Enterprise-managed authorization: an MCP client exchanges an ID-JAG, minted by a real
// oidc-provider acting as the organisation's IdP (test/id-jag-idp.ts, https on localhost), at the
// gateway's token endpoint (RFC 7523 JWT-bearer grant) for an ordinary access token; the MCP SDK
// client then calls tools with it. And every way such an exchange must be refused.
import t from 'tap'
import { decodeJwt } from 'jose'
import { connectClient, startGateway, startUpstream, textOf, type RunningGateway, type Teardown } from '../helpers.js'
import { startIdJagIdp, type IdJagIdp } from '../id-jag-idp.js'

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
const AGENT = { id: 'mcp-agent', secret: 'agent-secret-with-at-least-32-characters' }
const OTHER_AGENT = { id: 'other-agent', secret: 'other-secret-with-at-least-32-characters' }

interface Setup { gw: RunningGateway, idp: IdJagIdp }

/** A gateway trusting `corp` for ID-JAGs; `extraIdps` adds more identity providers (their issuers come from `idps`). */
async function setup (t: Teardown, options: { idpOverrides?: Record<string, unknown>, extraIdps?: Array<Record<string, unknown>>, idps?: IdJagIdp[], auth?: Record<string, unknown>, canReachIdp?: boolean } = {}): Promise<Setup> {
  const idp = await startIdJagIdp(t, { clients: [AGENT, OTHER_AGENT] })
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: {
      identityProviders: [
        { name: 'corp', type: 'oidc', issuer: idp.issuer, clientId: 'portcullis', clientSecret: 'unused-here', groupsClaim: 'groups', groupMap: { 'corp-engineering': 'eng' }, idJag: true, ...options.idpOverrides },
        ...(options.extraIdps ?? []),
      ],
      clients: [
        { clientId: AGENT.id, clientSecret: AGENT.secret, grantTypes: [JWT_BEARER] },
        { clientId: OTHER_AGENT.id, clientSecret: OTHER_AGENT.secret, grantTypes: [JWT_BEARER] },
      ],
      ...options.auth,
    },
    servers: [
      { name: 'alpha', transport: 'http', url: upstream.url, scopes: ['alpha:read'], access: { groups: ['eng'] }, tools: { echo: { scopes: ['alpha:write'] } } },
      { name: 'beta', transport: 'http', url: upstream.url },
    ],
    virtualServers: [{ name: 'both', members: ['alpha', 'beta'] }],
  }, {}, options.canReachIdp === false ? {} : { outboundTestAllowance: { privateHosts: ['localhost'], ca: [idp, ...(options.idps ?? [])].map((i) => i.allowance.ca).join('\n') } })
  return { gw, idp }
}

/** The client's whole path at the IdP: sign-in (its ID token), then the ID-JAG exchange. */
async function idJagFor (setup: Setup, request: { resource?: string, audience?: string, scope?: string } = {}, user: { sub?: string, claims?: Record<string, unknown> } = {}): Promise<string> {
  const { gw, idp } = setup
  const idToken = await idp.idToken(user.sub ?? 'u-1001', user.claims ?? { email: 'dana@corp.example', email_verified: true, preferred_username: 'dana', groups: ['corp-engineering'] })
  const res = await idp.exchange(idToken, { audience: request.audience ?? gw.baseUrl, resource: request.resource ?? gw.mcpUrl('alpha'), ...(request.scope === undefined ? {} : { scope: request.scope }) })
  if (res.status !== 200) throw new Error(`the IdP refused the exchange: ${JSON.stringify(res.body)}`)
  return res.body.access_token as string
}

async function exchangeAtGateway (gw: RunningGateway, assertion: string, client: { id: string, secret: string } = AGENT, extra: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: JWT_BEARER, assertion, ...extra }),
  })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

t.test('an ID-JAG from the IdP becomes an access token for one server; the MCP SDK client calls tools with it', async (t) => {
  const s = await setup(t)
  const assertion = await idJagFor(s, { scope: 'mcp alpha:read alpha:write' })
  const res = await exchangeAtGateway(s.gw, assertion)
  t.equal(res.status, 200, String(res.body.error_description))
  t.equal(res.body.token_type, 'Bearer')
  t.equal(res.body.scope, 'mcp alpha:read alpha:write')
  t.notOk('refresh_token' in res.body, 'no refresh token: the client asks the IdP for a new ID-JAG')
  const token = res.body.access_token as string
  const claims = decodeJwt(token)
  t.equal(claims.aud, s.gw.mcpUrl('alpha'), 'audience: the one server the assertion named')
  t.equal(claims.iss, s.gw.baseUrl)
  t.equal(claims.sub, 'corp:u-1001', 'the user is <idp>:<sub>')
  t.equal(claims.client_id, AGENT.id)
  t.equal(claims.preferred_username, 'corp:dana', 'the name is qualified by the provider, as at an interactive sign-in')
  t.equal(claims.email, 'dana@corp.example')
  t.same(claims.groups, ['eng'], 'groups mapped through groupMap, as at an interactive sign-in')
  t.type(claims.grant_id, 'string')

  const { client } = await connectClient(t, s.gw.mcpUrl('alpha'), { headers: { authorization: `Bearer ${token}` } })
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'enterprise' } })), 'enterprise', 'policy (access.groups eng, tool scope alpha:write) lets the call through')
  const audit = s.gw.audit.lines.map((line) => JSON.parse(line) as { method: string, user: { sub: string, username: string } | null })
  const call = audit.find((r) => r.method === 'tools/call')
  t.same(call?.user, { sub: 'corp:u-1001', username: 'corp:dana' }, 'audited as the IdP user')

  const other = await fetch(s.gw.mcpUrl('beta'), { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) })
  t.equal(other.status, 401, 'not valid at another server')

  const stored: Array<{ kind: string, model?: string, id?: string, key?: string, expiresAtMs: number | undefined }> = []
  for await (const entry of s.gw.app.portcullis.store.entries()) stored.push(entry)
  const grant = stored.find((e) => e.model === 'Grant' && e.id === claims.grant_id)
  t.ok(grant?.expiresAtMs !== undefined && grant.expiresAtMs <= (claims.exp as number) * 1000 + 5_000, 'the grant lives as long as its access token (no refresh token will need it)')
  t.ok(stored.some((e) => e.kind === 'kv' && e.key?.startsWith('id-jag:jti:') === true && e.expiresAtMs !== undefined), 'the assertion\'s jti is remembered, with an expiry')

  const revoked = await fetch(`${s.gw.baseUrl}/oauth/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${AGENT.id}:${AGENT.secret}`).toString('base64')}` }, body: new URLSearchParams({ token }) })
  t.equal(revoked.status, 200)
  const after = await fetch(s.gw.mcpUrl('alpha'), { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' }) })
  t.equal(after.status, 401, 'revoking the token revokes its grant')
})

t.test('without a scope in the assertion the token carries what the server requires', async (t) => {
  const s = await setup(t)
  const res = await exchangeAtGateway(s.gw, await idJagFor(s))
  t.equal(res.status, 200, String(res.body.error_description))
  t.equal(res.body.scope, 'alpha:read')
  const narrowed = await exchangeAtGateway(s.gw, await idJagFor(s, { scope: 'mcp alpha:read alpha:write' }), AGENT, { scope: 'alpha:read' })
  t.equal(narrowed.body.scope, 'alpha:read', 'the request may narrow what the assertion grants')
  t.equal(s.idp.keyRequests(), 2, 'discovery and the JWKS were fetched once, then the key set was cached')
})

t.test('an ID-JAG for a virtual server: one token for its members, carrying what they require', async (t) => {
  const s = await setup(t)
  const res = await exchangeAtGateway(s.gw, await idJagFor(s, { resource: s.gw.mcpUrl('both') }))
  t.equal(res.status, 200, String(res.body.error_description))
  t.equal(res.body.scope, 'alpha:read', 'the scopes its members require')
  t.equal(decodeJwt(String(res.body.access_token)).aud, s.gw.mcpUrl('both'))
  const { client } = await connectClient(t, s.gw.mcpUrl('both'), { headers: { authorization: `Bearer ${String(res.body.access_token)}` } })
  t.equal(textOf(await client.callTool({ name: 'beta__whoami', arguments: {} })), 'fixture', 'the token reaches the members through the virtual server')
})

t.test('refusals', async (t) => {
  const unconfigured = await startIdJagIdp(t, { clients: [AGENT] })
  const notTrusted = await startIdJagIdp(t, { clients: [AGENT] })
  const s = await setup(t, {
    extraIdps: [{ name: 'partner', type: 'oidc', issuer: notTrusted.issuer, clientId: 'portcullis', clientSecret: 'unused-here', idJag: false }],
    idps: [unconfigured, notTrusted],
  })
  const refused = async (label: string, assertion: string, error: string, description: RegExp, client = AGENT, extra: Record<string, string> = {}): Promise<void> => {
    const res = await exchangeAtGateway(s.gw, assertion, client, extra)
    t.equal(res.status, error === 'invalid_client' ? 401 : 400, `${label}: status`)
    t.equal(res.body.error, error, `${label}: error (got ${String(res.body.error)}: ${String(res.body.error_description)})`)
    t.match(res.body.error_description, description, `${label}: description`)
  }
  const mintedBy = async (idp: IdJagIdp): Promise<string> => {
    const res = await idp.exchange(await idp.idToken('u-1001', { groups: ['corp-engineering'] }), { audience: s.gw.baseUrl, resource: s.gw.mcpUrl('alpha') })
    return res.body.access_token as string
  }

  await refused('wrong aud', await idJagFor(s, { audience: 'https://other-as.example' }), 'invalid_grant', /aud is not this authorization server's issuer/)
  await refused('an issuer that is not configured', await mintedBy(unconfigured), 'invalid_grant', /issuer is not an identity provider this gateway trusts/)
  await refused('a configured IdP without idJag: true', await mintedBy(notTrusted), 'invalid_grant', /"partner" is not trusted for ID-JAG/)

  s.idp.misbehave.claims = { exp: Math.floor(Date.now() / 1000) - 120 }
  await refused('expired (beyond the clock skew)', await idJagFor(s), 'invalid_grant', /has expired/)
  s.idp.misbehave.claims = { iat: Math.floor(Date.now() / 1000) + 600 }
  await refused('issued in the future', await idJagFor(s), 'invalid_grant', /iat is in the future/)
  s.idp.misbehave.claims = { iat: Math.floor(Date.now() / 1000) - 2 * 3600, exp: Math.floor(Date.now() / 1000) + 600 }
  await refused('issued too long ago (though exp is later)', await idJagFor(s), 'invalid_grant', /issued more than 60 minutes ago/)
  s.idp.misbehave.claims = { jti: undefined }
  await refused('no jti', await idJagFor(s), 'invalid_grant', /no jti claim/)
  s.idp.misbehave.claims = {}
  s.idp.misbehave.typ = 'JWT'
  await refused('header typ not oauth-id-jag+jwt', await idJagFor(s), 'invalid_grant', /typ must be oauth-id-jag\+jwt/)
  delete s.idp.misbehave.typ

  const once = await idJagFor(s)
  t.equal((await exchangeAtGateway(s.gw, once)).status, 200, 'first use')
  await refused('replayed jti', once, 'invalid_grant', /already been used/)

  await refused('unknown client', await idJagFor(s), 'invalid_client', /client authentication failed/, { id: 'nobody', secret: 'x'.repeat(40) })
  await refused('presented by another client than it was issued to', await idJagFor(s), 'invalid_grant', /issued to another client/, OTHER_AGENT)
  await refused('resource: the gateway as a whole', await idJagFor(s, { resource: s.gw.baseUrl }), 'invalid_target', /not one MCP server/)
  await refused('resource: no such server', await idJagFor(s, { resource: `${s.gw.baseUrl}/nope/mcp` }), 'invalid_target', /not one MCP server/)
  await refused('a scope the server does not offer', await idJagFor(s, { scope: 'alpha:read admin' }), 'invalid_scope', /"admin" is not offered/)
  await refused('a request scope beyond the assertion', await idJagFor(s, { scope: 'alpha:read' }), 'invalid_scope', /"alpha:write" is more than the assertion grants/, AGENT, { scope: 'alpha:read alpha:write' })

  const genuine = await idJagFor(s)
  const [header, , signature] = genuine.split('.') as [string, string, string]
  const forged = `${header}.${Buffer.from(JSON.stringify({ ...decodeJwt(genuine), sub: 'u-admin' })).toString('base64url')}.${signature}`
  await refused('bad signature (claims changed after signing)', forged, 'invalid_grant', /signature does not verify/)
  await refused('not a JWT', 'not-a-jwt', 'invalid_grant', /not a JWT/)
})

t.test('the IdP\'s keys are fetched through the outbound guard, not limited to the metadata-document hosts', async (t) => {
  const limited = await setup(t, { auth: { clientMetadataDocuments: { allowedHosts: ['clients.example.com'] } } })
  t.equal((await exchangeAtGateway(limited.gw, await idJagFor(limited))).status, 200, 'clientMetadataDocuments.allowedHosts does not apply to identity providers')

  // Without the test-only allowance (which also trusts the test IdP's certificate): the issuer's
  // host is the operator's choice, so the guard lets it resolve to loopback (an IdP inside the
  // network), and TLS verification then refuses the IdP's self-signed certificate.
  const guarded = await setup(t, { canReachIdp: false })
  const res = await exchangeAtGateway(guarded.gw, await idJagFor(guarded))
  t.equal(res.body.error, 'invalid_grant')
  t.match(res.body.error_description, /signing keys cannot be read right now/)
  t.equal(guarded.idp.keyRequests(), 0, 'no keys were read from an IdP whose certificate is not trusted')
  t.match(guarded.gw.logs.text(), /identity provider keys unavailable/)
  t.notMatch(guarded.gw.logs.text(), /outbound request to an identity provider refused/, 'the issuer host itself is not refused for being private')
})

t.test('the IdP\'s admission rules apply as at an interactive sign-in', async (t) => {
  const s = await setup(t, { idpOverrides: { requiredGroups: ['eng'] } })
  const res = await exchangeAtGateway(s.gw, await idJagFor(s, {}, { sub: 'u-2002', claims: { groups: ['corp-sales'] } }))
  t.equal(res.status, 400)
  t.equal(res.body.error, 'invalid_grant')
  t.match(res.body.error_description, /not in a group allowed to use this gateway/)
})

t.test('clients get the grant from YAML grantTypes or by registering for it; others are refused', async (t) => {
  const s = await setup(t)
  const registered = await fetch(`${s.gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_name: 'agent', grant_types: [JWT_BEARER], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic' }) })
  t.equal(registered.status, 201, 'Dynamic Client Registration may ask for the JWT-bearer grant')
  const meta = await registered.json() as { client_id: string, client_secret: string, grant_types: string[] }
  t.same(meta.grant_types, [JWT_BEARER])
  const discovery = await (await fetch(`${s.gw.baseUrl}/.well-known/oauth-authorization-server`)).json() as { grant_types_supported: string[] }
  t.ok(discovery.grant_types_supported.includes(JWT_BEARER), 'the grant is published in metadata')

  const plain = await fetch(`${s.gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'client_secret_basic' }) })
  const plainMeta = await plain.json() as { client_id: string, client_secret: string }
  const res = await exchangeAtGateway(s.gw, await idJagFor(s), { id: plainMeta.client_id, secret: plainMeta.client_secret })
  t.equal(res.body.error, 'invalid_request')
  t.match(res.body.error_description, /grant type is not allowed for this client/)
})

t.test('no IdP trusted for ID-JAGs: the grant does not exist', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { clients: [{ clientId: 'c', clientSecret: 'c'.repeat(40), grantTypes: ['client_credentials'] }] }, servers: [{ name: 'alpha', transport: 'http', url: upstream.url }] })
  const res = await exchangeAtGateway(gw, 'x.y.z', { id: 'c', secret: 'c'.repeat(40) })
  t.equal(res.body.error, 'unsupported_grant_type')
})
