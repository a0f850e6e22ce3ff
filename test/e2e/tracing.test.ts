// Traces (README "Tracing"): a gateway with auth on, a real token from the real OAuth flow, an
// HTTP upstream fixture recording the traceparent it receives and a stdio fixture echoing its
// _meta, exporting to a real OTLP/HTTP receiver in this process (test/otlp-receiver.ts: no
// collector binary is available here).
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { flushTracing } from '../../src/observability/tracing.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { eventually, freePort, INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startCliGateway, startGateway, startUpstream, stdioServer, textOf } from '../helpers.js'
import { SPAN_KIND, STATUS_ERROR, startOtlpReceiver, type ReceivedSpan } from '../otlp-receiver.js'

const PASSWORD = 'correct horse battery staple'
const COLLECTOR_KEY = 'collector-api-key-5f2c'
/** Secrets a client may put where a careless span would copy them: a query string, a resource URI's userinfo and query. */
const QUERY_SECRET = 'query-secret-9d41'
const URI_PASSWORD = 'uri-password-77ab'
const URI_TOKEN = 'uri-token-c3e0'
const PATH_SECRET = 'path-secret-e8f1'

// One provider per process, so one receiver for every gateway of this file (the first to start
// tracing fixes the endpoint; see 'one provider per process').
const receiver = await startOtlpReceiver(t)

function only (spans: readonly ReceivedSpan[], predicate: (s: ReceivedSpan) => boolean, what: string): ReceivedSpan {
  const found = spans.filter(predicate)
  if (found.length !== 1) throw new Error(`expected one ${what}, found ${found.length}: ${spans.map((s) => s.name).join(', ')}`)
  return found[0] as ReceivedSpan
}

