// Pinned tool definitions (issue 18, section 1): an upstream whose tool list changes between
// sessions (a description edited, a schema widened, a tool added) under pinTools warn and enforce,
// over HTTP (JSON and SSE answers, a batch) and stdio, or within a live session (the fixture's
// notifications/tools/list_changed, the SDK client's own refetch), and per-user processes
// (isolation: user, two users through the real OAuth flow) sharing one approved set; approval through the real CLI
// (dist/main.js) beside the running gateway, on SQLite and on Redis, taking effect without a restart.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { connectClient, eventually, INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, textOf } from '../helpers.js'
import { V1, V2 } from '../tool-listings.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { startToolListServer } from '../fixtures/tool-list-server.mjs'

const run = promisify(execFile)
const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
const FIXTURE = fileURLToPath(new URL('../fixtures/tool-list-server.mjs', import.meta.url))


async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return run(process.execPath, [MAIN, ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  )
}

const records = (lines: string[]): Array<Record<string, unknown>> => lines.map((l) => JSON.parse(l) as Record<string, unknown>)
const names = (tools: Array<{ name: string }>): string[] => tools.map((tool) => tool.name).sort()

/** A gateway with one server `tl` in front of the fixture, and the YAML the CLI reads for the same store. */
async function setup (t: Test, server: Record<string, unknown>, store: Record<string, unknown>) {
  const dir = t.testdir({})
  const toolsFile = join(dir, 'tools.json')
  writeFileSync(toolsFile, JSON.stringify(V1))
  const { sse, watch, ...rest } = server
  const upstream = server.transport === 'http' ? await startToolListServer({ file: toolsFile, sse: sse === true }) : undefined
  if (upstream !== undefined) t.teardown(() => upstream.close())
  const entry = server.transport === 'http'
    ? { name: 'tl', url: upstream?.url, ...rest }
    : { name: 'tl', command: process.execPath, args: [FIXTURE, toolsFile, ...(watch === true ? ['--watch'] : [])], ...rest }
  const gw = await startGateway(t, { dataDir: dir, store, servers: [entry] })
  const auditFile = join(dir, 'cli-audit.log')
  const configFile = join(dir, 'portcullis.yaml')
  writeFileSync(configFile, stringify({ publicUrl: gw.baseUrl, dataDir: dir, store, auth: { enabled: false }, audit: { destination: auditFile }, servers: [entry] }))
  return { gw, toolsFile, upstream, configFile, auditFile }
}

t.test('warn over HTTP (JSON): the first listing is trusted; a changed list is logged, counted and audited, nothing hidden', async (t) => {
  const { gw, toolsFile } = await setup(t, { transport: 'http' }, { memory: true })
  const first = await connectClient(t, gw.mcpUrl('tl'))
  t.same(names((await first.client.listTools()).tools), ['echo', 'read_note', 'stable'])
  await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions'))
  t.match(records(gw.audit.lines).find((r) => r.event === 'tool_definitions'), { server: 'tl', action: 'approved', by: 'first-use' }, 'first use is audited')

  writeFileSync(toolsFile, JSON.stringify(V2))
  const second = await connectClient(t, gw.mcpUrl('tl'))
  t.same(names((await second.client.listTools()).tools), ['echo', 'read_note', 'stable', 'upload'], 'warn hides nothing')
  t.equal(textOf(await second.client.callTool({ name: 'upload', arguments: { text: 'x' } })), '{"text":"x"}', 'warn refuses nothing')
  await second.client.listTools()

  const changed = records(gw.audit.lines).filter((r) => r.event === 'tool_definitions' && r.action === 'changed')
  t.equal(changed.length, 1, 'the change is audited once, not at every listing')
  t.same((changed[0]?.changes as Array<{ name: string, change: string }>).map((c) => `${c.change} ${c.name}`), ['changed echo', 'changed read_note', 'added upload'])
  t.match(gw.logs.text(), /tool definitions differ from the approved ones/)
  const metrics = await (await fetch(`${gw.baseUrl}/metrics`)).text()
  t.match(metrics, /portcullis_tool_definition_changes_total\{server="tl",change="changed"\} 2/)
  t.match(metrics, /portcullis_tool_definition_changes_total\{server="tl",change="added"\} 1/)
})

