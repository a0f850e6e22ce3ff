// Virtual servers (README "Virtual servers"): one endpoint whose members are a stdio server
// (the published server-everything), an HTTP server (the SDK fixture) and a second stdio server
// whose tool names collide with theirs. The official SDK client signs in once, through the real
// OAuth flow, against the virtual server's own resource; every member check stays the member's.
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { buildNameTable } from '../../src/virtual/names.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { connectClient, EVERYTHING_SERVER, eventually, INIT_BODY, isProcessAlive, postJson, startGateway, startRawServer, startUpstream, stdioServer, STDIO_MODERN_FIXTURE, textOf, type HttpFixture, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]
const TOOL_LIST_SERVER = new URL('../fixtures/tool-list-server.mjs', import.meta.url).pathname
/** Over 64 characters: the merged name is shortened with a hash of the full name. */
const LONG_NAME = `summarize_${'quarterly_'.repeat(6)}report`

interface AuditRecord { server: string, virtualServer?: string, method: string, jsonrpcId?: unknown, requestId?: string, target?: { name: string }, decision: string, user?: { username: string } | null }

/** The tool-list fixture's tools: `echo` collides with both other members', and one name is too long for Claude. */
function listFile (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-virtual-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'tools.json')
  writeFileSync(file, JSON.stringify([
    { name: 'echo', description: 'Echo the arguments', inputSchema: { type: 'object', properties: { text: { type: 'string' } } } },
    { name: LONG_NAME, description: 'A tool with a very long name', inputSchema: { type: 'object', properties: {} } },
  ]))
  return file
}

async function virtualGateway (t: Test, upstream: HttpFixture, extra: Record<string, unknown> = {}): Promise<RunningGateway> {
  return startGateway(t, {
    auth: { users: USERS },
    servers: [
      { name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'] },
      { name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['slow'], whoami: { rateLimit: '2/min' } } },
      { name: 'notes', transport: 'stdio', command: process.execPath, args: [TOOL_LIST_SERVER, listFile(t)] },
    ],
    virtualServers: [{ name: 'work', members: ['everything', 'fx', 'notes'], tools: { deny: ['notes__echo'] } }],
    ...extra,
  })
}

/** The SDK client signed in (login and consent once) against the virtual server, with sampling and elicitation. */
async function signIn (t: Test, gw: RunningGateway, username: string): Promise<{ client: Client, transport: StreamableHTTPClientTransport, oauth: TestOAuthClient }> {
  const oauth = new TestOAuthClient({ name: `${username}'s client` })
  await connectWithOAuth(t, gw.mcpUrl('work'), { username, password: PASSWORD, issuer: gw.baseUrl, oauth })
  const transport = new StreamableHTTPClientTransport(new URL(gw.mcpUrl('work')), { authProvider: oauth })
  const client = new Client({ name: 'virtual-test', version: '1.0.0' }, { capabilities: { elicitation: { form: {} } } })
  // server-everything asks for several fields; the HTTP fixture for a name.
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    const asked = Object.keys((req.params as { requestedSchema?: { properties?: object } }).requestedSchema?.properties ?? {})
    return { action: 'accept', content: asked.includes('name') ? { name: 'Ada' } : { color: 'red', number: 7, pets: 'cats' } }
  })
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport, oauth }
}

const audits = (gw: RunningGateway): AuditRecord[] => gw.audit.lines.map((line) => JSON.parse(line) as AuditRecord)

