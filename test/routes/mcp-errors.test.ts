// Every bad input and upstream fault, with its exact HTTP status and JSON-RPC error.
import t from 'tap'
import { INIT_BODY, MCP_HEADERS, postJson, startGateway, startRawServer, startUpstream, freePort, stdioServer } from '../helpers.js'

const META = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} }

t.test('client faults (400/413/415/403/404/405) never reach the upstream', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { bodyLimit: '2kb', servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const url = gw.mcpUrl('fx')

  const parse = await postJson(url, '{"jsonrpc": "2.0", "id": 1, "method": ')
  t.equal(parse.status, 400)
  t.same(parse.json, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error: the request body is not valid JSON', data: { code: 'PORTCULLIS_ERR_PARSE' } } })

  const notRpc = await postJson(url, { id: 4, method: 'tools/list' })
  t.equal(notRpc.status, 400)
  t.same(notRpc.json, { jsonrpc: '2.0', id: 4, error: { code: -32600, message: 'Invalid Request: "jsonrpc" must be "2.0"', data: { code: 'PORTCULLIS_ERR_INVALID_REQUEST' } } })

  const noName = await postJson(url, { jsonrpc: '2.0', id: 'c', method: 'tools/call', params: {} })
  t.equal(noName.status, 400)
  t.match(noName.json, { id: 'c', error: { code: -32602 } })

  const mismatch = await postJson(url, { jsonrpc: '2.0', id: 11, method: 'tools/call', params: { name: 'echo', arguments: {}, _meta: META } },
    { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'delete_all' })
  t.equal(mismatch.status, 400)
  t.same(mismatch.json, {
    jsonrpc: '2.0',
    id: 11,
    error: { code: -32020, message: "Header mismatch: Mcp-Name header value 'delete_all' does not match body value 'echo'", data: { code: 'PORTCULLIS_ERR_HEADER_MISMATCH' } },
  })

  const big = await postJson(url, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x'.repeat(4096) } } })
  t.equal(big.status, 413)
  t.match(big.json, { id: null, error: { code: -32600, data: { code: 'PORTCULLIS_ERR_BODY_TOO_LARGE' } } })

  const media = await fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' })
  t.equal(media.status, 415)
  t.match(await media.json(), { error: { code: -32600, data: { code: 'PORTCULLIS_ERR_UNSUPPORTED_MEDIA_TYPE' } } })

  const origin = await postJson(url, INIT_BODY, { origin: 'http://evil.example' })
  t.equal(origin.status, 403)
  t.same(origin.json, { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Forbidden: Origin is not allowed', data: { code: 'PORTCULLIS_ERR_FORBIDDEN_ORIGIN' } } })

  const unknown = await postJson(gw.mcpUrl('nope'), INIT_BODY)
  t.equal(unknown.status, 404)
  t.match(unknown.json, { error: { code: -32600, data: { code: 'PORTCULLIS_ERR_UNKNOWN_SERVER' } } })

  const put = await fetch(url, { method: 'PUT', headers: MCP_HEADERS, body: '{}' })
  t.equal(put.status, 405)
  t.equal(put.headers.get('allow'), 'GET, POST, DELETE, OPTIONS')
  t.match(await put.json(), { error: { data: { code: 'PORTCULLIS_ERR_METHOD_NOT_ALLOWED' } } })

  const notFound = await fetch(`${gw.baseUrl}/no/such/route`)
  t.equal(notFound.status, 404)

  t.equal(upstream.seen.length, 0, 'none of these reached the upstream')
})

t.test('Origin allow-list: own origin, configured origins, any-port patterns, CORS headers and preflight', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { allowedOrigins: ['https://app.example.com', 'http://localhost:*'], servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const url = gw.mcpUrl('fx')
  for (const origin of [gw.baseUrl, 'https://app.example.com', 'http://localhost:6274']) {
    const res = await postJson(url, INIT_BODY, { origin })
    t.equal(res.status, 200, origin)
    t.equal(res.headers.get('access-control-allow-origin'), origin)
    t.match(res.headers.get('access-control-expose-headers'), /mcp-session-id/)
  }
  for (const origin of ['https://app.example.com.evil.net', 'http://localhost.evil.net:80', 'null', 'https://localhost:6274']) {
    t.equal((await postJson(url, INIT_BODY, { origin })).status, 403, origin)
  }
  const preflight = await fetch(url, { method: 'OPTIONS', headers: { origin: 'http://localhost:6274', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization, mcp-session-id' } })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers.get('access-control-allow-origin'), 'http://localhost:6274')
  t.equal(preflight.headers.get('access-control-allow-headers'), 'content-type, authorization, mcp-session-id')
  t.match(preflight.headers.get('access-control-allow-methods'), /POST/)
  const badPreflight = await fetch(url, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } })
  t.equal(badPreflight.status, 403)
})

t.test('upstream unreachable: 502 with the request id; the cause is logged, not sent', async (t) => {
  const port = await freePort() // nothing listens here
  const gw = await startGateway(t, { servers: [{ name: 'down', transport: 'http', url: `http://127.0.0.1:${port}/mcp` }] })
  const res = await postJson(gw.mcpUrl('down'), { ...INIT_BODY, id: 'init-7' })
  t.equal(res.status, 502)
  t.same(res.json, { jsonrpc: '2.0', id: 'init-7', error: { code: -32603, message: 'Upstream MCP server is unavailable', data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  t.notMatch(res.text, /ECONNREFUSED|127\.0\.0\.1/, 'no internal detail in the response')
  t.match(gw.logs.text(), /"msg":"upstream request failed"/)
  t.match(gw.logs.text(), /ECONNREFUSED/, 'the cause is in the log')

  const batch = await postJson(gw.mcpUrl('down'), [{ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { jsonrpc: '2.0', method: 'notifications/x' }, { jsonrpc: '2.0', id: 2, method: 'ping' }])
  t.equal(batch.status, 502)
  t.same((batch.json as Array<{ id: unknown }>).map((e) => e.id), [1, 2], 'a batch gets one error per request id')

  const note = await postJson(gw.mcpUrl('down'), { jsonrpc: '2.0', method: 'notifications/initialized' })
  t.equal(note.status, 502)
  t.match(note.json, { id: null, error: { code: -32603 } })
})

t.test('upstream timeout: 504 with the request id', async (t) => {
  const silent = await startRawServer(t, () => { /* never answers */ })
  const gw = await startGateway(t, { servers: [{ name: 'slow', transport: 'http', url: silent.url, timeoutMs: 150 }] })
  const res = await postJson(gw.mcpUrl('slow'), { ...INIT_BODY, id: 99 })
  t.equal(res.status, 504)
  t.same(res.json, { jsonrpc: '2.0', id: 99, error: { code: -32603, message: 'Upstream MCP server did not answer in time', data: { code: 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT' } } })
  t.match(gw.logs.text(), /UND_ERR_HEADERS_TIMEOUT/)
})

t.test('an SSE response that goes silent ends with a JSON-RPC error event for the pending request', async (t) => {
  const stalls = await startRawServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\n')
    // ...and then nothing more, ever.
  })
  const gw = await startGateway(t, { servers: [{ name: 'stall', transport: 'http', url: stalls.url, timeoutMs: 150 }] })
  const res = await postJson(gw.mcpUrl('stall'), { jsonrpc: '2.0', id: 'call-1', method: 'tools/call', params: { name: 'x' } })
  t.equal(res.status, 200)
  const events = res.text.split('\n\n').filter((e) => e.trim() !== '').map((e) => JSON.parse(e.split('data: ')[1] ?? 'null'))
  t.equal(events.length, 2)
  t.match(events[0], { method: 'notifications/progress' })
  t.same(events[1], { jsonrpc: '2.0', id: 'call-1', error: { code: -32603, message: 'Upstream MCP server did not answer in time', data: { code: 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT' } } })
})

t.test('an upstream that refuses the gateway\'s own credentials is a 502, never a 401', async (t) => {
  const refuses = await startRawServer(t, (_req, res) => {
    res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' })
    res.end('{"error":"invalid_token"}')
  })
  const gw = await startGateway(t, { servers: [{ name: 'locked', transport: 'http', url: refuses.url, headers: { Authorization: 'Bearer wrong' } }] })
  const res = await postJson(gw.mcpUrl('locked'), { ...INIT_BODY, id: 3 })
  t.equal(res.status, 502)
  t.equal(res.headers.get('www-authenticate'), null, 'no challenge: the client has nothing to fix')
  t.match(res.json, { id: 3, error: { code: -32603, message: /refused the gateway's credentials/ } })
  t.match(gw.logs.text(), /"msg":"upstream rejected the gateway credentials"/)
})

t.test('upstream answers pass back unchanged: status, JSON-RPC errors and hop-by-hop headers dropped', async (t) => {
  const teapot = await startRawServer(t, (_req, res) => {
    res.writeHead(400, { 'content-type': 'application/json', 'set-cookie': 'upstream=1', 'x-upstream': 'yes', 'x-accel-redirect': '/metrics/', 'x-sendfile': '/etc/passwd' })
    res.end('{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}')
  })
  const gw = await startGateway(t, { servers: [{ name: 'up', transport: 'http', url: teapot.url }] })
  const res = await postJson(gw.mcpUrl('up'), { jsonrpc: '2.0', id: 1, method: 'tools/list' })
  t.equal(res.status, 400)
  t.equal(res.text, '{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}')
  t.equal(res.headers.get('x-upstream'), 'yes')
  t.equal(res.headers.get('set-cookie'), null, 'upstream cookies do not land on the gateway origin')
  t.equal(res.headers.get('x-accel-redirect'), null, 'an upstream cannot steer nginx in front of the gateway')
  t.equal(res.headers.get('x-sendfile'), null)
})

t.test('/healthz and /readyz', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const gw = await startGateway(t, {
    servers: [
      { name: 'up', transport: 'http', url: upstream.url },
      { name: 'down', transport: 'http', url: `http://127.0.0.1:${port}/mcp` },
    ],
  })
  const health = await fetch(`${gw.baseUrl}/healthz`)
  t.equal(health.status, 200)
  t.same(await health.json(), { status: 'ok' })
  const ready = await fetch(`${gw.baseUrl}/readyz`)
  t.equal(ready.status, 200, 'one upstream down degrades the gateway but it can still serve')
  const body = await ready.json() as { status: string, servers: Array<{ name: string, isReachable: boolean, error?: string }> }
  t.equal(body.status, 'degraded')
  t.match(body.servers, [{ name: 'up', transport: 'http', isReachable: true }, { name: 'down', transport: 'http', isReachable: false, error: 'ECONNREFUSED' }])
  t.match(body, { store: { kind: 'memory', isReachable: true } })
})

t.test('/readyz: the detail for the machine itself and for metrics.bearerToken; anyone else gets the status alone', async (t) => {
  const upstream = await startUpstream(t)
  const token = 'metrics-token-0123456789'
  const gw = await startGateway(t, { trustProxy: ['127.0.0.1', '10.0.0.0/8'], metrics: { bearerToken: token }, servers: [stdioServer('st'), { name: 'up', transport: 'http', url: upstream.url }] })
  const ready = async (remoteAddress: string, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await gw.app.inject({ url: '/readyz', remoteAddress, headers })
    return { status: res.statusCode, body: res.json() }
  }
  const remote = await ready('10.0.0.7')
  t.equal(remote.status, 200, 'the same status code: a probe from elsewhere works')
  t.same(remote.body, { status: 'ready' }, 'no servers, processes, commands or store errors')
  t.same((await ready('10.0.0.7', { authorization: 'Bearer wrong-token-0123456789' })).body, { status: 'ready' }, 'a wrong token: the status alone')
  t.match((await ready('10.0.0.7', { authorization: `Bearer ${token}` })).body, { status: 'ready', store: { kind: 'memory' }, servers: [{ name: 'st' }, { name: 'up' }] }, 'metrics.bearerToken: the detail')
  t.same((await ready('10.0.0.7', { 'x-forwarded-for': '127.0.0.1' })).body, { status: 'ready' }, 'a trusted private peer naming 127.0.0.1 as the client: the status alone')
  for (const local of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) t.match((await ready(local)).body, { servers: [{ name: 'st' }, { name: 'up' }] }, `${local}: the detail`)

  // Through a proxy on this machine (trustProxy), the client it names decides, not the proxy's address.
  const proxied = await fetch(`${gw.baseUrl}/readyz`, { headers: { 'x-forwarded-for': '203.0.113.9' } })
  t.same(await proxied.json(), { status: 'ready' }, 'a remote client through a local proxy: the status alone')
  t.match(await (await fetch(`${gw.baseUrl}/readyz`)).json(), { servers: [{ name: 'st' }, { name: 'up' }] }, 'the machine itself, straight: the detail')
})

t.test('/readyz with the store unreachable: degraded, still 200 (issued tokens keep working); 503 only when shutting down', async (t) => {
  const upstream = await startUpstream(t)
  const redisPort = await freePort() // nothing listens there
  const gw = await startGateway(t, { store: { redis: `redis://:hunter2-store-password@127.0.0.1:${redisPort}` }, rateLimits: { onStoreError: 'allow' }, servers: [{ name: 'up', transport: 'http', url: upstream.url }] })
  const ready = await fetch(`${gw.baseUrl}/readyz`)
  t.equal(ready.status, 200)
  const body = await ready.json() as { status: string, store: { kind: string, isReachable: boolean, error?: string } }
  t.equal(body.status, 'degraded')
  t.equal(body.store.kind, 'redis')
  t.equal(body.store.isReachable, false)
  t.type(body.store.error, 'string')
  t.notMatch(JSON.stringify(body), 'hunter2', 'no credentials in the body')
  t.equal((await postJson(gw.mcpUrl('up'), INIT_BODY)).status, 200, 'and it serves')
  gw.app.portcullis.isClosing = true
  const closing = await fetch(`${gw.baseUrl}/readyz`)
  t.equal(closing.status, 503)
  t.same(await closing.json(), { status: 'shutting_down' })
  gw.app.portcullis.isClosing = false
})