t.test('MCP and OAuth spans, parents and attributes; a client trace continues to the upstreams', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    rateLimits: { perUser: '1000/min' },
    telemetry: { otlp: { endpoint: receiver.url, headers: { 'x-collector-key': COLLECTOR_KEY } } },
    servers: [
      { name: 'remote', transport: 'http', url: upstream.url, tools: { deny: ['whoami'] } },
      stdioServer('local', { flags: ['--echo-meta'] }),
    ],
  })

  const remote = await connectWithOAuth(t, gw.mcpUrl('remote'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const accessToken = remote.oauth.savedTokens?.access_token ?? ''
  const refreshToken = remote.oauth.savedTokens?.refresh_token ?? ''
  const code = remote.callback.searchParams.get('code') ?? ''
  const sessionId = remote.transport.sessionId ?? ''
  t.ok(accessToken !== '' && code !== '' && sessionId !== '', 'signed in through the real flow, a session open')

  // The gateway names a call's span after a tool it knows (policy or a tools/list answer) only.
  await remote.client.listTools()
  // The client starts the trace: its traceparent names its own span.
  const clientTrace = randomBytes(16).toString('hex')
  const clientSpan = randomBytes(8).toString('hex')
  const called = await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 77, method: 'tools/call', params: { name: 'echo', arguments: { text: 'traced' } } }, {
    authorization: `Bearer ${accessToken}`,
    'mcp-session-id': sessionId,
    'mcp-protocol-version': remote.transport.protocolVersion ?? '2025-11-25',
    traceparent: `00-${clientTrace}-${clientSpan}-01`,
    tracestate: 'client=7',
  })
  t.equal(called.status, 200)
  t.match(called.text, /traced/, 'the call was answered')
  const denied = await remote.client.callTool({ name: 'whoami', arguments: {} }).catch((err: Error) => err)
  t.match(String(denied), /Forbidden by policy/, 'a denied call for the decision attributes')

  const authorized = { authorization: `Bearer ${accessToken}`, 'mcp-session-id': sessionId, 'mcp-protocol-version': remote.transport.protocolVersion ?? '2025-11-25' }
  // A client that says "do not sample" (-00) cannot hide an authenticated request: sampleRatio (1) decides.
  const optOutTrace = randomBytes(16).toString('hex')
  await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 78, method: 'ping' }, { ...authorized, traceparent: `00-${optOutTrace}-${randomBytes(8).toString('hex')}-00` })
  // Without a token, the client's context is only linked to: a trace of the gateway's own.
  const anonymousTrace = randomBytes(16).toString('hex')
  const anonymousSpan = randomBytes(8).toString('hex')
  t.equal((await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 79, method: 'ping' }, { traceparent: `00-${anonymousTrace}-${anonymousSpan}-01` })).status, 401)
  // Client strings that must not name spans or reach them whole.
  const longTool = `t${'x'.repeat(999)}`
  const longMethod = `m${'y'.repeat(999)}`
  await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 80, method: 'tools/call', params: { name: longTool, arguments: {} } }, authorized)
  await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 81, method: longMethod, params: {} }, authorized)
  const resourceUri = `https://bob:${URI_PASSWORD}@files.example.com/doc.txt?token=${URI_TOKEN}#frag`
  await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 82, method: 'resources/read', params: { uri: resourceUri } }, authorized)
  await postJson(`${gw.mcpUrl('remote')}?access_token=${QUERY_SECRET}`, { jsonrpc: '2.0', id: 83, method: 'ping' }, authorized)
  t.equal((await fetch(`${gw.baseUrl}/oauth/token?code=${QUERY_SECRET}`, { method: 'POST' })).status >= 400, true, 'a refused token request with a query secret')
  t.equal((await fetch(`${gw.baseUrl}/oauth/${PATH_SECRET}`)).status, 404, 'an unknown OAuth path')

  const local = await connectWithOAuth(t, gw.mcpUrl('local'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  await local.client.listTools()
  const childMeta = JSON.parse(textOf(await local.client.callTool({ name: 'meta', arguments: {} }))) as Record<string, unknown>
  // A GET stream held open for a while: the client span toward a stdio server covers it.
  const held = new AbortController()
  const stream = await fetch(gw.mcpUrl('local'), { headers: { accept: 'text/event-stream', authorization: `Bearer ${local.oauth.savedTokens?.access_token ?? ''}`, 'mcp-session-id': local.transport.sessionId ?? '', 'mcp-protocol-version': local.transport.protocolVersion ?? '2025-11-25' }, signal: held.signal })
  t.equal(stream.status, 200, 'a GET stream opened')
  await new Promise((resolve) => setTimeout(resolve, 400))
  held.abort()

  await flushTracing()
  t.ok(await eventually(() => receiver.spans.some((s) => s.name === 'tools/call meta' && s.kind === SPAN_KIND.SERVER)), 'spans arrived at the receiver')
  // The held stream's span ends when its response closes, a moment after the abort.
  await eventually(async () => {
    await flushTracing()
    return receiver.spans.some((s) => s.kind === SPAN_KIND.CLIENT && s.name === 'GET /local/mcp' && s.durationMs >= 350)
  }, 2000)
  const spans = receiver.spans

  t.test('the export itself', async (t) => {
    t.ok(receiver.requests.every((r) => r.path === '/v1/traces'), 'a bare endpoint gets /v1/traces')
    t.ok(receiver.requests.every((r) => r.headers['x-collector-key'] === COLLECTOR_KEY), 'the configured headers go with every export')
    t.equal(spans[0]?.resource['service.name'], 'portcullis', 'default service.name')
    t.notMatch(gw.logs.text(), COLLECTOR_KEY, 'the collector key is never logged')
  })

  t.test('HTTP upstream: server span, its steps and the client span, in the client\'s trace', async (t) => {
    const server = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === '77', 'server span of the traced call')
    t.equal(server.name, 'tools/call echo', 'named "{mcp.method.name} {target}"')
    t.equal(server.traceId, clientTrace, 'the client\'s trace continues')
    t.equal(server.parentSpanId, clientSpan, 'the client\'s span is the parent')
    t.match(server.attributes, {
      'mcp.method.name': 'tools/call',
      'gen_ai.tool.name': 'echo',
      'gen_ai.operation.name': 'execute_tool',
      'portcullis.server': 'remote',
      'portcullis.decision': 'allowed',
      'mcp.protocol.version': remote.transport.protocolVersion,
      'http.response.status_code': 200,
      'network.transport': 'tcp',
    })
    t.match(server.attributes['mcp.session.id'], /^[0-9a-f]{32}$/, 'the session id, hashed')
    t.not(server.attributes['mcp.session.id'], createHash('sha256').update(sessionId).digest('hex').slice(0, 32), 'keyed (an HMAC), not a plain SHA-256 anyone can check')
    t.equal(server.attributes['error.type'], undefined, 'no error')

    const children = spans.filter((s) => s.parentSpanId === server.spanId)
    t.same(children.map((s) => s.name).sort(), ['policy', 'rate limits', 'token check', 'tools/call echo'], 'token check, policy, rate limits and the upstream exchange')
    t.ok(children.every((s) => s.traceId === clientTrace))
    const exchange = only(children, (s) => s.kind === SPAN_KIND.CLIENT, 'client span')
    t.match(exchange.attributes, { 'mcp.method.name': 'tools/call', 'gen_ai.tool.name': 'echo', 'server.address': '127.0.0.1', 'server.port': upstream.port, 'network.transport': 'tcp', 'mcp.session.id': server.attributes['mcp.session.id'] })

    const seen = upstream.seen.filter((r) => r.method === 'POST' && String(r.headers.traceparent ?? '').includes(clientTrace))
    t.equal(seen.length, 1, 'the upstream received the trace')
    t.equal(seen[0]?.headers.traceparent, `00-${clientTrace}-${exchange.spanId}-01`, 'the upstream\'s parent is the gateway\'s client span, not the client\'s')
    t.equal(seen[0]?.headers.tracestate, 'client=7', 'tracestate passed on')
  })

  t.test('a denied call: decision, rule and error', async (t) => {
    const server = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.name === 'tools/call whoami', 'denied call span')
    t.match(server.attributes, { 'portcullis.decision': 'denied', 'error.type': '-32600', 'rpc.response.status_code': '-32600', 'http.response.status_code': 403 })
    t.type(server.attributes['portcullis.rule'], 'string')
    t.equal(server.status.code, STATUS_ERROR)
    t.notOk(spans.some((s) => s.parentSpanId === server.spanId && s.kind === SPAN_KIND.CLIENT), 'nothing went upstream')
  })

  t.test('the client does not decide sampling or, unauthenticated, the trace', async (t) => {
    const optedOut = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === '78', 'the -00 request')
    t.equal(optedOut.traceId, optOutTrace, 'recorded in the client\'s trace all the same (authenticated: its context continues)')
    const anonymous = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.links.some((l) => l.spanId === anonymousSpan), 'the unauthenticated request')
    t.not(anonymous.traceId, anonymousTrace, 'a trace of its own')
    t.equal(anonymous.parentSpanId, '', 'a root')
    t.same(anonymous.links, [{ traceId: anonymousTrace, spanId: anonymousSpan }], 'linked to the client\'s span')
    t.equal(anonymous.attributes['http.response.status_code'], 401)
    t.notOk(spans.some((s) => s.traceId === anonymousTrace), 'nothing in the trace the unauthenticated client named')
    const oauth = spans.filter((s) => s.attributes['portcullis.oauth.endpoint'] !== undefined)
    t.ok(oauth.length > 0 && oauth.every((s) => s.parentSpanId === ''), 'OAuth requests are roots too')
  })

  t.test('client strings are bounded: known names only in span names, values cut to 256 characters', async (t) => {
    const call = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === '80', 'the long tool call')
    t.equal(call.name, 'tools/call', 'a tool the gateway does not know is not in the name')
    t.equal(call.attributes['gen_ai.tool.name'], longTool.slice(0, 256), 'the tool name attribute cut')
    const client = only(spans, (s) => s.parentSpanId === call.spanId && s.kind === SPAN_KIND.CLIENT, 'its client span')
    t.equal(client.name, 'tools/call')
    const method = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === '81', 'the unknown method')
    t.equal(method.name, '_OTHER', 'an unknown method is named _OTHER')
    t.equal(method.attributes['mcp.method.name'], longMethod.slice(0, 256))
    t.ok(spans.every((s) => s.name.length <= 300 && Object.values(s.attributes).every((v) => typeof v !== 'string' || v.length <= 256)), 'no span name or attribute value past the limits')
    const resource = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === '82', 'the resources/read')
    t.equal(resource.attributes['mcp.resource.uri'], 'https://REDACTED:REDACTED@files.example.com/doc.txt?token=REDACTED', 'the resource URI without credentials, query values or fragment')
  })

  t.test('a request without a token: the token check span says why, the request span has the JSON-RPC code', async (t) => {
    const refused = spans.filter((s) => s.kind === SPAN_KIND.SERVER && s.attributes['http.response.status_code'] === 401)
    t.ok(refused.length > 0, 'the client\'s first, unauthenticated request has a span')
    const server = refused[0] as ReceivedSpan
    t.match(server.attributes, { 'error.type': '-32600', 'portcullis.server': 'remote' })
    t.equal(server.status.code, STATUS_ERROR)
    const check = only(spans, (s) => s.parentSpanId === server.spanId, 'child of the refused request')
    t.equal(check.name, 'token check')
    t.equal(check.attributes['error.type'], 'PORTCULLIS_ERR_UNAUTHORIZED')
    t.equal(check.status.code, STATUS_ERROR)
  })

  t.test('stdio: the child gets the client span\'s context in params._meta', async (t) => {
    const server = only(spans, (s) => s.kind === SPAN_KIND.SERVER && s.name === 'tools/call meta', 'stdio server span')
    const exchange = only(spans, (s) => s.parentSpanId === server.spanId && s.kind === SPAN_KIND.CLIENT, 'stdio client span')
    t.match(exchange.attributes, { 'network.transport': 'pipe', 'portcullis.server': 'local', 'gen_ai.tool.name': 'meta' })
    t.equal(childMeta.traceparent, `00-${server.traceId}-${exchange.spanId}-01`, 'the child\'s parent is the gateway\'s client span')
    const streams = spans.filter((s) => s.kind === SPAN_KIND.CLIENT && s.attributes['portcullis.server'] === 'local' && s.name === 'GET /local/mcp')
    t.ok(streams.some((s) => s.durationMs >= 350), `the GET stream's client span lasts as long as the stream (${streams.map((s) => s.durationMs).join(', ')} ms)`)
  })

  t.test('OAuth endpoints: one span each, no secrets', async (t) => {
    const oauth = spans.filter((s) => s.attributes['portcullis.oauth.endpoint'] !== undefined)
    const names = new Set(oauth.map((s) => s.name))
    for (const name of ['POST /oauth/register', 'GET /oauth/authorize', 'POST /oauth/token']) t.ok(names.has(name), `${name} has a span`)
    t.ok(oauth.every((s) => s.kind === SPAN_KIND.SERVER && typeof s.attributes['http.response.status_code'] === 'number'))
    const unknown = only(oauth, (s) => s.attributes['portcullis.oauth.endpoint'] === '_OTHER', 'the unknown OAuth path')
    t.equal(unknown.name, 'GET', 'named by its method only')
    t.ok(oauth.every((s) => s.attributes['http.route'] === '/oauth/*'), 'http.route: the pattern fastify matched (the catch-all), never the path')
    const exported = receiver.requests.map((r) => r.body).join('\n')
    t.ok(exported.includes('files.example.com'), 'the resource URI request was exported (so the checks below can fail)')
    for (const [what, secret] of [['access token', accessToken], ['refresh token', refreshToken], ['authorization code', code], ['session id', sessionId], ['password', PASSWORD], ['query secret', QUERY_SECRET], ['resource URI password', URI_PASSWORD], ['resource URI token', URI_TOKEN], ['unknown OAuth path', PATH_SECRET]] as const) {
      t.notOk(exported.includes(secret), `no ${what} in any exported span`)
    }
  })
})