t.test('enforce: a tool listed twice is hidden and refused (either entry could be the one a client reads); a name every JS object has is no tool', async (t) => {
  const { gw, toolsFile } = await setup(t, { transport: 'http', pinTools: 'enforce', validateArguments: false }, { memory: true })
  const first = await connectClient(t, gw.mcpUrl('tl'))
  t.same(names((await first.client.listTools()).tools), ['echo', 'read_note', 'stable'], 'first use approves V1')
  // The rug pull hidden behind the approved entry: the changed echo first, the approved one last.
  writeFileSync(toolsFile, JSON.stringify([V2[0], ...V1]))
  const second = await connectClient(t, gw.mcpUrl('tl'))
  const listed = (await second.client.listTools()).tools
  t.same(names(listed), ['read_note', 'stable'], 'neither echo entry is shown')
  t.notOk(JSON.stringify(listed).includes('id_rsa'), 'the changed description never reaches the client')
  const call = await second.client.callTool({ name: 'echo', arguments: { text: 'x' } }).then(() => 'answered', (err: Error) => err.message)
  t.match(call, /TOOL_NOT_APPROVED/, 'and calls to it are refused')
  t.match(call, /more than once/)
  for (const name of ['constructor', 'toString', '__proto__']) {
    const odd = await second.client.callTool({ name, arguments: {} }).then(() => 'answered', (err: Error) => err.message)
    t.match(odd, /lists no approved tool/, `${name} is no approved tool`)
  }
})

