// Guardrails through a virtual server (issues 16 and 18): a virtual server over an HTTP member and
// a stdio member, called at /<virtual>/mcp under the merged (prefixed) names, gets each member's
// redactResults, validateArguments, arguments.deny and pinTools exactly as the member's own URL
// does: the same masked results, the same refusals (status and JSON-RPC error), nothing refused
// reaching the upstream, and every refusal audited by the member with the virtual server named.
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connectClient, eventually, EVERYTHING_SERVER, postJson, startGateway, startUpstream, stdioServer, textOf, type RunningGateway } from '../helpers.js'
import { assertNothingLogged, LEAK_COUNTS, MASKED_STRUCTURED, MASKED_TEXT, messagesOf, records, REDACT, SECRET_VALUES, session, type Json } from '../redaction-helpers.js'
import { V1, V2 } from '../tool-listings.js'
import { FAKE } from '../fixtures/fake-secrets.mjs'
import { startToolListServer } from '../fixtures/tool-list-server.mjs'

const TOOL_LIST_SERVER = new URL('../fixtures/tool-list-server.mjs', import.meta.url).pathname
/** Every merged name is `<member>__<tool>`, whatever the members list: the names a test calls stay put. */
const VIRTUAL = { name: 'work', prefix: 'always' }

const names = (tools: Array<{ name: string }>): string[] => tools.map((tool) => tool.name).sort()
const call = (id: number, name: string, args: unknown): Json => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } })

/**
 * The same call at the member's URL (its own name) and at the virtual server's (the merged name),
 * each in a session of its own: both answers, for the test to compare.
 */
async function atBoth (gw: RunningGateway, member: string, id: number, tool: string, args: unknown): Promise<{ direct: Awaited<ReturnType<typeof postJson>>, virtual: Awaited<ReturnType<typeof postJson>> }> {
  const direct = await postJson(gw.mcpUrl(member), call(id, tool, args), await session(gw.mcpUrl(member)))
  const virtual = await postJson(gw.mcpUrl(VIRTUAL.name), call(id, `${member}__${tool}`, args), await session(gw.mcpUrl(VIRTUAL.name)))
  return { direct, virtual }
}

/** The refusal at the virtual URL is the member's: same status, same JSON-RPC error. */
function sameRefusal (t: Test, both: Awaited<ReturnType<typeof atBoth>>, what: string): void {
  t.equal(both.virtual.status, both.direct.status, `${what}: the member's HTTP status (${both.direct.status})`)
  t.same(both.virtual.json, both.direct.json, `${what}: the member's JSON-RPC error`)
}

/** The member's audit records of its calls made through the virtual server. */
const viaVirtual = (gw: RunningGateway, server: string): Json[] =>
  records(gw).filter((r) => r.server === server && r.method === 'tools/call' && r.virtualServer === VIRTUAL.name)

for (const responses of ['SSE', 'JSON'] as const) {
  t.test(`redactResults (HTTP member answering ${responses}, stdio member): results masked through the virtual URL as at the member's, counts only in the audit`, async (t) => {
    const upstream = await startUpstream(t, { jsonResponse: responses === 'JSON' })
    const gw = await startGateway(t, {
      servers: [
        { name: 'fx', transport: 'http', url: upstream.url, redactResults: REDACT },
        stdioServer('st', { redactResults: REDACT }),
      ],
      virtualServers: [{ ...VIRTUAL, members: ['fx', 'st'] }],
    })
    const { client } = await connectClient(t, gw.mcpUrl(VIRTUAL.name))
    for (const member of ['fx', 'st']) {
      const leaked = await client.callTool({ name: `${member}__leak`, arguments: {} })
      t.same(leaked.content, [{ type: 'text', text: MASKED_TEXT }, { type: 'image', data: FAKE.aws, mimeType: 'image/png' }], `${member}: text masked, the Luhn-invalid number and the blob kept`)
      t.same(leaked.structuredContent, MASKED_STRUCTURED, `${member}: structured content masked`)
    }
    t.equal(textOf(await client.callTool({ name: 'st__echo', arguments: { text: FAKE.jwt } })), '[redacted:jwts]')

    // The wire: the answer keeps the member's form (JSON or an event stream), and no piece of a secret crosses it.
    const both = await atBoth(gw, 'fx', 7, 'leak', {})
    t.equal(both.virtual.headers.get('content-type')?.split(';')[0], responses === 'JSON' ? 'application/json' : 'text/event-stream', `a ${responses} answer`)
    t.same(messagesOf(both.virtual), messagesOf(both.direct), 'the same masked answer as at the member\'s URL')
    t.notOk(SECRET_VALUES.some((value) => both.virtual.text.includes(value)), 'no secret on the wire')

    await eventually(() => viaVirtual(gw, 'fx').length === 2 && viaVirtual(gw, 'st').length === 2)
    t.same(viaVirtual(gw, 'fx').map((r) => r.redacted), [LEAK_COUNTS, LEAK_COUNTS], 'the member\'s audit counts what was masked, by kind, naming the virtual server')
    t.same(viaVirtual(gw, 'st').map((r) => r.redacted), [LEAK_COUNTS, { jwts: 1 }])
    assertNothingLogged(t, gw)
  })
}

