// Sampling at a public endpoint (README "Tracing"): with sampleRatio 0 nothing is exported, even
// for a signed-in client whose traceparent says "sampled" (-01). Its own file: the tracer
// provider, and so the sampler, is one per process (tracing.test.ts runs at sampleRatio 1).
// Real OAuth flow, real HTTP upstream, real OTLP/HTTP receiver (test/otlp-receiver.ts).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { hashPassword } from '../../src/auth-server/password.js'
import { flushTracing } from '../../src/observability/tracing.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { postJson, startGateway, startUpstream } from '../helpers.js'
import { startOtlpReceiver } from '../otlp-receiver.js'

const PASSWORD = 'correct horse battery staple'

t.test('sampleRatio 0: a client\'s -01 forces no trace', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    telemetry: { otlp: { endpoint: receiver.url, sampleRatio: 0 } },
    servers: [{ name: 'remote', transport: 'http', url: upstream.url }],
  })
  const remote = await connectWithOAuth(t, gw.mcpUrl('remote'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const clientTrace = randomBytes(16).toString('hex')
  const sampled = `00-${clientTrace}-${randomBytes(8).toString('hex')}-01`
  const called = await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, {
    authorization: `Bearer ${remote.oauth.savedTokens?.access_token ?? ''}`,
    'mcp-session-id': remote.transport.sessionId ?? '',
    'mcp-protocol-version': remote.transport.protocolVersion ?? '2025-11-25',
    traceparent: sampled,
  })
  t.equal(called.status, 200, 'an authenticated call with a sampled traceparent')
  t.equal((await postJson(gw.mcpUrl('remote'), { jsonrpc: '2.0', id: 2, method: 'ping' }, { traceparent: sampled })).status, 401, 'an anonymous one')
  await flushTracing()
  t.equal(receiver.spans.length, 0, 'no span exported')
  // What the gateway passed on still names the client's trace (the upstream may record its part).
  const seen = upstream.seen.find((r) => String(r.headers.traceparent ?? '').includes(clientTrace))
  t.match(String(seen?.headers.traceparent), new RegExp(`^00-${clientTrace}-[0-9a-f]{16}-00$`), 'the upstream got the client\'s trace id, unsampled')
})
