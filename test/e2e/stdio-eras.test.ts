// Both protocol eras through the stdio bridge: the MCP SDK 2.x client (which speaks 2026-07-28 and
// falls back) and the 1.32 client, against a 2025-only child and a child that speaks 2026-07-28.
import t from 'tap'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { connectClient, EVERYTHING_SERVER, postJson, startGateway, stdioServer, STDIO_MODERN_FIXTURE, textOf, type Teardown } from '../helpers.js'

async function modernClient (t: Teardown, url: string): Promise<Client> {
  const client = new Client({ name: 'modern-test', version: '2.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(() => client.close())
  return client
}

const META = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
}
const modernHeaders = (method: string, name?: string): Record<string, string> => ({
  'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...(name === undefined ? {} : { 'mcp-name': name }),
})

t.test('a 2026-07-28 request to a 2025-only server gets the fallback signal, and the client falls back', async (t) => {
  const gw = await startGateway(t, { servers: [{ name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'] }] })
  const raw = await postJson(gw.mcpUrl('everything'), { jsonrpc: '2.0', id: 'probe', method: 'server/discover', params: { _meta: META } }, modernHeaders('server/discover'))
  t.equal(raw.status, 400, 'HTTP 400 ...')
  t.same(raw.json, {
    jsonrpc: '2.0',
    id: 'probe',
    error: { code: -32000, message: 'Bad Request: this MCP server speaks protocol revision 2025-11-25 or earlier; send initialize', data: { code: 'PORTCULLIS_ERR_LEGACY_UPSTREAM' } },
  }, '... whose body is not a modern JSON-RPC error')
  t.match(gw.logs.text(), /"era":"legacy","msg":"stdio server speaks 2025-era MCP only"/)

  const client = await modernClient(t, gw.mcpUrl('everything'))
  t.equal(client.getNegotiatedProtocolVersion(), '2025-11-25', 'the 2.x client fell back to initialize')
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { message: 'after fallback' } })), 'Echo: after fallback')
})

t.test('a server that speaks 2026-07-28 serves modern clients statelessly, legacy clients with sessions', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE })] })
  const client = await modernClient(t, gw.mcpUrl('modern'))
  t.equal(client.getNegotiatedProtocolVersion(), '2026-07-28', 'negotiated the modern revision through the gateway')
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'modern hello' } })), 'modern hello')
  const progress: number[] = []
  const done = await client.callTool({ name: 'progress', arguments: { n: 3 } }, { onprogress: (p) => progress.push(p.progress) })
  t.same(progress, [1, 2, 3], 'progress arrives on the request\'s own stream')
  t.equal(textOf(done), 'done 3')
  const modernPids = new Set<string>()
  for (let i = 0; i < 3; i++) modernPids.add(textOf(await client.callTool({ name: 'pid', arguments: {} })))
  t.equal(modernPids.size, 1, 'stateless requests share one modern process')

  const legacy = await connectClient(t, gw.mcpUrl('modern'))
  t.ok(legacy.transport.sessionId, 'a 2025-era client still gets a session')
  t.equal(textOf(await legacy.client.callTool({ name: 'echo', arguments: { text: 'legacy hello' } })), 'legacy hello')
  t.not(textOf(await legacy.client.callTool({ name: 'pid', arguments: {} })), [...modernPids][0], 'on its own process, pinned to the 2025 era')
  t.match(gw.logs.text(), /"era":"modern","msg":"stdio server speaks MCP 2026-07-28"/)
})

t.test('raw 2026-07-28 requests: ids and results pass through; a modern request never gets a session id', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'shared' })] })
  const calls = await Promise.all([1, 2, 3, 4, 5].map((n) => postJson(gw.mcpUrl('modern'),
    { jsonrpc: '2.0', id: `call-${n}`, method: 'tools/call', params: { name: 'echo', arguments: { text: `n=${n}` }, _meta: META } },
    modernHeaders('tools/call', 'echo'))))
  calls.forEach((res, i) => {
    t.equal(res.status, 200)
    t.equal(res.headers.get('mcp-session-id'), null)
    t.match(res.json, { jsonrpc: '2.0', id: `call-${i + 1}`, result: { content: [{ type: 'text', text: `n=${i + 1}` }], resultType: 'complete' } })
  })
})