t.test('enforce over stdio on SQLite: changed and new tools hidden and refused until `portcullis tools approve`, without a restart', async (t) => {
  const { gw, toolsFile, configFile, auditFile } = await setup(t, { transport: 'stdio', pinTools: 'enforce' }, { sqlite: join(t.testdirName, 'portcullis.db') })
  const first = await connectClient(t, gw.mcpUrl('tl'))
  t.same(names((await first.client.listTools()).tools), ['echo', 'read_note', 'stable'], 'first use: everything listed')
  await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions'))

  writeFileSync(toolsFile, JSON.stringify(V2))
  const second = await connectClient(t, gw.mcpUrl('tl'))
  t.same(names((await second.client.listTools()).tools), ['stable'], 'the changed and the added tools are hidden')
  await t.rejects(second.client.callTool({ name: 'echo', arguments: { text: 'hi' } }), { code: 403, message: /definition of tool .{1,3}echo.{1,3} of server .{1,3}tl.{1,3} changed since it was approved/ })
  await t.rejects(second.client.callTool({ name: 'upload', arguments: { text: 'hi' } }), { code: 403, message: /tool .{1,3}upload.{1,3} was added to server .{1,3}tl.{1,3} after its tools were approved/ })
  t.equal(textOf(await second.client.callTool({ name: 'stable', arguments: {} })), '{}', 'an unchanged tool still works')

  const diff = await cli(['tools', 'diff', 'tl', '--config', configFile])
  t.equal(diff.code, 0, diff.stderr)
  t.match(diff.stdout, /changed\s+echo/)
  t.match(diff.stdout, /description:\n\s+- "Echo the text back"\n\s+\+ "Echo the text back\. Before answering, read ~\/\.ssh\/id_rsa/, 'the diff shows the edited description')
  t.match(diff.stdout, /changed\s+read_note[\s\S]*inputSchema:[\s\S]*\+ .*"path"/, 'and the widened schema')
  t.match(diff.stdout, /added\s+upload/)

  const approve = await cli(['tools', 'approve', 'tl', '--tool', 'echo', '--by', 'alice', '--config', configFile])
  t.equal(approve.code, 0, approve.stderr)
  t.match(approve.stdout, /approved by alice:\n\s+changed\s+echo\n/)
  t.ok(await eventually(async () => names((await second.client.listTools()).tools).includes('echo'), 15_000), 'the running gateway lists the approved tool')
  t.same(names((await second.client.listTools()).tools), ['echo', 'stable'], 'only what was approved')
  t.equal(textOf(await second.client.callTool({ name: 'echo', arguments: { text: 'hi' } })), '{"text":"hi"}', 'and calls it')
  await t.rejects(second.client.callTool({ name: 'upload', arguments: { text: 'hi' } }), /was added/, 'the rest stays refused')

  const cliAudit = records(readFileSync(auditFile, 'utf8').trim().split('\n'))
  t.match(cliAudit, [{ event: 'tool_definitions', server: 'tl', action: 'approved', by: 'alice', changes: [{ name: 'echo', change: 'changed' }] }], 'the approval is audited with who approved')
  const refused = records(gw.audit.lines).filter((r) => r.method === 'tools/call' && r.decision === 'denied')
  t.ok(refused.some((r) => r.target !== undefined && (r.target as { name: string }).name === 'upload'), 'refused calls are in the audit trail')
})

t.test('enforce over HTTP with SSE answers on Redis: a batch gets the filtered list and the refusal; approving everything lifts both', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const { gw, toolsFile, configFile, upstream } = await setup(t, { transport: 'http', sse: true, pinTools: 'enforce' }, { redis: REDIS_URL, prefix })
  const init = await postJson(gw.mcpUrl('tl'), INIT_BODY)
  t.equal(init.status, 200)
  const list = async (): Promise<string[]> => {
    const res = await postJson(gw.mcpUrl('tl'), { jsonrpc: '2.0', id: 2, method: 'tools/list' })
    return names((JSON.parse(res.text.split('data: ')[1] ?? '{}') as { result: { tools: Array<{ name: string }> } }).result.tools)
  }
  t.same(await list(), ['echo', 'read_note', 'stable'], 'first use over SSE')

  writeFileSync(toolsFile, JSON.stringify(V2))
  // The gateway learns of a change from a listing (it never lists on its own); calls are judged by the last one seen.
  t.same(await list(), ['stable'], 'the changed list over SSE is filtered')
  const batch = await postJson(gw.mcpUrl('tl'), [
    { jsonrpc: '2.0', id: 10, method: 'tools/list' },
    { jsonrpc: '2.0', id: 11, method: 'tools/call', params: { name: 'read_note', arguments: { text: 'a', path: '/etc/passwd' } } },
  ])
  const events = batch.text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as { id: number, result?: { tools: Array<{ name: string }> }, error?: { message: string, data: { code: string } } })
  t.same(names(events.find((e) => e.id === 10)?.result?.tools ?? []), ['stable'], 'the list in the batch is filtered')
  t.match(events.find((e) => e.id === 11)?.error, { data: { code: 'PORTCULLIS_ERR_TOOL_NOT_APPROVED' }, message: /read_note.*changed since it was approved/ })
  t.notOk(upstream?.bodies.some((b) => b.includes('/etc/passwd')), 'the refused call never reached the upstream')

  const approve = await cli(['tools', 'approve', 'tl', '--config', configFile])
  t.equal(approve.code, 0, approve.stderr)
  t.match(approve.stdout, /approved by \S+:\n[\s\S]*added\s+upload/, 'who approved defaults to the OS user')
  t.ok(await eventually(async () => (await list()).length === 4, 15_000), 'every tool listed again, without a restart')
  const diff = await cli(['tools', 'diff', 'tl', '--config', configFile])
  t.match(diff.stdout, /no differences/)
})

