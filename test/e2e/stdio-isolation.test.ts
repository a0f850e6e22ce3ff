// Isolation modes, per-user values and the child's environment, with real child processes.
import t from 'tap'
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { connectClient, eventually, INIT_BODY, postJson, startGateway, stdioServer, textOf, within } from '../helpers.js'

interface Health { servers: Array<{ sessions: number, processes: Array<{ pid: number, role: string }> }> }
const health = async (baseUrl: string): Promise<Health> => await (await fetch(`${baseUrl}/readyz`)).json() as Health

t.test('isolation session: each session has its own process and state', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('counter')] })
  const a = await connectClient(t, gw.mcpUrl('counter'))
  const b = await connectClient(t, gw.mcpUrl('counter'))
  t.not(a.transport.sessionId, b.transport.sessionId)
  const [a1, b1] = await Promise.all([
    a.client.callTool({ name: 'increment', arguments: {} }),
    b.client.callTool({ name: 'increment', arguments: {} }),
  ])
  const a2 = await a.client.callTool({ name: 'increment', arguments: {} })
  t.equal(textOf(a1), '1')
  t.equal(textOf(b1), '1', 'B does not see A\'s counter')
  t.equal(textOf(a2), '2')
  const h = await health(gw.baseUrl)
  t.equal(h.servers[0]?.processes.length, 2, 'one process per session, no more')
  t.equal(h.servers[0]?.sessions, 2)
})

t.test('isolation shared: 20 concurrent clients on one process each get exactly their own answers', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('echo', { isolation: 'shared' })] })
  const clients = await Promise.all(Array.from({ length: 20 }, () => connectClient(t, gw.mcpUrl('echo'))))
  t.equal(new Set(clients.map((c) => c.transport.sessionId)).size, 20, 'every client has its own session')
  const rounds = await Promise.all(clients.map(async ({ client }, i) => {
    const answers: string[] = []
    for (let round = 0; round < 5; round++) {
      answers.push(textOf(await client.callTool({ name: 'echo', arguments: { text: `client ${i} round ${round}` } })))
    }
    return answers
  }))
  rounds.forEach((answers, i) => {
    t.same(answers, [0, 1, 2, 3, 4].map((round) => `client ${i} round ${round}`), `client ${i} got its own answers`)
  })
  const h = await health(gw.baseUrl)
  t.equal(h.servers[0]?.processes.length, 1, 'one process for everyone')
  // All share the one child's state.
  const first = clients[0]
  const second = clients[1]
  if (first === undefined || second === undefined) throw new Error('clients missing')
  await first.client.callTool({ name: 'increment', arguments: {} })
  t.equal(textOf(await second.client.callTool({ name: 'increment', arguments: {} })), '2')
})

t.test('shared: progress tokens are re-addressed so each client gets only its own progress', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('echo', { isolation: 'shared' })] })
  const clients = await Promise.all(Array.from({ length: 4 }, () => connectClient(t, gw.mcpUrl('echo'))))
  const seen = await Promise.all(clients.map(async ({ client }, i) => {
    const events: number[] = []
    const result = await client.callTool({ name: 'progress', arguments: { n: i + 2, delayMs: 5 } }, undefined, { onprogress: (p) => events.push(p.progress) })
    return { events, text: textOf(result) }
  }))
  seen.forEach(({ events, text }, i) => {
    t.same(events, Array.from({ length: i + 2 }, (_, k) => k + 1), `client ${i}: its own ${i + 2} progress events`)
    t.equal(text, `done ${i + 2}`)
  })
})

t.test('shared: a server-to-client request goes to the one client whose call is in flight', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('echo', { isolation: 'shared' })] })
  const asker = await connectClient(t, gw.mcpUrl('echo'), { capabilities: { elicitation: { form: {} } } })
  const bystander = await connectClient(t, gw.mcpUrl('echo'), { capabilities: { elicitation: { form: {} } } })
  let bystanderAsked = false
  asker.client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada' } }))
  bystander.client.setRequestHandler(ElicitRequestSchema, async () => { bystanderAsked = true; return { action: 'decline' } })
  t.equal(textOf(await asker.client.callTool({ name: 'ask', arguments: {} })), 'accept:Ada')
  t.equal(bystanderAsked, false)
})

t.test('isolation user: one process per user, shared by that user\'s sessions; per-user values rendered', async (t) => {
  const dir = t.testdir({})
  const gw = await startGateway(t, { servers: [stdioServer('mem', { isolation: 'user', env: { DATA_FILE: `${dir}/memory-\${user.id}.jsonl` }, flags: ['--user', '${user.name}'] })] })
  const a = await connectClient(t, gw.mcpUrl('mem'))
  const b = await connectClient(t, gw.mcpUrl('mem'))
  await a.client.callTool({ name: 'increment', arguments: {} })
  t.equal(textOf(await b.client.callTool({ name: 'increment', arguments: {} })), '2', 'the same user\'s sessions share one process')
  const env = JSON.parse(textOf(await a.client.callTool({ name: 'env', arguments: {} }))) as { DATA_FILE: string, argv: string[] }
  t.equal(env.DATA_FILE, `${dir}/memory-anonymous.jsonl`, 'until authentication, the user is "anonymous"')
  t.same(env.argv, ['--user', 'anonymous'])
  t.equal((await health(gw.baseUrl)).servers[0]?.processes.length, 1)
})

