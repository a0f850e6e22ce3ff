// The admin API core (issue 15): a real gateway, real users signed in through the real OAuth flow
// with the real MCP SDK client, real stdio children; access by admin.bearerToken and by a gateway
// access token for <publicUrl>/admin obtained through the real authorization code flow.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { hashPassword } from '../../src/auth-server/password.js'
import { adminToken, connectWithOAuth, HeadlessBrowser, TestOAuthClient } from '../oauth-helpers.js'
import { idpEntry, startGatewayWithIdp } from '../idp.js'
import { eventually, INIT_BODY, isProcessAlive, postJson, redisAvailable, scratchRedis, startGateway, startUpstream, stdioServer, textOf, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }, { username: 'carol', passwordHash, groups: ['portcullis-admins'] }]
const ADMIN_TOKEN = randomBytes(32).toString('base64url')
const API = '/admin/api/v1'
const CALL = { jsonrpc: '2.0', id: 'c-1', method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } }

interface Signed { token: string, refreshToken: string, clientId: string, sessionId: string, call: (text: string) => Promise<string> }

async function signIn (t: Test, gw: RunningGateway, username: string): Promise<Signed> {
  const signed = await connectWithOAuth(t, gw.mcpUrl('fx'), { username, password: PASSWORD, issuer: gw.baseUrl, oauth: new TestOAuthClient({ name: `${username}'s client` }) })
  return {
    token: signed.oauth.savedTokens?.access_token ?? '',
    refreshToken: signed.oauth.savedTokens?.refresh_token ?? '',
    clientId: signed.oauth.info?.client_id ?? '',
    sessionId: signed.transport.sessionId ?? '',
    call: async (text) => textOf(await signed.client.callTool({ name: 'echo', arguments: { text } })),
  }
}

/** The admin token through ${ENV} interpolation, as an operator would set it. */
async function gateway (t: Test): Promise<RunningGateway> {
  return await startGateway(t, { auth: { users: USERS }, admin: { bearerToken: '${PORTCULLIS_ADMIN_TOKEN}' }, servers: [stdioServer('fx')] }, { PORTCULLIS_ADMIN_TOKEN: ADMIN_TOKEN })
}

async function admin (gw: RunningGateway, method: 'GET' | 'POST', path: string, token = ADMIN_TOKEN): Promise<{ status: number, body: Record<string, unknown>, text: string, headers: Headers }> {
  const res = await fetch(`${gw.baseUrl}${API}${path}`, { method, headers: token === '' ? {} : { authorization: `Bearer ${token}` } })
  const text = await res.text()
  return { status: res.status, body: JSON.parse(text) as Record<string, unknown>, text, headers: res.headers }
}

function adminRecords (gw: RunningGateway): Array<Record<string, unknown>> {
  return gw.audit.lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((r) => r.event === 'admin_action')
}

/** The status of one MCP request in the user's session (a fresh HTTP request: no client retries). */
async function status (gw: RunningGateway, user: Signed): Promise<number> {
  return (await postJson(gw.mcpUrl('fx'), CALL, { authorization: `Bearer ${user.token}`, 'mcp-session-id': user.sessionId, 'mcp-protocol-version': '2025-11-25' })).status
}

