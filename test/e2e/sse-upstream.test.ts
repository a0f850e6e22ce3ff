// transport: sse — a real 2024-11-05 server (the MCP SDK's SSEServerTransport, test/fixtures/sse-mcp-server.mjs)
// reached through the gateway by the SDK's Streamable HTTP client: answers matched by id, notifications on
// the GET stream, policy applied, sessions owned, and an endpoint on another origin refused.
import t from 'tap'
import * as http from 'node:http'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { connectClient, eventually, INIT_BODY, postJson, startGateway, startRawServer, textOf } from '../helpers.js'
import { startSseMcpServer } from '../fixtures/sse-mcp-server.mjs'
import { verifyIdentity } from '../fixtures/http-mcp-server.mjs'
import { createRemoteJWKSet } from 'jose'

type SseFixture = Awaited<ReturnType<typeof startSseMcpServer>>

async function startSseUpstream (t: { teardown: (fn: () => unknown) => void }, options: Parameters<typeof startSseMcpServer>[0] = {}): Promise<SseFixture> {
  const upstream = await startSseMcpServer(options)
  t.teardown(() => upstream.close())
  return upstream
}

t.test('a 2024-11-05 upstream, bridged to Streamable HTTP for the SDK client', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url, headers: { 'x-api-key': 'k-123' }, tools: { deny: ['secret'] } }] })
  const { client, transport } = await connectClient(t, gw.mcpUrl('old'), { capabilities: { elicitation: { form: {} } } })
  client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada' } }))
  t.ok(transport.sessionId, 'initialize answered with a gateway session id')
  t.equal(client.getServerVersion()?.name, 'sse-fixture', 'the upstream\'s own initialize answer')

  const names = (await client.listTools()).tools.map((tool) => tool.name).sort()
  t.same(names, ['ask', 'big', 'broadcast', 'echo', 'flood'], 'tools/list, filtered by policy')
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'over the old transport' } })), 'over the old transport', 'tools/call')

  t.equal(textOf(await client.callTool({ name: 'ask', arguments: {} })), 'accept:Ada', 'an elicitation request reaches the client on its GET stream, and the answer the server')
  const changed = new Promise<boolean>((resolve) => client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve(true)))
  await client.callTool({ name: 'broadcast', arguments: {} })
  t.ok(await changed, 'a server notification reaches the client\'s GET stream')

  const denied = await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'secret', arguments: {} } }, { 'mcp-session-id': transport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25' })
  t.equal(denied.status, 403, 'a denied tool is refused at the gateway')
  t.match(denied.json, { id: 9, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })

  const upstreamRequests = upstream.seen.filter((r) => r.url?.startsWith('/sse') === true || r.url?.startsWith('/messages') === true)
  t.ok(upstreamRequests.length >= 4, 'the event stream and the POSTs went upstream')
  t.ok(upstreamRequests.every((r) => r.headers['x-api-key'] === 'k-123'), 'each with the configured headers')
  t.ok(upstream.seen.every((r) => r.headers.authorization === undefined && r.headers['mcp-session-id'] === undefined), 'and nothing of the client\'s transport')
  t.equal(upstream.sessions.size, 1, 'one upstream stream for the session')

  // DELETE ends the session: the upstream stream closes, the id is forgotten.
  const sessionId = transport.sessionId ?? ''
  await transport.terminateSession()
  t.ok(await eventually(() => upstream.sessions.size === 0), 'DELETE closes the upstream event stream')
  const after = await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 10, method: 'tools/list' }, { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' })
  t.equal(after.status, 404, 'the session is gone')
})

t.test('the upstream ending its stream ends the session; the client starts again', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url }] })
  const init = await postJson(gw.mcpUrl('old'), INIT_BODY)
  t.equal(init.status, 200)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  t.match(init.json, { id: 1, result: { serverInfo: { name: 'sse-fixture' } } })
  for (const transport of upstream.sessions.values()) await transport.close()
  const headers = { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  t.ok(await eventually(async () => (await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers)).status === 404), 'the next request: 404, start a new session')
})

