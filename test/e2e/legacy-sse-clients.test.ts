// 2024-11-05 clients (the MCP SDK's SSEClientTransport) through /<server>/sse: a stdio server and a
// Streamable HTTP server, authorization on, two real users signed in through the real OAuth flow.
// Every legacy message is judged by the server's /mcp route: the same policy, errors, ownership and audit.
import t, { type Test } from 'tap'
import { setTimeout as delay } from 'node:timers/promises'
import * as http from 'node:http'
import { startSseMcpServer } from '../fixtures/sse-mcp-server.mjs'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { SseEventReader } from '../../src/upstreams/sse-events.js'
import { openRaw } from '../legacy-sse-helpers.js'
import { decodeJwt } from 'jose'
import { connectWithOAuth, HeadlessBrowser, TestOAuthClient } from '../oauth-helpers.js'
import { eventually, INIT_BODY, postJson, startGateway, startRawServer, startUpstream, stdioServer, textOf, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]
/** Each server denies one of its tools by policy. */
const DENIED: Record<string, string> = { st: 'increment', fx: 'slow' }
const LEGACY_INIT = { ...INIT_BODY, params: { ...INIT_BODY.params, protocolVersion: '2024-11-05' } }

interface SignedIn { readonly oauth: TestOAuthClient, readonly token: string, readonly mcpSession: string }

/** The real sign-in (login and consent pages, PKCE, DCR) for one server; the Streamable HTTP client it connected stays open. */
async function signIn (t: Test, gw: RunningGateway, server: string, username: string): Promise<SignedIn> {
  const oauth = new TestOAuthClient({ name: `${username}'s client` })
  const signed = await connectWithOAuth(t, gw.mcpUrl(server), { username, password: PASSWORD, issuer: gw.baseUrl, oauth })
  return { oauth, token: oauth.savedTokens?.access_token ?? '', mcpSession: signed.transport.sessionId ?? '' }
}

/** The SDK's 2024-11-05 client transport, authorized by the tokens the OAuth flow saved. */
async function connectLegacy (t: Test, gw: RunningGateway, server: string, oauth: TestOAuthClient): Promise<Client> {
  const client = new Client({ name: 'legacy-sse-test', version: '1.0.0' }, { capabilities: { elicitation: { form: {} } } })
  // A server's elicitation request comes on the legacy stream; the answer goes back as a POST.
  client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada' } }))
  await client.connect(new SSEClientTransport(new URL(`${gw.baseUrl}/${server}/sse`), { authProvider: oauth }))
  t.teardown(() => client.close())
  return client
}

t.test('SSE clients reach a stdio and an HTTP server through the gateway, authorized by the real OAuth flow', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: [stdioServer('st', { tools: { deny: [DENIED.st] } }), { name: 'fx', transport: 'http', url: upstream.url, tools: { deny: [DENIED.fx] } }],
  })
  for (const server of ['st', 'fx']) {
    const alice = await signIn(t, gw, server, 'alice')
    const client = await connectLegacy(t, gw, server, alice.oauth)
    const names = (await client.listTools()).tools.map((tool) => tool.name)
    t.ok(names.includes('echo'), `${server}: tools/list answered on the legacy stream`)
    t.notOk(names.includes(DENIED[server] ?? ''), `${server}: the list is filtered by the server's policy`)
    t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: `hello ${server}` } })), `hello ${server}`, `${server}: tools/call`)

    const changed = new Promise<boolean>((resolve) => client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve(true)))
    await client.callTool({ name: 'broadcast', arguments: {} })
    t.ok(await changed, `${server}: a server notification reaches the legacy stream`)
    t.equal(textOf(await client.callTool({ name: 'ask', arguments: {} })), 'accept:Ada', `${server}: an elicitation request reaches the client and its answer the server`)

    await t.rejects(client.callTool({ name: DENIED[server] ?? '', arguments: { ms: 1 } }), /HTTP 403/, `${server}: the SDK client is refused a denied tool`)
  }
})

