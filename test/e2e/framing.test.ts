// Framing of answers the gateway edits (filtered lists, batches with refused members): two requests
// on one keep-alive socket show at once an answer whose Content-Length does not match its body
// (the second answer is swallowed, or bytes spill into it). HTTP upstreams that send
// Content-Length on SSE answers (a raw node:http server) and the stdio bridge.
import t from 'tap'
import { Client } from 'undici'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { INIT_BODY, postJson, startGateway, startRawServer, stdioServer, type Teardown } from '../helpers.js'

const TOOLS = [{ name: 'echo', inputSchema: { type: 'object' } }, { name: 'secret', inputSchema: { type: 'object' } }]
const SESSION = 'raw-session-1'

function resultFor (message: { id?: unknown, method?: string, params?: { name?: string } }): Record<string, unknown> {
  if (message.method === 'initialize') return { protocolVersion: '2025-03-26', capabilities: { tools: {} }, serverInfo: { name: 'raw', version: '1' } }
  if (message.method === 'tools/list') return { tools: TOOLS }
  if (message.method === 'tools/call') return { content: [{ type: 'text', text: `called ${message.params?.name ?? ''}` }] }
  return {}
}

/** A raw upstream that answers in JSON or SSE and always declares Content-Length (as some servers do on SSE); records bodies. */
function rawMcp (mode: 'json' | 'sse', bodies: string[] = []) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks).toString('utf8'))
      const parsed = JSON.parse(bodies[bodies.length - 1] ?? '') as unknown
      const messages = (Array.isArray(parsed) ? parsed : [parsed]) as Array<{ id?: unknown, method?: string, params?: { name?: string } }>
      const answers = messages.filter((m) => m.id !== undefined).map((m) => ({ jsonrpc: '2.0', id: m.id, result: resultFor(m) }))
      if (answers.length === 0) {
        res.writeHead(202).end()
        return
      }
      const body = mode === 'sse' && messages[0]?.method !== 'initialize'
        ? answers.map((a) => `event: message\ndata: ${JSON.stringify(a)}\n\n`).join('')
        : JSON.stringify(Array.isArray(parsed) ? answers : answers[0])
      const type = mode === 'sse' && messages[0]?.method !== 'initialize' ? 'text/event-stream' : 'application/json'
      res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'mcp-session-id': SESSION })
      res.end(body)
    })
  }
}

/** An undici Client with one connection and pipelining 1: every request shares one keep-alive socket. A mis-framed answer hangs until the body timeout. */
function oneSocket (t: Teardown, origin: string): Client {
  const client = new Client(origin, { pipelining: 1, headersTimeout: 20_000, bodyTimeout: 10_000 })
  t.teardown(() => client.close())
  return client
}

async function post (client: Client, path: string, body: unknown, headers: Record<string, string>): Promise<{ status: number, text: string, headers: Record<string, unknown> }> {
  const res = await client.request({
    path,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  })
  return { status: res.statusCode, text: await res.body.text(), headers: res.headers }
}

/** JSON-RPC messages in an answer, whether a JSON body (one or a batch) or SSE events. */
function messagesOf (text: string): Array<Record<string, unknown>> {
  if (!text.includes('data:')) {
    const parsed = JSON.parse(text) as unknown
    return (Array.isArray(parsed) ? parsed : [parsed]) as Array<Record<string, unknown>>
  }
  return text.split('\n\n').filter((e) => e.includes('data:')).map((e) => JSON.parse(e.slice(e.indexOf('data:') + 5)) as Record<string, unknown>)
}

function toolNames (message: Record<string, unknown> | undefined): string[] {
  return ((message?.result as { tools?: Array<{ name: string }> } | undefined)?.tools ?? []).map((x) => x.name)
}