t.test('one sign-in, merged lists, routing, member policy and limits, the virtual policy, audit, ownership', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await virtualGateway(t, upstream)
  const metadata = await (await fetch(`${gw.baseUrl}/.well-known/oauth-protected-resource/work/mcp`)).json() as { resource: string }
  t.equal(metadata.resource, gw.mcpUrl('work'), 'the virtual server is a protected resource of its own')
  const { client, transport, oauth } = await signIn(t, gw, 'alice')
  const token = oauth.savedTokens?.access_token ?? ''
  t.equal(JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).aud, gw.mcpUrl('work'), 'one token, for the virtual server')
  t.equal(client.getServerVersion()?.name, 'portcullis/work')

  const tools = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(tools.includes('everything__echo') && tools.includes('fx__echo'), 'a colliding name is prefixed with each member\'s name')
  t.notOk(tools.includes('notes__echo'), 'the virtual server\'s own deny hides a merged name')
  t.ok(tools.includes('whoami') && tools.includes('trigger-long-running-operation'), 'a name only one member lists keeps its own')
  t.notOk(tools.includes('slow'), 'the member\'s own policy (fx denies slow) filtered its list')
  const short = tools.find((name) => name.startsWith('summarize_'))
  t.equal(short?.length, 64, 'a name over 64 characters is shortened to 64')
  t.match(short, /_[0-9a-f]{8}$/, '... ending in a hash of the full name')

  t.equal(textOf(await client.callTool({ name: 'everything__echo', arguments: { message: 'hi' } })), 'Echo: hi', 'routed to server-everything')
  t.equal(textOf(await client.callTool({ name: 'fx__echo', arguments: { text: 'hello fx' } })), 'hello fx', 'routed to the HTTP member')
  t.equal(textOf(await client.callTool({ name: short ?? '', arguments: { q: 1 } })), '{"q":1}', 'the shortened name reaches the long-named tool')
  t.equal(textOf(await client.callTool({ name: 'whoami', arguments: {} })), 'fixture')

  await t.rejects(client.callTool({ name: 'notes__echo', arguments: { text: 'x' } }), /Forbidden by policy/, 'the virtual deny refuses a call')
  await t.rejects(client.callTool({ name: 'slow', arguments: { ms: 1 } }), /Unknown tool/, 'a tool the member denies is no tool of the virtual server')
  t.equal(textOf(await client.callTool({ name: 'whoami', arguments: {} })), 'fixture')
  await t.rejects(client.callTool({ name: 'whoami', arguments: {} }), /Too many requests|429/, 'the member\'s rate limit (2/min on whoami) applies')

  await eventually(() => audits(gw).some((r) => r.server === 'fx' && r.target?.name === 'echo'))
  const record = audits(gw).find((r) => r.server === 'fx' && r.method === 'tools/call' && r.target?.name === 'echo')
  t.equal(record?.virtualServer, 'work', 'the member\'s audit record names the virtual server')
  t.equal(record?.user?.username, 'alice')
  t.ok(audits(gw).some((r) => r.server === 'work' && r.decision === 'denied' && r.target?.name === 'notes__echo'), 'the virtual deny is audited')

  // Bob's own token, alice's session id: answered as for a session that does not exist.
  const bob = new TestOAuthClient({ name: 'bob\'s client' })
  await connectWithOAuth(t, gw.mcpUrl('work'), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl, oauth: bob })
  const foreign = await postJson(gw.mcpUrl('work'), { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'fx__echo', arguments: { text: 'from bob' } } }, {
    authorization: `Bearer ${bob.savedTokens?.access_token ?? ''}`, 'mcp-session-id': transport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25',
  })
  t.equal(foreign.status, 404, 'another user\'s session id: 404')
  t.notOk(JSON.stringify(upstream.seen).includes('from bob'), 'nothing of bob\'s reached the member')

  // The header a virtual server's caller once travelled in gives a socket request no power: without a token, 401.
  const forged = await postJson(gw.mcpUrl('fx'), INIT_BODY, { 'x-portcullis-virtual': 'A'.repeat(43) })
  t.equal(forged.status, 401, 'the old virtual credential header from a client is refused without a token')
  // With a token for the member, it is served as that token's caller, as without the header (no virtual server named).
  const direct = new TestOAuthClient({ name: 'alice\'s fx client' })
  await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth: direct })
  const served = await postJson(gw.mcpUrl('fx'), { ...INIT_BODY, id: 'direct-init' }, { 'x-portcullis-virtual': 'A'.repeat(43), authorization: `Bearer ${direct.savedTokens?.access_token ?? ''}` })
  t.equal(served.status, 200, 'with the member\'s token: served')
  await eventually(() => audits(gw).some((r) => r.server === 'fx' && r.jsonrpcId === 'direct-init'))
  const directRecord = audits(gw).find((r) => r.server === 'fx' && r.jsonrpcId === 'direct-init')
  t.equal(directRecord?.user?.username, 'alice', 'as the token\'s caller')
  t.equal(directRecord?.virtualServer, undefined, 'through no virtual server')
})

