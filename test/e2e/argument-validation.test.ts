// Validated arguments and argument deny rules (issue 18, section 2): tools/call arguments checked
// against @modelcontextprotocol/server-everything's own schemas (the real server over stdio, and its
// real listing served over HTTP to see the bytes the upstream gets), unknown tools refused, and
// per-tool deny patterns, all before the call leaves the gateway.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { McpError } from '@modelcontextprotocol/sdk/types.js'
import { connectClient, EVERYTHING_SERVER, INIT_BODY, postJson, startGateway, textOf } from '../helpers.js'
import { startToolListServer } from '../fixtures/tool-list-server.mjs'

const records = (lines: string[]): Array<Record<string, unknown>> => lines.map((l) => JSON.parse(l) as Record<string, unknown>)

t.test('server-everything over stdio: a valid call passes, invalid arguments and unknown tools get -32602 with the path', async (t) => {
  const gw = await startGateway(t, { servers: [{ name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'], validateArguments: true }] })
  const { client } = await connectClient(t, gw.mcpUrl('everything'))
  const tools = (await client.listTools()).tools
  t.ok(tools.some((tool) => tool.name === 'get-sum'), 'get-sum is listed')

  t.match(textOf(await client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } })), /\b3\b/, 'a valid call is answered by the server')
  const wrongType = await client.callTool({ name: 'get-sum', arguments: { a: 'one', b: 2 } }).then(() => undefined, (err: unknown) => err)
  t.ok(wrongType instanceof McpError, 'the client gets a JSON-RPC error it can hand to its model')
  t.match(wrongType, { code: -32602, message: /tool "get-sum": arguments\/a must be number/, data: { code: 'PORTCULLIS_ERR_INVALID_ARGUMENTS', path: '/a' } })
  await t.rejects(client.callTool({ name: 'get-sum', arguments: { a: 1 } }), { code: -32602, message: /must have required property 'b'/ })
  await t.rejects(client.callTool({ name: 'get-summ', arguments: { a: 1, b: 2 } }), { code: -32602, message: /server "everything" lists no tool "get-summ"/ })

  const calls = records(gw.audit.lines).filter((r) => r.method === 'tools/call')
  t.same(calls.map((r) => r.decision), ['allowed', 'invalid', 'invalid', 'invalid'], 'refusals are audited as invalid')
})

t.test('server-everything\'s schemas over HTTP: the valid call reaches the upstream byte for byte, the invalid one never does', async (t) => {
  // The real server's listing, taken from it through a gateway, then served by a fixture that records bodies.
  const direct = await startGateway(t, { servers: [{ name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'], pinTools: 'off' }] })
  const { client } = await connectClient(t, direct.mcpUrl('everything'))
  const listing = (await client.listTools()).tools
  const dir = t.testdir({})
  const file = join(dir, 'tools.json')
  writeFileSync(file, JSON.stringify(listing))
  const upstream = await startToolListServer({ file })
  t.teardown(() => upstream.close())

  const gw = await startGateway(t, { servers: [{ name: 'ev', transport: 'http', url: upstream.url, validateArguments: true }] })
  t.equal((await postJson(gw.mcpUrl('ev'), INIT_BODY)).status, 200)
  t.equal((await postJson(gw.mcpUrl('ev'), { jsonrpc: '2.0', id: 2, method: 'tools/list' })).status, 200)

  const valid = '{ "jsonrpc": "2.0", "id": 7, "method": "tools/call",\n  "params": { "arguments": { "b": 2.50, "a": 1e0 }, "name": "get-sum" } }'
  const answered = await postJson(gw.mcpUrl('ev'), valid)
  t.equal(answered.status, 200)
  t.equal(upstream.bodies.at(-1), valid, 'the upstream got the exact bytes the client sent')

  const invalid = await postJson(gw.mcpUrl('ev'), { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'get-sum', arguments: { a: 1, b: '2' } } })
  t.equal(invalid.status, 200, 'an error the model can read, not an HTTP failure')
  t.match(invalid.json, { jsonrpc: '2.0', id: 8, error: { code: -32602, message: /arguments\/b must be number/, data: { code: 'PORTCULLIS_ERR_INVALID_ARGUMENTS', path: '/b' } } })
  t.notOk(upstream.bodies.some((b) => b.includes('"id":8')), 'the invalid call never reached the upstream')

  const batch = await postJson(gw.mcpUrl('ev'), [
    { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'echo', arguments: { message: 'hi' } } },
    { jsonrpc: '2.0', id: 10, method: 'tools/call', params: { name: 'echo', arguments: {} } },
  ])
  const answers = batch.json as Array<{ id: number, result?: unknown, error?: { code: number } }>
  t.ok(answers.find((a) => a.id === 9)?.result, 'the valid member of a batch is answered')
  t.match(answers.find((a) => a.id === 10)?.error, { code: -32602 }, 'the invalid member is refused alone')
})

t.test('argument deny rules: a matching argument is refused by policy, (?i) is case-insensitive, word boundaries hold', async (t) => {
  const dir = t.testdir({})
  const file = join(dir, 'tools.json')
  writeFileSync(file, JSON.stringify([{ name: 'run_query', inputSchema: { type: 'object', properties: { sql: { type: 'string' } } } }]))
  const upstream = await startToolListServer({ file })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, {
    servers: [{ name: 'db', transport: 'http', url: upstream.url, tools: { run_query: { arguments: { deny: { sql: ['(?i)\\bdrop\\b', '(?i)\\btruncate\\b'] } } } } }],
  })
  const call = (id: number, sql: unknown): Promise<{ status: number, json: unknown }> =>
    postJson(gw.mcpUrl('db'), { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'run_query', arguments: { sql } } })

  const refused = await call(1, 'select 1; DROP TABLE users')
  t.equal(refused.status, 403)
  t.match(refused.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' }, message: /argument "sql" of tool "run_query" matches the deny pattern "\(\?i\)\\\\bdrop\\\\b"/ } })
  t.equal((await call(2, ['select 1', 'truncate logs'])).status, 403, 'strings inside arrays are checked too')
  const allowed = await call(3, 'select * from dropbox_files')
  t.equal(allowed.status, 200, 'a word that merely contains "drop" passes')
  t.notOk(upstream.bodies.some((b) => /DROP TABLE|truncate logs/.test(b)), 'refused calls never reached the upstream')
  t.ok(upstream.bodies.some((b) => b.includes('dropbox_files')))
})
