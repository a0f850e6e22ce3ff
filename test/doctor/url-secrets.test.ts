// A key in a URL's query string (hosted MCP servers take `?apiKey=…`; ioredis reads
// `?password=…` as the Redis password) is a secret like the password in its userinfo:
// `portcullis check` masks both, and so must the doctor's checklist and the gateway's log.
import t from 'tap'
import { createLogger } from '../../src/observability/logger.js'
import { createDoctorFetch } from '../../src/doctor/check.js'
import { checkHttpUpstream, checkRedis } from '../../src/doctor/upstream-checks.js'
import { createRedisClient } from '../../src/store/redis-client.js'
import { logSink, makeConfig, startRawServer } from '../helpers.js'
import type { HttpServerConfig } from '../../src/config/schema.js'

const SECRET = 'hosted-mcp-key-5f0c2a9e'

t.test('the doctor names an upstream by its URL with query values masked', async (t) => {
  const upstream = await startRawServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { protocolVersion: '2025-11-25', capabilities: {}, serverInfo: { name: 'hosted', version: '1' } } }))
  })
  const url = `${upstream.url}?apiKey=${SECRET}`
  const config = makeConfig({ servers: [{ name: 'hosted', transport: 'http', url }] })
  const ok = await checkHttpUpstream(config.servers[0] as HttpServerConfig, createDoctorFetch([url]))
  t.match(ok.result, { ok: true, detail: /answered initialize \(hosted\)/ })
  t.notMatch(ok.result.detail, SECRET, 'a passing check does not print the key')
  t.match(ok.result.detail, /apiKey=\*\*\*/, 'the parameter is named, its value masked')

  const down = makeConfig({ servers: [{ name: 'hosted', transport: 'http', url: `http://127.0.0.1:1/mcp?apiKey=${SECRET}` }] })
  const failed = await checkHttpUpstream(down.servers[0] as HttpServerConfig, createDoctorFetch(['http://127.0.0.1:1']))
  t.match(failed.result, { ok: false })
  t.notMatch(JSON.stringify(failed.result), SECRET, 'nor does a failing one')
})

t.test('the doctor\'s redis check and the gateway\'s redis log lines mask a password in the query string', async (t) => {
  // The Redis here has no password: AUTH is refused, so the check fails and the client logs the error.
  const url = `redis://127.0.0.1:6379/0?password=${SECRET}`
  const config = makeConfig({ store: { redis: url }, servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:1/mcp' }] })
  const checked = await checkRedis(config)
  t.match(checked, { name: 'redis' })
  t.notMatch(JSON.stringify(checked), SECRET, 'the checklist does not print the password')

  const sink = logSink()
  const client = createRedisClient(url, createLogger('info', sink.stream))
  t.teardown(() => { client.disconnect() })
  for (let i = 0; i < 100 && !/redis (unreachable|connected)/.test(sink.text()); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  t.match(sink.text(), /redis (unreachable|connected)/, 'the client logged what happened')
  t.notMatch(sink.text(), SECRET, 'the log line does not carry the password')
})
