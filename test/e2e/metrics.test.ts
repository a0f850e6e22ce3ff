// /metrics after a known sequence of calls: every counter has exactly the expected value.
// Real OAuth flow (SDK client), real HTTP upstream, real stdio child that crashes mid-call.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { INIT_BODY, eventually, freePort, postJson, startGateway, startUpstream, stdioServer } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'

/** The Prometheus text format as `name{labels}` -> value (labels as prom-client writes them). */
function parseMetrics (text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

async function scrape (url: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const res = await fetch(url, { headers })
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
  if (!(res.headers.get('content-type') ?? '').startsWith('text/plain')) throw new Error('not the Prometheus text format')
  return parseMetrics(await res.text())
}

function sample (name: string, labels: Record<string, string> = {}): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  return parts.length === 0 ? name : `${name}{${parts.join(',')}}`
}

async function session (url: string, headers: Record<string, string>): Promise<Record<string, string>> {
  const init = await postJson(url, INIT_BODY, headers)
  if (init.status !== 200) throw new Error(`initialize answered ${init.status}`)
  const withSession = { ...headers, 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  const initialized = await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, withSession)
  if (initialized.status !== 202) throw new Error(`notifications/initialized answered ${initialized.status}`)
  return withSession
}

const call = (id: number, name: string): unknown => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: name === 'echo' ? { text: 'hi' } : {} } })

t.test('after allowed, denied, 401, rate-limited calls and a stdio crash, the counters are exact', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { enabled: true, users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['big'], echo: { rateLimit: '2/min' } } },
      // Policy names the tool, so its calls are labelled by name without a tools/list first.
      stdioServer('local', { prestart: 0, tools: { crash: {} } }),
    ],
  })
  const metricsUrl = `${gw.baseUrl}/metrics`

  // The OAuth flow, once per server (tokens are bound to one resource): each time one code, one access token, one refresh token.
  const tokenFor = async (server: string): Promise<string> => {
    const alice = await connectWithOAuth(t, gw.mcpUrl(server), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
    await alice.client.close()
    return alice.oauth.savedTokens?.access_token ?? ''
  }
  const fxToken = await tokenFor('fx')
  const localToken = await tokenFor('local')
  const afterLogin = await scrape(metricsUrl)
  t.equal(afterLogin.get(sample('portcullis_oauth_tokens_issued_total', { type: 'authorization_code' })), 2)
  t.equal(afterLogin.get(sample('portcullis_oauth_tokens_issued_total', { type: 'access_token' })), 2)
  t.equal(afterLogin.get(sample('portcullis_oauth_tokens_issued_total', { type: 'refresh_token' })), 2)
  t.equal(afterLogin.get(sample('portcullis_oauth_tokens_issued_total', { type: 'client_credentials' })), undefined, 'no machine tokens')
  t.equal(afterLogin.get(sample('portcullis_stdio_processes', { server: 'local' })), 1, 'the SDK client\'s session on local keeps its process (closing a transport does not end a session)')
  const before = (name: string, labels: Record<string, string> = {}): number => afterLogin.get(sample(name, labels)) ?? 0

  const fx = gw.mcpUrl('fx')
  const fxSession = await session(fx, { authorization: `Bearer ${fxToken}` }) //                                  POST 200, POST 202
  t.equal((await postJson(fx, call(1, 'echo'), fxSession)).status, 200) //         ok
  t.equal((await postJson(fx, call(2, 'big'), fxSession)).status, 403) //          denied by tools.deny
  t.equal((await postJson(fx, call(3, 'echo'), fxSession)).status, 200) //         ok (2 of 2/min)
  t.equal((await postJson(fx, call(4, 'echo'), fxSession)).status, 429) //         rate limited
  t.equal((await postJson(fx, call(5, 'echo'), { ...fxSession, authorization: '' })).status, 401) //                   no token
  t.equal((await postJson(fx, call(6, 'echo'), { ...fxSession, authorization: 'Bearer not.a.jwt' })).status, 401) //  bad token

  const local = gw.mcpUrl('local')
  const localSession = await session(local, { authorization: `Bearer ${localToken}` }) //                             POST 200, POST 202
  const crash = await postJson(local, call(7, 'crash'), localSession)
  t.equal(crash.status, 502, 'the child died mid-call: the gateway answers for it')
  t.match(crash.json, { id: 7, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })

  // Counters move when each response closes, a moment after the client has it.
  let after = new Map<string, number>()
  const total = (m: Map<string, number>): number => [...m].filter(([k]) => k.startsWith('portcullis_http_requests_total{server="fx"') || k.startsWith('portcullis_http_requests_total{server="local"')).reduce((sum, [, v]) => sum + v, 0)
  t.ok(await eventually(async () => {
    after = await scrape(metricsUrl)
    return total(after) - total(afterLogin) >= 11 && after.get(sample('portcullis_stdio_processes', { server: 'local' })) === 1
  }), 'every request is counted and the crashed child is gone')
  const delta = (name: string, labels: Record<string, string> = {}): number => (after.get(sample(name, labels)) ?? 0) - before(name, labels)

  t.same({
    ok: after.get(sample('portcullis_tool_calls_total', { server: 'fx', tool: 'echo', outcome: 'answered' })),
    rateLimited: after.get(sample('portcullis_tool_calls_total', { server: 'fx', tool: 'echo', outcome: 'rate_limited' })),
    denied: after.get(sample('portcullis_tool_calls_total', { server: 'fx', tool: 'big', outcome: 'denied' })),
    failed: after.get(sample('portcullis_tool_calls_total', { server: 'local', tool: 'crash', outcome: 'failed' })),
  }, { ok: 2, rateLimited: 1, denied: 1, failed: 1 }, 'tool calls by server, tool and outcome (the 401s never got as far as a tool)')
  t.equal([...after.keys()].filter((k) => k.startsWith('portcullis_tool_calls_total')).length, 4, 'and no other tool-call series')

  t.same({
    fx200: delta('portcullis_http_requests_total', { server: 'fx', method: 'POST', status: '200' }),
    fx202: delta('portcullis_http_requests_total', { server: 'fx', method: 'POST', status: '202' }),
    fx401: delta('portcullis_http_requests_total', { server: 'fx', method: 'POST', status: '401' }),
    fx403: delta('portcullis_http_requests_total', { server: 'fx', method: 'POST', status: '403' }),
    fx429: delta('portcullis_http_requests_total', { server: 'fx', method: 'POST', status: '429' }),
    local200: delta('portcullis_http_requests_total', { server: 'local', method: 'POST', status: '200' }),
    local202: delta('portcullis_http_requests_total', { server: 'local', method: 'POST', status: '202' }),
    local502: delta('portcullis_http_requests_total', { server: 'local', method: 'POST', status: '502' }),
  }, { fx200: 3, fx202: 1, fx401: 2, fx403: 1, fx429: 1, local200: 1, local202: 1, local502: 1 }, 'HTTP requests by server, method and status')
  t.equal(delta('portcullis_http_request_duration_seconds_count', { server: 'fx', method: 'POST' }), 8, 'each fx request has a latency observation')
  t.equal(delta('portcullis_http_request_duration_seconds_count', { server: 'local', method: 'POST' }), 3)

  t.same({
    ok: delta('portcullis_token_validations_total', { result: 'ok' }),
    missing: delta('portcullis_token_validations_total', { result: 'missing' }),
    malformed: delta('portcullis_token_validations_total', { result: 'malformed' }),
  }, { ok: 9, missing: 1, malformed: 1 }, 'token checks: 6 accepted on fx, 3 on local; one missing, one malformed')
  t.equal(delta('portcullis_rate_limit_rejections_total', { bucket: 'user-tool' }), 1)
  t.equal(delta('portcullis_policy_denials_total', { server: 'fx', reason: 'rule' }), 1)
  t.equal(after.get(sample('portcullis_stdio_restarts_total', { server: 'local' })), 1, 'the crash counts as an unplanned exit')
  t.equal(after.get(sample('portcullis_stdio_processes', { server: 'local' })), 1, 'the crashed session\'s process is gone; the other session\'s remains')
  t.ok((after.get('portcullis_process_cpu_seconds_total') ?? 0) > 0, 'process metrics are there too')
})