t.test('the virtual deny holds on <member>__<tool> whatever the other members list (prefix: auto, shortened names)', async (t) => {
  const upstream = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-virtual-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'tools.json')
  writeFileSync(file, JSON.stringify([{ name: 'forget_all', inputSchema: { type: 'object' } }, { name: LONG_NAME, inputSchema: { type: 'object' } }]))
  const deny = ['notes__forget_*', 'notes__*_report']
  const gw = await startGateway(t, {
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url },
      { name: 'notes', transport: 'stdio', command: process.execPath, args: [TOOL_LIST_SERVER, file] },
      { name: 'twin', transport: 'stdio', command: process.execPath, args: [TOOL_LIST_SERVER, file] },
    ],
    virtualServers: [{ name: 'alone', members: ['fx', 'notes'], tools: { deny } }, { name: 'both', members: ['fx', 'notes', 'twin'], tools: { deny } }],
  })
  // notes alone lists forget_all and the long name: they keep their own names (the long one shortened).
  const { client: alone } = await connectClient(t, gw.mcpUrl('alone'))
  const listed = (await alone.listTools()).tools.map((tool) => tool.name)
  t.ok(listed.includes('whoami'), 'the other member\'s tools are listed')
  t.notOk(listed.includes('forget_all'), 'a deny on notes__forget_* hides notes\' forget_all listed under its own name')
  t.notOk(listed.some((name) => name.startsWith('summarize_')), 'a deny on notes__*_report hides the shortened (hash-suffixed) name')
  await t.rejects(alone.callTool({ name: 'forget_all', arguments: {} }), /Forbidden by policy/, 'and refuses a call by its merged name')
  await t.rejects(alone.callTool({ name: 'notes__forget_all', arguments: {} }), /Unknown tool|Forbidden by policy/, 'the full name is no name of this list')
  t.ok(audits(gw).some((r) => r.server === 'alone' && r.decision === 'denied' && r.target?.name === 'forget_all'), 'the refusal is audited')

  // A second member listing the same names renames notes' ones (notes__…): the deny still holds, the twin's stay.
  const { client: both } = await connectClient(t, gw.mcpUrl('both'))
  const merged = (await both.listTools()).tools.map((tool) => tool.name)
  t.ok(merged.includes('twin__forget_all'), 'the other member\'s same-named tool is listed')
  t.notOk(merged.includes('notes__forget_all') || merged.includes('forget_all'), 'notes\' stays hidden')
  const longs = merged.filter((name) => name.startsWith('twin__summarize_') || name.startsWith('notes__summarize_'))
  t.equal(longs.length, 1, `one long name left (${longs.join(' ')})`)
  t.ok(longs[0]?.startsWith('twin__'), '... the twin\'s, not notes\' (whose shortened name ends in a hash)')
  await t.rejects(both.callTool({ name: 'notes__forget_all', arguments: {} }), /Forbidden by policy/, 'a call of notes\' tool is refused')
  const notesLong = buildNameTable([{ member: 'notes', name: LONG_NAME }, { member: 'twin', name: LONG_NAME }], { prefix: 'auto', separator: '__' }).entries[0]?.merged ?? ''
  t.match(notesLong, /^notes__summarize_.*_[0-9a-f]{8}$/)
  await t.rejects(both.callTool({ name: notesLong, arguments: {} }), /Forbidden by policy/, 'and of its shortened long name')
  t.equal(textOf(await both.callTool({ name: 'twin__forget_all', arguments: { ok: 1 } })), '{"ok":1}', 'the twin\'s tool runs')
  t.equal(textOf(await both.callTool({ name: longs[0] ?? '', arguments: { ok: 2 } })), '{"ok":2}')
  t.notOk(audits(gw).some((r) => r.server === 'notes' && r.method === 'tools/call'), 'no call reached notes')
})

t.test('progress and elicitation through the virtual server', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await virtualGateway(t, upstream)
  const { client } = await signIn(t, gw, 'alice')
  const progress: number[] = []
  const long = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } }, undefined, { onprogress: (p) => progress.push(p.progress) })
  t.same(progress, [1, 2, 3], 'the member\'s progress notifications reached the client')
  t.match(textOf(long), /Long running operation completed/)
  const elicited = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} })
  t.match(JSON.stringify(elicited), /accept/, 'elicitation/create reached the client and its answer went back to the member')
  const asked = await client.callTool({ name: 'ask', arguments: {} })
  t.equal(textOf(asked), 'accept:Ada', 'the HTTP member\'s elicitation too (its id rewritten and routed back)')
})

t.test('a member crash: its tools leave the list with list_changed, the rest keep working, it comes back', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await virtualGateway(t, upstream)
  const { client } = await signIn(t, gw, 'alice')
  let changes = 0
  client.setNotificationHandler(ToolListChangedNotificationSchema, async () => { changes++ })
  const names = async (): Promise<string[]> => (await client.listTools()).tools.map((tool) => tool.name)
  t.ok((await names()).includes('fx__echo'))

  // The HTTP member goes away: its tools leave the list, and the client hears of it.
  const port = new URL(upstream.url).port
  await upstream.close()
  const before = changes
  const without = await names()
  t.notOk(without.some((name) => name === 'fx__echo' || name === 'whoami'), 'the failed member\'s tools left the list')
  t.ok(without.includes('everything__echo') && without.some((name) => name.startsWith('summarize_')), 'the other members\' tools stay')
  t.ok(await eventually(() => changes > before), 'list_changed reached the client')
  t.equal(textOf(await client.callTool({ name: 'everything__echo', arguments: { message: 'still here' } })), 'Echo: still here', 'the other members keep working')
  // It comes back (a new server on the same address, which knows no session: the member session is
  // opened again) without the client listing: the gateway retries it and list_changed says so.
  const back = changes
  await startUpstream(t, { port: Number(port) })
  t.ok(await eventually(() => changes > back, 10_000), 'list_changed said it is back, the client not having listed')
  t.ok((await names()).includes('fx__echo'), 'the member is back on the list that follows')
  t.equal(textOf(await client.callTool({ name: 'fx__echo', arguments: { text: 'again' } })), 'again')

  // A stdio member's process is killed: its stream ends, it is marked down (list_changed), and the next use starts a new one.
  const everything = gw.app.portcullis.upstreams.get('everything')
  const pid = everything?.liveSessions?.()[0]?.pid
  t.ok(pid !== undefined && isProcessAlive(pid), 'server-everything runs for the session')
  const crashed = changes
  process.kill(pid ?? 0, 'SIGKILL')
  t.ok(await eventually(() => changes > crashed), 'list_changed reached the client when the process died')
  t.ok(await eventually(() => changes > crashed + 1, 10_000), 'and again when the retried member answered (the client not having listed)')
  t.ok((await names()).includes('everything__echo'), 'its tools are listed again')
  t.not(everything?.liveSessions?.()[0]?.pid, pid, 'from a new process')
  t.equal(textOf(await client.callTool({ name: 'everything__echo', arguments: { message: 'again' } })), 'Echo: again')
})

