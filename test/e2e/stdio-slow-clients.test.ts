// A client that stops reading a stdio server's stream. The process cannot wait for one client (a
// shared process serves others, and its stdout is one pipe), so the gateway holds at most one
// whole message (servers[].maxMessageBytes) unread for it, then ends that stream — an answer
// stream, directly or through a virtual server, and a session's GET stream — instead of
// buffering without limit. Real child processes, raw sockets that are never read.
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import { connectClient, eventually, INIT_BODY, postJson, startGateway, stdioServer, textOf, type RunningGateway } from '../helpers.js'

/** Small, so a flood of a few MB is far past it (the default is 64 MB). */
const MAX_MESSAGE_BYTES = 256 * 1024
/** Progress notifications as fast as the process sends them: ~6 MB, more than loopback sockets buffer. */
const STEPS = 40_000
const WATCH_MS = 2_000
const POLL_MS = 100
const MAX_HELD_BYTES = 1024 * 1024

/** A request written whole on a raw socket that is then never read. */
function requestAndStall (url: string, method: 'GET' | 'POST', body: unknown, headers: Record<string, string>): Socket {
  const u = new URL(url)
  const text = body === undefined ? '' : JSON.stringify(body)
  const socket = connect(Number(u.port), '127.0.0.1', () => {
    socket.write(`${method} ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n` +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') + `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`)
  })
  socket.pause()
  socket.on('error', () => {})
  return socket
}

async function gateway (t: Test): Promise<{ gw: RunningGateway, held: () => number }> {
  const gw = await startGateway(t, { servers: [stdioServer('st', { isolation: 'shared', maxMessageBytes: MAX_MESSAGE_BYTES })], virtualServers: [{ name: 'work', members: ['st'] }] })
  const sockets = new Set<Socket>()
  gw.app.server.on('connection', (socket: Socket) => { sockets.add(socket) })
  return { gw, held: () => Math.max(0, ...[...sockets].map((s) => s.destroyed ? 0 : s.writableLength)) }
}

async function session (url: string): Promise<Record<string, string>> {
  const id = (await postJson(url, INIT_BODY)).headers.get('mcp-session-id') ?? ''
  const headers = { 'mcp-session-id': id, 'mcp-protocol-version': '2025-11-25' }
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)
  return headers
}

/** The most held unsent for any client while `WATCH_MS` pass. */
async function watch (held: () => number): Promise<number> {
  let most = 0
  for (let waited = 0; waited < WATCH_MS; waited += POLL_MS) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
    most = Math.max(most, held())
  }
  return most
}

for (const [label, server] of [['directly', 'st'], ['through a virtual server', 'work']] as const) {
  t.test(`an answer stream ${label}: past one whole message unread it ends; the process serves on`, async (t) => {
    const { gw, held } = await gateway(t)
    const headers = await session(gw.mcpUrl(server))
    const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'progress', arguments: { n: STEPS }, _meta: { progressToken: 'p' } } }
    const client = requestAndStall(gw.mcpUrl(server), 'POST', call, headers)
    t.teardown(() => client.destroy())
    const most = await watch(held)
    t.ok(most < MAX_HELD_BYTES, `${Math.round(most / 1024)} KiB held for the client that does not read`)
    t.ok(await eventually(() => gw.logs.text().includes('stdio client answer stream not reading; closed'), 5000), 'logged')
    const { client: other } = await connectClient(t, gw.mcpUrl('st'))
    t.equal(textOf(await other.callTool({ name: 'echo', arguments: { text: 'still here' } })), 'still here', 'the shared process serves another client')
  })
}

t.test('a session\'s GET stream: past one whole message unread it ends, and the session goes on', async (t) => {
  const { gw, held } = await gateway(t)
  const headers = await session(gw.mcpUrl('st'))
  const stream = requestAndStall(gw.mcpUrl('st'), 'GET', undefined, headers)
  t.teardown(() => stream.destroy())
  await new Promise((resolve) => setTimeout(resolve, 300))
  const flood = await postJson(gw.mcpUrl('st'), { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'flood', arguments: { n: 100_000 } } }, headers)
  t.match(flood.text, /flooding 100000/)
  const most = await watch(held)
  t.ok(most < MAX_HELD_BYTES, `${Math.round(most / 1024)} KiB held for the stream nobody reads`)
  t.ok(await eventually(() => gw.logs.text().includes('stdio client stream not reading; closed'), 5000), 'logged')
  // The client reconnects: its session is there, and a new GET stream opens.
  const abort = new AbortController()
  t.teardown(() => { abort.abort() })
  const reopened = await fetch(gw.mcpUrl('st'), { headers: { ...headers, accept: 'text/event-stream' }, signal: abort.signal })
  t.equal(reopened.status, 200, 'the session takes a new GET stream')
  t.equal(reopened.headers.get('content-type'), 'text/event-stream')
  abort.abort()
})