t.test('metrics.bearerToken protects /metrics; metrics.listen moves it to a port of its own', async (t) => {
  const upstream = await startUpstream(t)
  const secret = 'scrape-secret-0123456789'
  const guarded = await startGateway(t, { metrics: { bearerToken: secret }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const none = await fetch(`${guarded.baseUrl}/metrics`)
  t.equal(none.status, 401)
  t.equal(none.headers.get('www-authenticate'), 'Bearer realm="metrics"')
  t.notMatch(await none.text(), secret, 'the token is never echoed')
  t.equal((await fetch(`${guarded.baseUrl}/metrics`, { headers: { authorization: 'Bearer wrong-secret-0123456789' } })).status, 401)
  t.ok((await scrape(`${guarded.baseUrl}/metrics`, { authorization: `Bearer ${secret}` })).has('portcullis_process_cpu_seconds_total'))

  const port = await freePort()
  const separate = await startGateway(t, { metrics: { listen: { host: '127.0.0.1', port } }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  t.equal((await fetch(`${separate.baseUrl}/metrics`)).status, 404, 'not on the main port')
  const metricsServer = separate.app.portcullis.metricsServer
  if (metricsServer === undefined) throw new Error('no metrics listener')
  await metricsServer.listen({ host: '127.0.0.1', port })
  t.equal((await postJson(separate.mcpUrl('fx'), INIT_BODY)).status, 200)
  const scraped = await scrape(`http://127.0.0.1:${port}/metrics`)
  t.equal(scraped.get(sample('portcullis_http_requests_total', { server: 'fx', method: 'POST', status: '200' })), 1, 'the main port\'s requests, counted')
  await separate.app.close()
  await t.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'closing the gateway closes the metrics listener')

  const off = await startGateway(t, { metrics: { enabled: false }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  t.equal((await fetch(`${off.baseUrl}/metrics`)).status, 404)
})

t.test('the gateway\'s own routes are labelled by area; made-up tool names never become labels', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  await fetch(`${gw.baseUrl}/healthz`)
  await fetch(`${gw.baseUrl}/nope`)
  await fetch(`${gw.baseUrl}/.well-known/oauth-authorization-server`)
  const headers = await session(gw.mcpUrl('fx'), {})
  for (let i = 0; i < 205; i++) await postJson(gw.mcpUrl('fx'), call(i, `made-up-${i}`), headers)
  let scraped = new Map<string, number>()
  t.ok(await eventually(async () => {
    scraped = await scrape(`${gw.baseUrl}/metrics`)
    return (scraped.get(sample('portcullis_tool_calls_total', { server: 'fx', tool: 'other', outcome: 'answered' })) ?? 0) === 205
  }), 'names neither policy nor the upstream gave count as "other"')
  t.equal([...scraped.keys()].filter((k) => k.startsWith('portcullis_tool_calls_total{server="fx"')).length, 1, 'one series for all of them')
  t.equal(scraped.get(sample('portcullis_http_requests_total', { server: 'gateway', method: 'GET', status: '200' })), 1, '/healthz')
  t.equal(scraped.get(sample('portcullis_http_requests_total', { server: 'unmatched', method: 'GET', status: '404' })), 2, '/nope, and the metadata route that does not exist with auth off')
  t.notOk([...scraped.keys()].some((k) => k.includes('/nope')), 'paths never become labels')
})

t.test('a tool label is a name policy gives or the upstream listed, never the caller\'s text', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['nope', 'bad*'], whoami: { rateLimit: '100/min' } } },
      stdioServer('local'),
    ],
  })
  const fx = await session(gw.mcpUrl('fx'), {})
  const local = await session(gw.mcpUrl('local'), {})
  const list = (id: number): unknown => ({ jsonrpc: '2.0', id, method: 'tools/list' })
  t.equal((await postJson(gw.mcpUrl('fx'), call(1, 'danger\u0000'), fx)).status, 200, 'the upstream answers an unknown tool itself')
  t.equal((await postJson(gw.mcpUrl('fx'), call(2, 'echo'), fx)).status, 200, 'echo before any tools/list')
  t.equal((await postJson(gw.mcpUrl('fx'), call(3, 'nope'), fx)).status, 403)
  t.equal((await postJson(gw.mcpUrl('fx'), call(4, 'bad-1'), fx)).status, 403)
  t.equal((await postJson(gw.mcpUrl('fx'), call(5, 'whoami'), fx)).status, 200)
  t.equal((await postJson(gw.mcpUrl('fx'), list(6), fx)).status, 200)
  t.equal((await postJson(gw.mcpUrl('fx'), call(7, 'echo'), fx)).status, 200, 'echo after the upstream listed it')
  t.equal((await postJson(gw.mcpUrl('local'), call(8, 'made-up'), local)).status, 200)
  const listed = await postJson(gw.mcpUrl('local'), list(9), local)
  t.ok(JSON.stringify(listed.json).includes('"crash"'), 'the stdio list passes through')
  t.equal((await postJson(gw.mcpUrl('local'), call(10, 'echo'), local)).status, 200)

  let scraped = new Map<string, number>()
  const series = (): string[] => [...scraped.keys()].filter((k) => k.startsWith('portcullis_tool_calls_total')).sort()
  t.ok(await eventually(async () => {
    scraped = await scrape(`${gw.baseUrl}/metrics`)
    return series().length === 7 && [...scraped].filter(([k]) => k.startsWith('portcullis_tool_calls_total')).reduce((sum, [, v]) => sum + v, 0) === 8
  }), 'eight calls counted')
  t.same(Object.fromEntries(series().map((k) => [k, scraped.get(k)])), {
    [sample('portcullis_tool_calls_total', { server: 'fx', tool: 'echo', outcome: 'answered' })]: 1,
    [sample('portcullis_tool_calls_total', { server: 'fx', tool: 'nope', outcome: 'denied' })]: 1,
    [sample('portcullis_tool_calls_total', { server: 'fx', tool: 'other', outcome: 'answered' })]: 2,
    [sample('portcullis_tool_calls_total', { server: 'fx', tool: 'other', outcome: 'denied' })]: 1,
    [sample('portcullis_tool_calls_total', { server: 'fx', tool: 'whoami', outcome: 'answered' })]: 1,
    [sample('portcullis_tool_calls_total', { server: 'local', tool: 'echo', outcome: 'answered' })]: 1,
    [sample('portcullis_tool_calls_total', { server: 'local', tool: 'other', outcome: 'answered' })]: 1,
  }, 'danger\\u0000, bad-1 (a pattern match), made-up and echo before the list are "other"')
  t.notOk(series().some((k) => k.includes('danger') || k.includes('made-up') || k.includes('bad-1')), 'no caller-chosen text in any label')
})