t.test('DELETE ends every member session', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await virtualGateway(t, upstream)
  const { client, transport } = await signIn(t, gw, 'alice')
  await client.listTools()
  const upstreams = gw.app.portcullis.upstreams
  const pids = ['everything', 'notes'].map((name) => upstreams.get(name)?.liveSessions?.()[0]?.pid ?? 0)
  t.ok(pids.every((pid) => pid > 0 && isProcessAlive(pid)), 'each stdio member runs a process for the session')
  t.equal(upstream.sessions.size, 1, 'the HTTP member holds one session')
  await transport.terminateSession()
  t.ok(await eventually(() => pids.every((pid) => !isProcessAlive(pid))), 'the stdio members\' processes ended')
  t.ok(await eventually(() => upstream.sessions.size === 0), 'the HTTP member\'s session ended')
  t.same(['everything', 'fx', 'notes'].map((name) => upstreams.get(name)?.liveSessions?.().length ?? 0), [0, 0, 0], 'no member session is left')
})

t.test('toolSearch: above the threshold, search_tools and call_tool stand in for the list (auth off: every caller anonymous)', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url },
      { name: 'notes', transport: 'stdio', command: process.execPath, args: [TOOL_LIST_SERVER, listFile(t)] },
    ],
    virtualServers: [
      { name: 'big', members: ['fx', 'notes'], prefix: 'always', separator: '.', toolSearch: { above: 3 }, tools: { deny: ['fx.leak'] } },
      { name: 'small', members: ['notes'], toolSearch: { above: 3 } },
      { name: 'plain', members: ['fx', 'notes'], prefix: 'never' },
    ],
  })
  const { client } = await connectClient(t, gw.mcpUrl('big'))
  t.same((await client.listTools()).tools.map((tool) => tool.name), ['search_tools', 'call_tool'], 'the two tools instead of the list')
  const found = await client.callTool({ name: 'search_tools', arguments: { query: 'echo text back', limit: 3 } })
  const names = (found.structuredContent as { tools: Array<{ name: string }> }).tools.map((tool) => tool.name)
  t.equal(names[0], 'fx.echo', 'BM25 over merged names and descriptions: the best match first')
  t.notOk(names.includes('fx.leak'), 'a tool the virtual policy denies is never found')
  t.equal(textOf(await client.callTool({ name: 'call_tool', arguments: { name: 'fx.echo', arguments: { text: 'via call_tool' } } })), 'via call_tool', 'call_tool runs the tool it names')
  await t.rejects(client.callTool({ name: 'call_tool', arguments: { name: 'fx.leak', arguments: {} } }), /Forbidden by policy/, 'the virtual policy judges the named tool')
  const bad = await client.callTool({ name: 'search_tools', arguments: {} })
  t.equal(bad.isError, true)
  t.match(textOf(bad), /needs "query"/, 'a bad search is a tool error the model can act on')
  const { client: few } = await connectClient(t, gw.mcpUrl('small'))
  const listed = (await few.listTools()).tools.map((tool) => tool.name)
  t.ok(listed.length === 2 && listed.includes('echo'), 'at or below the threshold, the tools themselves')

  const { client: plain } = await connectClient(t, gw.mcpUrl('plain'))
  const kept = (await plain.listTools()).tools.map((tool) => tool.name)
  t.ok(kept.includes('whoami') && !kept.includes('echo') && !kept.some((name) => name.includes('__')), 'prefix: never — names kept, a name both members list hidden')
  t.match(gw.logs.text(), /"collisions":\[\{"name":"echo","members":\["fx","notes"\]\}\].*"msg":"virtual server names listed by several members are hidden \(prefix: never\)"/, 'and the operator is told')
})

