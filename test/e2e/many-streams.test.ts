// Many clients at once: long-lived event streams never starve ordinary requests, operator caps
// answer 503 at once (never a queue), idle streams get keep-alive comments, relays between
// replicas hold more than a fixed pool, and HTTP/2 upstreams carry streamed answers.
// Real upstreams (the MCP SDK's Streamable HTTP server; over TLS + HTTP/2 for the last test),
// real sockets, real Redis, a real gateway process for the TLS case.
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { Agent, Client, request, type Dispatcher } from 'undici'
import { connectClient, freePort, INIT_BODY, MCP_HEADERS, postJson, redisAvailable, REDIS_URL, scratchRedis, selfSignedCertificate, startCliGateway, startGateway, startRawServer, startUpstream, stdioServer, textOf } from '../helpers.js'

/** The test's own client connections: no cap, so the gateway is what is being measured. */
const agent = new Agent({ connections: null })
t.teardown(() => agent.close())

async function openSession (url: string): Promise<string> {
  const init = await postJson(url, INIT_BODY)
  const id = init.headers.get('mcp-session-id')
  if (id === null) throw new Error(`initialize failed: ${init.status} ${init.text.slice(0, 200)}`)
  return id
}

/** Opens a GET stream and resolves once its headers arrived; the body stays open until closed. */
async function openStream (url: string, sessionId: string): Promise<Dispatcher.ResponseData> {
  return await request(url, { dispatcher: agent, method: 'GET', headers: { accept: 'text/event-stream', 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }, headersTimeout: 10_000 })
}

async function inBatches<T> (count: number, size: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let i = 0; i < count; i += size) out.push(...await Promise.all(Array.from({ length: Math.min(size, count - i) }, (_, k) => make(i + k))))
  return out
}

t.test('300 open GET streams to one HTTP upstream, and a new client\'s tools/call still answers', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const url = gw.mcpUrl('fx')
  const sessions = await inBatches(300, 50, async () => await openSession(url))
  const streams = await inBatches(300, 50, async (i) => await openStream(url, sessions[i] ?? ''))
  t.ok(streams.every((s) => s.statusCode === 200 && String(s.headers['content-type']).startsWith('text/event-stream')), 'all 300 streams got their headers')
  t.teardown(() => { for (const s of streams) s.body.destroy() })

  const { client } = await connectClient(t, url)
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'not starved' } })), 'not starved', 'a new session calls a tool beside 300 streams')

  const ready = await (await fetch(`${gw.baseUrl}/readyz`)).json() as { servers: Array<{ streams: number }> }
  t.ok((ready.servers[0]?.streams ?? 0) >= 300, `/readyz counts the open streams (${ready.servers[0]?.streams})`)
  const metrics = await (await fetch(`${gw.baseUrl}/metrics`)).text()
  const open = Number(/^portcullis_open_streams\{server="fx"\} (\d+)$/m.exec(metrics)?.[1])
  t.ok(open >= 300, `portcullis_open_streams counts them (${open})`)
  t.match(metrics, /^portcullis_upstream_exchanges_in_flight\{server="fx"\} \d+$/m, 'and exchanges in flight')
})

t.test('servers[].maxStreams: 503 with Retry-After at the cap, admitted again when a stream closes', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, maxStreams: 3 }] })
  const url = gw.mcpUrl('fx')
  const sessions = await inBatches(5, 5, async () => await openSession(url))
  const held = await Promise.all([0, 1, 2].map(async (i) => await openStream(url, sessions[i] ?? '')))
  t.same(held.map((s) => s.statusCode), [200, 200, 200])

  const over = await openStream(url, sessions[3] ?? '')
  t.equal(over.statusCode, 503, 'the fourth stream is refused at once')
  t.equal(over.headers['retry-after'], '1')
  t.match(await over.body.json(), { jsonrpc: '2.0', id: null, error: { code: -32603, message: /MCP server "fx" has 3 event streams open \(servers\[\]\.maxStreams\)/, data: { code: 'PORTCULLIS_ERR_UPSTREAM_BUSY' } } })
  const ready = await (await fetch(`${gw.baseUrl}/readyz`)).json() as { servers: Array<Record<string, unknown>> }
  t.match(ready.servers[0], { streams: 3, maxStreams: 3, isAtStreamBudget: true }, '/readyz says the server is at its stream budget')

  const call = await postJson(url, { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'echo', arguments: { text: 'requests pass' } } }, { 'mcp-session-id': sessions[4] ?? '', 'mcp-protocol-version': '2025-11-25' })
  t.equal(call.status, 200, 'ordinary requests are not held to the stream budget')
  t.match(call.text, /requests pass/)

  held[0]?.body.destroy()
  let admitted: Dispatcher.ResponseData | undefined
  for (let attempt = 0; attempt < 100 && admitted?.statusCode !== 200; attempt++) {
    if (admitted !== undefined) await admitted.body.dump()
    await new Promise((resolve) => setTimeout(resolve, 20))
    admitted = await openStream(url, sessions[3] ?? '')
  }
  t.equal(admitted?.statusCode, 200, 'a closed stream frees its place')
  for (const s of [...held, admitted]) s?.body.destroy()
})

