// stdio fault cases with real child processes: what the client sees, and what is left running.
import t from 'tap'
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { StdioUpstream } from '../../src/upstreams/stdio/stdio-upstream.js'
import { connectClient, eventually, INIT_BODY, isProcessAlive, postJson, processGroupMembers, startGateway, stdioServer, textOf } from '../helpers.js'

interface Health { servers: Array<{ name: string, isReachable: boolean, sessions: number, processes: Array<{ pid: number, role: string }> }> }
const health = async (baseUrl: string): Promise<Health> => await (await fetch(`${baseUrl}/readyz`)).json() as Health

t.test('a command that cannot start: a JSON-RPC error naming the server; other servers keep working', async (t) => {
  const gw = await startGateway(t, { servers: [{ name: 'ghost', transport: 'stdio', command: '/nonexistent/mcp-server' }, stdioServer('ok')] })
  const res = await postJson(gw.mcpUrl('ghost'), { ...INIT_BODY, id: 'i1' })
  t.equal(res.status, 502)
  t.same(res.json, { jsonrpc: '2.0', id: 'i1', error: { code: -32603, message: 'Upstream MCP server is unavailable: MCP server "ghost" failed to start', data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  t.match(gw.logs.text(), /"error":"ENOENT".*"command":"\/nonexistent\/mcp-server".*"msg":"stdio server failed to start"/)
  const { client } = await connectClient(t, gw.mcpUrl('ok'))
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'still here' } })), 'still here')
})

t.test('a server that exits during initialize: a JSON-RPC error naming the server', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('crashy', { flags: ['--crash-on-init'] })] })
  const res = await postJson(gw.mcpUrl('crashy'), { ...INIT_BODY, id: 5 })
  t.equal(res.status, 502)
  t.match(res.json, { id: 5, error: { code: -32603, message: 'Upstream MCP server is unavailable: MCP server "crashy" exited' } })
  t.match(gw.logs.text(), /"code":3.*"msg":"stdio server exited"/)
})

t.test('repeated crashes pause new processes (503 + Retry-After) instead of a tight respawn loop', async (t) => {
  let clock = 1_000_000
  const gw = await startGateway(t, { servers: [stdioServer('crashy', { flags: ['--crash-on-init'] })] }, {}, { now: () => clock })
  for (let i = 0; i < 3; i++) t.equal((await postJson(gw.mcpUrl('crashy'), INIT_BODY)).status, 502, `crash ${i + 1}`)
  const paused = await postJson(gw.mcpUrl('crashy'), INIT_BODY)
  t.equal(paused.status, 503)
  t.equal(paused.headers.get('retry-after'), '1')
  t.match(paused.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_RESTARTING' } } })
  t.match(await health(gw.baseUrl), { servers: [{ name: 'crashy', isReachable: false }] })
  t.match(gw.logs.text(), /"failures":3,"pausedMs":1000,"msg":"stdio server keeps failing; pausing new processes"/)
  clock += 1_001
  t.equal((await postJson(gw.mcpUrl('crashy')
    , INIT_BODY)).status, 502, 'after the pause it tries again')
  const again = await postJson(gw.mcpUrl('crashy'), INIT_BODY)
  t.equal(again.headers.get('retry-after'), '2', 'and the pause doubles')
})

t.test('a crash mid-call fails the call at once; the session then answers 404', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('fragile')] })
  const { client, transport } = await connectClient(t, gw.mcpUrl('fragile'))
  const outcome = await client.callTool({ name: 'crash', arguments: {} }).then(() => 'completed', (err: Error & { code?: number }) => `${err.code ?? ''} ${err.message}`)
  // HTTP 502 carrying the JSON-RPC error with the call's id (STYLE: child crashed -> 502); the SDK reports both.
  t.match(outcome, /^502 .*"id":\d+,"error":\{"code":-32603,"message":"Upstream MCP server is unavailable: MCP server \\"fragile\\" exited"/)
  const after = await postJson(gw.mcpUrl('fragile'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': transport.sessionId ?? '' })
  t.equal(after.status, 404, 'the client is told to re-initialise')
  const fresh = await connectClient(t, gw.mcpUrl('fragile'))
  t.equal(textOf(await fresh.client.callTool({ name: 'echo', arguments: { text: 'new session' } })), 'new session', 'a new session gets a fresh process')
})

t.test('a server that never answers: start-up timeout (504), and the process is killed', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('mute', { flags: ['--never-answers'], startupTimeoutMs: 300 })] })
  const res = await postJson(gw.mcpUrl('mute'), { ...INIT_BODY, id: 'x' })
  t.equal(res.status, 504)
  t.match(res.json, { id: 'x', error: { code: -32603, message: 'Upstream MCP server did not answer in time: MCP server "mute" did not start in time' } })
  t.ok(await eventually(async () => (await health(gw.baseUrl)).servers[0]?.processes.length === 0), 'no process is left behind')
})