t.test('validateArguments and arguments.deny (HTTP member, stdio server-everything): refused through the virtual URL as at the member\'s, before the upstream', async (t) => {
  const dir = t.testdir({})
  const file = join(dir, 'tools.json')
  const number = { type: 'number' }
  writeFileSync(file, JSON.stringify([
    { name: 'get-sum', inputSchema: { type: 'object', properties: { a: number, b: number }, required: ['a', 'b'] } },
    { name: 'run_query', inputSchema: { type: 'object', properties: { sql: { type: 'string' } } } },
  ]))
  const upstream = await startToolListServer({ file })
  t.teardown(() => upstream.close())
  const deny = ['(?i)\\bdrop\\b']
  const gw = await startGateway(t, {
    servers: [
      { name: 'db', transport: 'http', url: upstream.url, validateArguments: true, tools: { run_query: { arguments: { deny: { sql: deny } } } } },
      { name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'], validateArguments: true, tools: { echo: { arguments: { deny: { message: deny } } } } },
    ],
    virtualServers: [{ ...VIRTUAL, members: ['db', 'everything'] }],
  })

  // Arguments are checked against the last listing: the virtual server's lists its members'.
  const { client } = await connectClient(t, gw.mcpUrl(VIRTUAL.name))
  t.ok(names((await client.listTools()).tools).includes('db__get-sum'))

  // A bad argument: -32602 naming the path, the member's own error, and the HTTP upstream never sees it.
  const badHttp = await atBoth(gw, 'db', 8, 'get-sum', { a: 1, b: '2' })
  t.match(badHttp.virtual.json, { jsonrpc: '2.0', id: 8, error: { code: -32602, message: /arguments\/b must be number/, data: { code: 'PORTCULLIS_ERR_INVALID_ARGUMENTS', path: '/b' } } })
  sameRefusal(t, badHttp, 'an invalid argument (HTTP member)')
  const badStdio = await atBoth(gw, 'everything', 9, 'get-sum', { a: 'one', b: 2 })
  t.match(badStdio.virtual.json, { id: 9, error: { code: -32602, message: /tool "get-sum": arguments\/a must be number/, data: { code: 'PORTCULLIS_ERR_INVALID_ARGUMENTS', path: '/a' } } })
  sameRefusal(t, badStdio, 'an invalid argument (stdio member)')
  await t.rejects(client.callTool({ name: 'everything__get-sum', arguments: { a: 1 } }), { code: -32602, message: /must have required property 'b'/ }, 'the SDK client gets an error its model can act on')

  // A valid call is answered, its arguments reaching the upstream untouched: no coercion, no
  // defaults, the client's own bytes (`2.50`, `1e0`, its spacing and key order) with only the
  // tool's name replaced by the member's own.
  const valid = '{ "jsonrpc": "2.0", "id": 10, "method": "tools/call",\n  "params": { "arguments": { "b": 2.50, "a": 1e0 }, "name": "db__get-sum" } }'
  const answered = await postJson(gw.mcpUrl(VIRTUAL.name), valid, await session(gw.mcpUrl(VIRTUAL.name)))
  t.match(answered.json, { id: 10, result: { content: [{ text: '{"b":2.5,"a":1}' }] } }, 'a valid call is answered by the upstream')
  const reached = upstream.bodies.find((b) => /"id": ?10\b/.test(b))
  t.equal(reached, valid.replace('"db__get-sum"', '"get-sum"'), 'the upstream got the client\'s call, byte for byte, under the member\'s name')
  t.match(textOf(await client.callTool({ name: 'everything__get-sum', arguments: { a: 1, b: 2 } })), /\b3\b/, 'and server-everything answers a valid call')

  // arguments.deny: a denied pattern refused as at the member's URL, on both members.
  const deniedHttp = await atBoth(gw, 'db', 11, 'run_query', { sql: 'select 1; DROP TABLE users' })
  t.match(deniedHttp.virtual.json, { id: 11, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' }, message: /argument "sql" of tool "run_query" matches the deny pattern/ } })
  sameRefusal(t, deniedHttp, 'a denied argument (HTTP member)')
  const deniedStdio = await atBoth(gw, 'everything', 12, 'echo', { message: 'Drop it' })
  t.match(deniedStdio.virtual.json, { id: 12, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' }, message: /argument "message" of tool "echo" matches the deny pattern/ } })
  sameRefusal(t, deniedStdio, 'a denied argument (stdio member)')
  t.equal(textOf(await client.callTool({ name: 'everything__echo', arguments: { message: 'dropbox' } })), 'Echo: dropbox', 'an argument the pattern does not match passes')
  t.notOk(upstream.bodies.some((b) => /"id": ?(8|11)\b/.test(b)), 'no refused call reached the HTTP upstream')

  await eventually(() => viaVirtual(gw, 'everything').length === 5)
  t.same(viaVirtual(gw, 'db').map((r) => `${String(r.jsonrpcId)} ${String(r.decision)}`), ['8 invalid', '10 allowed', '11 denied'], 'the HTTP member audited each call through the virtual server')
  t.same(viaVirtual(gw, 'everything').map((r) => r.decision), ['invalid', 'invalid', 'allowed', 'denied', 'allowed'], 'and the stdio member')
})

/**
 * A virtual server over the pinning fixture twice (HTTP and stdio, each reading a tools file of
 * its own), both members under `pinTools`. The files start as V1 (approved on first use).
 */
async function pinned (t: Test, pinTools: 'enforce' | 'warn'): Promise<{ gw: RunningGateway, files: string[], upstream: Awaited<ReturnType<typeof startToolListServer>> }> {
  const dir = t.testdir({})
  const files = ['tl', 'ts'].map((member) => join(dir, `${member}.json`))
  for (const file of files) writeFileSync(file, JSON.stringify(V1))
  const upstream = await startToolListServer({ file: files[0] ?? '' })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, {
    servers: [
      { name: 'tl', transport: 'http', url: upstream.url, pinTools },
      stdioServer('ts', { script: TOOL_LIST_SERVER, flags: [files[1] ?? ''], pinTools }),
    ],
    virtualServers: [{ ...VIRTUAL, members: ['tl', 'ts'] }],
  })
  return { gw, files, upstream }
}

const definitionEvents = (gw: RunningGateway, action: string): Json[] => records(gw).filter((r) => r.event === 'tool_definitions' && r.action === action)

t.test('pinTools enforce: a rug pull behind the virtual server hides the tool from the merged list and refuses its call as the member\'s URL does', async (t) => {
  const { gw, files, upstream } = await pinned(t, 'enforce')
  const { client } = await connectClient(t, gw.mcpUrl(VIRTUAL.name))
  t.same(names((await client.listTools()).tools), ['tl__echo', 'tl__read_note', 'tl__stable', 'ts__echo', 'ts__read_note', 'ts__stable'], 'first use through the virtual server')
  await eventually(() => definitionEvents(gw, 'approved').length === 2)
  t.same(definitionEvents(gw, 'approved').map((r) => r.server).sort(), ['tl', 'ts'], 'each member approved its own first listing')

  for (const file of files) writeFileSync(file, JSON.stringify(V2))
  t.same(names((await client.listTools()).tools), ['tl__stable', 'ts__stable'], 'the merged list hides the changed and the added tools')
  const changed = await atBoth(gw, 'tl', 20, 'echo', { text: 'hi' })
  t.match(changed.virtual.json, { id: 20, error: { data: { code: 'PORTCULLIS_ERR_TOOL_NOT_APPROVED' }, message: /definition of tool "echo" of server "tl" changed since it was approved/ } })
  sameRefusal(t, changed, 'a changed tool (HTTP member)')
  const added = await atBoth(gw, 'ts', 21, 'upload', { text: 'hi' })
  t.match(added.virtual.json, { id: 21, error: { data: { code: 'PORTCULLIS_ERR_TOOL_NOT_APPROVED' }, message: /tool "upload" was added to server "ts" after its tools were approved/ } })
  sameRefusal(t, added, 'an added tool (stdio member)')
  await t.rejects(client.callTool({ name: 'ts__read_note', arguments: { text: 'n', path: '/etc/passwd' } }), { code: 403, message: /definition of tool .{1,3}read_note.{1,3} of server .{1,3}ts.{1,3} changed since it was approved/ }, 'the SDK client is refused in its own session too')
  t.equal(textOf(await client.callTool({ name: 'tl__stable', arguments: {} })), '{}', 'an unchanged tool still works')
  t.notOk(upstream.bodies.some((b) => /"id": ?20\b/.test(b)), 'the refused call never reached the HTTP upstream')

  await eventually(() => viaVirtual(gw, 'ts').filter((r) => r.decision === 'denied').length === 2)
  t.same(viaVirtual(gw, 'tl').map((r) => `${String(r.jsonrpcId)} ${String(r.decision)}`).filter((s) => s.startsWith('20 ')), ['20 denied'], 'the HTTP member audited the refusal, naming the virtual server')
  t.same(viaVirtual(gw, 'ts').filter((r) => r.decision === 'denied').map((r) => (r.target as { name: string }).name), ['upload', 'read_note'], 'and the stdio member')
})

t.test('pinTools warn: the rug pull behind the virtual server is listed and called, and logged, counted and audited', async (t) => {
  const { gw, files } = await pinned(t, 'warn')
  const { client } = await connectClient(t, gw.mcpUrl(VIRTUAL.name))
  t.equal((await client.listTools()).tools.length, 6, 'first use')
  await eventually(() => definitionEvents(gw, 'approved').length === 2)

  for (const file of files) writeFileSync(file, JSON.stringify(V2))
  t.same(names((await client.listTools()).tools), ['tl__echo', 'tl__read_note', 'tl__stable', 'tl__upload', 'ts__echo', 'ts__read_note', 'ts__stable', 'ts__upload'], 'warn hides nothing')
  t.equal(textOf(await client.callTool({ name: 'tl__upload', arguments: { text: 'x' } })), '{"text":"x"}', 'warn refuses nothing (HTTP member)')
  t.equal(textOf(await client.callTool({ name: 'ts__echo', arguments: { text: 'y' } })), '{"text":"y"}', '(stdio member)')
  await eventually(() => definitionEvents(gw, 'changed').length === 2)
  const changes = definitionEvents(gw, 'changed').map((r) => `${String(r.server)}: ${(r.changes as Array<{ name: string, change: string }>).map((c) => `${c.change} ${c.name}`).join(', ')}`).sort()
  t.same(changes, ['tl: changed echo, changed read_note, added upload', 'ts: changed echo, changed read_note, added upload'], 'each member audited its change once')
  t.match(gw.logs.text(), /tool definitions differ from the approved ones/)
  const metrics = await (await fetch(`${gw.baseUrl}/metrics`)).text()
  t.match(metrics, /portcullis_tool_definition_changes_total\{server="ts",change="added"\} 1/)
  t.same(viaVirtual(gw, 'tl').map((r) => r.decision), ['allowed'], 'the call allowed, in the member\'s audit naming the virtual server')
})
