// The doctor's check of a transport: sse upstream: the server accepting connections at url, or the fix.
import t from 'tap'
import { checkSseUpstream } from '../../src/doctor/upstream-checks.js'
import { freePort, makeConfig } from '../helpers.js'
import { startSseMcpServer } from '../fixtures/sse-mcp-server.mjs'
import type { SseServerConfig } from '../../src/config/schema.js'

function sseServer (url: string): SseServerConfig {
  return makeConfig({ servers: [{ name: 'legacy', transport: 'sse', url }] }).servers[0] as SseServerConfig
}

t.test('a 2024-11-05 server that accepts connections passes; one that does not fails with the fix', async (t) => {
  const upstream = await startSseMcpServer()
  t.teardown(() => upstream.close())
  t.match(await checkSseUpstream(sseServer(upstream.url)), { ok: true, name: 'upstream legacy', detail: /accepts connections \(HTTP\+SSE, 2024-11-05\)/ })
  const closed = `http://127.0.0.1:${await freePort()}/sse`
  t.match(await checkSseUpstream(sseServer(closed)), { ok: false, detail: /ECONNREFUSED/, fix: /servers\[\]\.url of "legacy"/ })
})
