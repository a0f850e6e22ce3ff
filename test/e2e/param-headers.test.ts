// Mcp-Param-* headers (MCP 2026-07-28 "Custom Headers from Tool Parameters") for a stdio server the
// gateway speaks HTTP for: learnt from the tools/list answers it relays, checked on modern tools/call,
// with the real MCP SDK 2.x client (which mirrors annotated arguments) and raw requests.
import t from 'tap'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { postJson, startGateway, stdioServer, textOf } from '../helpers.js'

const PARAM_FIXTURE = new URL('../fixtures/stdio-param-server.mjs', import.meta.url).pathname
const META = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
}
const headersFor = (method: string, name?: string, params: Record<string, string> = {}): Record<string, string> => ({
  'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...(name === undefined ? {} : { 'mcp-name': name }), ...params,
})
const call = (id: number, args: Record<string, unknown>): Record<string, unknown> => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'execute_sql', arguments: args, _meta: META } })

t.test('stdio server: Mcp-Param-* headers must mirror the annotated arguments once the tool is listed', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('sql', { script: PARAM_FIXTURE })] })
  const url = gw.mcpUrl('sql')
  const args = { region: 'us-west1', query: 'select 1', options: { shard: 3 } }

  const unlisted = await postJson(url, call(1, args), headersFor('tools/call', 'execute_sql'))
  t.equal(unlisted.status, 200, 'before any tools/list the gateway cannot know what is mirrored: no check')

  const list = await postJson(url, { jsonrpc: '2.0', id: 2, method: 'tools/list', params: { _meta: META } }, headersFor('tools/list'))
  t.equal(list.status, 200)

  const missing = await postJson(url, call(3, args), headersFor('tools/call', 'execute_sql', { 'mcp-param-shard': '3' }))
  t.equal(missing.status, 400)
  t.same(missing.json, { jsonrpc: '2.0', id: 3, error: { code: -32020, message: 'Header mismatch: the Mcp-Param-Region header is required: tool "execute_sql" mirrors arguments.region', data: { code: 'PORTCULLIS_ERR_HEADER_MISMATCH' } } })
  const wrong = await postJson(url, call(4, args), headersFor('tools/call', 'execute_sql', { 'Mcp-Param-Region': 'eu-west1', 'mcp-param-shard': '3' }))
  t.equal(wrong.status, 400)
  t.match(wrong.json, { id: 4, error: { code: -32020, message: "Header mismatch: Mcp-Param-Region header value 'eu-west1' does not match body value 'us-west1'" } })
  const shard = await postJson(url, call(5, args), headersFor('tools/call', 'execute_sql', { 'mcp-param-region': 'us-west1', 'mcp-param-shard': '4' }))
  t.equal(shard.status, 400, 'a nested integer parameter')

  const encoded = await postJson(url, call(6, { region: 'Zürich', query: 'q' }), headersFor('tools/call', 'execute_sql', { 'mcp-param-region': `=?base64?${Buffer.from('Zürich').toString('base64')}?=` }))
  t.equal(encoded.status, 200, 'base64 values are decoded before comparing')
  t.match(encoded.json, { id: 6, result: { content: [{ text: 'Zürich:q:-:-' }] } })
  const right = await postJson(url, call(7, args), headersFor('tools/call', 'execute_sql', { 'mcp-param-region': 'us-west1', 'mcp-param-shard': '3.0' }))
  t.equal(right.status, 200, 'integers compare numerically')

  const echo = await postJson(url, { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo', arguments: { text: 'plain' }, _meta: META } }, headersFor('tools/call', 'echo'))
  t.equal(echo.status, 200, 'a tool without annotations needs no Mcp-Param headers')

  // The MCP SDK 2.x client mirrors annotated arguments itself: it passes.
  const client = new Client({ name: 'modern-test', version: '2.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  t.teardown(() => client.close())
  t.equal(client.getNegotiatedProtocolVersion(), '2026-07-28')
  t.ok((await client.listTools()).tools.some((tool) => tool.name === 'execute_sql'))
  t.equal(textOf(await client.callTool({ name: 'execute_sql', arguments: { region: 'eu-north1', query: 'q', options: { shard: 9, dryRun: true } } })), 'eu-north1:q:9:true')
})
