// Rate limits with real users and a real upstream. Windows are moved with Node's mock timers
// (Date only; @fastify/rate-limit's in-process store reads Date.now), except on Redis, whose
// windows run on its own clock.
import t from 'tap'
import { mock } from 'node:test'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { INIT_BODY, MCP_HEADERS, postJson, redisAvailable, REDIS_URL, startGateway, startUpstream, uniquePrefix, type RunningGateway, type Teardown } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]

interface Caller { call: (name: string, id: number | string, args?: Record<string, unknown>) => Promise<{ status: number, headers: Headers, json: unknown, text: string }> }

async function callerFor (url: string, token: string | undefined): Promise<Caller> {
  const auth: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
  const init = await postJson(url, INIT_BODY, auth)
  if (init.status !== 200) throw new Error(`initialize: ${init.status} ${init.text}`)
  const headers = { ...auth, 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)
  return {
    call: async (name, id, args = {}) => {
      const res = await fetch(url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } }) })
      const text = await res.text()
      let json: unknown
      try { json = JSON.parse(text) } catch { json = undefined }
      return { status: res.status, headers: res.headers, json, text }
    },
  }
}

async function signedIn (t: Teardown, gw: RunningGateway, server: string, username: string): Promise<Caller> {
  const connected = await connectWithOAuth(t, gw.mcpUrl(server), { username, password: PASSWORD, issuer: gw.baseUrl })
  return callerFor(gw.mcpUrl(server), connected.oauth.savedTokens?.access_token)
}

function useMockDate (t: Teardown): (ms: number) => void {
  mock.timers.enable({ apis: ['Date'], now: Date.now() })
  t.teardown(() => mock.timers.reset())
  return (ms) => mock.timers.tick(ms)
}

t.test('per user per tool: A exhausting a tool does not touch B, nor A\'s other tools; exact 429', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '3/min' } } }],
  })
  const alice = await signedIn(t, gw, 'fx', 'alice')
  const bob = await signedIn(t, gw, 'fx', 'bob')
  const tick = useMockDate(t)
  for (let i = 1; i <= 3; i++) t.equal((await alice.call('echo', i, { text: 'a' })).status, 200, `alice call ${i}`)
  const limited = await alice.call('echo', 'over-1', { text: 'a' })
  t.equal(limited.status, 429)
  t.same(limited.json, {
    jsonrpc: '2.0',
    id: 'over-1',
    error: { code: -32600, message: 'Too many requests: rate limit for tool "echo": 3 per minute; retry in 60 s', data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' } },
  })
  t.equal(limited.headers.get('retry-after'), '60')
  t.equal(limited.headers.get('ratelimit-limit'), '3')
  t.equal(limited.headers.get('ratelimit-remaining'), '0')
  t.equal(limited.headers.get('ratelimit-reset'), '60')
  t.equal(limited.headers.get('ratelimit-policy'), '3;w=60')
  t.equal((await bob.call('echo', 1, { text: 'b' })).status, 200, 'bob has his own budget')
  t.equal((await alice.call('whoami', 9)).status, 200, 'alice\'s other tools are not limited')
  tick(30_000)
  const later = await alice.call('echo', 'over-2', { text: 'a' })
  t.equal(later.status, 429)
  t.equal(later.headers.get('retry-after'), '30', 'the retry time counts down with the window')
  tick(30_001)
  t.equal((await alice.call('echo', 10, { text: 'a' })).status, 200, 'a new window, a new budget')
  const rejections = await gw.app.portcullis.metrics.rateLimitRejections.get()
  t.same(rejections.values.map((v) => [v.labels.bucket, v.value]), [['user-tool', 2]], 'the metric counted both rejections')
})

t.test('per user per server: initialization and notifications are free; a tool\'s cost counts', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    // sessionCost 0: initialize free, as before issue 12 (the next test covers the default weight).
    rateLimits: { sessionCost: 0 },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, rateLimit: '4/min', tools: { slow: { cost: 3 } } }],
  })
  useMockDate(t)
  const anon = await callerFor(gw.mcpUrl('fx'), undefined) // initialize + initialized: not counted
  t.equal((await anon.call('slow', 1, { ms: 1 })).status, 200, 'cost 3 of 4')
  t.equal((await anon.call('echo', 2, { text: 'x' })).status, 200, 'cost 1: 4 of 4')
  const limited = await anon.call('echo', 3, { text: 'x' })
  t.equal(limited.status, 429)
  t.match(limited.json, { id: 3, error: { message: 'Too many requests: rate limit for server "fx": 4 per minute; retry in 60 s' } })
})