t.test('one provider per process: a second gateway reuses it and says a changed endpoint waits for a restart', async (t) => {
  const second = await startOtlpReceiver(t)
  // The first test of this file started tracing already; either way the provider in place is kept.
  await startGateway(t, { telemetry: { otlp: { endpoint: receiver.url } }, servers: [stdioServer('local')] })
  const b = await startGateway(t, { telemetry: { otlp: { endpoint: `${second.url}/v1/traces?api-key=${QUERY_SECRET}` } }, servers: [stdioServer('local')] })
  t.match(b.logs.text(), /tracing already runs in this process/, 'the ignored endpoint is reported')
  t.notMatch(b.logs.text(), QUERY_SECRET, 'its query string is masked in the log')
  const initialize = { jsonrpc: '2.0', id: 'second-gateway', method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'reuse', version: '1' } } }
  t.equal((await postJson(b.mcpUrl('local'), initialize)).status, 200)
  await flushTracing()
  t.ok(await eventually(() => receiver.spans.some((s) => s.attributes['jsonrpc.request.id'] === 'second-gateway')), 'the second gateway\'s span went to the first endpoint')
  t.equal(second.requests.length, 0, 'nothing goes to the second endpoint')
})

t.test('a virtual server\'s request to its member keeps the member route\'s spans: its SERVER span and the upstream CLIENT span', async (t) => {
  const gw = await startGateway(t, { telemetry: { otlp: { endpoint: receiver.url } }, servers: [stdioServer('local')], virtualServers: [{ name: 'v', members: ['local'] }] })
  const init = await postJson(gw.mcpUrl('v'), INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  const called = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 'through-virtual', method: 'tools/call', params: { name: 'echo', arguments: { text: 'traced' } } }, headers)
  t.equal(called.status, 200)
  t.match(called.text, /traced/)
  await flushTracing()
  const isOurs = (s: ReceivedSpan): boolean => s.attributes['jsonrpc.request.id'] === 'through-virtual'
  t.ok(await eventually(() => receiver.spans.some((s) => isOurs(s) && s.kind === SPAN_KIND.SERVER && s.attributes['portcullis.server'] === 'local')), 'the member route\'s SERVER span')
  t.ok(await eventually(() => receiver.spans.some((s) => isOurs(s) && s.kind === SPAN_KIND.CLIENT)), 'and its CLIENT span toward the upstream')
})