t.test('2026-07-28 clients: served without a session when every member speaks it, else told to fall back', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    servers: [
      stdioServer('m1', { script: STDIO_MODERN_FIXTURE }),
      stdioServer('m2', { script: STDIO_MODERN_FIXTURE }),
      { name: 'fx', transport: 'http', url: upstream.url },
    ],
    virtualServers: [{ name: 'modern', members: ['m1', 'm2'] }, { name: 'mixed', members: ['m1', 'fx'] }, { name: 'always', members: ['m1', 'm2'], prefix: 'always' }],
  })
  const memberLists = (virtualServer: string): number => audits(gw).filter((r) => r.virtualServer === virtualServer && r.method === 'tools/list').length
  const modern = new ModernClient({ name: 'modern-test', version: '2.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  const transport = new ModernTransport(new URL(gw.mcpUrl('modern')))
  await modern.connect(transport)
  t.teardown(() => modern.close())
  t.equal(modern.getNegotiatedProtocolVersion(), '2026-07-28', 'negotiated the modern revision with the virtual server')
  const names = (await modern.listTools()).tools.map((tool) => tool.name)
  t.ok(names.includes('m1__echo') && names.includes('m2__pid'), `merged statelessly (${names.join(' ')})`)
  t.equal(textOf(await modern.callTool({ name: 'm2__echo', arguments: { text: 'modern hello' } })), 'modern hello', 'a call routed to its member')
  const progress: number[] = []
  await modern.callTool({ name: 'm1__progress', arguments: { n: 2 } }, { onprogress: (p) => progress.push(p.progress) })
  t.same(progress, [1, 2], 'progress on the request\'s own stream')
  t.equal(transport.sessionId, undefined, 'no session')
  // Each call resolves its name from the caller's merged table, kept 30 s: the members are not listed again.
  t.ok(await eventually(() => memberLists('modern') > 0), 'the members were listed (audited)')
  const listed = memberLists('modern')
  for (const text of ['a', 'b', 'c']) t.equal(textOf(await modern.callTool({ name: 'm1__echo', arguments: { text } })), text)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(memberLists('modern'), listed, 'calls routed without listing the members again')

  const always = new ModernClient({ name: 'modern-test', version: '2.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await always.connect(new ModernTransport(new URL(gw.mcpUrl('always'))))
  t.teardown(() => always.close())
  t.equal(textOf(await always.callTool({ name: 'm2__echo', arguments: { text: 'by prefix' } })), 'by prefix', 'prefix: always, a call before any list')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(memberLists('always'), 0, '... routed on its prefix, no member listed')

  const mixed = new ModernClient({ name: 'modern-test', version: '2.0.0' }, { capabilities: {}, versionNegotiation: { mode: 'auto' } })
  await mixed.connect(new ModernTransport(new URL(gw.mcpUrl('mixed'))))
  t.teardown(() => mixed.close())
  t.equal(mixed.getNegotiatedProtocolVersion(), '2025-11-25', 'a 2025-only member: the client fell back to initialize')
  t.equal(textOf(await mixed.callTool({ name: 'fx__echo', arguments: { text: 'after fallback' } })), 'after fallback')
})

t.test('members\' list_changed reach the client; a cancellation reaches the member running the call; prompts and resources are routed', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    servers: [
      stdioServer('st'),
      { name: 'fx', transport: 'http', url: upstream.url },
      { name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'] },
    ],
    virtualServers: [{ name: 'a', members: ['st', 'fx'] }, { name: 'b', members: ['everything', 'fx'] }],
  })
  const { client } = await connectClient(t, gw.mcpUrl('a'))
  let changes = 0
  client.setNotificationHandler(ToolListChangedNotificationSchema, async () => { changes++ })
  t.ok((await client.listTools()).tools.some((tool) => tool.name === 'st__broadcast'))
  await client.callTool({ name: 'st__broadcast', arguments: {} })
  t.ok(await eventually(() => changes === 1), 'the stdio member\'s tools/list_changed reached the client')
  await client.callTool({ name: 'fx__broadcast', arguments: {} })
  t.ok(await eventually(() => changes === 2), 'and the HTTP member\'s (on its GET stream)')

  const abort = new AbortController()
  // Cancelled once the member says the call runs (its progress notification), not on a timer.
  const waiting = client.callTool({ name: 'wait-for-cancel', arguments: {} }, undefined, { signal: abort.signal, onprogress: () => abort.abort('changed my mind') })
  await t.rejects(waiting, /changed my mind|abort/i)
  t.ok(await eventually(async () => textOf(await client.callTool({ name: 'cancelled-count', arguments: {} })) === '1'), 'notifications/cancelled reached the member running the call')

  const { client: other } = await connectClient(t, gw.mcpUrl('b'))
  const prompts = (await other.listPrompts()).prompts.map((p) => p.name)
  t.ok(prompts.includes('args-prompt') && prompts.includes('leaky-prompt'), 'prompts of both members')
  t.match(JSON.stringify((await other.getPrompt({ name: 'args-prompt', arguments: { city: 'Kyiv' } })).messages), /Kyiv/, 'prompts/get routed to its member')
  const uris = (await other.listResources()).resources.map((r) => r.uri)
  t.ok(uris.includes('leak://config') && uris.some((uri) => uri.startsWith('demo://')), 'resources of both members, with their own URIs')
  t.equal((await other.readResource({ uri: 'leak://config' })).contents[0]?.uri, 'leak://config', 'resources/read routed by the URI table')
  const everythingUri = uris.find((uri) => uri.startsWith('demo://')) ?? ''
  t.equal((await other.readResource({ uri: everythingUri })).contents[0]?.uri, everythingUri)
  const template = (await other.listResourceTemplates()).resourceTemplates.find((rt) => rt.uriTemplate.includes('/text/{'))?.uriTemplate ?? ''
  const unlisted = template.replace(/\{[^}]*\}/, '999')
  t.equal((await other.readResource({ uri: unlisted })).contents[0]?.uri, unlisted, 'a URI no list names is routed by its template\'s literal prefix')
  const completed = await other.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'Eng' } })
  t.same(completed.completion.values, ['Engineering'], 'completion/complete routed by the prompt\'s merged name')
})