t.test('a slow request times out on its own; the session goes on', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('slowpoke', { requestTimeoutMs: 300 })] })
  const { client } = await connectClient(t, gw.mcpUrl('slowpoke'))
  const outcome = await client.callTool({ name: 'slow', arguments: { ms: 5000 } }).then(() => 'completed', (err: Error & { code?: number }) => `${err.code ?? ''} ${err.message}`)
  t.match(outcome, /^504 .*"code":-32603,"message":"Upstream MCP server did not answer in time"/)
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'next' } })), 'next')
})

t.test('stdout lines that are not JSON-RPC are logged and skipped; stderr is logged with the server name', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('chatty', { flags: ['--noisy', '--stderr'] })] })
  const { client } = await connectClient(t, gw.mcpUrl('chatty'))
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'through the noise' } })), 'through the noise')
  t.match(gw.logs.text(), /"server":"chatty".*"line":"Starting fixture server... \(a banner on stdout\)".*"msg":"stdio server wrote a non-JSON-RPC line to stdout; skipped"/)
  t.match(gw.logs.text(), /"server":"chatty","pid":\d+,"stderr":"fixture handling tools\/call","msg":"stdio server stderr"/)
})

t.test('maxProcesses: a session beyond the limit gets 503 with Retry-After, not a hang', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('one', { maxProcesses: 1 })] })
  const first = await connectClient(t, gw.mcpUrl('one'))
  const second = await postJson(gw.mcpUrl('one'), INIT_BODY)
  t.equal(second.status, 503)
  t.equal(second.headers.get('retry-after'), '2')
  t.match(second.json, { error: { code: -32603, data: { code: 'PORTCULLIS_ERR_CAPACITY' } } })
  await first.transport.terminateSession()
  t.equal((await postJson(gw.mcpUrl('one'), INIT_BODY)).status, 200, 'room again once the first session ended')
})

t.test('prestart: a session takes a warm process, and the pool is refilled', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('warm', { prestart: 1, flags: ['--slow-start', '300'] })] })
  const before = await health(gw.baseUrl)
  const warmPid = before.servers[0]?.processes.find((p) => p.role === 'warm')?.pid
  t.ok(warmPid, 'a warm process was started with the gateway')
  const { client } = await connectClient(t, gw.mcpUrl('warm'))
  const env = JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { pid: number }
  t.equal(env.pid, warmPid, 'the session runs on the warm process')
  const after = await health(gw.baseUrl)
  t.same(after.servers[0]?.processes.map((p) => p.role).sort(), ['session', 'warm'], 'a new warm process replaced it')
})

t.test('idle sessions end after idleTimeoutMs (clock driven, no sleeping)', async (t) => {
  let clock = 5_000_000
  const gw = await startGateway(t, { servers: [stdioServer('idle', { idleTimeoutMs: 60_000 })] }, {}, { now: () => clock })
  const upstream = gw.app.portcullis.upstreams.get('idle')
  if (!(upstream instanceof StdioUpstream)) throw new Error('expected a stdio upstream')
  const { client, transport } = await connectClient(t, gw.mcpUrl('idle'))
  const { pid } = JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { pid: number }
  clock += 59_000
  upstream.sweep()
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'still alive' } })), 'still alive', 'not yet idle long enough')
  clock += 60_000
  upstream.sweep()
  t.ok(await eventually(() => !isProcessAlive(pid)), 'the idle session\'s process was stopped')
  const after = await postJson(gw.mcpUrl('idle'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': transport.sessionId ?? '' })
  t.equal(after.status, 404)
})