t.test('servers[].maxMessageBytes: an event past it ends the session, the waiting request gets a JSON-RPC error', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url, maxMessageBytes: '16kb' }] })
  const init = await postJson(gw.mcpUrl('old'), INIT_BODY)
  t.equal(init.status, 200)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  const call = (id: number, size: number) => postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'big', arguments: { size } } }, headers)
  t.match((await call(2, 8_000)).json, { id: 2, result: { content: [{ text: 'x'.repeat(8_000) }] } }, 'an answer under the limit passes')
  const over = await call(3, 64_000)
  t.equal(over.status, 502, 'an answer past the limit: 502')
  t.match(over.json, { id: 3, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } }, 'as a JSON-RPC error with the request\'s id')
  t.match(gw.logs.text(), /sse upstream sent an event larger than maxMessageBytes; its session ends/, 'logged')
  t.ok(await eventually(() => upstream.sessions.size === 0), 'the upstream event stream is closed')
  t.equal((await call(4, 10)).status, 404, 'the session is gone: the client starts again')
})

t.test('a client GET stream that does not read is closed past maxMessageBytes unread; the session\'s answers never wait for it', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url, maxMessageBytes: '64kb' }] })
  const init = await postJson(gw.mcpUrl('old'), INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  // A GET stream whose reader never reads: its socket's buffers fill, then the gateway's.
  const stalled = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get(gw.mcpUrl('old'), { headers: { ...headers, accept: 'text/event-stream' } }, resolve).once('error', reject)
  })
  t.equal(stalled.statusCode, 200, 'the GET stream opens')
  stalled.pause()
  const flood = await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'flood', arguments: { count: 400, size: 30_000 } } }, headers)
  t.match(flood.json, { id: 2, result: { content: [{ text: 'flooded' }] } }, 'the call flooding the stream is answered')
  t.ok(await eventually(() => gw.logs.text().includes('sse client stream not reading; closed')), 'logged')
  // Read now: what the gateway had written arrives, then the stream ends (it was closed, not left open).
  const closed = new Promise<boolean>((resolve) => {
    stalled.once('close', () => resolve(true))
    setTimeout(() => resolve(false), 10_000).unref()
  })
  stalled.resume()
  t.ok(await closed, 'the stalled client stream is closed')
  const echo = await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { text: 'still here' } } }, headers)
  t.match(echo.json, { id: 3, result: { content: [{ text: 'still here' }] } }, 'the session goes on')
})

t.test('a session the gateway ends (an administrator, the per-user cap, unused) leaves the session table, not just its stream', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url }] })
  const init = await postJson(gw.mcpUrl('old'), INIT_BODY)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  const sessionsOnReadyz = async (): Promise<unknown> => ((await (await fetch(`${gw.baseUrl}/readyz`)).json()) as { servers?: Array<{ name?: string, sessions?: number }> }).servers?.find((s) => s.name === 'old')?.sessions
  t.equal(await sessionsOnReadyz(), 1, '/readyz counts the open session')
  const upstreamAdapter = gw.app.portcullis.upstreams.get('old')
  t.equal(await upstreamAdapter?.endSession?.(sessionId, 'test: ended by an administrator'), true, 'ended the way the admin API ends it')
  t.ok(await eventually(() => upstream.sessions.size === 0), 'its upstream stream closes')
  t.equal(await sessionsOnReadyz(), 0, 'and it is no longer counted')
})

