// Request methods sent as notifications (`tools/call` without an id) meet policy and rate limits
// like requests: a denied one is dropped (never forwarded), audited, and answered 202 like any
// notification. GET and DELETE carry no body. HTTP upstream (the fixture records bodies) and a
// stdio upstream (the fixture logs each message it handles on stderr, which the gateway logs).
import t from 'tap'
import { request as httpRequest } from 'node:http'
import { eventually, INIT_BODY, postJson, startGateway, startUpstream, stdioServer } from '../helpers.js'

const TOOLS = { deny: ['big', 'crash'] }

async function session (url: string): Promise<Record<string, string>> {
  const init = await postJson(url, INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)
  return headers
}

const records = (lines: string[]): Array<Record<string, unknown>> => lines.map((l) => JSON.parse(l) as Record<string, unknown>)

t.test('HTTP upstream: a denied tools/call notification is dropped, audited and answered 202; allowed ones pass', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: TOOLS }] })
  const headers = await session(gw.mcpUrl('fx'))

  const denied = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', method: 'tools/call', params: { name: 'big', arguments: { bytes: 'denied-note' } } }, headers)
  t.equal(denied.status, 202, 'the client gets what any notification gets')
  t.equal(denied.text, '')
  const allowed = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', method: 'tools/call', params: { name: 'echo', arguments: { text: 'allowed-note' } } }, headers)
  t.equal(allowed.status, 202)

  const batch = await postJson(gw.mcpUrl('fx'), [
    { jsonrpc: '2.0', method: 'tools/call', params: { name: 'big', arguments: { bytes: 'denied-in-batch' } } },
    { jsonrpc: '2.0', id: 9, method: 'ping' },
  ], { ...headers, 'mcp-protocol-version': '2025-03-26' })
  t.equal(batch.status, 200)
  t.match(batch.text, /"id":9,"result":\{\}|"result":\{\},"jsonrpc":"2.0","id":9/, 'the batch\'s request is answered')
  t.notMatch(batch.text, /PORTCULLIS_ERR_POLICY_DENIED/, 'no error answers a notification')

  const bodies = JSON.stringify(upstream.seen.map((r) => r.body ?? null))
  t.notMatch(bodies, /denied-note|denied-in-batch/, 'denied notifications never reached the upstream')
  t.match(bodies, /allowed-note/, 'the allowed one did')
  const forwardedBatch = upstream.seen.findLast((r) => Array.isArray(r.body))?.body as Array<{ id?: number }> | undefined
  t.same(forwardedBatch?.map((m) => m.id), [9], 'the batch went up without its denied member')

  await eventually(() => records(gw.audit.lines).filter((r) => r.method === 'tools/call').length >= 3)
  const audited = records(gw.audit.lines).filter((r) => r.method === 'tools/call')
  t.match(audited, [
    { target: { kind: 'tool', name: 'big' }, decision: 'denied', jsonrpcId: null, status: 202 },
    { target: { kind: 'tool', name: 'echo' }, decision: 'allowed', jsonrpcId: null },
    { target: { kind: 'tool', name: 'big' }, decision: 'denied', jsonrpcId: null },
  ], 'each judged notification has an audit record')

  const nameless = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', method: 'tools/call', params: {} }, headers)
  t.equal(nameless.status, 400, 'a tools/call notification without a tool name cannot be judged: refused')
  t.match(nameless.json, { id: null, error: { code: -32602, data: { code: 'PORTCULLIS_ERR_INVALID_PARAMS' } } })
})