t.test('per user per server: initialize weighs rateLimits.sessionCost (default 5); another user keeps their budget', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, rateLimit: '12/min' }],
  })
  const tokenOf = async (username: string): Promise<string> =>
    (await connectWithOAuth(t, gw.mcpUrl('fx'), { username, password: PASSWORD, issuer: gw.baseUrl })).oauth.savedTokens?.access_token ?? ''
  const initialize = async (token: string, id: string): Promise<Awaited<ReturnType<typeof postJson>>> =>
    postJson(gw.mcpUrl('fx'), { ...INIT_BODY, id }, { authorization: `Bearer ${token}` })
  // Signing in connects the SDK client once: initialize, 5 units.
  const alice = await tokenOf('alice')
  const second = await initialize(alice, 'a2')
  t.equal(second.status, 200, 'Alice\'s second session: 10 of 12')
  const withSession = { authorization: `Bearer ${alice}`, 'mcp-session-id': second.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  t.equal((await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 'c', method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, withSession)).status, 200, 'a call: 11 of 12')
  const third = await initialize(alice, 'a3')
  t.equal(third.status, 429, 'a third session would take 5 more')
  t.match(third.json, { id: 'a3', error: { message: /^Too many requests: rate limit for server "fx": 12 per minute; retry in \d+ s$/, data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' } } })
  t.ok(Number(third.headers.get('retry-after')) >= 1, 'with Retry-After')
  t.equal(third.headers.get('ratelimit-policy'), '12;w=60')

  const bob = await tokenOf('bob')
  t.equal((await initialize(bob, 'b2')).status, 200, 'Bob\'s budget is his own: his second session, 10 of 12')
  t.equal((await initialize(bob, 'b3')).status, 429, 'and his third is refused too')
})

t.test('a global per-tool limit counts every user together', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { globalRateLimit: '2/hour' } } }],
  })
  const alice = await signedIn(t, gw, 'fx', 'alice')
  const bob = await signedIn(t, gw, 'fx', 'bob')
  useMockDate(t)
  t.equal((await alice.call('echo', 1, { text: 'a' })).status, 200)
  t.equal((await bob.call('echo', 1, { text: 'b' })).status, 200)
  const limited = await alice.call('echo', 2, { text: 'a' })
  t.equal(limited.status, 429)
  t.match(limited.json, { error: { message: /rate limit for tool "echo" \(all users together\): 2 per hour; retry in 3600 s/ } })
})

t.test('a concurrency cap: calls in flight per user', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { gate: { concurrency: 1 } } }] })
  const anon = await callerFor(gw.mcpUrl('fx'), undefined)
  const first = anon.call('gate', 1, { key: 'held' })
  await upstream.entered('held')
  const second = await anon.call('gate', 2, { key: 'other' })
  t.equal(second.status, 429)
  t.match(second.json, { id: 2, error: { message: 'Too many requests: tool "gate" allows 1 call in flight per user; wait for the running one to finish' } })
  upstream.release('held')
  t.equal((await first).status, 200)
  upstream.release('again')
  t.equal((await anon.call('gate', 3, { key: 'again' })).status, 200, 'the slot was released when the first call finished')
  const rejections = await gw.app.portcullis.metrics.rateLimitRejections.get()
  t.same(rejections.values.map((v) => [v.labels.bucket, v.value]), [['concurrency', 1]], 'the metric counted the refusal')
})

t.test('in a batch, only the member over its limit is refused', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '1/min' } } }] })
  useMockDate(t)
  const init = await postJson(gw.mcpUrl('fx'), INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-03-26' }
  const res = await postJson(gw.mcpUrl('fx'), [
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'first' } } },
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'second' } } },
  ], headers)
  t.equal(res.status, 200)
  t.match(res.text, /"id":2,"error":\{"code":-32600,"message":"Too many requests: rate limit for tool \\"echo\\": 1 per minute/)
  t.match(res.text, /"text":"first"/)
  t.notMatch(res.text, /"text":"second"/)
})