t.test('a member that keeps losing its session (404 after the one retry): 502 naming the member, not a 404 the client reads as its own session gone', async (t) => {
  // A member whose server lists a tool and forgets every session at tools/call.
  const raw = await startRawServer(t, (req, res) => {
    let body = ''
    req.on('data', (chunk: Buffer) => { body += chunk.toString() })
    req.on('end', () => {
      if (req.method === 'DELETE') return res.writeHead(200).end()
      if (req.method !== 'POST') return res.writeHead(405).end()
      const message = JSON.parse(body) as { id?: number, method: string }
      const json = (value: unknown, headers: Record<string, string> = {}): void => { res.writeHead(200, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value)) }
      if (message.method === 'initialize') return json({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 'forgetful', version: '1' } } }, { 'mcp-session-id': `s${Math.random()}` })
      if (message.id === undefined) return res.writeHead(202).end()
      if (message.method === 'tools/list') return json({ jsonrpc: '2.0', id: message.id, result: { tools: [{ name: 'gone', inputSchema: { type: 'object' } }, { name: 'kept', inputSchema: { type: 'object' } }] } })
      // An answer laid out as no JSON.stringify would write it: relayed byte for byte.
      if ((message as { params?: { name?: string } }).params?.name === 'kept') return res.writeHead(200, { 'content-type': 'application/json' }).end(`{"result": {"content": [{"type": "text", "text": "kept"}]}, "jsonrpc": "2.0", "id": ${String(message.id)}}`)
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } }))
    })
  })
  const gw = await startGateway(t, { servers: [{ name: 'forgetful', transport: 'http', url: raw.url }], virtualServers: [{ name: 'v', members: ['forgetful'] }] })
  const init = await postJson(gw.mcpUrl('v'), INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  const listed = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers)
  t.match(listed.json, { result: { tools: [{ name: 'gone' }] } })
  const called = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'gone', arguments: {} } }, headers)
  t.equal(called.status, 502, 'not 404: the client\'s virtual session is alive')
  t.match(called.json, { id: 3, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  t.match((called.json as { error: { message: string } }).error.message, /member "forgetful"/, 'naming the member')
  t.equal((await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 4, method: 'ping' }, headers)).status, 200, 'the virtual session still answers')
  // The same call at the member's URL and at the virtual one: the same bytes (no parse and re-encode on the way).
  const memberInit = await postJson(gw.mcpUrl('forgetful'), INIT_BODY)
  const direct = await postJson(gw.mcpUrl('forgetful'), { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'kept', arguments: {} } }, { 'mcp-session-id': memberInit.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' })
  const relayed = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'kept', arguments: {} } }, headers)
  t.equal(direct.headers.get('content-type')?.startsWith('application/json'), true, 'the member route answers JSON')
  t.equal(relayed.text, direct.text, 'the virtual route relays the member\'s JSON answer byte for byte')
})

