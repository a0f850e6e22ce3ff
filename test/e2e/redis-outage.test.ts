// Redis stopped and restarted under a running gateway (a redis-server of the test's own):
// authorization answers a clear 503, tokens already issued keep working, rate limits follow
// rateLimits.onStoreError, and everything recovers when Redis returns, without a restart.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, REDIRECT_URL } from '../oauth-helpers.js'
import { eventually, INIT_BODY, postJson, startGateway, startOwnRedis, startUpstream, textOf, uniquePrefix } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'

t.test('Redis down: 503 for authorization, issued tokens still work, limits per onStoreError; then recovery', async (t) => {
  const redis = await startOwnRedis(t)
  if (redis === undefined) return
  const upstream = await startUpstream(t)
  const prefix = uniquePrefix()
  const gw = await startGateway(t, {
    store: { redis: redis.url, prefix },
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    rateLimits: { perUserPerTool: '100/min', onStoreError: 'allow' },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  // A second gateway on the same Redis that refuses to run unlimited (auth off: no token to share).
  const strict = await startGateway(t, {
    store: { redis: redis.url, prefix: uniquePrefix() },
    rateLimits: { perUserPerTool: '100/min', onStoreError: 'deny' },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  const strictInit = await postJson(strict.mcpUrl('fx'), INIT_BODY)
  const strictSession = { 'mcp-session-id': strictInit.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  const strictCall = async (id: number): Promise<{ status: number, json: unknown }> => postJson(strict.mcpUrl('fx'), { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text: 'strict' } } }, strictSession)
  t.equal((await strictCall(1)).status, 200)
  // A third, with pinned tools enforced: a session opened before the outage, its approved set not read yet.
  const pinned = await startGateway(t, {
    store: { redis: redis.url, prefix: uniquePrefix() },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, pinTools: 'enforce' }],
  })
  const pinnedInit = await postJson(pinned.mcpUrl('fx'), INIT_BODY)
  const pinnedSession = { 'mcp-session-id': pinnedInit.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }

  const alice = await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const clientId = alice.oauth.info?.client_id ?? ''
  const refreshToken = alice.oauth.savedTokens?.refresh_token ?? ''
  t.ok(refreshToken !== '', 'a refresh token was issued')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'before' } })), 'before')

  await redis.stop()
  const refresh = (): Promise<Response> => fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId, resource: gw.mcpUrl('fx') }).toString(),
  })

  // Tokens are checked by signature with keys held in memory: calls go on.
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'during' } })), 'during', 'an issued token keeps working')
  t.ok(((await gw.app.portcullis.metrics.rateLimitStoreErrors.get()).values[0]?.value ?? 0) >= 1, 'its limit check failed open (onStoreError: allow), and was counted')
  const denied = await strictCall(2)
  t.equal(denied.status, 503, 'onStoreError: deny refuses instead')
  t.match(denied.json, { id: 2, error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE' } } })
  const unpinned = await postJson(pinned.mcpUrl('fx'), { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, pinnedSession)
  t.equal(unpinned.status, 503, 'enforced pinning with no approved set readable fails closed')
  t.match(unpinned.json, { id: 7, error: { data: { code: 'PORTCULLIS_ERR_STORE_UNAVAILABLE' } } })
  t.equal(unpinned.headers.get('retry-after'), '5', 'and says when to retry, as every store outage answer does')

  const tokenDown = await refresh()
  t.equal(tokenDown.status, 503)
  t.equal(tokenDown.headers.get('retry-after'), '5')
  t.same(await tokenDown.json(), { error: 'temporarily_unavailable', error_description: 'the authorization server cannot reach its store right now; retry in a few seconds' })
  const registerDown = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  t.equal(registerDown.status, 503)
  t.match(await registerDown.json(), { error: 'temporarily_unavailable' })
  const query = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: gw.mcpUrl('fx') })
  const authorizeDown = await fetch(`${gw.baseUrl}/oauth/authorize?${query.toString()}`, { redirect: 'manual' })
  t.equal(authorizeDown.status, 503)
  t.match(authorizeDown.headers.get('content-type'), /^text\/html/)
  t.match(await authorizeDown.text(), /Temporarily unavailable/, 'a person gets a page saying to retry, not a stack trace')
  const ready = await (await fetch(`${gw.baseUrl}/readyz`)).json() as { status: string, store: { isReachable: boolean } }
  t.match(ready, { status: 'degraded', store: { isReachable: false } })
  t.notMatch(gw.logs.text(), /authorization server error|sign-in page failed/, 'no "server error" log lines: an unreachable store is not a bug')
  t.match(gw.logs.text(), /authorization request failed: store unreachable \(503\)/)

  await redis.start()
  t.ok(await eventually(async () => ((await (await fetch(`${gw.baseUrl}/readyz`)).json()) as { status: string }).status === 'ready', 10_000), 'ready again once Redis is back')
  const tokenUp = await refresh()
  t.equal(tokenUp.status, 200, 'the refresh token issued before the outage works (Redis kept it)')
  const renewed = await tokenUp.json() as { access_token: string, refresh_token: string }
  const init = await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${renewed.access_token}` })
  t.equal(init.status, 200, 'and its new access token opens a session')
  t.ok(await eventually(async () => (await strictCall(3)).status === 200, 10_000), 'limits are checked again')
  const again = await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  t.equal(textOf(await again.client.callTool({ name: 'echo', arguments: { text: 'after' } })), 'after', 'a new client registers, signs in and calls: no restart needed')
})

t.test('a start with auth on and Redis unreachable fails with a clear error (the signing keys are there)', async (t) => {
  const redis = await startOwnRedis(t)
  if (redis === undefined) return
  await redis.stop()
  const err = await startGateway(t, {
    store: { redis: `redis://:s3cret-redis-password@127.0.0.1:${redis.port}` },
    auth: {},
    servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
  }, {}, { redisStartupTimeoutMs: 500 }).then(() => undefined, (e: Error) => e)
  t.match(err?.message, new RegExp(`^Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}/? did not answer within 0\\.5 s \\(connect ECONNREFUSED`))
  t.notMatch(err?.message, /s3cret/, 'the password is not in the message')
})