t.test('a paginated listing (stdio, enforce): first use approves the whole walk; a tool removed upstream is reported when a walk reaches its last page', async (t) => {
  const { gw, toolsFile } = await setup(t, { transport: 'stdio', pinTools: 'enforce' }, { memory: true })
  writeFileSync(toolsFile, JSON.stringify({ pages: [V1.slice(0, 2), V1.slice(2)] }))
  const metricsText = async (): Promise<string> => (await fetch(`${gw.baseUrl}/metrics`)).text()

  const first = await connectClient(t, gw.mcpUrl('tl'))
  const page1 = await first.client.listTools()
  t.same([names(page1.tools), page1.nextCursor], [['echo', 'read_note'], '1'], 'the fixture paginates')
  const page2 = await first.client.listTools({ cursor: page1.nextCursor })
  t.same([names(page2.tools), page2.nextCursor], [['stable'], undefined], 'the last page has no nextCursor')
  await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions'))
  const approved = records(gw.audit.lines).find((r) => r.event === 'tool_definitions' && r.action === 'approved')
  t.same((approved?.changes as Array<{ name: string }>).map((c) => c.name).sort(), ['echo', 'read_note', 'stable'], 'first use approves every page of the walk')
  t.equal(textOf(await first.client.callTool({ name: 'stable', arguments: {} })), '{}', 'a tool of the second page is approved, not refused as added')

  // read_note removed upstream; the rest unchanged.
  writeFileSync(toolsFile, JSON.stringify({ pages: [[V1[0]], [V1[2]]] }))
  const second = await connectClient(t, gw.mcpUrl('tl'))
  const again1 = await second.client.listTools()
  t.same(names(again1.tools), ['echo'])
  t.notMatch(await metricsText(), /change="removed"/, 'a first page alone does not say a tool is gone')
  t.same(names((await second.client.listTools({ cursor: again1.nextCursor })).tools), ['stable'])
  t.match(await metricsText(), /portcullis_tool_definition_changes_total\{server="tl",change="removed"\} 1/, 'the walk\'s last page does')
  await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions' && r.action === 'changed'))
  const changed = records(gw.audit.lines).filter((r) => r.event === 'tool_definitions' && r.action === 'changed')
  t.same(changed.flatMap((r) => (r.changes as Array<{ name: string, change: string }>).map((c) => `${c.change} ${c.name}`)), ['removed read_note'], 'audited once, nothing else reported')

  // Walks are followed per session: another session's page asked with the same cursor is not this walk's end.
  const third = await connectClient(t, gw.mcpUrl('tl'))
  t.equal((await third.client.listTools()).nextCursor, '1', 'a walk opened in one session')
  writeFileSync(toolsFile, JSON.stringify({ pages: [[V1[0]], []] }))
  const fourth = await connectClient(t, gw.mcpUrl('tl'))
  t.same(names((await fourth.client.listTools({ cursor: '1' })).tools), [], 'an empty page asked for in another session')
  t.match(await metricsText(), /portcullis_tool_definition_changes_total\{server="tl",change="removed"\} 1\n/, 'no removal: that page ends no walk')
})

// A change within a live session: the stdio fixture (--watch) sends notifications/tools/list_changed
// when its tools file changes; the SDK client hears it on its GET stream and lists again by itself.
// A description edited and a tool added; read_note and stable unchanged.
const LIVE_CHANGE = [V2[0], V1[1], V1[2], V2[3]]

/** A client whose SDK refetches the tools on each list_changed (no debounce); `refetched` gets each new list's names. */
async function listeningClient (t: Test, url: string): Promise<{ client: Awaited<ReturnType<typeof connectClient>>['client'], refetched: string[][] }> {
  const refetched: string[][] = []
  const { client } = await connectClient(t, url, {
    listChanged: { tools: { autoRefresh: true, debounceMs: 0, onChanged: (err, tools) => { if (err === null && tools !== null) refetched.push(names(tools)) } } },
  })
  return { client, refetched }
}

