// A replica relaying a stdio session's request to its owner says who the client is as it resolved
// it — never what the client wrote in its own X-Forwarded-For. Two gateways on one real Redis.
import t from 'tap'
import { eventually, freePort, INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, stdioServer } from '../helpers.js'

t.test('the owner sees the relaying replica\'s view of the client address, not the client\'s own claim', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const [ownerPort, relayPort] = [await freePort(), await freePort()]
  const common = { store: { redis: REDIS_URL, prefix }, servers: [stdioServer('counter')] }
  // The owner trusts every proxy in front of it (as behind a chain it does not know); the relaying
  // replica trusts none, so it resolves the client to the address the client connected from.
  const owner = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: ownerPort }, trustProxy: true, cluster: { advertiseUrl: `http://127.0.0.1:${ownerPort}` } })
  const relay = await startGateway(t, { ...common, listen: { host: '127.0.0.1', port: relayPort }, trustProxy: false, cluster: { advertiseUrl: `http://127.0.0.1:${relayPort}` } })

  const init = await postJson(owner.mcpUrl('counter'), INIT_BODY)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  t.ok(sessionId !== '', 'a session on the owner')
  const spoofed = { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25', 'x-forwarded-for': '203.0.113.66', forwarded: 'for=203.0.113.67' }
  const res = await postJson(relay.mcpUrl('counter'), { jsonrpc: '2.0', id: 'via-relay', method: 'tools/call', params: { name: 'increment', arguments: {} } }, spoofed)
  t.equal(res.status, 200, 'relayed to the owner and answered')

  const records = (): Array<Record<string, unknown>> => owner.audit.lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.ok(await eventually(() => records().some((r) => r.jsonrpcId === 'via-relay')), 'the owner wrote the audit record')
  const record = records().find((r) => r.jsonrpcId === 'via-relay')
  t.equal(record?.ip, '127.0.0.1', 'the client address as the relaying replica saw it')
  t.notMatch(`${owner.audit.text()}\n${owner.logs.text()}`, /203\.0\.113\.6[67]/, 'the client\'s claimed address appears nowhere on the owner')
  t.equal(relay.audit.lines.filter((l) => l.includes('via-relay')).length, 0, 'the relaying replica records nothing itself')
})