t.test('servers[].maxSessions: upstream event streams on the server, all callers together (auth off: one anonymous user)', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url, maxSessions: 1 }] })
  const first = await postJson(gw.mcpUrl('old'), INIT_BODY)
  t.equal(first.status, 200, 'the first session opens')
  const second = await postJson(gw.mcpUrl('old'), INIT_BODY)
  t.equal(second.status, 503, 'the second: 503')
  t.match(second.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_BUSY' }, message: /server "old" has 1 sessions open \(servers\[\]\.maxSessions is 1\)/ } }, 'naming the cap')
  t.equal(upstream.sessions.size, 1, 'no upstream stream opened for it')
  const ended = await fetch(gw.mcpUrl('old'), { method: 'DELETE', headers: { 'mcp-session-id': first.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' } })
  t.equal(ended.status, 200)
  t.equal((await postJson(gw.mcpUrl('old'), INIT_BODY)).status, 200, 'a session ended frees its slot')
})

t.test('ids on the upstream connection are the gateway\'s: two requests numbered alike each get their own answer; a batch is split', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url, timeoutMs: 3_000 }] })
  const init = await postJson(gw.mcpUrl('old'), INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  const echo = (id: number | string, text: string) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text } } })
  const [a, b] = await Promise.all([postJson(gw.mcpUrl('old'), echo(5, 'first'), headers), postJson(gw.mcpUrl('old'), echo(5, 'second'), headers)])
  t.match(a.json, { id: 5, result: { content: [{ text: 'first' }] } }, 'the first, with the client\'s id')
  t.match(b.json, { id: 5, result: { content: [{ text: 'second' }] } }, 'the second, with the same id, its own answer')
  const batch = await postJson(gw.mcpUrl('old'), [echo('x', 'one'), echo(7, 'two')], headers)
  t.equal(batch.status, 200, 'a batch to a server that takes one message a POST')
  t.match(batch.json, [{ id: 'x', result: { content: [{ text: 'one' }] } }, { id: 7, result: { content: [{ text: 'two' }] } }], 'answered as a batch, in order, with the client\'s ids')
})

t.test('an endpoint event naming another origin is refused: no POST leaves for it', async (t) => {
  const elsewhere = await startRawServer(t, (_req, res) => res.writeHead(202).end())
  const hostileOrigins = [new URL(elsewhere.url).origin, elsewhere.url.replace('127.0.0.1', 'localhost')]
  for (const target of hostileOrigins) {
    const upstream = await startSseUpstream(t, { endpoint: `${new URL(target).origin}/messages?sessionId=x` })
    const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url }] })
    const init = await postJson(gw.mcpUrl('old'), INIT_BODY)
    t.equal(init.status, 502, `${new URL(target).origin}: initialize fails`)
    t.match(init.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
    t.equal(init.headers.get('mcp-session-id'), null, 'no session')
    t.match(gw.logs.text(), /sse upstream endpoint names another origin; refused/)
  }
  t.equal(elsewhere.requests, 0, 'the other origin never heard from the gateway')
})