t.test('request methods sent as notifications count against rate limits like requests', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '2/min' } } }] })
  const headers = await session(gw.mcpUrl('fx'))
  const note = { jsonrpc: '2.0', method: 'tools/call', params: { name: 'echo', arguments: { text: 'counted' } } }
  t.equal((await postJson(gw.mcpUrl('fx'), note, headers)).status, 202)
  t.equal((await postJson(gw.mcpUrl('fx'), note, headers)).status, 202)
  const before = upstream.seen.length
  t.equal((await postJson(gw.mcpUrl('fx'), { ...note, params: { name: 'echo', arguments: { text: 'over the limit' } } }, headers)).status, 202, 'a limited notification is dropped with 202')
  t.equal(upstream.seen.length, before, 'and not forwarded')
  const call = await postJson(gw.mcpUrl('fx'), { ...note, id: 5 }, headers)
  t.equal(call.status, 429, 'the two notifications used the budget: the request is limited')
  t.match(call.json, { id: 5, error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' } } })
  t.ok(records(gw.audit.lines).some((r) => r.method === 'tools/call' && r.jsonrpcId === null && r.decision === 'rate_limited'), 'the limited notification is audited')
})

t.test('stdio upstream: a denied tools/call notification never reaches the child', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('local', { flags: ['--stderr'], tools: TOOLS })] })
  const headers = await session(gw.mcpUrl('local'))
  const handled = (): number => gw.logs.lines.filter((l) => l.includes('fixture handling tools/call')).length

  const denied = await postJson(gw.mcpUrl('local'), { jsonrpc: '2.0', method: 'tools/call', params: { name: 'crash', arguments: {} } }, headers)
  t.equal(denied.status, 202)
  const allowed = await postJson(gw.mcpUrl('local'), { jsonrpc: '2.0', method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, headers)
  t.equal(allowed.status, 202)
  t.ok(await eventually(() => handled() >= 1), 'the allowed notification reached the child')
  // A round trip after it: anything sent before has been handled (and logged) by now.
  t.equal((await postJson(gw.mcpUrl('local'), { jsonrpc: '2.0', id: 2, method: 'ping' }, headers)).status, 200)
  await eventually(() => gw.logs.lines.some((l) => l.includes('fixture handling ping')))
  t.equal(handled(), 1, 'the child saw one tools/call notification: the allowed one, not the denied one sent first')
  t.ok(records(gw.audit.lines).some((r) => r.method === 'tools/call' && r.decision === 'denied' && r.jsonrpcId === null), 'the denied one is audited')
})

/** A raw request with a body (fetch refuses bodies on GET). */
function withBody (url: string, method: string, headers: Record<string, string>, body: string | undefined, chunked = false): Promise<{ status: number, text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers, ...(body === undefined ? {} : chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(Buffer.byteLength(body)) }) } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
    })
    req.on('error', reject)
    if (body !== undefined) req.write(body)
    req.end()
  })
}

t.test('GET and DELETE with a body are refused (HTTP and stdio upstreams)', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }, stdioServer('local')] })
  const smuggled = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'in a GET body' } } })
  for (const server of ['fx', 'local']) {
    const headers = await session(gw.mcpUrl(server))
    for (const method of ['GET', 'DELETE']) {
      for (const chunked of [false, true]) {
        const res = await withBody(gw.mcpUrl(server), method, headers, smuggled, chunked)
        t.equal(res.status, 400, `${server} ${method} ${chunked ? 'chunked' : 'with Content-Length'}: 400`)
        t.same(JSON.parse(res.text), { jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: a ${method} request to an MCP endpoint carries no body (send JSON-RPC messages with POST)`, data: { code: 'PORTCULLIS_ERR_INVALID_REQUEST' } } })
      }
    }
    const del = await withBody(gw.mcpUrl(server), 'DELETE', headers, undefined)
    t.ok(del.status < 300, `${server}: a DELETE without a body still ends the session (${del.status})`)
  }
  t.notOk(upstream.seen.some((r) => r.method !== 'POST' && r.method !== 'DELETE'), 'no GET reached the HTTP upstream')
  t.equal(upstream.seen.filter((r) => r.method === 'DELETE').length, 1, 'only the bodiless DELETE reached the HTTP upstream')
})