t.test('access: admin.bearerToken only; no token, a wrong token and a user\'s MCP token are refused without echoing them', async (t) => {
  const gw = await gateway(t)
  const alice = await signIn(t, gw, 'alice')

  const none = await admin(gw, 'GET', '/sessions', '')
  t.equal(none.status, 401)
  t.equal((none.body.error as Record<string, unknown>).code, 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED')
  t.match(none.headers.get('www-authenticate'), /^Bearer /)

  const wrongToken = randomBytes(32).toString('base64url')
  const wrong = await admin(gw, 'GET', '/sessions', wrongToken)
  t.equal(wrong.status, 401, 'a wrong bearer token: 401')
  t.notMatch(wrong.text, wrongToken, 'the presented token is not echoed')

  const user = await admin(gw, 'GET', '/sessions', alice.token)
  t.equal(user.status, 401, 'a user\'s token for an MCP server is not one for the admin API')
  t.match((user.body.error as Record<string, unknown>).message, /audience must be http:\/\/127\.0\.0\.1:\d+\/admin/)
  t.notMatch(user.text, alice.token)

  const ok = await admin(gw, 'GET', '/sessions')
  t.equal(ok.status, 200, 'the bearer token reaches the API')
  t.equal(ok.headers.get('cache-control'), 'no-store')

  const records = adminRecords(gw)
  t.same(records.map((r) => [r.actor, r.action, r.outcome]), [['unknown', 'sessions.list', 'refused'], ['unknown', 'sessions.list', 'refused'], ['unknown', 'sessions.list', 'refused'], ['admin-token', 'sessions.list', 'ok']], 'every call audited, refusals too')
  const audit = gw.audit.text()
  t.notMatch(audit, ADMIN_TOKEN, 'the admin token never reaches the audit trail')
  t.notMatch(audit, wrongToken)
  t.notMatch(gw.logs.text(), ADMIN_TOKEN, 'nor the log')
})

t.test('lists: both users\' sessions with their process, paged; users seen; clients', async (t) => {
  const gw = await gateway(t)
  const alice = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  t.equal(await alice.call('a'), 'a')
  t.equal(await bob.call('b'), 'b')

  const all = await admin(gw, 'GET', '/sessions')
  const items = all.body.items as Array<Record<string, unknown>>
  t.same(items.map((s) => s.user).sort(), ['alice', 'bob'], 'both users\' sessions')
  for (const s of items) {
    t.equal(s.server, 'fx')
    t.equal(s.replica, 'local')
    t.ok(typeof s.pid === 'number' && isProcessAlive(s.pid), 'the stdio process behind it')
    t.match(s.client, /^.+$/, 'the client that opened it')
    t.ok(typeof s.ageS === 'number' && s.ageS >= 0)
  }
  t.same(items.map((s) => s.sessionId).sort(), [alice.sessionId, bob.sessionId].sort())

  const first = await admin(gw, 'GET', '/sessions?limit=1')
  t.equal((first.body.items as unknown[]).length, 1)
  t.type(first.body.nextCursor, 'string', 'a cursor to the next page')
  const second = await admin(gw, 'GET', `/sessions?limit=1&cursor=${String(first.body.nextCursor)}`)
  t.equal((second.body.items as unknown[]).length, 1)
  t.equal(second.body.nextCursor, undefined, 'the last page')
  t.not((first.body.items as Array<{ sessionId: string }>)[0]?.sessionId, (second.body.items as Array<{ sessionId: string }>)[0]?.sessionId)
  t.equal((await admin(gw, 'GET', '/sessions?limit=0')).status, 400, 'a bad limit: 400')
  t.equal((await admin(gw, 'GET', '/sessions?cursor=nonsense')).status, 400, 'a made-up cursor: 400')

  const onlyBob = await admin(gw, 'GET', '/sessions?user=bob')
  t.same((onlyBob.body.items as Array<{ user: string }>).map((s) => s.user), ['bob'], 'filtered by user')

  const users = await admin(gw, 'GET', '/users')
  t.match(users.body.items, [{ id: 'alice', provider: 'local', blocked: false, sessions: 1 }, { id: 'bob', provider: 'local', blocked: false, sessions: 1 }], 'users seen, with their live sessions')

  const clients = await admin(gw, 'GET', '/clients')
  const names = (clients.body.items as Array<{ name: string, source: string, redirectHosts: string[] }>).filter((c) => c.source === 'registered')
  t.same(names.map((c) => c.name).sort(), ['alice\'s client', 'bob\'s client'], 'the registered clients')
  t.same(names[0]?.redirectHosts, ['127.0.0.1:9'])
  t.same(names.map((c) => (c as unknown as { grants: number }).grants), [1, 1], 'each with the grant of the user who signed in with it')

  t.equal((await admin(gw, 'GET', '/api-keys')).status, 400, 'API keys are listed per user')
  t.same((await admin(gw, 'GET', '/api-keys?user=alice')).body, { items: [] })
})

t.test('revoking a user: their tokens refused within 2 s, their process ended; the other user goes on', async (t) => {
  const gw = await gateway(t)
  const alice = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  t.equal(await alice.call('a'), 'a')
  const sessions = (await admin(gw, 'GET', '/sessions?user=alice')).body.items as Array<{ pid: number }>
  const pid = sessions[0]?.pid ?? 0
  t.ok(isProcessAlive(pid), 'Alice\'s process runs')

  const revoked = await admin(gw, 'POST', '/users/alice/revoke')
  t.equal(revoked.status, 200)
  t.match(revoked.body, { user: 'alice', revoked: { grants: 1, apiKeys: 0 } })
  const started = Date.now()
  t.ok(await eventually(async () => await status(gw, alice) === 401, 2000), 'Alice\'s token is refused within 2 s')
  t.ok(Date.now() - started <= 2000)
  t.ok(await eventually(() => !isProcessAlive(pid), 2000), 'Alice\'s stdio process ended')
  t.equal(await bob.call('still here'), 'still here', 'Bob goes on')
  t.match(adminRecords(gw).at(-1), { actor: 'admin-token', action: 'users.revoke', target: { kind: 'user', id: 'alice' }, outcome: 'ok', detail: { grants: 1, apiKeys: 0 } }, 'audited: who, what, target')
})

t.test('blocking a user refuses their next request and a new sign-in; unblocking restores both', async (t) => {
  const gw = await gateway(t)
  const alice = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  t.equal(await status(gw, alice), 200)

  t.match((await admin(gw, 'POST', '/users/alice/block')).body, { user: 'alice', blocked: true, changed: true })
  const refused = await postJson(gw.mcpUrl('fx'), CALL, { authorization: `Bearer ${alice.token}`, 'mcp-session-id': alice.sessionId, 'mcp-protocol-version': '2025-11-25' })
  t.equal(refused.status, 401, 'the next request is refused')
  t.match(refused.headers.get('www-authenticate'), /error="invalid_token", error_description="this account is blocked on this gateway/)
  const browser = new HeadlessBrowser()
  await t.rejects(connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, browser }), /unexpected page \(403\)/, 'a new sign-in is refused')
  t.equal(browser.pages.at(-1), 'other')
  t.match(browser.lastHtml, /Your account is blocked on this gateway/, 'with a page that says why')
  t.equal(await status(gw, bob), 200, 'Bob is not affected')
  t.match((await admin(gw, 'GET', '/users?blocked=true')).body, { items: [{ id: 'alice', blocked: true }] })

  t.match((await admin(gw, 'POST', '/users/alice/unblock')).body, { user: 'alice', blocked: false, changed: true })
  t.equal(await status(gw, alice), 200, 'the token works again')
  const again = await signIn(t, gw, 'alice')
  t.equal(await again.call('back'), 'back', 'and a new sign-in works')
  t.same(adminRecords(gw).filter((r) => r.action !== 'users.list').map((r) => [r.actor, r.action, (r.target as { id: string }).id, r.outcome]), [
    ['admin-token', 'users.block', 'alice', 'ok'],
    ['admin-token', 'users.unblock', 'alice', 'ok'],
  ], 'both audited')
})