t.test('a bridged session answers only the user and client that opened it', async (t) => {
  const password = 'correct horse battery staple'
  const passwordHash = await hashPassword(password)
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { auth: { users: [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }] }, servers: [{ name: 'old', transport: 'sse', url: upstream.url, maxSessionsPerUser: 1, identity: { header: 'X-Portcullis-Identity' } }] })
  const alice = await connectWithOAuth(t, gw.mcpUrl('old'), { username: 'alice', password, issuer: gw.baseUrl, oauth: new TestOAuthClient() })
  const bob = await connectWithOAuth(t, gw.mcpUrl('old'), { username: 'bob', password, issuer: gw.baseUrl, oauth: new TestOAuthClient() })
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'alice here' } })), 'alice here', 'Alice, through the real OAuth flow')

  // servers[].identity: the caller, signed, on the event stream and on every POST.
  const jwks = createRemoteJWKSet(new URL(`${gw.baseUrl}/oauth/jwks`))
  const signed = upstream.seen.filter((r) => r.method === 'GET' || r.method === 'POST')
  t.ok(signed.length >= 4 && signed.every((r) => typeof r.headers['x-portcullis-identity'] === 'string'), 'every upstream request carries the identity header')
  const claims = await Promise.all(signed.map(async (r) => verifyIdentity(r.headers['x-portcullis-identity'] as string, { jwks, issuer: gw.baseUrl, audience: upstream.url })))
  t.same([...new Set(claims.map((c) => c.preferred_username))].sort(), ['alice', 'bob'], 'verified against the gateway\'s keys, naming each caller')

  const call = { jsonrpc: '2.0', id: 'b-1', method: 'tools/call', params: { name: 'echo', arguments: { text: 'from bob' } } }
  const posts = upstream.seen.filter((r) => r.method === 'POST').length
  const foreign = await postJson(gw.mcpUrl('old'), call, { authorization: `Bearer ${bob.oauth.savedTokens?.access_token ?? ''}`, 'mcp-session-id': alice.transport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25' })
  t.equal(foreign.status, 404, 'Bob\'s token on Alice\'s session: 404')
  t.match(foreign.json, { id: 'b-1', error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
  t.equal(upstream.seen.filter((r) => r.method === 'POST').length, posts, 'nothing reached the upstream')
  t.equal(textOf(await bob.client.callTool({ name: 'echo', arguments: { text: 'bob here' } })), 'bob here', 'Bob has his own session')

  // maxSessionsPerUser 1: each session is an upstream connection, and Alice holds hers.
  const streams = upstream.sessions.size
  const second = await postJson(gw.mcpUrl('old'), INIT_BODY, { authorization: `Bearer ${alice.oauth.savedTokens?.access_token ?? ''}` })
  t.equal(second.status, 429, 'a second session beyond maxSessionsPerUser: 429')
  t.match(second.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_TOO_MANY_SESSIONS' } } })
  t.ok(second.headers.get('retry-after'), 'with Retry-After')
  t.equal(upstream.sessions.size, streams, 'no upstream stream was opened for it')

  // At the cap with an idle session: that one ends (its upstream stream closes), the new one opens.
  await alice.transport.terminateSession()
  await alice.client.close()
  const aliceAuth = { authorization: `Bearer ${alice.oauth.savedTokens?.access_token ?? ''}` }
  const idle = await postJson(gw.mcpUrl('old'), INIT_BODY, aliceAuth)
  t.equal(idle.status, 200)
  const idleHeaders = { ...aliceAuth, 'mcp-session-id': idle.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  t.equal((await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 2, method: 'tools/list' }, idleHeaders)).status, 200, 'used once, then idle')
  const before = upstream.sessions.size
  const next = await postJson(gw.mcpUrl('old'), INIT_BODY, aliceAuth)
  t.equal(next.status, 200, 'a new session at the cap replaces the idle one')
  t.ok(await eventually(() => upstream.sessions.size === before), 'the idle one\'s upstream stream closed (one out, one in)')
  t.equal((await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 3, method: 'tools/list' }, idleHeaders)).status, 404, 'and its id is gone')
  // With auth on every client request carried a bearer token: none of them reached the upstream.
  const sent = upstream.seen.filter((r) => r.method === 'GET' || r.method === 'POST')
  t.ok(sent.length >= 6, 'the streams and POSTs of both users went upstream')
  t.ok(sent.every((r) => r.headers.authorization === undefined), 'and no Authorization header with them: the client\'s token stays at the gateway')
})

t.test('an upstream refusing the stream is a 502, never a 401; one that names no endpoint in time, a 504', async (t) => {
  const refusing = await startRawServer(t, (_req, res) => res.writeHead(401, { 'www-authenticate': 'Bearer' }).end())
  const silent = await startRawServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(': no endpoint event, ever\n\n')
  })
  const gw = await startGateway(t, {
    servers: [
      { name: 'refusing', transport: 'sse', url: refusing.url },
      { name: 'silent', transport: 'sse', url: silent.url, timeoutMs: 300 },
    ],
  })
  const refused = await postJson(gw.mcpUrl('refusing'), INIT_BODY)
  t.equal(refused.status, 502, 'the gateway\'s own credential refused upstream: 502')
  t.equal(refused.headers.get('www-authenticate'), null, 'no challenge that would send the client into an OAuth dance')
  t.match(refused.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  const timedOut = await postJson(gw.mcpUrl('silent'), INIT_BODY)
  t.equal(timedOut.status, 504)
  t.match(timedOut.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT' } } })
  t.match(gw.logs.text(), /sse upstream refused its event stream/)
})

t.test('a server request with no client stream open is refused at once, not left to time out', async (t) => {
  const upstream = await startSseUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'old', transport: 'sse', url: upstream.url, timeoutMs: 5_000 }] })
  const init = await postJson(gw.mcpUrl('old'), { ...INIT_BODY, params: { ...INIT_BODY.params, capabilities: { elicitation: { form: {} } } } })
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  t.equal((await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status, 202)
  const asked = await postJson(gw.mcpUrl('old'), { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'ask', arguments: {} } }, headers)
  t.equal(asked.status, 200, 'the call is answered, not a 504 after timeoutMs')
  t.match(asked.json, { id: 2, result: { isError: true, content: [{ text: /the client has no stream open for server requests/ }] } }, 'the server got the refusal and said so')
  t.match(gw.logs.text(), /sse upstream request with no client stream open; refused/)
})