t.test('a legacy message gets exactly the answer /mcp gives: denied tool, no token, another user\'s session', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['slow'] } }] })
  const alice = await signIn(t, gw, 'fx', 'alice')
  const bob = await signIn(t, gw, 'fx', 'bob')

  // No token: the challenge an OAuth client starts from, as /mcp's but naming the resource by the /sse URL.
  const [bareSse, bareMcp] = await Promise.all([
    fetch(`${gw.baseUrl}/fx/sse`, { headers: { accept: 'text/event-stream' } }),
    fetch(gw.mcpUrl('fx'), { headers: { accept: 'text/event-stream' } }),
  ])
  t.equal(bareSse.status, 401)
  t.equal(bareSse.status, bareMcp.status)
  const legacyMetadata = `${gw.baseUrl}/.well-known/oauth-protected-resource/fx/sse`
  t.equal(bareSse.headers.get('www-authenticate'), bareMcp.headers.get('www-authenticate')?.replace('/fx/mcp"', '/fx/sse"'), 'the challenge of /mcp, with the /sse metadata')
  t.match(bareSse.headers.get('www-authenticate'), `resource_metadata="${legacyMetadata}"`)
  t.same(await bareSse.json(), await bareMcp.json(), 'and the same body')
  const [sseDoc, mcpDoc] = await Promise.all([legacyMetadata, `${gw.baseUrl}/.well-known/oauth-protected-resource/fx/mcp`].map(async (url) => (await fetch(url)).json() as Promise<Record<string, unknown>>))
  t.same({ ...sseDoc, resource: undefined }, { ...mcpDoc, resource: undefined }, 'the /sse metadata describes the same protected resource')
  t.equal(sseDoc?.resource, `${gw.baseUrl}/fx/sse`, 'named by the URL its clients connect to')

  const legacy = await openRaw(t, `${gw.baseUrl}/fx/sse`, alice.token)
  t.match(legacy.endpoint, new RegExp(`^${gw.baseUrl}/fx/messages\\?sessionId=[0-9a-f-]{36}$`), 'the endpoint is /fx/messages?sessionId=…')
  const auth = { authorization: `Bearer ${alice.token}` }
  const init = await postJson(legacy.endpoint, LEGACY_INIT, auth)
  t.equal(init.status, 202, 'the POST is accepted')
  t.match(await legacy.next(), { id: 1, result: { protocolVersion: '2024-11-05' } }, 'initialize is answered on the stream')
  t.equal((await postJson(legacy.endpoint, { jsonrpc: '2.0', method: 'notifications/initialized' }, auth)).status, 202)

  const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'slow', arguments: { ms: 1 } } }
  const viaSse = await postJson(legacy.endpoint, call, auth)
  const viaMcp = await postJson(gw.mcpUrl('fx'), call, { ...auth, 'mcp-session-id': alice.mcpSession, 'mcp-protocol-version': '2025-11-25' })
  t.equal(viaSse.status, 403, 'a denied tool: 403')
  t.equal(viaSse.status, viaMcp.status)
  t.same(viaSse.json, viaMcp.json, 'with the same JSON-RPC error as /mcp')
  t.match(viaSse.json, { id: 7, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })

  const echo = await postJson(legacy.endpoint, { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo', arguments: { text: 'still fine' } } }, auth)
  t.equal(echo.status, 202)
  t.match(await legacy.next(), { id: 8, result: { content: [{ text: 'still fine' }] } }, 'the session goes on after a refusal')

  // Bob's valid token on Alice's legacy session: the answer /mcp gives for a session that is not yours.
  const foreign = { jsonrpc: '2.0', id: 'b-1', method: 'tools/call', params: { name: 'echo', arguments: { text: 'from bob' } } }
  const bobOnSse = await postJson(legacy.endpoint, foreign, { authorization: `Bearer ${bob.token}` })
  const bobOnMcp = await postJson(gw.mcpUrl('fx'), foreign, { authorization: `Bearer ${bob.token}`, 'mcp-session-id': alice.mcpSession, 'mcp-protocol-version': '2025-11-25' })
  t.equal(bobOnSse.status, 404, 'another user\'s token on the session: 404')
  t.same(bobOnSse.json, bobOnMcp.json, 'as /mcp answers for another user\'s session')
  t.equal(upstream.seen.filter((r) => JSON.stringify(r.body ?? '').includes('from bob')).length, 0, 'nothing of Bob\'s reached the upstream')

  const noToken = await postJson(legacy.endpoint, foreign)
  t.equal(noToken.status, 401, 'a POST without a token: 401')
  t.match(noToken.headers.get('www-authenticate'), `resource_metadata="${legacyMetadata}"`)

  // The audit record of the legacy call is the /mcp route's own.
  t.ok(gw.audit.lines.some((line) => { const r = JSON.parse(line); return r.method === 'tools/call' && r.jsonrpcId === 7 && r.decision === 'denied' && r.user?.username === 'alice' }), 'the denied legacy call is audited')

  // The stream ends: the Streamable HTTP session behind it ends upstream too.
  const deletes = (): number => upstream.seen.filter((r) => r.method === 'DELETE').length
  const before = deletes()
  legacy.close()
  t.ok(await eventually(() => deletes() > before), 'closing the event stream DELETEs the upstream session')
  const gone = await postJson(legacy.endpoint, foreign, auth)
  t.equal(gone.status, 404, 'and the legacy session is gone')
})

