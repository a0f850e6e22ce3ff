// StreamKeeper (src/upstreams/stream-keeper.ts) with real sockets: a client stream is kept until
// it closes, and one the client already left is not kept at all.
import t from 'tap'
import { createServer, request, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { StreamKeeper } from '../../src/upstreams/stream-keeper.js'
import type { Teardown } from '../helpers.js'

/** A server whose responses are handed to `onResponse`; a client that posts and leaves after `leaveAfterMs`. */
async function responseOfLeavingClient (t: Teardown, leaveAfterMs: number, onResponse: (res: ServerResponse) => Promise<void>): Promise<void> {
  let handled: Promise<void> = Promise.resolve()
  const server = createServer((_req, res) => { handled = onResponse(res) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  const client = request({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, method: 'POST' })
  client.on('error', () => {})
  client.end('{}')
  await once(server, 'request')
  setTimeout(() => client.destroy(), leaveAfterMs)
  await new Promise((resolve) => setTimeout(resolve, leaveAfterMs + 50))
  await handled
}

t.test('a stream is kept until its client leaves', async (t) => {
  const keeper = new StreamKeeper(0)
  await responseOfLeavingClient(t, 50, async (res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    keeper.add(res)
    t.equal(keeper.size, 1, 'kept while open')
    await once(res, 'close')
    t.equal(keeper.size, 0, 'forgotten when it closes')
  })
})

t.test('a stream whose client left before it was added is not kept', async (t) => {
  // The relay adds a stream when the upstream's answer starts; the client may have left while
  // the request waited (a session owner read from the store, a caller's credential fetched).
  const keeper = new StreamKeeper(0)
  await responseOfLeavingClient(t, 20, async (res) => {
    if (!res.closed) await once(res, 'close')
    keeper.add(res)
    t.equal(keeper.size, 0, 'nothing held for a response that has closed')
  })
})