for (const mode of ['sse', 'json'] as const) {
  t.test(`HTTP upstream, ${mode.toUpperCase()} answers with Content-Length: edited answers are framed right on a keep-alive socket`, async (t) => {
    const upstream = await startRawServer(t, rawMcp(mode))
    const gw = await startGateway(t, { servers: [{ name: 'raw', transport: 'http', url: upstream.url, tools: { deny: ['secret'] } }] })
    const client = oneSocket(t, gw.baseUrl)
    const init = await post(client, '/raw/mcp', INIT_BODY, {})
    t.equal(init.status, 200)
    const headers = { 'mcp-session-id': SESSION, 'mcp-protocol-version': '2025-03-26' }

    // A filtered list, then a plain request on the same socket.
    const list = await post(client, '/raw/mcp', { jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers)
    t.equal(list.status, 200)
    t.same(toolNames(messagesOf(list.text)[0]), ['echo'], 'the list is filtered')
    if (list.headers['content-length'] !== undefined) t.equal(Number(list.headers['content-length']), Buffer.byteLength(list.text), 'a declared length is the true length')
    const after = await post(client, '/raw/mcp', { jsonrpc: '2.0', id: 3, method: 'ping' }, headers)
    t.equal(after.status, 200)
    t.same(messagesOf(after.text), [{ jsonrpc: '2.0', id: 3, result: {} }], 'the next answer on the socket is whole and alone')

    // A batch with a refused member (the gateway adds its error), then a plain request.
    const batch = await post(client, '/raw/mcp', [
      { jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'secret', arguments: {} } },
      { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: {} } },
    ], headers)
    t.equal(batch.status, 200)
    const byId = new Map(messagesOf(batch.text).map((m) => [m.id, m]))
    t.match(byId.get(4), { error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
    t.match(byId.get(5), { result: { content: [{ text: 'called echo' }] } })
    if (batch.headers['content-length'] !== undefined) t.equal(Number(batch.headers['content-length']), Buffer.byteLength(batch.text), 'a declared length is the true length')
    const last = await post(client, '/raw/mcp', { jsonrpc: '2.0', id: 6, method: 'ping' }, headers)
    t.equal(last.status, 200)
    t.same(messagesOf(last.text), [{ jsonrpc: '2.0', id: 6, result: {} }], 'nothing spilled into the next answer')
  })
}

t.test('stdio upstream: edited answers (filtered list as JSON, batch with a refused member as SSE) are framed right', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('local', { tools: { deny: ['crash'] } })] })
  const client = oneSocket(t, gw.baseUrl)
  const init = await post(client, '/local/mcp', INIT_BODY, {})
  t.equal(init.status, 200)
  const headers = { 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': '2025-03-26' }
  t.equal((await post(client, '/local/mcp', { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status, 202)

  const list = await post(client, '/local/mcp', { jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers)
  const names = toolNames(messagesOf(list.text)[0])
  t.ok(names.includes('echo') && !names.includes('crash'), 'the list is filtered')
  if (list.headers['content-length'] !== undefined) t.equal(Number(list.headers['content-length']), Buffer.byteLength(list.text), 'a declared length is the true length')
  t.same(messagesOf((await post(client, '/local/mcp', { jsonrpc: '2.0', id: 3, method: 'ping' }, headers)).text), [{ jsonrpc: '2.0', id: 3, result: {} }])

  const batch = await post(client, '/local/mcp', [
    { jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'crash', arguments: {} } },
    { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } },
  ], headers)
  const byId = new Map(messagesOf(batch.text).map((m) => [m.id, m]))
  t.match(byId.get(4), { error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
  t.match(byId.get(5), { result: { content: [{ text: 'hi' }] } })
  if (batch.headers['content-length'] !== undefined) t.equal(Number(batch.headers['content-length']), Buffer.byteLength(batch.text), 'a declared length is the true length')
  t.same(messagesOf((await post(client, '/local/mcp', { jsonrpc: '2.0', id: 6, method: 'ping' }, headers)).text), [{ jsonrpc: '2.0', id: 6, result: {} }])
})

t.test('duplicate keys and deep nesting are refused before anything reaches an upstream', async (t) => {
  const bodies: string[] = []
  const upstream = await startRawServer(t, rawMcp('json', bodies))
  const gw = await startGateway(t, { servers: [{ name: 'raw', transport: 'http', url: upstream.url, tools: { deny: ['danger'] } }, stdioServer('local')] })
  const headers = { 'mcp-session-id': SESSION, 'mcp-protocol-version': '2025-11-25' }
  // JSON.parse keeps the last "method" (ping); a first-wins upstream would run the denied tools/call.
  const smuggled = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","arguments":{}},"method":"ping"}'
  const dup = await postJson(gw.mcpUrl('raw'), smuggled, headers)
  t.equal(dup.status, 400)
  t.same(dup.json, { jsonrpc: '2.0', id: 1, error: { code: -32600, message: 'Invalid Request: duplicate key "method" in a JSON object (each key may appear once)', data: { code: 'PORTCULLIS_ERR_INVALID_REQUEST' } } })
  const escaped = await postJson(gw.mcpUrl('raw'), '{"jsonrpc":"2.0","id":2,"method":"ping","\\u006dethod":"tools/call","params":{"name":"danger"}}', headers)
  t.equal(escaped.status, 400, 'a \\u-escaped twin is the same key')
  t.match(escaped.json, { id: 2, error: { message: /duplicate key "method"/ } })
  // Go's encoding/json matches "Name" to the name field and keeps the last: a Go upstream would run "danger".
  const cased = await postJson(gw.mcpUrl('raw'), '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","Name":"danger","arguments":{}}}', headers)
  t.equal(cased.status, 400, 'a twin in another letter case is the same key')
  t.match(cased.json, { id: 3, error: { code: -32600, message: 'Invalid Request: keys "name" and "Name" of one JSON object differ only in letter case (parsers that ignore case read them as one key)' } })
  t.notOk(bodies.some((b) => b.includes('danger')), 'no such body reached the upstream')

  const deep = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":${'['.repeat(100_000)}${']'.repeat(100_000)}}}}`
  const init = await postJson(gw.mcpUrl('local'), INIT_BODY)
  const stdioHeaders = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  for (const server of ['raw', 'local']) {
    const res = await postJson(gw.mcpUrl(server), deep, server === 'raw' ? headers : stdioHeaders)
    t.equal(res.status, 400, `${server}: 100000-deep JSON is a client error, not a 500`)
    t.match(res.json, { id: 3, error: { code: -32600, message: /nests objects and arrays deeper than 128 levels/, data: { code: 'PORTCULLIS_ERR_INVALID_REQUEST' } } })
  }
  t.notOk(bodies.some((b) => b.includes('[[[')), 'the deep body did not reach the upstream')
})