t.test('idle shared processes stop when no session has used them for idleTimeoutMs', async (t) => {
  let clock = 5_000_000
  const gw = await startGateway(t, { servers: [stdioServer('pool', { isolation: 'shared', idleTimeoutMs: 60_000 })] }, {}, { now: () => clock })
  const upstream = gw.app.portcullis.upstreams.get('pool')
  if (!(upstream instanceof StdioUpstream)) throw new Error('expected a stdio upstream')
  const { client } = await connectClient(t, gw.mcpUrl('pool'))
  const { pid } = JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { pid: number }
  clock += 61_000
  upstream.sweep()
  t.ok(await eventually(() => !isProcessAlive(pid)), 'the shared process stopped with its last session')
})

t.test('large results (10 MiB) pass intact through stdio', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('big')] })
  const { client } = await connectClient(t, gw.mcpUrl('big'))
  const bytes = 10 * 1024 * 1024
  t.equal(textOf(await client.callTool({ name: 'big', arguments: { bytes } })).length, bytes)
})

t.test('a message over maxMessageBytes kills the child instead of buffering without bound', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('big', { maxMessageBytes: '1mb' })] })
  const { client } = await connectClient(t, gw.mcpUrl('big'))
  const outcome = await client.callTool({ name: 'big', arguments: { bytes: 2 * 1024 * 1024 } }).then(() => 'completed', (err: Error) => err.message)
  t.match(outcome, /exited/)
  t.match(gw.logs.text(), /"msg":"stdio server sent a message larger than maxMessageBytes"/)
})

t.test('close(): no child and no grandchild outlives the gateway', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('tree', { flags: ['--grandchild'] }), stdioServer('shared', { isolation: 'shared' })] })
  const a = await connectClient(t, gw.mcpUrl('tree'))
  const b = await connectClient(t, gw.mcpUrl('shared'))
  const tree = JSON.parse(textOf(await a.client.callTool({ name: 'env', arguments: {} }))) as { pid: number, grandchild: number }
  const shared = JSON.parse(textOf(await b.client.callTool({ name: 'env', arguments: {} }))) as { pid: number }
  const pids = [tree.pid, tree.grandchild, shared.pid]
  t.ok(pids.every(isProcessAlive), `running: ${pids.join(', ')}`)
  await gw.app.close()
  t.same(pids.filter(isProcessAlive), [], 'every process of the test is gone after close()')
  for (const pid of [tree.pid, shared.pid]) t.same(processGroupMembers(pid), [], `process group ${pid} is empty`)
})

// The gateway's silence timeout bounds a server that says nothing; a server asking its client (an
// elicitation a person answers) is waiting on the client, not silent.
for (const isolation of ['session', 'shared'] as const) {
  t.test(`isolation ${isolation}: a call waiting on its client's answer to an elicitation is not timed out meanwhile`, async (t) => {
    const gw = await startGateway(t, { servers: [stdioServer('asker', { isolation, requestTimeoutMs: 2_000 })] })
    const { client } = await connectClient(t, gw.mcpUrl('asker'), { capabilities: { elicitation: { form: {} } } })
    client.setRequestHandler(ElicitRequestSchema, async () => {
      await new Promise((resolve) => setTimeout(resolve, 1_400))
      return { action: 'accept', content: { name: 'Ada' } }
    })
    // 1.4 s of work, then 1.4 s for the person: 2.8 s in all, each part within the 2 s timeout.
    const outcome = await client.callTool({ name: 'ask', arguments: { delayMs: 1_400 } }).then(textOf, (err: Error) => `failed: ${err.message}`)
    t.equal(outcome, 'accept:Ada')
  })
}