t.test('per client IP: sign-in attempts and token requests', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    auth: { users: USERS, clients: [{ clientId: 'bot', clientSecret: 'bot-secret-with-at-least-32-characters!!', grantTypes: ['client_credentials'] }] },
    rateLimits: { login: '2/min', token: '2/min' },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  useMockDate(t)
  const basic = Buffer.from('bot:bot-secret-with-at-least-32-characters!!').toString('base64')
  const token = () => fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` }, body: `grant_type=client_credentials&resource=${encodeURIComponent(gw.mcpUrl('fx'))}` })
  t.equal((await token()).status, 200)
  t.equal((await token()).status, 200)
  const limited = await token()
  t.equal(limited.status, 429)
  t.equal(limited.headers.get('retry-after'), '60')
  t.same(await limited.json(), { error: 'temporarily_unavailable', error_description: 'rate limit for authorization, token and registration requests from your address: 2 per minute; retry in 60 s' })
  // oidc-provider's router ignores letter case and a trailing slash: so does the limit.
  for (const path of ['/oauth/TOKEN', '/oauth/token/', '/oauth/Token//', '/oauth/register', '/oauth/REGISTER/']) {
    const other = await fetch(`${gw.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` }, body: `grant_type=client_credentials&resource=${encodeURIComponent(gw.mcpUrl('fx'))}` })
    t.equal(other.status, 429, `${path} is the same endpoint and the same budget`)
  }
})

t.test('per client IP: sign-in attempts, right or wrong', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, { auth: { users: USERS }, rateLimits: { login: '2/min' }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  useMockDate(t)
  const { TestOAuthClient, HeadlessBrowser } = await import('../oauth-helpers.js')
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js')
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js')
  const oauth = new TestOAuthClient()
  await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('fx')), { authProvider: oauth })).catch(() => {})
  const browser = new HeadlessBrowser()
  const first = await browser.request(String(oauth.authorizationUrl))
  const interaction = new URL(first.headers.get('location') ?? '', gw.baseUrl).href
  const csrf = /name="csrf" value="([^"]+)"/.exec(await (await browser.request(interaction)).text())?.[1] ?? ''
  const attempt = (password: string) => browser.request(`${interaction}/login`, { method: 'POST', form: { csrf, username: 'alice', password } })
  t.equal((await attempt('wrong-1')).status, 401)
  t.equal((await attempt('wrong-2')).status, 401)
  const limited = await attempt(PASSWORD)
  t.equal(limited.status, 429, 'the third attempt within the minute is refused, even with the right password')
  t.equal(limited.headers.get('retry-after'), '60')
  t.match(await limited.text(), /Too many sign-in attempts from your network\. Try again in 60 seconds\./)
})

t.test('Redis: two gateway instances share one count', async (t) => {
  if (!await redisAvailable(t)) return
  const upstream = await startUpstream(t, { jsonResponse: true })
  const prefix = uniquePrefix()
  const config = { store: { redis: REDIS_URL, prefix }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '4/min' } } }] }
  const one = await startGateway(t, config)
  const two = await startGateway(t, config)
  const a = await callerFor(one.mcpUrl('fx'), undefined)
  const b = await callerFor(two.mcpUrl('fx'), undefined)
  const statuses: number[] = []
  for (let i = 0; i < 6; i++) statuses.push((await (i % 2 === 0 ? a : b).call('echo', i, { text: String(i) })).status)
  t.same(statuses, [200, 200, 200, 200, 429, 429], 'four calls in all, split between the two instances, then both refuse')
})

t.test('Redis unreachable: the documented fail mode, logged and counted', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const dead = 'redis://127.0.0.1:1'
  const open = await startGateway(t, { store: { redis: dead }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '1/min' } } }] })
  const client = await callerFor(open.mcpUrl('fx'), undefined)
  t.equal((await client.call('echo', 1, { text: 'x' })).status, 200)
  t.equal((await client.call('echo', 2, { text: 'x' })).status, 200, 'onStoreError: allow (the default) lets calls through without limits...')
  t.match(open.logs.text(), /"msg":"rate-limit store unreachable: requests are let through unlimited"/, '...says so in the log...')
  t.ok(((await open.app.portcullis.metrics.rateLimitStoreErrors.get()).values[0]?.value ?? 0) >= 2, '...and counts it')
  const closed = await startGateway(t, { store: { redis: dead }, rateLimits: { onStoreError: 'deny' }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '1/min' } } }] })
  const refused = await (await callerFor(closed.mcpUrl('fx'), undefined)).call('echo', 3, { text: 'x' })
  t.equal(refused.status, 503)
  t.match(refused.json, { id: 3, error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE' } } })
})