t.test('ending a session: its client is told it is gone; an unknown session is 404', async (t) => {
  const gw = await gateway(t)
  const alice = await signIn(t, gw, 'alice')
  t.equal(await status(gw, alice), 200)
  const ended = await admin(gw, 'POST', `/sessions/fx/${alice.sessionId}/end`)
  t.same(ended.body, { server: 'fx', sessionId: alice.sessionId, ended: true })
  t.equal(await status(gw, alice), 404, 'the session is gone (the client starts a new one)')
  t.same((await admin(gw, 'GET', '/sessions')).body, { items: [] })
  const again = await admin(gw, 'POST', `/sessions/fx/${alice.sessionId}/end`)
  t.equal(again.status, 404)
  t.equal((await admin(gw, 'POST', '/sessions/nope/x/end')).status, 404, 'an unknown server: 404')
  t.match(adminRecords(gw).filter((r) => r.action === 'sessions.end').map((r) => r.outcome), ['ok', 'not_found', 'refused'])
})

t.test('the admin API exists only with authorization on', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('fx')] })
  const res = await fetch(`${gw.baseUrl}${API}/sessions`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(res.status, 404)
  await res.arrayBuffer()
})

const adminTokenFor = async (gw: RunningGateway, username: string, scope?: string): ReturnType<typeof adminToken> => adminToken(gw.baseUrl, username, PASSWORD, scope)