t.test('raw: the gateway answers initialize; a session is required after it; batches and unknown methods refused; the GET stream is kept alive', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { streamKeepAliveMs: 60, servers: [{ name: 'fx', transport: 'http', url: upstream.url }], virtualServers: [{ name: 'v', members: ['fx'] }] })
  const init = await postJson(gw.mcpUrl('v'), INIT_BODY)
  t.equal(init.status, 200)
  t.match(init.json, { id: 1, result: { protocolVersion: '2025-11-25', capabilities: { tools: { listChanged: true } }, serverInfo: { name: 'portcullis/v' } } })
  t.equal(upstream.sessions.size, 0, 'no member session before the client needs one')
  const session = init.headers.get('mcp-session-id') ?? ''
  const headers = { 'mcp-session-id': session, 'mcp-protocol-version': '2025-11-25' }
  const noSession = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 2, method: 'tools/list' })
  t.equal(noSession.status, 400)
  t.match(noSession.json, { error: { data: { code: 'PORTCULLIS_ERR_SESSION_REQUIRED' } } })
  const unknown = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 3, method: 'tools/list' }, { ...headers, 'mcp-session-id': 'nope' })
  t.equal(unknown.status, 404, 'an unknown session: 404')
  const batch = await postJson(gw.mcpUrl('v'), [{ jsonrpc: '2.0', id: 4, method: 'ping' }], headers)
  t.equal(batch.status, 400, 'a batch is refused')
  const odd = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 5, method: 'sampling/whatever' }, headers)
  t.match(odd.json, { id: 5, error: { code: -32601 } }, 'an unknown method: -32601')
  t.match((await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 6, method: 'ping' }, headers)).json, { id: 6, result: {} })
  const listed = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 7, method: 'tools/list' }, headers)
  t.ok((listed.json as { result: { tools: unknown[] } }).result.tools.length > 0, 'tools listed')
  t.equal(upstream.sessions.size, 1, 'the member session opened on first use')

  const abort = new AbortController()
  t.teardown(() => abort.abort())
  const stream = await fetch(gw.mcpUrl('v'), { headers: { accept: 'text/event-stream', ...headers }, signal: abort.signal })
  t.equal(stream.status, 200)
  const reader = stream.body?.getReader()
  let text = ''
  while (!text.includes(': keep-alive')) text += new TextDecoder().decode((await reader?.read())?.value)
  t.pass('a quiet GET stream gets keep-alive comments')
  const options = await fetch(gw.mcpUrl('v'), { method: 'OPTIONS', headers: { origin: gw.baseUrl, 'access-control-request-method': 'POST' } })
  t.equal(options.status, 204, 'CORS preflight as for servers')
  t.equal((await fetch(gw.mcpUrl('v'), { method: 'PUT' })).status, 405)
})

t.test('revoking a user ends their virtual sessions (and the member sessions behind them): the old session id is unknown', async (t) => {
  const adminToken = 'a'.repeat(43)
  const gw = await startGateway(t, {
    auth: { users: USERS },
    admin: { bearerToken: '${PORTCULLIS_ADMIN_TOKEN}' },
    servers: [
      { name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'] },
      { name: 'notes', transport: 'stdio', command: process.execPath, args: [TOOL_LIST_SERVER, listFile(t)] },
    ],
    virtualServers: [{ name: 'work', members: ['everything', 'notes'] }],
  }, { PORTCULLIS_ADMIN_TOKEN: adminToken })
  const { client, transport, oauth } = await signIn(t, gw, 'alice')
  t.ok((await client.listTools()).tools.length > 0, 'members opened')
  const sessionId = transport.sessionId ?? ''
  const revoked = await fetch(`${gw.baseUrl}/admin/api/v1/users/alice/revoke`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}` } })
  t.equal(revoked.status, 200, 'revoked')
  // Alice signs in again with the same client: same owner, a fresh token. Her old session is gone.
  // A provider of its own holding the same registration: her first client, still open, meets the
  // revoke with a 401 and starts an authorization of its own, which must not replace this flow's
  // PKCE verifier (it did: "code_verifier does not match code_challenge").
  const again = new TestOAuthClient({ name: 'alice\'s client' })
  again.info = oauth.info
  await connectWithOAuth(t, gw.mcpUrl('work'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth: again })
  t.equal(again.info?.client_id, oauth.info?.client_id, 'the same client signed in again')
  const token = again.tokens()?.access_token ?? ''
  const old = await postJson(gw.mcpUrl('work'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { authorization: `Bearer ${token}`, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' })
  t.equal(old.status, 404, 'the virtual session ended with the revoke')
})

t.test('bodyLimit holds for what the virtual server sends a member, not only for what the client sent it', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { bodyLimit: 4096, servers: [{ name: 'fx', transport: 'http', url: upstream.url }], virtualServers: [{ name: 'v', members: ['fx'], prefix: 'always', toolSearch: { above: 0 } }] })
  const init = await postJson(gw.mcpUrl('v'), INIT_BODY)
  const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  t.ok((await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers)).status === 200, 'the member session is open')
  const pad = Array(600).fill('1e20').join(',')
  const calls = (): number => upstream.seen.filter((e) => e.method === 'POST' && JSON.stringify(e.body ?? '').includes('tools/call')).length
  // call_tool's inner call is a message the virtual server writes: 1e20 is encoded as
  // 100000000000000000000, and the body the member would get is four times the client's.
  const inner = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"call_tool","arguments":{"name":"fx__echo","arguments":{"text":"x","pad":[${pad}]}}}}`
  t.ok(Buffer.byteLength(inner) < 4096, 'the client\'s body is under bodyLimit')
  const before = calls()
  const res = await postJson(gw.mcpUrl('v'), inner, headers)
  t.equal(res.status, 413, 'the member route refuses the longer body it would forward')
  t.match(res.json, { id: 3, error: { data: { code: 'PORTCULLIS_ERR_BODY_TOO_LARGE' } } })
  t.equal(calls(), before, 'nothing over bodyLimit reached the upstream')
  // The client's own call goes as its bytes with the member's name for the tool: 1e20 stays 1e20.
  const own = `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"fx__echo","arguments":{"text":"x","pad":[${pad}]}}}`
  t.equal((await postJson(gw.mcpUrl('v'), own, headers)).status, 200, 'the client\'s own call, renamed, is as long as it came')
  t.equal(calls(), before + 1, 'and reached the upstream')
  const small = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'fx__echo', arguments: { text: 'hi' } } }, headers)
  t.equal(small.status, 200, 'a call within the limit is served')
})