t.test('the SDK\'s SSE client runs the whole OAuth flow itself from the /sse challenge', async (t) => {
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [stdioServer('st'), stdioServer('other')] })
  const url = new URL(`${gw.baseUrl}/st/sse`)
  const oauth = new TestOAuthClient()
  const first = new SSEClientTransport(url, { authProvider: oauth })
  await t.rejects(new Client({ name: 'legacy-sse-test', version: '1.0.0' }).connect(first), /Unauthorized/, 'the first connect: 401, and the SDK starts the flow')
  if (oauth.authorizationUrl === undefined) throw new Error('no authorization URL')
  t.equal(oauth.authorizationUrl.searchParams.get('resource'), url.href, 'the client asks for the resource its URL names')
  const callback = await new HeadlessBrowser().authorize(oauth.authorizationUrl, { username: 'alice', password: PASSWORD })
  t.equal(callback.searchParams.get('state'), oauth.stateValue)
  await first.finishAuth(callback.searchParams.get('code') ?? '')
  const token = oauth.savedTokens?.access_token ?? ''
  t.equal(decodeJwt(token).aud, gw.mcpUrl('st'), 'the token is the server\'s own (its /mcp resource)')

  const client = await connectLegacy(t, gw, 'st', oauth)
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'signed in over SSE' } })), 'signed in over SSE')
  const mcp = await postJson(gw.mcpUrl('st'), INIT_BODY, { authorization: `Bearer ${token}` })
  t.equal(mcp.status, 200, 'the same token reaches the server\'s /mcp')
  const other = await fetch(`${gw.baseUrl}/other/sse`, { headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` } })
  t.equal(other.status, 401, 'and no other server')
  await other.arrayBuffer()
})

t.test('legacy sessions count against the user\'s session cap', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, maxSessionsPerUser: 1 }] })
  const alice = await signIn(t, gw, 'fx', 'alice')
  await openRaw(t, `${gw.baseUrl}/fx/sse`, alice.token)
  const second = await fetch(`${gw.baseUrl}/fx/sse`, { headers: { accept: 'text/event-stream', authorization: `Bearer ${alice.token}` } })
  t.equal(second.status, 429, 'a second stream beyond maxSessionsPerUser: 429')
  t.match(await second.json(), { error: { data: { code: 'PORTCULLIS_ERR_TOO_MANY_SESSIONS' } } })
  t.ok(second.headers.get('retry-after'))
})

t.test('shutdown ends open legacy streams instead of waiting for them', async (t) => {
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [stdioServer('st')] })
  const alice = await signIn(t, gw, 'st', 'alice')
  const legacy = await openRaw(t, `${gw.baseUrl}/st/sse`, alice.token)
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT, { authorization: `Bearer ${alice.token}` })).status, 202)
  await legacy.next()
  // A bound on a hang, not a timing: without the stream ended, close() never returns.
  const isClosed = await Promise.race([gw.app.close().then(() => true), delay(5_000, false, { ref: false })])
  t.ok(isClosed, 'close() returns with a legacy stream open')
  await t.rejects(legacy.next(), 'the stream was ended')
})

t.test('the /mcp route\'s Origin check, body limit and rate limits answer legacy POSTs, with the same errors', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    bodyLimit: '1kb',
    rateLimits: { sessionCost: 0 },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '2/min' } } }],
  })
  // A browser-based old client's preflight, as /mcp answers one.
  const preflight = await fetch(`${gw.baseUrl}/fx/messages?sessionId=x`, { method: 'OPTIONS', headers: { origin: gw.baseUrl, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } })
  t.equal(preflight.status, 204, 'a preflight from an allowed Origin')
  t.equal(preflight.headers.get('access-control-allow-origin'), gw.baseUrl)
  t.equal(preflight.headers.get('access-control-allow-methods'), 'POST, OPTIONS')
  t.equal(preflight.headers.get('access-control-allow-headers'), 'authorization, content-type')
  const foreignPreflight = await fetch(`${gw.baseUrl}/fx/sse`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } })
  t.equal(foreignPreflight.status, 403, 'and none from a foreign one')
  await foreignPreflight.arrayBuffer()

  const stream = await fetch(`${gw.baseUrl}/fx/sse`, { headers: { accept: 'text/event-stream', origin: 'https://evil.example' } })
  t.equal(stream.status, 403, 'a foreign Origin cannot open the stream')
  t.match(await stream.json(), { error: { data: { code: 'PORTCULLIS_ERR_FORBIDDEN_ORIGIN' } } })

  const legacy = await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT)).status, 202)
  await legacy.next()
  const call = (text: string): Record<string, unknown> => ({ jsonrpc: '2.0', id: text, method: 'tools/call', params: { name: 'echo', arguments: { text } } })
  const same = async (what: string, body: unknown, headers: Record<string, string> = {}): Promise<void> => {
    const viaSse = await postJson(legacy.endpoint, body, headers)
    const viaMcp = await postJson(gw.mcpUrl('fx'), body, headers)
    t.equal(viaSse.status, viaMcp.status, `${what}: status ${viaMcp.status} on both`)
    t.same(viaSse.json, viaMcp.json, `${what}: the same error`)
    t.equal(viaSse.headers.get('retry-after'), viaMcp.headers.get('retry-after'), `${what}: the same Retry-After`)
  }
  await same('a foreign Origin', call('o'), { origin: 'https://evil.example' })
  await same('a body over bodyLimit', call('x'.repeat(2048)))

  t.equal((await postJson(legacy.endpoint, call('one'))).status, 202)
  t.equal((await postJson(legacy.endpoint, call('two'))).status, 202)
  const limited = await postJson(legacy.endpoint, call('three'))
  t.equal(limited.status, 429, 'the tool\'s rate limit counts legacy calls')
  t.match(limited.json, { id: 'three', error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' } } })
  t.ok(limited.headers.get('retry-after'), 'with Retry-After')
  const viaMcp = await postJson(gw.mcpUrl('fx'), call('three'))
  t.equal(viaMcp.status, 429, 'and the same budget as /mcp\'s')
  t.same(limited.json, viaMcp.json, 'the same error')
})

t.test('a legacy session whose session behind it is gone ends its stream, so the client connects again', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const legacy = await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT)).status, 202)
  await legacy.next()
  for (const session of upstream.sessions.values()) await session.close()
  const call = { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { text: 'anyone?' } } }
  const gone = await postJson(legacy.endpoint, call)
  t.equal(gone.status, 404, 'the upstream\'s 404, as /mcp passes it')
  // Bounded: a stream left open would wait forever for its next event.
  await t.rejects(Promise.race([legacy.next(), delay(5_000, 'still open', { ref: false })]), /stream ended/, 'and the legacy stream ends')
  t.equal((await postJson(legacy.endpoint, call)).status, 404, 'the legacy session is gone too')
})

t.test('a legacy client that does not read its stream: the session ends past one message unread, the gateway does not buffer for it', async (t) => {
  const upstream = await startSseMcpServer()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'old', transport: 'sse', url: upstream.url, maxMessageBytes: '64kb' }] })
  // The event stream, read until its endpoint event, then never again.
  const { stream, endpoint } = await new Promise<{ stream: http.IncomingMessage, endpoint: string }>((resolve, reject) => {
    http.get(`${gw.baseUrl}/old/sse`, { headers: { accept: 'text/event-stream' } }, (res) => {
      const events = new SseEventReader()
      const onData = (chunk: Buffer): void => {
        const found = events.push(chunk).find((e) => e.event === 'endpoint')
        if (found === undefined) return
        res.off('data', onData)
        res.pause()
        resolve({ stream: res, endpoint: new URL(found.data, gw.baseUrl).href })
      }
      res.on('data', onData)
    }).once('error', reject)
  })
  t.equal((await postJson(endpoint, LEGACY_INIT)).status, 202, 'initialize taken')
  t.equal((await postJson(endpoint, { jsonrpc: '2.0', method: 'notifications/initialized' })).status, 202)
  // 12 MB of notifications while the call runs: the session ends under it, so its POST gets the 502 of a session gone.
  const flood = await postJson(endpoint, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'flood', arguments: { count: 400, size: 30_000 } } })
  t.match(flood.json, { id: 2, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } }, 'the flooding call fails with its session')
  t.ok(await eventually(() => gw.logs.text().includes('legacy sse client not reading; session closed'), 10_000), 'logged')
  const closed = new Promise<boolean>((resolve) => {
    stream.once('close', () => resolve(true))
    setTimeout(() => resolve(false), 10_000).unref()
  })
  stream.resume()
  t.ok(await closed, 'the stream is closed')
  t.ok(await eventually(() => upstream.sessions.size === 0), 'and the session behind it ended')
  t.equal((await postJson(endpoint, { jsonrpc: '2.0', id: 3, method: 'tools/list' })).status, 404, 'its sessionId is gone')
})

t.test('two initialize POSTs racing on one legacy session: one opens the session behind it, the other is refused', async (t) => {
  const upstream = await startSseMcpServer()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'old', transport: 'sse', url: upstream.url }] })
  const legacy = await openRaw(t, `${gw.baseUrl}/old/sse`, '')
  const answers = await Promise.all([postJson(legacy.endpoint, LEGACY_INIT), postJson(legacy.endpoint, { ...LEGACY_INIT, id: 2 })])
  t.same(answers.map((a) => a.status).sort(), [202, 400], 'one taken, one refused')
  t.match(answers.find((a) => a.status === 400)?.json, { error: { data: { code: 'PORTCULLIS_ERR_INVALID_REQUEST' }, message: /an initialize is in flight on this session/ } }, 'saying why')
  t.match(await legacy.next(), { result: { serverInfo: { name: 'sse-fixture' } } }, 'the taken one is answered on the stream')
  t.equal(upstream.sessions.size, 1, 'one upstream session: none leaked')
  legacy.close()
  t.ok(await eventually(() => upstream.sessions.size === 0), 'and it ends with the stream')
})

t.test('an event without data (a priming event) is skipped, and the legacy stream ends when the session\'s server stream does', async (t) => {
  // A hand-written Streamable HTTP upstream: the SDK's server sends a priming event only to
  // 2025-11-25 clients with an event store, and closes a GET stream only when its session ends.
  let serverStream: http.ServerResponse | undefined
  const upstream = await startRawServer(t, (req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(': open\n\n')
      serverStream = res
      return
    }
    if (req.method !== 'POST') return void res.writeHead(200).end()
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const message = JSON.parse(Buffer.concat(chunks).toString()) as { id?: number, method: string }
      if (message.id === undefined) return void res.writeHead(202).end()
      res.writeHead(200, { 'content-type': 'text/event-stream', 'mcp-session-id': 's-1' })
      const result = message.method === 'initialize' ? { protocolVersion: '2024-11-05', capabilities: {}, serverInfo: { name: 'raw', version: '1' } } : {}
      res.end(`id: prime-1\ndata: \n\nevent: message\nid: 2\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: message.id, result })}\n\n`)
    })
  })
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'raw', transport: 'http', url: upstream.url }] })
  const legacy = await openRaw(t, `${gw.baseUrl}/raw/sse`, '')
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT)).status, 202)
  t.match(await legacy.next(), { id: 1, result: { serverInfo: { name: 'raw' } } }, 'the answer after a priming event reaches the legacy stream')
  t.notMatch(gw.logs.text(), /legacy answer relay failed/, 'the priming event is not a failure')
  t.ok(await eventually(() => serverStream !== undefined), 'the session\'s server stream is open')
  serverStream?.end()
  await t.rejects(legacy.next(), /stream ended/, 'the legacy stream ends with it')
  t.match(gw.logs.text(), /legacy server stream ended; session closed/, 'logged')
})

t.test('a policy 403 on a legacy POST challenges with the /sse metadata, as the legacy 401 does', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { scopes: ['fx:write'] } } }] })
  const alice = await signIn(t, gw, 'fx', 'alice')
  const legacy = await openRaw(t, `${gw.baseUrl}/fx/sse`, alice.token)
  const auth = { authorization: `Bearer ${alice.token}` }
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT, auth)).status, 202)
  await legacy.next()
  const denied = await postJson(legacy.endpoint, { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, auth)
  t.equal(denied.status, 403, 'a tool needing a scope the token lacks: 403')
  const challenge = denied.headers.get('www-authenticate') ?? ''
  t.match(challenge, /error="insufficient_scope"/, 'an insufficient_scope challenge')
  t.match(challenge, `resource_metadata="${gw.baseUrl}/.well-known/oauth-protected-resource/fx/sse"`, 'naming the /sse metadata, the resource this client knows')
  t.notMatch(challenge, '/fx/mcp"', 'not the /mcp one')
})

t.test('opening a legacy stream is charged to the caller\'s budget for the server: anonymous callers cannot open them without limit', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, rateLimit: '2/min' }] })
  const opened: Response[] = []
  const abort = new AbortController()
  t.teardown(() => abort.abort())
  for (let i = 0; i < 3; i++) opened.push(await fetch(`${gw.baseUrl}/fx/sse`, { headers: { accept: 'text/event-stream' }, signal: abort.signal }))
  t.same(opened.map((r) => r.status), [200, 200, 429], 'two streams under 2/min, the third refused')
  const refused = opened[2]
  t.ok(Number(refused?.headers.get('retry-after')) >= 1, 'with Retry-After')
  t.match(await refused?.json(), { error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' }, message: /rate limit for server "fx"/ } }, 'the /mcp route\'s rate-limit error')
})

t.test('a legacy stream that sends no initialize is closed after a tenth of idleTimeoutMs; one that did lives on', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, idleTimeoutMs: 3_000 }] })
  const silent = await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
  const used = await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
  t.equal((await postJson(used.endpoint, LEGACY_INIT)).status, 202)
  t.match(await used.next(), { id: 1, result: {} }, 'initialized')
  await t.rejects(silent.next(), /stream ended/, 'the silent stream is closed (300 ms)')
  t.match(gw.logs.text(), /legacy sse session sent no initialize; closed/, 'logged')
  t.equal((await postJson(silent.endpoint, LEGACY_INIT)).status, 404, 'its sessionId is gone')
  await delay(500)
  t.equal((await postJson(used.endpoint, { jsonrpc: '2.0', id: 2, method: 'tools/list' })).status, 202, 'the initialized one goes on past the deadline')
  t.match(await used.next(), { id: 2, result: { tools: [] } })
})

t.test('servers[].maxLegacySessions: legacy streams on a server, all callers together (auth off: one anonymous user)', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, maxLegacySessions: 2 }] })
  const first = await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
  await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
  const third = await fetch(`${gw.baseUrl}/fx/sse`, { headers: { accept: 'text/event-stream' } })
  t.equal(third.status, 503, 'the third stream: 503')
  t.equal(third.headers.get('retry-after'), '2', 'with Retry-After')
  t.match(await third.json(), { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_BUSY' }, message: /server "fx" has 2 2024-11-05 event streams open \(servers\[\]\.maxLegacySessions is 2\)/ } }, 'naming the cap')
  first.close()
  t.ok(await eventually(async () => {
    const again = await fetch(`${gw.baseUrl}/fx/sse`, { headers: { accept: 'text/event-stream' }, signal: AbortSignal.timeout(2_000) })
    const isOpen = again.status === 200
    await again.body?.cancel()
    return isOpen
  }), 'a stream closed frees its slot')
})

t.test('the session\'s protocol version is the one its initialize answer names, not one any later answer carries', async (t) => {
  // A hand-written upstream whose tool result carries a protocolVersion field of its own.
  const versions: string[] = []
  const upstream = await startRawServer(t, (req, res) => {
    if (req.method !== 'POST') return void res.writeHead(405).end()
    versions.push(String(req.headers['mcp-protocol-version'] ?? ''))
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const message = JSON.parse(Buffer.concat(chunks).toString()) as { id?: number, method: string }
      if (message.id === undefined) return void res.writeHead(202).end()
      const result = message.method === 'initialize'
        ? { protocolVersion: '2024-11-05', capabilities: {}, serverInfo: { name: 'raw', version: '1' } }
        : { content: [{ type: 'text', text: 'ok' }], protocolVersion: '2025-06-18' }
      res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 's-1' })
      res.end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result }))
    })
  })
  const gw = await startGateway(t, { auth: { enabled: false }, servers: [{ name: 'raw', transport: 'http', url: upstream.url }] })
  const legacy = await openRaw(t, `${gw.baseUrl}/raw/sse`, '')
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT)).status, 202)
  await legacy.next()
  for (const id of [2, 3]) {
    t.equal((await postJson(legacy.endpoint, { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'x', arguments: {} } })).status, 202)
    t.match(await legacy.next(), { id, result: { protocolVersion: '2025-06-18' } }, `call ${id - 1}: its answer names a protocolVersion`)
  }
  t.same(versions.slice(1), ['2024-11-05', '2024-11-05'], 'every request after initialize carries the version initialize agreed')
})

t.test('a legacy session belongs to its opener from the start: another user\'s POST before initialize is refused', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const alice = await signIn(t, gw, 'fx', 'alice')
  const bob = await signIn(t, gw, 'fx', 'bob')
  const legacy = await openRaw(t, `${gw.baseUrl}/fx/sse`, alice.token)
  const initializes = upstream.seen.filter((r) => JSON.stringify(r.body ?? '').includes('"initialize"')).length
  const bobFirst = await postJson(legacy.endpoint, LEGACY_INIT, { authorization: `Bearer ${bob.token}` })
  t.equal(bobFirst.status, 404, 'Bob\'s initialize on Alice\'s new session: 404, as for a session that does not exist')
  t.match(bobFirst.json, { error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
  t.equal(upstream.seen.filter((r) => JSON.stringify(r.body ?? '').includes('"initialize"')).length, initializes, 'nothing of Bob\'s reached the upstream')
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT, { authorization: `Bearer ${alice.token}` })).status, 202, 'Alice initializes her session')
  t.match(await legacy.next(), { id: 1, result: {} }, 'and gets the answer on her stream')
})