t.test('a request relayed to the replica holding its session: the owner\'s span is tied to the relaying replica\'s', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const [ownerPort, relayPort] = [await freePort(), await freePort()]
  const common = { store: { redis: REDIS_URL, prefix }, telemetry: { otlp: { endpoint: receiver.url } }, servers: [stdioServer('counter')] }
  const owner = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: ownerPort }, cluster: { advertiseUrl: `http://127.0.0.1:${ownerPort}` } })
  const relay = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: relayPort }, cluster: { advertiseUrl: `http://127.0.0.1:${relayPort}` } })
  const sessionId = (await postJson(owner.mcpUrl('counter'), INIT_BODY)).headers.get('mcp-session-id') ?? ''
  const clientSpan = randomBytes(8).toString('hex')
  const res = await postJson(relay.mcpUrl('counter'), { jsonrpc: '2.0', id: 'traced-relay', method: 'tools/call', params: { name: 'increment', arguments: {} } }, {
    'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25', traceparent: `00-${randomBytes(16).toString('hex')}-${clientSpan}-01`,
  })
  t.equal(res.status, 200, 'relayed and answered')
  await flushTracing()
  const arrived = await eventually(() => receiver.spans.some((s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === 'traced-relay'))
  t.ok(arrived, 'the owner\'s span arrived')
  const served = only(receiver.spans, (s) => s.kind === SPAN_KIND.SERVER && s.attributes['jsonrpc.request.id'] === 'traced-relay', 'the owner\'s span')
  const relayed = only(receiver.spans, (s) => s.kind === SPAN_KIND.SERVER && s.links.some((l) => l.spanId === clientSpan), 'the relaying replica\'s span (linked to the client)')
  t.not(served.spanId, relayed.spanId)
  t.ok(served.parentSpanId === relayed.spanId || served.links.some((l) => l.spanId === relayed.spanId), 'the owner\'s span continues or links to the relaying replica\'s, not the client\'s')
  t.notOk(served.links.some((l) => l.spanId === clientSpan) || served.parentSpanId === clientSpan, 'the client\'s context was replaced on the way')
})