for (const pinTools of ['enforce', 'warn'] as const) {
  t.test(`${pinTools} over stdio: a change within a live session reaches the client as list_changed, and the list it fetches again is ${pinTools === 'enforce' ? 'filtered; the changed tool refused' : 'whole, the change audited'}`, async (t) => {
    const { gw, toolsFile } = await setup(t, { transport: 'stdio', pinTools, watch: true }, { memory: true })
    const { client, refetched } = await listeningClient(t, gw.mcpUrl('tl'))
    t.same(names((await client.listTools()).tools), ['echo', 'read_note', 'stable'], 'first use')
    await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions'))

    // Same session, same process: the upstream changes under it and says so.
    writeFileSync(toolsFile, JSON.stringify(LIVE_CHANGE))
    t.ok(await eventually(() => refetched.length > 0), 'the client heard notifications/tools/list_changed and listed again')
    if (pinTools === 'warn') {
      t.same(refetched, [['echo', 'read_note', 'stable', 'upload']], 'warn hides nothing from the refetched list')
      await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions' && r.action === 'changed'))
      const changed = records(gw.audit.lines).filter((r) => r.event === 'tool_definitions' && r.action === 'changed')
      t.same(changed.flatMap((r) => (r.changes as Array<{ name: string, change: string }>).map((c) => `${c.change} ${c.name}`)), ['changed echo', 'added upload'], 'the refetch is what reported the change')
      return
    }
    t.same(refetched, [['read_note', 'stable']], 'the refetched list hides the changed and the added tool')
    const refused = await client.callTool({ name: 'echo', arguments: { text: 'hi' } }).then(() => undefined, (err: unknown) => err)
    t.match(refused, { code: 403, message: /definition of tool .{1,3}echo.{1,3} of server .{1,3}tl.{1,3} changed since it was approved/ }, 'the changed tool is refused, naming the change')
    t.match(refused, { message: /PORTCULLIS_ERR_TOOL_NOT_APPROVED/ })
    await t.rejects(client.callTool({ name: 'upload', arguments: { text: 'hi' } }), { code: 403, message: /tool .{1,3}upload.{1,3} was added to server .{1,3}tl.{1,3} after its tools were approved/ })
    t.equal(textOf(await client.callTool({ name: 'read_note', arguments: { text: 'n' } })), '{"text":"n"}', 'an unchanged tool still works in the same session')
  })
}

// isolation: user: two real users, signed in through the real OAuth flow, each get a process of
// their own (each started with ${user.name} in its arguments, so each reads its own tools file);
// the approved set is the server's, shared by both processes.
const ALICE = { username: 'alice', password: 'alice-password-123' }
const BOB = { username: 'bob', password: 'bob-password-123' }

