// Access and refresh tokens: audience binding, every kind of bad token, expiry with transparent
// refresh, rotation with reuse detection and its grace window, scopes, machine clients.
// Time is moved with Node's mock timers (Date only): the authorization server and the resource
// server run in this process and read the same clock; nothing sleeps.
import t from 'tap'
import { mock } from 'node:test'
import { SignJWT, importJWK, generateKeyPair, type JWK } from 'jose'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { connectClient, startGateway, startUpstream, stdioServer, textOf, type RunningGateway, type Teardown } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const MACHINE_SECRET = 'machine-secret-with-at-least-32-characters!'

function useMockDate (t: Teardown): { tick: (ms: number) => void } {
  mock.timers.enable({ apis: ['Date'], now: Date.now() })
  t.teardown(() => mock.timers.reset())
  return { tick: (ms) => mock.timers.tick(ms) }
}

async function gateway (t: Teardown, auth: Record<string, unknown> = {}, extraServers: Array<Record<string, unknown>> = []): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash, groups: ['eng'] }], ...auth },
    servers: [
      { name: 'alpha', transport: 'http', url: upstream.url },
      { name: 'beta', transport: 'http', url: upstream.url },
      ...extraServers,
    ],
  })
}

async function callWith (url: string, token: string): Promise<{ status: number, challenge: string | null, body: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
  })
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body: await res.text() }
}

async function tokenRequest (gw: RunningGateway, form: Record<string, string>, basic?: string): Promise<{ status: number, json: Record<string, unknown> }> {
  const res = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(basic === undefined ? {} : { authorization: `Basic ${basic}` }) },
    body: new URLSearchParams(form).toString(),
  })
  return { status: res.status, json: await res.json() as Record<string, unknown> }
}

