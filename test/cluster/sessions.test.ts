// The replicas' session directory (src/cluster/sessions.ts) on two real gateways and one real
// Redis: a stdio session stays findable by the other replicas for as long as it lives.
import t from 'tap'
import { freePort, INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, stdioServer } from '../helpers.js'
import { StdioUpstream } from '../../src/upstreams/stdio/stdio-upstream.js'

const IDLE_MS = 10 * 60_000
const SECOND_MS = 1_000

t.test('a session used shortly after its directory entry was written is findable until it goes idle', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const [ownerPort, relayPort] = [await freePort(), await freePort()]
  const common = { store: { redis: REDIS_URL, prefix }, servers: [stdioServer('counter', { idleTimeoutMs: IDLE_MS })] }
  let clock = 5_000_000
  const owner = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: ownerPort }, cluster: { advertiseUrl: `http://127.0.0.1:${ownerPort}` } }, {}, { now: () => clock })
  const relay = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: relayPort }, cluster: { advertiseUrl: `http://127.0.0.1:${relayPort}` } })
  const upstream = owner.app.portcullis.upstreams.get('counter')
  if (!(upstream instanceof StdioUpstream)) throw new Error('expected a stdio upstream')

  const init = await postJson(owner.mcpUrl('counter'), INIT_BODY)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  t.ok(sessionId !== '', 'a session on the owner')
  const session = { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  const call = async (base: string, id: string): Promise<number> => (await postJson(base, { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'increment', arguments: {} } }, session)).status

  const key = `${prefix}kv:session:counter:${sessionId}`
  /** Time passes for the owner's clock and, alike, for Redis's expiry of the directory entry. */
  const pass = async (ms: number): Promise<void> => {
    clock += ms
    const left = await redis.pttl(key)
    if (left > ms) await redis.pexpire(key, left - ms)
    else if (left > 0) await redis.del(key)
  }

  await pass(140 * SECOND_MS)
  t.equal(await call(owner.mcpUrl('counter'), 'on-the-owner'), 200, 'used on the owner 140 s after it opened')
  // 530 s after that use: the session is not idle yet (idleTimeoutMs is 600 s).
  await pass(530 * SECOND_MS)
  upstream.sweep()
  t.equal(upstream.liveSessions?.().length, 1, 'the session lives on the owner')
  t.equal(await redis.get(key), `http://127.0.0.1:${ownerPort}`, 'and the other replicas can find it')
  t.equal(await call(relay.mcpUrl('counter'), 'via-the-relay'), 200, 'a request through another replica reaches it, not a 404 for a live session')
})