t.test('idle event streams get keep-alive comments (HTTP upstream and stdio), and events still arrive whole', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { streamKeepAliveMs: 150, servers: [{ name: 'fx', transport: 'http', url: upstream.url }, stdioServer('local')] })
  for (const server of ['fx', 'local']) {
    const url = gw.mcpUrl(server)
    const sessionId = await openSession(url)
    const stream = await openStream(url, sessionId)
    t.equal(stream.statusCode, 200)
    let text = ''
    const comment = new Promise<void>((resolve) => {
      stream.body.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8')
        if (text.includes(': keep-alive\n\n')) resolve()
      })
    })
    await comment
    t.match(text, /^(?:: keep-alive\n\n)+$/, `${server}: an idle stream carries only keep-alive comments`)
    // A notification still arrives as a whole event after the comments.
    const broadcast = await postJson(url, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'broadcast', arguments: {} } }, { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' })
    t.equal(broadcast.status, 200)
    await new Promise<void>((resolve) => {
      const check = (): void => { if (/data: .*notifications\//.test(text)) resolve() }
      stream.body.on('data', check)
      check()
    })
    const events = text.split('\n\n').filter((e) => e !== '')
    t.ok(events.every((e) => e === ': keep-alive' || /^(?:id: .*\n)?event: message\ndata: \{.*\}$/.test(e)), `${server}: every block is a comment or a whole event`)
    stream.body.destroy()
  }
})

t.test('more than 32 streams relayed between two replicas, and requests still pass the relay', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const [ownerPort, relayPort] = [await freePort(), await freePort()]
  const common = { store: { redis: REDIS_URL, prefix }, servers: [stdioServer('local', { isolation: 'shared' })] }
  const owner = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: ownerPort }, cluster: { advertiseUrl: `http://127.0.0.1:${ownerPort}` } })
  const relay = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: relayPort }, cluster: { advertiseUrl: `http://127.0.0.1:${relayPort}` } })
  const sessions = await inBatches(48, 16, async () => await openSession(owner.mcpUrl('local')))
  const streams = await inBatches(48, 16, async (i) => await openStream(relay.mcpUrl('local'), sessions[i] ?? ''))
  t.ok(streams.every((s) => s.statusCode === 200), '48 GET streams relayed to the owner')
  t.teardown(() => { for (const s of streams) s.body.destroy() })
  const call = await postJson(relay.mcpUrl('local'), { jsonrpc: '2.0', id: 'beside', method: 'tools/call', params: { name: 'echo', arguments: { text: 'through the relay' } } }, { 'mcp-session-id': sessions[0] ?? '', 'mcp-protocol-version': '2025-11-25' })
  t.equal(call.status, 200, 'a request through the same relay is answered')
  t.match(call.text, /through the relay/)
})

t.test('servers[].http2: streamed answers from an HTTP/2 upstream over TLS', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-h2-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { keyPath, certPath } = selfSignedCertificate(dir)
  const upstream = await startUpstream(t, { tls: { key: readFileSync(keyPath), cert: readFileSync(certPath) } })
  const port = await freePort()
  const configPath = join(dir, 'portcullis.yaml')
  writeFileSync(configPath, stringify({
    publicUrl: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    dataDir: join(dir, 'data'),
    store: { memory: true },
    auth: { enabled: false },
    servers: [{ name: 'h2', transport: 'http', url: upstream.url, http2: true }],
  }))
  // The upstream's certificate is trusted the way an operator trusts a private CA: NODE_EXTRA_CA_CERTS.
  await startCliGateway(t, configPath, { NODE_EXTRA_CA_CERTS: certPath })
  const { client } = await connectClient(t, `http://127.0.0.1:${port}/h2/mcp`)
  const progress: number[] = []
  const result = await client.callTool({ name: 'progress', arguments: { n: 4, delayMs: 20 } }, undefined, { onprogress: (p) => progress.push(p.progress) })
  t.equal(textOf(result), 'done 4')
  t.same(progress, [1, 2, 3, 4], 'progress events streamed through')
  const versions = new Set(upstream.seen.map((r) => (r as { httpVersion?: string }).httpVersion))
  t.same([...versions], ['2.0'], 'every exchange with the upstream was HTTP/2')
})

t.test('an event stream the upstream sent with a Content-Length goes out chunked, so keep-alive comments cannot break framing', async (t) => {
  const events = ['event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\n', 'event: message\ndata: {"jsonrpc":"2.0","id":2,"result":{"content":[]}}\n\n']
  const upstream = await startRawServer(t, (req, res) => {
    req.resume()
    req.on('end', () => {
      if (req.headers['mcp-session-id'] === undefined) {
        res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'raw-1' })
        res.end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { protocolVersion: '2025-11-25', capabilities: {}, serverInfo: { name: 'raw', version: '1' } } }))
        return
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-length': String(Buffer.byteLength(events.join(''))) })
      res.write(events[0])
      setTimeout(() => res.end(events[1]), 400)
    })
  })
  const gw = await startGateway(t, { streamKeepAliveMs: 60, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const sessionId = await openSession(gw.mcpUrl('fx'))
  const client = new Client(gw.baseUrl, { pipelining: 1 })
  t.teardown(() => client.close())
  const call = async (): Promise<{ status: number, length: string | string[] | undefined, text: string }> => {
    const res = await client.request({ path: '/fx/mcp', method: 'POST', headers: { ...MCP_HEADERS, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }, body: '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","arguments":{}}}' })
    return { status: res.statusCode, length: res.headers['content-length'], text: await res.body.text() }
  }
  const first = await call()
  t.equal(first.status, 200)
  t.equal(first.length, undefined, 'no Content-Length on the relayed stream')
  t.match(first.text, /: keep-alive\n\n/, 'a keep-alive comment went between the two events')
  t.ok(first.text.endsWith(events[1] ?? '-'), 'the last event arrived whole')
  const second = await call()
  t.equal(second.status, 200, 'the same keep-alive connection carries the next answer intact')
  t.ok(second.text.startsWith(events[0] ?? '-'))
})