t.test('no token: 401 with resource_metadata and scope; metadata documents describe each server', async (t) => {
  const gw = await gateway(t)
  const bare = await fetch(gw.mcpUrl('alpha'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(bare.status, 401)
  t.equal(bare.headers.get('www-authenticate'), `Bearer resource_metadata="${gw.baseUrl}/.well-known/oauth-protected-resource/alpha/mcp", scope="mcp"`)
  t.match(await bare.json(), { jsonrpc: '2.0', id: null, error: { code: -32600, data: { code: 'PORTCULLIS_ERR_UNAUTHORIZED' } } })

  const metadata = await fetch(`${gw.baseUrl}/.well-known/oauth-protected-resource/alpha/mcp`)
  t.equal(metadata.headers.get('access-control-allow-origin'), '*')
  t.same(await metadata.json(), {
    resource: `${gw.baseUrl}/alpha/mcp`,
    authorization_servers: [gw.baseUrl],
    scopes_supported: ['mcp'],
    bearer_methods_supported: ['header'],
    resource_name: 'alpha',
  })
  t.equal((await fetch(`${gw.baseUrl}/.well-known/oauth-protected-resource/nope/mcp`)).status, 404)
  const root = await fetch(`${gw.baseUrl}/.well-known/oauth-protected-resource`)
  t.equal(root.status, 404, 'several servers: the root form points to the per-server documents')
  t.match(await root.json(), { resources: [`${gw.baseUrl}/.well-known/oauth-protected-resource/alpha/mcp`, `${gw.baseUrl}/.well-known/oauth-protected-resource/beta/mcp`] })

  const discovery = await (await fetch(`${gw.baseUrl}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>
  t.match(discovery, {
    issuer: gw.baseUrl,
    authorization_endpoint: `${gw.baseUrl}/oauth/authorize`,
    token_endpoint: `${gw.baseUrl}/oauth/token`,
    registration_endpoint: `${gw.baseUrl}/oauth/register`,
    revocation_endpoint: `${gw.baseUrl}/oauth/revoke`,
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
    client_id_metadata_document_supported: true,
  })
  t.ok((discovery.scopes_supported as string[]).includes('mcp'), 'server scopes are published')
  t.notOk((discovery.grant_types_supported as string[]).includes('implicit'))
  const openid = await (await fetch(`${gw.baseUrl}/.well-known/openid-configuration`)).json() as Record<string, unknown>
  t.equal(openid.issuer, gw.baseUrl)
})

t.test('a token for server A is refused by server B', async (t) => {
  const gw = await gateway(t)
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const token = a.oauth.savedTokens?.access_token ?? ''
  t.equal((await callWith(gw.mcpUrl('alpha'), token)).status, 200)
  const atB = await callWith(gw.mcpUrl('beta'), token)
  t.equal(atB.status, 401)
  t.equal(atB.challenge, `Bearer error="invalid_token", error_description="the access token is not for this MCP server", resource_metadata="${gw.baseUrl}/.well-known/oauth-protected-resource/beta/mcp", scope="mcp"`)
})

t.test('expired, tampered, wrong-issuer, wrong-type, unknown-key and alg:none tokens are refused with invalid_token', async (t) => {
  const gw = await gateway(t)
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const good = a.oauth.savedTokens?.access_token ?? ''
  const [header = '', payload = '', signature = ''] = good.split('.')
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>
  const stored = JSON.parse(await gw.app.portcullis.store.kvGet('auth:signing-keys') ?? '{}') as { keys: JWK[] }
  const realKey = stored.keys[0] as JWK
  const signWith = async (key: JWK, overrides: Record<string, unknown>, typ = 'at+jwt'): Promise<string> =>
    new SignJWT({ ...claims, ...overrides }).setProtectedHeader({ alg: 'ES256', typ, kid: key.kid ?? 'k' }).sign(await importJWK(key, 'ES256'))
  const { privateKey: otherKey } = await generateKeyPair('ES256')
  const cases: Array<[string, string, RegExp]> = [
    ['tampered payload', `${header}.${Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url')}.${signature}`, /signature is invalid/],
    ['alg: none', `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${payload}.`, /algorithm|not a valid JWT/],
    ['wrong issuer', await signWith(realKey, { iss: 'https://evil.example' }), /issued by another authorization server/],
    ['wrong audience', await signWith(realKey, { aud: 'https://elsewhere.example/mcp' }), /not for this MCP server/],
    ['an ID token, not an access token', await signWith(realKey, {}, 'JWT'), /not an access token/],
    ['signed by an unknown key', await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: realKey.kid ?? 'k' }).sign(otherKey), /signature is invalid/],
    ['not a JWT at all', 'hello', /not a valid JWT/],
    ['expired', await signWith(realKey, { exp: Math.floor(Date.now() / 1000) - 60 }), /has expired/],
  ]
  for (const [label, token, description] of cases) {
    const res = await callWith(gw.mcpUrl('alpha'), token)
    t.equal(res.status, 401, label)
    t.match(res.challenge, /^Bearer error="invalid_token", error_description="[^"]+", resource_metadata="/, label)
    t.match(res.challenge, description, label)
  }
  const malformedHeader = await fetch(gw.mcpUrl('alpha'), { method: 'POST', headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }, body: '{}' })
  t.equal(malformedHeader.status, 401, 'a non-Bearer Authorization header')
  const inQuery = await fetch(`${gw.mcpUrl('alpha')}?access_token=${good}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(inQuery.status, 401, 'a token in the query string is never accepted')
})

t.test('an expired access token is refreshed transparently by the client', async (t) => {
  const gw = await gateway(t)
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const before = a.oauth.savedTokens
  const clock = useMockDate(t)
  clock.tick(16 * 60_000) // past the 15-minute access token
  t.equal((await callWith(gw.mcpUrl('alpha'), before?.access_token ?? '')).status, 401, 'the old access token has expired')
  t.same((await a.client.callTool({ name: 'echo', arguments: { text: 'after refresh' } })).content, [{ type: 'text', text: 'after refresh' }])
  t.not(a.oauth.savedTokens?.access_token, before?.access_token, 'a new access token')
  t.not(a.oauth.savedTokens?.refresh_token, before?.refresh_token, 'the refresh token was rotated')
})

t.test('refresh rotation: a replayed refresh token revokes the family; the grace window works, then closes', async (t) => {
  const gw = await gateway(t)
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const clientId = a.oauth.info?.client_id ?? ''
  const rt0 = a.oauth.savedTokens?.refresh_token ?? ''
  const refresh = (refreshToken: string) => tokenRequest(gw, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId, resource: gw.mcpUrl('alpha') })
  const clock = useMockDate(t)
  const first = await refresh(rt0)
  t.equal(first.status, 200)
  const rt1 = String(first.json.refresh_token)
  t.not(rt1, rt0)
  const parallel = await refresh(rt0)
  t.equal(parallel.status, 200, 'within the grace window the just-rotated token still works (a client refreshing twice in parallel)')
  const rt1b = String(parallel.json.refresh_token)
  clock.tick(11_000) // past the 10 s grace window
  const replay = await refresh(rt0)
  t.equal(replay.status, 400, 'after the window, a replay is reuse')
  t.equal(replay.json.error, 'invalid_grant')
  t.equal((await refresh(rt1)).json.error, 'invalid_grant', 'the whole family is revoked')
  t.equal((await refresh(rt1b)).json.error, 'invalid_grant')
})

t.test('with no grace window, the very first replay revokes the family', async (t) => {
  const gw = await gateway(t, { refreshTokenReuseGrace: 0 })
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const clientId = a.oauth.info?.client_id ?? ''
  const rt0 = a.oauth.savedTokens?.refresh_token ?? ''
  const refresh = (refreshToken: string) => tokenRequest(gw, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId })
  const rt1 = String((await refresh(rt0)).json.refresh_token)
  t.equal((await refresh(rt0)).json.error, 'invalid_grant')
  t.equal((await refresh(rt1)).json.error, 'invalid_grant')
})

t.test('a refresh naming a resource it was not granted is refused without burning the refresh token', async (t) => {
  const gw = await gateway(t)
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const clientId = a.oauth.info?.client_id ?? ''
  const rt0 = a.oauth.savedTokens?.refresh_token ?? ''
  const wrong = await tokenRequest(gw, { grant_type: 'refresh_token', refresh_token: rt0, client_id: clientId, resource: gw.mcpUrl('beta') })
  t.equal(wrong.status, 400)
  t.equal(wrong.json.error, 'invalid_target')
  const right = await tokenRequest(gw, { grant_type: 'refresh_token', refresh_token: rt0, client_id: clientId, resource: `${gw.mcpUrl('alpha')}/` })
  t.equal(right.status, 200, 'the same refresh token still works, and a trailing slash is the same resource')
})

t.test('revocation: a revoked refresh token cannot be used', async (t) => {
  const gw = await gateway(t)
  const a = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const clientId = a.oauth.info?.client_id ?? ''
  const rt = a.oauth.savedTokens?.refresh_token ?? ''
  const revoked = await fetch(`${gw.baseUrl}/oauth/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: rt, client_id: clientId }).toString() })
  t.equal(revoked.status, 200)
  t.equal((await tokenRequest(gw, { grant_type: 'refresh_token', refresh_token: rt, client_id: clientId })).json.error, 'invalid_grant')
})