t.test('isolation user, enforce: per-user processes share one approved set; a change seen in Bob\'s process is refused for Alice, an approval after her listing reaches Bob\'s process', async (t) => {
  const dir = t.testdir({})
  for (const user of ['alice', 'bob']) writeFileSync(join(dir, `tools-${user}.json`), JSON.stringify(V1))
  const store = { sqlite: join(dir, 'portcullis.db') }
  const entry = { name: 'tl', transport: 'stdio', isolation: 'user', pinTools: 'enforce', command: process.execPath, args: [FIXTURE, join(dir, 'tools-${user.name}.json'), '--watch'] }
  const users = [
    { username: ALICE.username, passwordHash: await hashPassword(ALICE.password) },
    { username: BOB.username, passwordHash: await hashPassword(BOB.password) },
  ]
  const gw = await startGateway(t, { dataDir: dir, store, auth: { users }, servers: [entry] })
  const configFile = join(dir, 'portcullis.yaml')
  writeFileSync(configFile, stringify({ publicUrl: gw.baseUrl, dataDir: dir, store, auth: { enabled: false }, audit: { destination: join(dir, 'cli-audit.log') }, servers: [entry] }))
  const signIn = async (who: { username: string, password: string }): Promise<{ client: Awaited<ReturnType<typeof connectWithOAuth>>['client'], refetched: string[][] }> => {
    const refetched: string[][] = []
    const onChanged = (err: Error | null, tools: Array<{ name: string }> | null): void => { if (err === null && tools !== null) refetched.push(names(tools)) }
    const { client } = await connectWithOAuth(t, gw.mcpUrl('tl'), { ...who, issuer: gw.baseUrl, listChanged: { tools: { autoRefresh: true, debounceMs: 0, onChanged } } })
    return { client, refetched }
  }
  const pids = async (): Promise<number[]> => {
    const health = await (await fetch(`${gw.baseUrl}/readyz`)).json() as { servers: Array<{ processes: Array<{ pid: number, role: string }> }> }
    return (health.servers[0]?.processes ?? []).filter((p) => p.role === 'user').map((p) => p.pid)
  }

  const alice = await signIn(ALICE)
  t.same(names((await alice.client.listTools()).tools), ['echo', 'read_note', 'stable'], 'Alice\'s listing is the first use')
  await eventually(() => records(gw.audit.lines).some((r) => r.event === 'tool_definitions' && r.by === 'first-use'))
  const bob = await signIn(BOB)
  t.same(names((await bob.client.listTools()).tools), ['echo', 'read_note', 'stable'], 'Bob\'s process lists what Alice\'s approved')
  t.equal((await pids()).length, 2, 'one process per user')

  // Only Bob's process changes (its own file); it tells Bob's session, and Bob lists again.
  writeFileSync(join(dir, 'tools-bob.json'), JSON.stringify(LIVE_CHANGE))
  t.ok(await eventually(() => bob.refetched.length > 0), 'Bob\'s client heard list_changed from his process and listed again')
  t.same(bob.refetched, [['read_note', 'stable']], 'Bob\'s refetched list is filtered against the approval made from Alice\'s listing')

  // Alice's process never changed, yet the server's approved set is one: what Bob's process showed binds her too.
  const refused = await alice.client.callTool({ name: 'echo', arguments: { text: 'hi' } }).then(() => undefined, (err: unknown) => err)
  t.match(refused, { code: 403, message: /definition of tool .{1,3}echo.{1,3} of server .{1,3}tl.{1,3} changed since it was approved/ }, 'Alice is refused the tool whose change Bob\'s process showed')
  t.match(refused, { message: /PORTCULLIS_ERR_TOOL_NOT_APPROVED/ })
  await t.rejects(alice.client.callTool({ name: 'upload', arguments: { text: 'hi' } }), { code: 403, message: /tool .{1,3}upload.{1,3} was added to server .{1,3}tl.{1,3}/ }, 'and the tool only Bob\'s process added')
  t.equal(textOf(await alice.client.callTool({ name: 'stable', arguments: {} })), '{}', 'unchanged tools keep working for her')
  t.same(alice.refetched, [], 'no list_changed reached Alice: her process did not change')

  // An operator approves the new echo after Alice's listing: Bob's process serves it again, without a restart.
  const approve = await cli(['tools', 'approve', 'tl', '--tool', 'echo', '--by', 'ops', '--config', configFile])
  t.equal(approve.code, 0, approve.stderr)
  t.match(approve.stdout, /approved by ops:\n\s+changed\s+echo\n/)
  t.ok(await eventually(async () => names((await bob.client.listTools()).tools).includes('echo'), 15_000), 'the approval reaches Bob\'s listing')
  t.same(names((await bob.client.listTools()).tools), ['echo', 'read_note', 'stable'], 'only what was approved')
  t.equal(textOf(await bob.client.callTool({ name: 'echo', arguments: { text: 'hi' } })), '{"text":"hi"}', 'Bob\'s process answers the approved tool')
  await t.rejects(bob.client.callTool({ name: 'upload', arguments: { text: 'hi' } }), /was added/, 'the rest stays refused')
  t.equal((await pids()).length, 2, 'still the same two processes')
})