t.test('the child sees an allow-listed environment plus its configured env, never the gateway\'s secrets', async (t) => {
  process.env.PORTCULLIS_TEST_SECRET = 'must-not-leak'
  t.teardown(() => { delete process.env.PORTCULLIS_TEST_SECRET })
  const gw = await startGateway(t, { servers: [stdioServer('env', { env: { DATA_FILE: '${DATA_PATH}' } })] }, { DATA_PATH: '/tmp/data.jsonl' })
  const { client } = await connectClient(t, gw.mcpUrl('env'))
  const env = JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { names: string[], DATA_FILE: string }
  t.equal(env.DATA_FILE, '/tmp/data.jsonl')
  t.notOk(env.names.includes('PORTCULLIS_TEST_SECRET'), 'the gateway\'s environment is not inherited')
  t.ok(env.names.includes('PATH'))
  // Not a real part: tap's coverage plugin patches child_process.spawn in this test process and
  // adds NODE_OPTIONS and _TAPJS_* variables to every child. Its NODE_OPTIONS is this process's
  // own whenever the environment given to spawn has none (test/child-processes.ts takes tap's
  // hook back out of a fixture's, not options of the test run's own), so what the child sees
  // there says nothing about the gateway: the name is left out of the check below, and the
  // secret above is what shows that the gateway's environment did not reach the child.
  const ours = env.names.filter((n) => !n.startsWith('_TAPJS_') && n !== 'NODE_OPTIONS')
  const allowed = ['PATH', 'HOME', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'USER', 'LOGNAME', 'SHELL', 'TERM', 'DATA_FILE']
  t.same(ours.filter((n) => !allowed.includes(n)), [], `only allow-listed names: ${ours.join(', ')}`)
})

t.test('session protocol: session required, unknown session 404, DELETE ends the process', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('s')] })
  const url = gw.mcpUrl('s')
  const noSession = await postJson(url, { jsonrpc: '2.0', id: 1, method: 'tools/list' })
  t.equal(noSession.status, 400)
  t.match(noSession.json, { id: 1, error: { code: -32600, data: { code: 'PORTCULLIS_ERR_SESSION_REQUIRED' } } })
  const unknown = await postJson(url, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, { 'mcp-session-id': 'no-such-session' })
  t.equal(unknown.status, 404)
  t.match(unknown.json, { id: 2, error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })

  const init = await postJson(url, INIT_BODY)
  t.equal(init.status, 200)
  t.equal(init.headers.get('content-type'), 'application/json', 'a lone answer is sent as plain JSON')
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  t.match(sessionId, /^[0-9a-f-]{36}$/)
  const headers = { 'mcp-session-id': sessionId }
  t.equal((await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status, 202)
  const list = await postJson(url, { jsonrpc: '2.0', id: 'list', method: 'tools/list' }, headers)
  t.match(list.json, { id: 'list', result: { tools: [] } })
  const again = await postJson(url, { ...INIT_BODY, id: 9 }, headers)
  t.equal(again.status, 400, 'a session cannot be initialized twice')
  const before = (await health(gw.baseUrl)).servers[0]?.processes.length
  const del = await fetch(url, { method: 'DELETE', headers })
  t.equal(del.status, 200)
  t.equal(before, 1)
  t.equal((await health(gw.baseUrl)).servers[0]?.processes.length, 0, 'the session\'s process is gone')
  t.equal((await postJson(url, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, headers)).status, 404)
})

for (const isolation of ['session', 'shared'] as const) {
  t.test(`isolation ${isolation}: a client's cancellation reaches the server (re-addressed on shared processes)`, async (t) => {
    const gw = await startGateway(t, { servers: [stdioServer('c', { isolation })] })
    const { client } = await connectClient(t, gw.mcpUrl('c'))
    const other = await connectClient(t, gw.mcpUrl('c'))
    // Another client's call in flight with the same JSON-RPC id space must not be touched.
    const bystander = other.client.callTool({ name: 'slow', arguments: { ms: 300 } })
    const controller = new AbortController()
    const call = client.callTool({ name: 'wait-for-cancel', arguments: {} }, undefined, { signal: controller.signal }).then(() => 'completed', () => 'rejected')
    await new Promise((resolve) => setTimeout(resolve, 100))
    controller.abort('user pressed stop')
    t.equal(await call, 'rejected')
    t.ok(await eventually(async () => textOf(await client.callTool({ name: 'cancelled-count', arguments: {} })) === '1'), 'the server saw the cancellation')
    t.equal(textOf(await bystander), 'slept 300', 'the other client\'s call completed normally')
  })

  t.test(`isolation ${isolation}: unsolicited notifications reach sessions on their GET stream`, async (t) => {
    const gw = await startGateway(t, { servers: [stdioServer('n', { isolation })] })
    const clients = await Promise.all([0, 1].map(() => connectClient(t, gw.mcpUrl('n'))))
    const received = clients.map(({ client }) => new Promise<string>((resolve) => {
      client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => resolve(n.method))
    }))
    const first = clients[0]
    if (first === undefined) throw new Error('no client')
    await first.client.callTool({ name: 'broadcast', arguments: {} })
    const outcome = await within(received[0] ?? Promise.resolve('no such client'), 5000, 'nothing within 5 s')
    t.equal(outcome, 'notifications/tools/list_changed', 'the session whose server changed hears of it')
    if (isolation === 'shared') {
      const second = await within(received[1] ?? Promise.resolve('no such client'), 5000, 'nothing within 5 s')
      t.equal(second, 'notifications/tools/list_changed', 'on a shared process, every session hears of it')
    }
  })
}