t.test('machine clients: client_credentials with a pre-registered confidential client; missing scopes get 403 naming them all', async (t) => {
  const gw = await gateway(t, {
    clients: [
      { clientId: 'ci-bot', clientSecret: MACHINE_SECRET, grantTypes: ['client_credentials'], scopes: ['deploy'] },
    ],
  }, [{ name: 'ops', transport: 'http', url: 'http://127.0.0.1:9/mcp', scopes: ['deploy', 'audit'] }, stdioServer('tools', { scopes: ['deploy'] })])
  const basic = Buffer.from(`ci-bot:${MACHINE_SECRET}`).toString('base64')
  const wrongSecret = await tokenRequest(gw, { grant_type: 'client_credentials', resource: gw.mcpUrl('tools'), scope: 'deploy' }, Buffer.from('ci-bot:wrong').toString('base64'))
  t.equal(wrongSecret.json.error, 'invalid_client')

  const issued = await tokenRequest(gw, { grant_type: 'client_credentials', resource: gw.mcpUrl('tools'), scope: 'deploy mcp' }, basic)
  t.equal(issued.status, 200)
  t.equal(issued.json.token_type, 'Bearer')
  const token = String(issued.json.access_token)
  const { client } = await connectClient(t, gw.mcpUrl('tools'), { headers: { authorization: `Bearer ${token}` } })
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'from a machine' } })), 'from a machine')
  const whoami = JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { names: string[] }
  t.ok(whoami.names.length > 0)

  // ops needs deploy and audit; this client may only ever get deploy.
  const opsToken = await tokenRequest(gw, { grant_type: 'client_credentials', resource: gw.mcpUrl('ops'), scope: 'deploy audit' }, basic)
  t.equal(opsToken.json.scope, 'deploy', 'scopes beyond the client\'s list are not granted')
  const denied = await callWith(gw.mcpUrl('ops'), String(opsToken.json.access_token))
  t.equal(denied.status, 403)
  t.equal(denied.challenge, `Bearer error="insufficient_scope", error_description="this MCP server needs the scope(s): deploy audit", resource_metadata="${gw.baseUrl}/.well-known/oauth-protected-resource/ops/mcp", scope="deploy audit"`)
})

t.test('stdio sessions belong to the user who opened them: another user\'s token on that session id gets 404', async (t) => {
  const bobHash = await hashPassword('bob-password-123')
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash: bobHash }] },
    servers: [stdioServer('notes', { isolation: 'user', env: { DATA_FILE: '/data/${user.name}.json' } })],
  })
  const alice = await connectWithOAuth(t, gw.mcpUrl('notes'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const bob = await connectWithOAuth(t, gw.mcpUrl('notes'), { username: 'bob', password: 'bob-password-123', issuer: gw.baseUrl })
  const aliceEnv = JSON.parse(textOf(await alice.client.callTool({ name: 'env', arguments: {} }))) as { DATA_FILE: string, pid: number }
  const bobEnv = JSON.parse(textOf(await bob.client.callTool({ name: 'env', arguments: {} }))) as { DATA_FILE: string, pid: number }
  t.equal(aliceEnv.DATA_FILE, '/data/alice.json', 'per-user values come from the signed-in user')
  t.equal(bobEnv.DATA_FILE, '/data/bob.json')
  t.not(aliceEnv.pid, bobEnv.pid, 'one process per user')
  const hijack = await fetch(gw.mcpUrl('notes'), {
    method: 'POST',
    headers: { authorization: `Bearer ${bob.oauth.savedTokens?.access_token ?? ''}`, 'mcp-session-id': alice.transport.sessionId ?? '', 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  })
  t.equal(hijack.status, 404)
})