/**
 * Records every package module a process imports (a module resolve hook, --import), so a test
 * can tell whether OpenTelemetry was imported at all. The hook does not see require() inside a
 * CommonJS package: prom-client's own require of the api's CommonJS build is not recorded.
 */
const RECORD_LOADS = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module'
register('data:text/javascript,' + encodeURIComponent(\`
import { appendFileSync } from 'node:fs'
export async function resolve (specifier, context, next) {
  const resolved = await next(specifier, context)
  // Only in the gateway: tap's spawn patch hands this hook on to the stdio server too, whose
  // environment (an allow-list) has no log file.
  if (process.env.PORTCULLIS_LOAD_LOG && resolved.url.includes('/node_modules/')) appendFileSync(process.env.PORTCULLIS_LOAD_LOG, resolved.url + '\\\\n')
  return resolved
}\`))
`)}`

t.test('the CLI: telemetry off loads no SDK and exports nothing; on, it loads and exports', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-tracing-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))

  const run = async (name: string, telemetry: Record<string, unknown> | undefined): Promise<{ loads: string, exitCode: number | null, output: string, exitedAtMs: number }> => {
    const port = await freePort()
    const configPath = join(dir, `${name}.yaml`)
    writeFileSync(configPath, stringify({
      publicUrl: `http://127.0.0.1:${port}`,
      listen: { host: '127.0.0.1', port },
      dataDir: join(dir, name),
      auth: { enabled: false },
      ...(telemetry === undefined ? {} : { telemetry }),
      servers: [stdioServer('local')],
    }))
    const loadLog = join(dir, `${name}.loads`)
    writeFileSync(loadLog, '')
    // The receiver stays reachable through the standard variable: only the config may turn tracing on.
    const { child, output } = await startCliGateway(t, configPath, { NODE_OPTIONS: `--import=${RECORD_LOADS}`, PORTCULLIS_LOAD_LOG: loadLog, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url })
    const answered = await postJson(`http://127.0.0.1:${port}/local/mcp`, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'tracing-test', version: '1' } } })
    t.equal(answered.status, 200, `${name}: a request served`)
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const exitCode = await exited
    return { loads: readFileSync(loadLog, 'utf8'), exitCode, output: output(), exitedAtMs: Date.now() }
  }

  const { loads: off } = await run('off', undefined)
  t.match(off, /node_modules\/fastify\//, 'off: the hook records the packages imported')
  t.notMatch(off, /@opentelemetry\//, 'off: no OpenTelemetry module imported, not even the api')
  t.equal(receiver.spans.length, 0, 'off: nothing exported')

  const { loads: on, output: onOutput } = await run('on', { otlp: { endpoint: `${receiver.url}/v1/traces?api-key=${QUERY_SECRET}` } })
  t.match(on, /exporter-trace-otlp-http/, 'on: the exporter is loaded')
  t.match(on, /@opentelemetry\/api\//, 'on: the api is imported')
  t.match(onOutput, /tracing on/, 'on: the endpoint is logged')
  t.notMatch(onOutput, QUERY_SECRET, 'on: its query values masked')
  t.ok(receiver.spans.some((s) => s.name === 'initialize' && s.kind === SPAN_KIND.SERVER), 'on: the request\'s span arrived (flushed at shutdown)')

  // A collector that is down costs spans and a warning, never a request or a clean shutdown.
  const down = await run('down', { otlp: { endpoint: `http://127.0.0.1:${await freePort()}` } })
  t.equal(down.exitCode, 0, 'down: a clean shutdown')
  t.match(down.output, /trace export problem/, 'down: the failed export is logged')
  t.match(down.output, /"detail":"spans not exported \([^)"]+\)"/, 'down: the log line says what failed (the SDK rejects with an array, not an Error)')
  t.notMatch(down.output, /"detail":"undefined"/, 'down: no detail reads "undefined"')
  // The exporter goes on retrying that export for its 10 s budget; it does not hold the process
  // up: the exit comes within main.ts's 1 s grace of the clean shutdown (4.7–6.6 s after it before).
  const cleanAtMs = Number(/"time":(\d+),[^\n]*"msg":"shut down cleanly"/.exec(down.output)?.[1])
  t.ok(Number.isFinite(cleanAtMs), 'down: the clean shutdown is logged')
  t.ok(down.exitedAtMs - cleanAtMs < 3000, `down: exited ${down.exitedAtMs - cleanAtMs} ms after the clean shutdown, not after the exporter's retries`)
})