t.test('2026-07-28 through a virtual server: the route reading the body checks Mcp-Method / Mcp-Name as a member URL does (400 -32020)', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('sql', { script: new URL('../fixtures/stdio-param-server.mjs', import.meta.url).pathname })], virtualServers: [{ name: 'v', members: ['sql'], prefix: 'always' }] })
  const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' } }
  const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'sql__echo', arguments: { text: 'hi' }, _meta: meta } }
  const mirrored = { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'sql__echo' }
  const served = await postJson(gw.mcpUrl('v'), call, mirrored)
  t.equal(served.status, 200, 'headers that say what the body says: served')
  // A proxy in front that routes or denies on Mcp-Name must not be shown one tool while another runs.
  const other = await postJson(gw.mcpUrl('v'), call, { ...mirrored, 'mcp-name': 'sql__something_else' })
  t.equal(other.status, 400)
  t.match(other.json, { id: 2, error: { code: -32020, data: { code: 'PORTCULLIS_ERR_HEADER_MISMATCH' } } }, 'Mcp-Name differing from the body')
  const missing = await postJson(gw.mcpUrl('v'), call, { 'mcp-protocol-version': '2026-07-28' })
  t.match(missing.json, { error: { code: -32020 } }, 'no Mcp-Method on a 2026-07-28 request')
  const atMember = await postJson(gw.mcpUrl('sql'), { ...call, params: { ...call.params, name: 'echo' } }, { ...mirrored, 'mcp-name': 'something_else' })
  t.equal(atMember.status, other.status, 'the member URL answers the same mismatch the same way')
})

t.test('2026-07-28 through a virtual server: a tool mirroring arguments in Mcp-Param-* headers (x-mcp-header) is served', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('sql', { script: new URL('../fixtures/stdio-param-server.mjs', import.meta.url).pathname })], virtualServers: [{ name: 'v', members: ['sql'], prefix: 'always' }] })
  const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' } }
  const headers = (method: string, name?: string, extra: Record<string, string> = {}): Record<string, string> => ({ 'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...(name === undefined ? {} : { 'mcp-name': name }), ...extra })
  const listed = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: meta } }, headers('tools/list'))
  const tool = (listed.json as { result: { tools: Array<{ name: string, inputSchema: { properties: Record<string, Record<string, unknown>> } }> } }).result.tools.find((x) => x.name === 'sql__execute_sql')
  t.equal(tool?.inputSchema.properties.region?.['x-mcp-header'], 'Region', 'the merged definition keeps the annotation')
  const args = { region: 'us-west1', query: 'select 1' }
  const called = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'sql__execute_sql', arguments: args, _meta: meta } }, headers('tools/call', 'sql__execute_sql', { 'mcp-param-region': 'us-west1' }))
  t.equal(called.status, 200, `a correctly mirrored call through the virtual server is served: ${called.text.slice(0, 200)}`)
  t.notMatch(called.text, /"error"/, 'answered, not refused')
  const spaced = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'sql__execute_sql', arguments: { ...args, region: ' eu west ' }, _meta: meta } }, headers('tools/call', 'sql__execute_sql', { 'mcp-param-region': `=?base64?${Buffer.from(' eu west ').toString('base64')}?=` }))
  t.equal(spaced.status, 200, 'a value HTTP would trim crosses in the base64 form')
})