t.test('an access token for <publicUrl>/admin with portcullis:admin: issued to members of admin.groups only, and it reaches the API', async (t) => {
  const gw = await gateway(t)
  const carol = await adminTokenFor(gw, 'carol')
  t.type(carol.accessToken, 'string', 'an administrator gets an admin token')
  const payload = JSON.parse(Buffer.from(carol.accessToken?.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
  t.equal(payload.aud, `${gw.baseUrl}/admin`)
  t.equal(payload.scope, 'portcullis:admin')

  const listed = await admin(gw, 'GET', '/users', carol.accessToken)
  t.equal(listed.status, 200, 'the token reaches the admin API')
  t.match(adminRecords(gw).at(-1), { actor: 'carol', action: 'users.list', outcome: 'ok' }, 'audited as the administrator')
  const mcp = await postJson(gw.mcpUrl('fx'), CALL, { authorization: `Bearer ${carol.accessToken ?? ''}` })
  t.equal(mcp.status, 401, 'an admin token reaches no MCP server')

  const alice = await adminTokenFor(gw, 'alice')
  t.equal(alice.accessToken, undefined, 'a user outside admin.groups gets no admin token')
  t.equal(alice.error, 'invalid_target')

  // Carol blocked by another administrator: her admin token stops too, and refresh is refused.
  t.equal((await admin(gw, 'POST', '/users/carol/block')).status, 200)
  const blocked = await admin(gw, 'GET', '/users', carol.accessToken)
  t.equal(blocked.status, 401)
  t.match(blocked.body, { error: { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', message: /blocked/ } })
  t.type(carol.refreshToken, 'string')
  const refreshed = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: carol.refreshToken ?? '', client_id: carol.clientId }).toString() })
  t.equal(refreshed.status, 400, 'a blocked user\'s refresh is refused')
  t.match(await refreshed.json(), { error: 'invalid_grant' })
})

t.test('with Redis, a block and a revoke at one replica bite at the other within 2 s', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const upstream = await startUpstream(t)
  const env = { PORTCULLIS_ADMIN_TOKEN: ADMIN_TOKEN }
  const config = { auth: { users: USERS }, admin: { bearerToken: '${PORTCULLIS_ADMIN_TOKEN}' }, store: { redis: 'redis://127.0.0.1:6379', prefix }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }
  const gw1 = await startGateway(t, config, env)
  // One publicUrl for both, as behind a load balancer: tokens from one are good at the other.
  const gw2 = await startGateway(t, { ...config, publicUrl: gw1.baseUrl }, env)
  const alice = await signIn(t, gw1, 'alice')
  const bob = await signIn(t, gw1, 'bob')
  const at = async (gw: RunningGateway, user: Signed): Promise<number> => (await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${user.token}` })).status
  t.equal(await at(gw2, alice), 200, 'Alice\'s token works at the other replica')

  t.equal((await admin(gw1, 'POST', '/users/alice/block')).status, 200)
  const blockedAt = Date.now()
  t.ok(await eventually(async () => await at(gw2, alice) === 401, 2000), 'blocked at replica 1: refused at replica 2')
  t.ok(Date.now() - blockedAt <= 2000, `within 2 s (${Date.now() - blockedAt} ms)`)
  t.equal(await at(gw2, bob), 200, 'Bob is not affected')
  t.equal((await admin(gw2, 'POST', '/users/alice/unblock')).status, 200)
  t.ok(await eventually(async () => await at(gw1, alice) === 200, 2000), 'unblocked at replica 2: let in at replica 1')

  t.match((await admin(gw2, 'GET', '/users')).body, { items: [{ id: 'alice' }, { id: 'bob' }] }, 'users seen at one replica are listed at the other')

  t.equal((await admin(gw1, 'POST', '/users/alice/revoke')).status, 200)
  const revokedAt = Date.now()
  t.ok(await eventually(async () => await at(gw2, alice) === 401, 2000), 'revoked at replica 1: refused at replica 2')
  t.ok(Date.now() - revokedAt <= 2000, `within 2 s (${Date.now() - revokedAt} ms)`)
  t.equal(await at(gw2, bob), 200, 'Bob is not affected')
})

t.test('revoking a registered client: its grants revoked, its tokens refused within 2 s, its registration gone', async (t) => {
  const gw = await gateway(t)
  const alice = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  const listed = (await admin(gw, 'GET', '/clients?source=registered')).body.items as Array<{ clientId: string, name: string }>
  t.ok(listed.some((c) => c.clientId === alice.clientId && c.name === 'alice\'s client'), 'Alice\'s client is listed')

  const revoked = await admin(gw, 'POST', `/clients/${alice.clientId}/revoke`)
  t.same(revoked.body, { clientId: alice.clientId, revoked: { grants: 1 } })
  t.ok(await eventually(async () => await status(gw, alice) === 401, 2000), 'its access token is refused within 2 s')
  const refreshed = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: alice.refreshToken, client_id: alice.clientId }).toString() })
  t.equal(refreshed.status, 401, 'its refresh token is refused: the client is gone')
  t.match(await refreshed.json(), { error: 'invalid_client' })
  t.notOk(((await admin(gw, 'GET', '/clients')).body.items as Array<{ clientId: string }>).some((c) => c.clientId === alice.clientId), 'no longer listed')
  t.equal(await bob.call('unaffected'), 'unaffected', 'Bob\'s client goes on')

  t.equal((await admin(gw, 'POST', `/clients/${alice.clientId}/revoke`)).status, 404, 'twice: 404')
  const own = await admin(gw, 'POST', '/clients/portcullis-account/revoke')
  t.equal(own.status, 400, 'a client from the YAML (or the gateway\'s own) is not revoked here')
  t.match(own.body, { error: { code: 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST', message: /remove it from the YAML/ } })
  t.same(adminRecords(gw).filter((r) => r.action === 'clients.revoke').map((r) => [r.actor, (r.target as { id: string } | undefined)?.id, r.outcome]), [
    ['admin-token', alice.clientId, 'ok'],
    ['admin-token', alice.clientId, 'not_found'],
    ['admin-token', 'portcullis-account', 'refused'],
  ], 'audited, refusals with their target')
})

t.test('revoking a user ends their HTTP upstream sessions too (DELETE upstream); the other user\'s stay', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, admin: { bearerToken: '${PORTCULLIS_ADMIN_TOKEN}' }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }, { PORTCULLIS_ADMIN_TOKEN: ADMIN_TOKEN })
  const alice = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  t.same(((await admin(gw, 'GET', '/sessions')).body.items as Array<{ user: string }>).map((s) => s.user).sort(), ['alice', 'bob'])
  t.equal((await admin(gw, 'POST', '/users/alice/revoke')).status, 200)
  t.same(((await admin(gw, 'GET', '/sessions')).body.items as Array<{ user: string }>).map((s) => s.user), ['bob'], 'Alice\'s session is gone from the list')
  t.ok(await eventually(() => upstream.seen.some((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === alice.sessionId), 2000), 'and ended upstream')
  t.notOk(upstream.seen.some((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === bob.sessionId), 'Bob\'s is not')
  t.equal(await bob.call('on'), 'on')
})

t.test('an identity-provider user: listed with their provider and groups, and a block refuses their sign-in at the IdP callback', async (t) => {
  const alice = { sub: 'a-100', password: 'alice-at-corp', email: 'alice@example.com', email_verified: true, preferred_username: 'alice', groups: ['staff'] }
  const { gw } = await startGatewayWithIdp(t, { accounts: [alice] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp)] },
    admin: { bearerToken: ADMIN_TOKEN },
    servers: [stdioServer('fx')],
  }))
  const signed = await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: alice.password, idp: 'corp', issuer: gw.baseUrl })
  t.equal(textOf(await signed.client.callTool({ name: 'echo', arguments: { text: 'in' } })), 'in')
  t.match((await admin(gw, 'GET', '/users?provider=corp')).body, { items: [{ id: 'corp:a-100', provider: 'corp', groups: ['staff'], blocked: false, sessions: 1 }] })

  t.equal((await admin(gw, 'POST', `/users/${encodeURIComponent('corp:a-100')}/block`)).status, 200)
  const browser = new HeadlessBrowser()
  await t.rejects(connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: alice.password, idp: 'corp', issuer: gw.baseUrl, browser }), /unexpected page \(403\)/, 'sign-in through the IdP is refused')
  t.ok(browser.pages.includes('idp-login'), 'after the IdP vouched for her')
  t.match(browser.lastHtml, /Your account is blocked on this gateway/)
  t.match((await admin(gw, 'GET', '/users?blocked=true')).body, { items: [{ id: 'corp:a-100', blocked: true }] })
})

t.test('a user\'s grants with their refresh-token families, and their rate-limit buckets as last charged', async (t) => {
  const gw = await startGateway(t, { auth: { users: USERS }, admin: { bearerToken: '${PORTCULLIS_ADMIN_TOKEN}' }, rateLimits: { perUser: '100/min' }, servers: [stdioServer('fx', { tools: { echo: { rateLimit: '5/min' } } })] }, { PORTCULLIS_ADMIN_TOKEN: ADMIN_TOKEN })
  const alice = await signIn(t, gw, 'alice')
  t.equal(await alice.call('a'), 'a')
  t.equal(await alice.call('b'), 'b')

  const grants = await admin(gw, 'GET', '/grants?user=alice')
  t.equal(grants.status, 200)
  const [grant, ...more] = grants.body.items as Array<Record<string, unknown>>
  t.same(more, [], 'one grant: one client consented to')
  t.match(grant, { clientId: alice.clientId, resources: { [gw.mcpUrl('fx')]: /.*/ }, refreshTokens: { live: 1, rotations: 0 } })
  t.match(grant?.createdAt, /^\d{4}-\d\d-\d\dT/)
  t.match(grant?.expiresAt, /^\d{4}-\d\d-\d\dT/)

  // A refresh rotates the family: still one live token, now one rotation on.
  const refreshed = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', client_id: alice.clientId, refresh_token: alice.refreshToken, resource: gw.mcpUrl('fx') }).toString() })
  t.equal(refreshed.status, 200, 'refreshed')
  t.match((await admin(gw, 'GET', '/grants?user=alice')).body.items, [{ grantId: grant?.grantId, refreshTokens: { live: 1, rotations: 1 } }], 'the family rotated')
  t.equal((await admin(gw, 'GET', '/grants')).status, 400, 'grants are listed per user')
  t.same((await admin(gw, 'GET', '/grants?user=bob')).body, { items: [] }, 'bob never signed in')

  const limits = await admin(gw, 'GET', '/users/alice/rate-limits')
  t.equal(limits.status, 200)
  t.equal(limits.body.replica, 'local')
  const buckets = limits.body.items as Array<Record<string, unknown>>
  t.match(buckets.find((b) => b.kind === 'user-tool'), { on: 'fx:echo', subject: 'tool "echo"', limit: 5, windowS: 60, remaining: 3, resetsAt: /^\d{4}-/ }, 'two calls of five a minute')
  t.match(buckets.find((b) => b.kind === 'user'), { on: 'fx', limit: 100, windowS: 60 })
  t.same((await admin(gw, 'GET', '/users/bob/rate-limits')).body.items, [], 'bob was never charged')
  t.match(adminRecords(gw).filter((r) => r.action === 'grants.list' || r.action === 'rate-limits.show').map((r) => r.action), ['grants.list', 'grants.list', 'grants.list', 'grants.list', 'rate-limits.show', 'rate-limits.show'], 'viewing is audited like every admin call')

  await admin(gw, 'POST', '/users/alice/revoke')
  t.same((await admin(gw, 'GET', '/grants?user=alice')).body, { items: [] }, 'a revoked user holds no grant')
})
