// A client that stops reading a tools/call's answer stream through a virtual server: the member
// is made to wait, as at the member's own URL (an HTTP upstream is paused), instead of its
// progress piling up in the client's socket buffer without limit.
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import { INIT_BODY, postJson, startGateway, startUpstream } from '../helpers.js'

/** Progress notifications the member sends as fast as it can: ~6 MB of events, more than loopback sockets buffer. */
const STEPS = 40_000
const WATCH_MS = 2_000
const POLL_MS = 100
/** The member's URL holds ~16 KiB for such a client; before the fix the virtual route held ~4 MB. */
const MAX_HELD_BYTES = 1024 * 1024

/** A POST written whole on a raw socket that is then never read. */
function postAndStall (url: string, body: unknown, headers: Record<string, string>): Socket {
  const u = new URL(url)
  const text = JSON.stringify(body)
  const socket = connect(Number(u.port), '127.0.0.1', () => {
    socket.write(`POST ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n` +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') + `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`)
  })
  socket.pause()
  socket.on('error', () => {})
  return socket
}

/**
 * The most the gateway's side of any connection held unsent while the client read nothing; then
 * the client reads, and the whole answer arrives (the member, told to wait, was resumed).
 */
async function stalledBytes (t: Test, server: string): Promise<number> {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }], virtualServers: [{ name: 'work', members: ['fx'] }] })
  const sockets = new Set<Socket>()
  gw.app.server.on('connection', (socket: Socket) => { sockets.add(socket) })
  const session = (await postJson(gw.mcpUrl(server), INIT_BODY)).headers.get('mcp-session-id') ?? ''
  const headers = { 'mcp-session-id': session, 'mcp-protocol-version': '2025-11-25' }
  await postJson(gw.mcpUrl(server), { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)
  const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'progress', arguments: { n: STEPS }, _meta: { progressToken: 'p' } } }
  const client = postAndStall(gw.mcpUrl(server), call, headers)
  t.teardown(() => client.destroy())
  let most = 0
  for (let waited = 0; waited < WATCH_MS; waited += POLL_MS) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
    for (const socket of sockets) most = Math.max(most, socket.writableLength)
  }
  t.ok(await answered(client, `done ${STEPS}`), 'once the client reads, the rest of the stream and the answer come')
  return most
}

/** Reads the stalled socket until `text` arrives (false after a while). */
async function answered (client: Socket, text: string): Promise<boolean> {
  let tail = ''
  const isDone = new Promise<boolean>((resolve) => {
    client.on('data', (chunk: Buffer) => {
      tail = (tail + chunk.toString('latin1')).slice(-4096)
      if (tail.includes(text)) resolve(true)
    })
    setTimeout(() => resolve(false), 15_000).unref()
  })
  client.resume()
  return isDone
}

t.test('at the member\'s own URL the upstream is paused: the client\'s socket holds little', async (t) => {
  const held = await stalledBytes(t, 'fx')
  t.ok(held < MAX_HELD_BYTES, `${Math.round(held / 1024)} KiB held for the client`)
})

t.test('through a virtual server the member waits too: its progress does not pile up for a client that does not read', async (t) => {
  const held = await stalledBytes(t, 'work')
  t.ok(held < MAX_HELD_BYTES, `${Math.round(held / 1024)} KiB held for the client`)
})
