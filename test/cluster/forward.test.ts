// The relay between replicas (src/cluster/forward.ts), on real gateways sharing one real Redis:
// what a client may send through a replica that does not hold its stdio session.
import t from 'tap'
import { createServer, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { freePort, INIT_BODY, MCP_HEADERS, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, stdioServer, within } from '../helpers.js'
import { relayHeadersTimeoutMs, ReplicaForwarder } from '../../src/cluster/forward.js'

/** POST with node:http (fetch refuses `Expect`), sending `Expect: 100-continue` as curl and .NET do for large bodies. */
async function postExpectingContinue (url: string, body: unknown, headers: Record<string, string>): Promise<{ status: number, text: string }> {
  const payload = JSON.stringify(body)
  return await new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers, expect: '100-continue', 'content-length': String(Buffer.byteLength(payload)) } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    // The body only once the server said to go on, as an Expect-sending client does.
    req.on('continue', () => req.end(payload))
  })
}

t.test('a relayed request with Expect: 100-continue reaches the owner, and the session stays findable', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const [ownerPort, relayPort] = [await freePort(), await freePort()]
  const common = { store: { redis: REDIS_URL, prefix }, servers: [stdioServer('counter')] }
  const owner = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: ownerPort }, cluster: { advertiseUrl: `http://127.0.0.1:${ownerPort}` } })
  const relay = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: relayPort }, cluster: { advertiseUrl: `http://127.0.0.1:${relayPort}` } })

  const init = await postJson(owner.mcpUrl('counter'), INIT_BODY)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  t.ok(sessionId !== '', 'a session on the owner')
  const session = { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  const call = (id: string): Record<string, unknown> => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'increment', arguments: {} } })

  const expecting = await postExpectingContinue(relay.mcpUrl('counter'), call('with-expect'), session)
  t.equal(expecting.status, 200, 'relayed to the owner and answered, not taken for an owner that is gone')
  t.match(expecting.text, /with-expect/, 'the owner\'s answer')
  t.equal(await redis.get(`${prefix}kv:session:counter:${sessionId}`), `http://127.0.0.1:${ownerPort}`, 'the session is still in the directory')

  const after = await postJson(relay.mcpUrl('counter'), call('after'), session)
  t.equal(after.status, 200, 'the next request through the relay still reaches the session')
})

t.test('an owner that takes the request and answers late is not taken for gone: 504, and the session is kept', async (t) => {
  // The owner: reads the request, then answers nothing before the relay's (short) headers timeout.
  const owner = createServer((req) => { req.resume() })
  await new Promise<void>((resolve) => owner.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { owner.closeAllConnections(); owner.close() })
  const ownerUrl = `http://127.0.0.1:${(owner.address() as AddressInfo).port}`
  const forwarder = new ReplicaForwarder('http://127.0.0.1:1', 1024 * 1024, 300)
  t.teardown(() => forwarder.close())
  const app = Fastify()
  t.teardown(() => app.close())
  let reached: boolean | undefined
  app.addHook('onRequest', async (request, reply) => {
    reply.hijack()
    reached = await forwarder.forward(request, reply.raw, ownerUrl)
  })
  app.post('/counter/mcp', async () => ({}))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/counter/mcp`
  const answer = await within(postJson(url, { jsonrpc: '2.0', id: 'long', method: 'tools/call', params: { name: 'slow', arguments: {} } }, { 'mcp-session-id': 's1' }), 5_000, undefined)
  t.equal(answer?.status, 504, 'the client is told the call timed out')
  t.match(answer?.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT' } } })
  t.equal(reached, true, 'the owner counts as reached: its session is not forgotten')
})

t.test('the relay waits longer for an answer than the longest stdio request timeout', async (t) => {
  t.equal(relayHeadersTimeoutMs([]), 5 * 60_000, 'five minutes at least')
  t.equal(relayHeadersTimeoutMs([60_000, 20 * 60_000]), 21 * 60_000, 'past the longest requestTimeoutMs, by a minute')
})
