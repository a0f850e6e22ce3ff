// The virtual server's bookkeeping without members: the link to member routes, server-request ids,
// the virtual allow/deny, session ownership, caps and the idle sweep (src/virtual/*).
import t from 'tap'
import type { ServerResponse } from 'node:http'
import { PassThrough, Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import { parseConfig } from '../../src/config/load.js'
import { MemberLink, readAll, type InProcessRequest, type MemberEntry } from '../../src/virtual/member-link.js'
import { LegacySessions } from '../../src/routes/legacy-sessions.js'
import { virtualRoutes } from '../../src/virtual/routes.js'
import { literalPrefix, MAX_VIRTUAL_SESSIONS_PER_USER, VirtualServer, type VirtualContext } from '../../src/virtual/virtual-server.js'
import { PortcullisError } from '../../src/errors.js'
import { McpCall, runSteps, type McpRoute, type Step } from '../../src/routes/mcp/call.js'
import { authenticate, checkMemberCaller } from '../../src/routes/mcp/authenticate.js'
import { memberEntry } from '../../src/routes/mcp/member-entry.js'
import { errorAnswer } from '../../src/routes/mcp/error-answer.js'
import type { RequestIdentity } from '../../src/resource-server/verify-token.js'

const CONFIG = parseConfig(`
servers:
  - {name: github, transport: http, url: "http://127.0.0.1:9/mcp"}
  - {name: memory, transport: http, url: "http://127.0.0.1:9/mcp"}
virtualServers:
  - {name: work, members: [github, memory], tools: {allow: ["github__*", "recall"], deny: ["github__delete_*"]}}
`, 'gw.yaml', {})
const HELLO = { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '1' } }

/**
 * Stand-in member routes on `app`, reached as the link reaches a member's route: each request in
 * process, the answer written on the link's response (the stand-ins are Fastify routes, so through app.inject).
 */
function linkTo (app: FastifyInstance): MemberLink {
  return new MemberLink((member) => async (request, res) => {
    const answer = await app.inject({ method: request.method, url: `/${member}/mcp`, headers: request.headers, ...(request.body === undefined ? {} : { payload: request.body }), payloadAsStream: true })
    res.writeHead(answer.statusCode, answer.headers)
    for await (const chunk of answer.stream()) res.write(chunk as Buffer)
    res.end()
  })
}

function serverWithClock (): { server: VirtualServer, clock: { now: number }, ctx: VirtualContext } {
  const clock = { now: 1_000_000 }
  const app = Fastify()
  t.teardown(() => app.close())
  const config = CONFIG.virtualServers[0]
  if (config === undefined) throw new Error('no virtual server')
  const server = new VirtualServer(config, { link: linkTo(app), now: () => clock.now, idleTimeoutMs: 60_000 })
  const ctx: VirtualContext = { grant: { identity: null, virtualServer: 'work' }, ip: '127.0.0.1', log: app.log }
  return { server, clock, ctx }
}

t.test('the caller reaches the named member\'s route only, for that one request, as an object (never a header a socket request could carry)', async (t) => {
  const log = Fastify().log
  const seen: Array<{ member: string, request: InProcessRequest }> = []
  const entry = (member: string): MemberEntry => async (request, res) => {
    seen.push({ member, request })
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: 'p', result: {} }))
  }
  const entries = new Map([['github', entry('github')], ['memory', entry('memory')]])
  const link = new MemberLink((member) => entries.get(member))
  const grant = { identity: null, virtualServer: 'work' }
  const res = await link.send({ method: 'POST', member: 'github', body: { jsonrpc: '2.0', id: 'p', method: 'ping' }, ip: '10.0.0.7', grant, requestId: 'req-7', log })
  t.equal(res.status, 200)
  t.equal(res.headers['content-type'], 'application/json')
  t.same(JSON.parse(await readAll(res.body)), { jsonrpc: '2.0', id: 'p', result: {} })
  t.same(seen.map((s) => s.member), ['github'], 'not for another member')
  const request = seen[0]?.request
  t.equal(request?.caller, grant, 'the caller as the virtual route verified it')
  t.equal(request?.id, 'req-7', 'the client\'s request id, for the member\'s audit record')
  t.equal(request?.ip, '10.0.0.7')
  t.same(JSON.parse(String(request?.body)), { jsonrpc: '2.0', id: 'p', method: 'ping' })
  t.notOk(Object.keys(request?.headers ?? {}).some((name) => name.startsWith('x-portcullis')), 'no credential travels as a header')
  await link.send({ method: 'DELETE', member: 'memory', sessionId: 's1', ip: '10.0.0.7', grant, log })
  t.match(seen[1], { member: 'memory', request: { method: 'DELETE', body: undefined, headers: { 'mcp-session-id': 's1' } } })
  t.match(seen[1]?.request.id, /^virtual-\d+$/, 'a request no client request stands behind (a retry) gets an id of its own')
  await t.rejects(link.send({ method: 'POST', member: 'slack', body: {}, ip: '10.0.0.7', grant, log }), /no route for member slack/, 'no route, no request')
})

t.test('a member\'s answer through the link: streamed with backpressure; the reader leaving, or the signal, is the writer\'s client closing', async (t) => {
  const log = Fastify().log
  let writer: InProcessRequest | undefined
  let written: { isWaiting: boolean, drained: number, closed: number, isDestroyed: () => boolean } | undefined
  const link = new MemberLink(() => async (request, res) => {
    writer = request
    const state = { isWaiting: false, drained: 0, closed: 0, isDestroyed: () => res.destroyed }
    written = state
    res.on('drain', () => { state.drained++ })
    res.on('close', () => { state.closed++ })
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.flushHeaders()
    // More than the reader buffers: the writer is told to wait, then told to go on.
    state.isWaiting = !res.write(Buffer.alloc(64 * 1024, 'a'))
  })
  const grant = { identity: null, virtualServer: 'work' }
  const stream = await link.send({ method: 'GET', member: 'github', sessionId: 's1', ip: '127.0.0.1', grant, log })
  t.equal(stream.status, 200, 'the head is known before any event')
  t.equal(writer?.headers.accept, 'text/event-stream')
  t.ok(written?.isWaiting, 'a write beyond the buffer says wait')
  stream.body.read()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(written?.drained, 1, 'reading lets the writer go on (drain)')
  stream.destroy()
  t.equal(written?.closed, 1, 'the reader left: the writer\'s response closes, as for a client gone')
  t.ok(written?.isDestroyed())
  const abort = new AbortController()
  const aborted = await link.send({ method: 'GET', member: 'github', sessionId: 's1', ip: '127.0.0.1', grant, log, signal: abort.signal })
  abort.abort()
  t.equal(written?.closed, 1, 'the signal closes it too')
  aborted.body.resume()
  await t.rejects(link.send({ method: 'GET', member: 'github', sessionId: 's1', ip: '127.0.0.1', grant, log, signal: abort.signal }), 'an aborted signal sends nothing')
})

t.test('a member route\'s step error through the link is the route\'s own error answer: status, headers, JSON-RPC error with the id', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const route = { server: { name: 'alpha', scopes: [] }, isRevoked: undefined } as unknown as McpRoute
  const limited = new PortcullisError('PORTCULLIS_ERR_RATE_LIMITED', 'slow down', { headers: { 'retry-after': '3' }, id: 4 })
  const refuse: Step = () => { throw limited }
  const link = new MemberLink(() => memberEntry(route, [checkMemberCaller, refuse]))
  const res = await link.send({ method: 'POST', member: 'alpha', body: { jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'x' } }, ip: '127.0.0.1', grant: { identity: null, virtualServer: 'work' }, log: app.log })
  const expected = errorAnswer(limited, null, app.log)
  t.equal(res.status, expected.status)
  t.equal(res.headers['retry-after'], '3')
  t.equal(res.headers['content-type'], 'application/json')
  t.same(JSON.parse(await readAll(res.body)), expected.payload)
  const broken: Step = () => { throw new Error('a bug') }
  const failed = await new MemberLink(() => memberEntry(route, [broken])).send({ method: 'DELETE', member: 'alpha', ip: '127.0.0.1', grant: { identity: null, virtualServer: 'work' }, log: app.log })
  t.equal(failed.status, 500, 'a step\'s bug: INTERNAL')
  t.notMatch(await readAll(failed.body), /a bug/, 'its detail stays in the log')
})

t.test('a member\'s own request gets an id unique in the session; the client\'s answer finds the member and the id again', async (t) => {
  const { server } = serverWithClock()
  const rewritten = server.fromMember('memory', { jsonrpc: '2.0', id: 7, method: 'elicitation/create', params: {} })
  t.equal(rewritten.id, 'memory~7', 'the member\'s name, not its position')
  t.same(server.answerTarget('memory~7'), { member: 'memory', id: 7 })
  t.same(server.answerTarget(String(server.fromMember('github', { id: 'abc', method: 'roots/list' }).id)), { member: 'github', id: 'abc' })
  t.equal(server.answerTarget('slack~7'), undefined, 'no such member')
  t.equal(server.answerTarget('github~{"a":1}'), undefined, 'an id is a string or a number')
  t.equal(server.answerTarget('github~not json'), undefined)
  // A reload that reorders the members: an answer in flight still goes to the member that asked.
  const config = CONFIG.virtualServers[0]
  if (config === undefined) throw new Error('no virtual server')
  const reordered = new VirtualServer({ ...config, members: ['memory', 'github'] }, { link: linkTo(Fastify()), now: Date.now, idleTimeoutMs: 60_000 })
  t.same(reordered.answerTarget(String(rewritten.id)), { member: 'memory', id: 7 }, 'routed by name after a reorder')
  t.equal(server.answerTarget(3), undefined, 'the client\'s own ids are not routed')
  const notification = { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1 } }
  t.equal(server.fromMember('github', notification), notification, 'notifications pass unchanged')
  const answer = { jsonrpc: '2.0', id: 3, result: {} }
  t.equal(server.fromMember('github', answer), answer, 'answers to the client\'s requests keep its id')
})

t.test('the virtual allow/deny on merged names', async (t) => {
  const { server } = serverWithClock()
  t.ok(server.isToolAllowed('github__search'))
  t.ok(server.isToolAllowed('recall'))
  t.notOk(server.isToolAllowed('github__delete_repo'), 'deny wins over allow')
  t.notOk(server.isToolAllowed('memory__store'), 'not allowed')
})

t.test('the virtual allow/deny also on <member><separator><name>: what the other members list cannot lift a deny', async (t) => {
  const { server } = serverWithClock()
  t.notOk(server.isToolAllowed('delete_repo', { member: 'github', name: 'delete_repo' }), 'a name only github lists, kept as is (prefix: auto): still denied')
  t.ok(server.isToolAllowed('store', { member: 'github', name: 'store' }), 'allowed by github__* on its full name')
  t.ok(server.isToolAllowed('recall', { member: 'memory', name: 'recall' }), 'an allow on the merged name admits')
  t.notOk(server.isToolAllowed('delete_reports_of_the_quarter_0123abcd', { member: 'github', name: 'delete_reports_of_the_quarter_and_more' }), 'a shortened name is judged on its full one')
  t.notOk(server.isToolAllowed('github__evil', { member: 'memory', name: 'github__evil' }), 'a tool memory names "github__evil" is not admitted by the allow written for github\'s tools')
  t.ok(server.isToolAllowed('github__search', { member: 'github', name: 'search' }), 'github\'s own tool still is')
  const config = CONFIG.virtualServers[0]
  if (config === undefined) throw new Error('no virtual server')
  const plain = new VirtualServer({ ...config, tools: { deny: ['echo'] } }, { link: linkTo(Fastify()), now: Date.now, idleTimeoutMs: 60_000 })
  t.notOk(plain.isToolAllowed('echo', { member: 'github', name: 'echo' }), 'a deny on a plain name refuses it')
  t.notOk(plain.isToolAllowed('github__echo', { member: 'github', name: 'echo' }), 'and still when another member also lists echo and both are prefixed')
  t.ok(plain.isToolAllowed('github__search', { member: 'github', name: 'search' }))
})

interface MemberState { isUp: boolean, opened: number, deleted: string[], live: Set<string>, failNextInit?: boolean }
const memberState = (): MemberState => ({ isUp: true, opened: 0, deleted: [], live: new Set() })

/** A stand-in member route on `app` (POST, DELETE): 503 while `state.isUp` is false, 404 for a session it does not hold. */
function memberRoute (app: FastifyInstance, member: string, state: MemberState): void {
  app.post(`/${member}/mcp`, async (request, reply) => {
    if (!state.isUp) return reply.code(503).send({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'down' } })
    const message = request.body as { id?: string, method: string }
    if (message.method === 'initialize') {
      if (state.failNextInit === true) {
        state.failNextInit = false
        return reply.code(503).send({ jsonrpc: '2.0', id: message.id, error: { code: -32000, message: 'not yet' } })
      }
      state.opened++
      state.live.add(`${member}-${state.opened}`)
      return reply.code(200).header('mcp-session-id', `${member}-${state.opened}`).send({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-11-25', capabilities: { tools: {} } } })
    }
    if (!state.live.has(String(request.headers['mcp-session-id']))) return reply.code(404).send({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } })
    if (message.id === undefined) return reply.code(202).send()
    return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: {} })
  })
  app.delete(`/${member}/mcp`, async (request, reply) => {
    state.deleted.push(String(request.headers['mcp-session-id']))
    state.live.delete(String(request.headers['mcp-session-id']))
    return reply.code(200).send()
  })
}

function serverOn (app: FastifyInstance, isRevoked?: (identity: RequestIdentity) => boolean): { server: VirtualServer, ctx: VirtualContext } {
  const config = CONFIG.virtualServers[0]
  if (config === undefined) throw new Error('no virtual server')
  const server = new VirtualServer(config, { link: linkTo(app), now: Date.now, idleTimeoutMs: 60_000, retryDelayMs: { first: 20, max: 40 }, isRevoked })
  return { server, ctx: { grant: { identity: null, virtualServer: 'work' }, ip: '127.0.0.1', log: app.log } }
}

const PING = { jsonrpc: '2.0', id: 'p', method: 'ping' }

t.test('two requests meeting the same lost member session open one new session, not two (none left unowned)', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = memberState()
  memberRoute(app, 'github', state)
  const { server, ctx } = serverOn(app)
  const session = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  const first = await server.toMember(session, ctx, 'github', PING)
  t.equal(first.status, 200)
  state.live.clear()
  const answers = await Promise.all([server.toMember(session, ctx, 'github', PING), server.toMember(session, ctx, 'github', PING)])
  t.same(answers.map((a) => a.status), [200, 200], 'both answered, in a new session')
  t.equal(state.opened, 2, 'one new member session, shared by both')
  await server.end(session, ctx)
  t.equal(state.live.size, 0, 'every member session ended with the virtual one (none orphaned)')
})

t.test('requests waiting on a member session that could not be opened share the one opened next (none left unowned)', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = { ...memberState(), failNextInit: true }
  memberRoute(app, 'github', state)
  const { server, ctx } = serverOn(app)
  const session = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  const answers = await Promise.all([1, 2, 3, 4].map(async () => server.toMember(session, ctx, 'github', PING)))
  t.same(answers.map((a) => a.status), [503, 200, 200, 200], 'the first opening failed; the waiters are answered')
  t.equal(state.opened, 1, 'one member session opened after the failure, shared by every waiter')
  await server.end(session, ctx)
  t.equal(state.live.size, 0, 'and ended with the virtual one (none orphaned)')
})

t.test('a member GET stream that ends by itself (an idle proxy closing it): the member session behind it is ended, not left open', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = memberState()
  memberRoute(app, 'github', state)
  // The stream ends at once, the member still holding the session.
  app.get('/github/mcp', async (_request, reply) => reply.code(200).type('text/event-stream').send(''))
  const { server, ctx } = serverOn(app)
  const session = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  t.equal((await server.toMember(session, ctx, 'github', PING)).status, 200)
  t.same([...state.live], ['github-1'])
  const client = new PassThrough()
  client.resume()
  await server.openClientStream(session, ctx, client as unknown as ServerResponse)
  const deadline = Date.now() + 2_000
  while (state.deleted.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(state.deleted[0], 'github-1', 'the old member session was ended (DELETE)')
  t.notOk(state.live.has('github-1'))
  await server.end(session, ctx)
  t.equal(state.live.size, 0, 'nothing left open at the member')
})

t.test('a client that does not read its GET stream: past one whole message unread its stream ends, the members\' streams are not buffered for it', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  memberRoute(app, 'github', memberState())
  // The member's GET stream: ~2 MB of notifications at once, 1 KiB each.
  const note = (i: number): unknown => ({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: `${i} ${'x'.repeat(1024)}` } })
  app.get('/github/mcp', async (_request, reply) => reply.code(200).type('text/event-stream').send(sse(...Array.from({ length: 2000 }, (_, i) => note(i)))))
  const config = CONFIG.virtualServers[0]
  if (config === undefined) throw new Error('no virtual server')
  const maxUnreadBytes = 64 * 1024
  const server = new VirtualServer(config, { link: linkTo(app), now: Date.now, idleTimeoutMs: 60_000, maxUnreadBytes })
  const ctx: VirtualContext = { grant: { identity: null, virtualServer: 'work' }, ip: '127.0.0.1', log: app.log }
  const session = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  t.equal((await server.toMember(session, ctx, 'github', PING)).status, 200)
  // A client that reads nothing: its first write never completes, everything after it stays buffered.
  const client = new Writable({ highWaterMark: 16 * 1024, write: () => {} })
  client.on('error', () => {})
  let written = 0
  const write = client.write.bind(client)
  client.write = ((chunk: string) => {
    written += Buffer.byteLength(chunk)
    return write(chunk)
  }) as typeof client.write
  await server.openClientStream(session, ctx, client as unknown as ServerResponse)
  const deadline = Date.now() + 2_000
  while (!client.destroyed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.ok(client.destroyed, 'the stream ended (the client opens a new one)')
  t.ok(written < maxUnreadBytes + 32 * 1024, `${Math.round(written / 1024)} KiB written to it: one whole message unread, and a little`)
  await server.end(session, ctx)
})

t.test('a request in flight when the session ends opens no member session', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = memberState()
  memberRoute(app, 'github', state)
  const { server, ctx } = serverOn(app)
  const session = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  t.equal((await server.toMember(session, ctx, 'github', PING)).status, 200)
  state.live.clear()
  // The member lost its session; the client DELETEs while the request's retry is on its way.
  const inflight = server.toMember(session, ctx, 'github', PING)
  await server.end(session, ctx)
  await t.rejects(inflight, { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' }, 'answered as for an ended session')
  await t.rejects(server.toMember(session, ctx, 'github', PING), { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' }, 'and a request after the end too')
  t.equal(state.live.size, 0, 'no member session opened after the end')
  t.equal(state.opened, 1)
  // One whose opening was under way when the session ended is ended as soon as it opens.
  const late = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  const opening = server.toMember(late, ctx, 'github', PING)
  late.isClosed = true
  await t.rejects(opening, { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' })
  t.equal(state.opened, 2)
  t.equal(state.live.size, 0, 'it was ended (DELETE) at once')
})

t.test('a down member is retried on a timer (backoff), marked up when it answers (list_changed); the retries stop with the session', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = { ...memberState(), isUp: false }
  memberRoute(app, 'github', state)
  memberRoute(app, 'memory', memberState())
  const { server, ctx } = serverOn(app)
  const session = server.open({ user: 'alice', client: 'c1' }, HELLO, ctx)
  const stream = new PassThrough()
  let written = ''
  stream.on('data', (chunk: Buffer) => { written += chunk.toString() })
  session.stream = stream as unknown as ServerResponse
  const changes = (): number => written.split('notifications/tools/list_changed').length - 1
  await server.listTools(session, ctx)
  t.ok(session.down.has('github'), 'github failed: down')
  t.equal(changes(), 1, 'list_changed')
  t.equal(session.retries.size, 1, 'a retry is scheduled')
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.ok(session.down.has('github') && session.retries.size === 1, 'still down after several retries: another is scheduled')
  state.isUp = true
  const deadline = Date.now() + 2_000
  while (session.down.has('github') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.notOk(session.down.has('github'), 'a retry found it answering: up, without any list by the client')
  t.equal(changes(), 2, 'and the client heard of it')
  t.equal(session.retries.size, 0, 'no retry left')
  state.isUp = false
  server.mark(session, 'github', false)
  t.equal(session.retries.size, 1)
  await server.end(session, ctx)
  t.equal(session.retries.size, 0, 'the session ended: its retries stopped')
})

t.test('a down member is not retried for a caller whose token has expired; the caller\'s next request resumes the retries', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = { ...memberState(), isUp: false }
  memberRoute(app, 'github', state)
  memberRoute(app, 'memory', memberState())
  const { server, ctx } = serverOn(app)
  const caller = (expiresAtS: number): VirtualContext => ({ ...ctx, grant: { identity: { id: 'u1', name: 'alice', groups: [], clientId: 'c1', scopes: new Set(), isClient: false, expiresAtS, grantId: 'g1' }, virtualServer: 'work' } })
  const owner = { user: 'u1', client: 'c1' }
  const session = server.open(owner, HELLO, caller(Math.floor(Date.now() / 1000) + 3600))
  await server.listTools(session, session.context)
  t.ok(session.down.has('github'), 'github failed: down')
  // The token the session last saw expires; the member comes back meanwhile.
  session.context = caller(Math.floor(Date.now() / 1000) - 1)
  state.isUp = true
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.ok(session.down.has('github'), 'no request was made to the member as a caller whose token expired')
  t.equal(session.retries.size, 0, 'and the retries stopped')
  server.sessionOf(session.id, owner, caller(Math.floor(Date.now() / 1000) + 3600))
  const deadline = Date.now() + 2_000
  while (session.down.has('github') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.notOk(session.down.has('github'), 'the caller\'s next request (a fresh token) resumed them: up')
  await server.end(session, session.context)
})

t.test('a down member is not retried for a caller whose grant was revoked (or who was blocked) since', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const state = { ...memberState(), isUp: false }
  memberRoute(app, 'github', state)
  memberRoute(app, 'memory', memberState())
  const revoked = new Set<string>()
  const { server, ctx } = serverOn(app, (identity) => identity.grantId !== undefined && revoked.has(identity.grantId))
  const caller: VirtualContext = { ...ctx, grant: { identity: { id: 'u1', name: 'alice', groups: [], clientId: 'c1', scopes: new Set(), isClient: false, expiresAtS: Math.floor(Date.now() / 1000) + 3600, grantId: 'g1' }, virtualServer: 'work' } }
  const session = server.open({ user: 'u1', client: 'c1' }, HELLO, caller)
  await server.listTools(session, session.context)
  t.ok(session.down.has('github'), 'github failed: down')
  const opened = state.opened
  revoked.add('g1')
  state.isUp = true
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.ok(session.down.has('github'), 'no request was made to the member as a revoked caller')
  t.equal(state.opened, opened, 'not even a new member session')
  t.equal(session.retries.size, 0, 'and the retries stopped')
  await server.end(session, session.context)
})

t.test('sessions: owner only, a per-user cap (not for the anonymous user), ended when idle', async (t) => {
  const { server, clock, ctx } = serverWithClock()
  const alice = { user: 'alice', client: 'c1' }
  const session = server.open(alice, HELLO, ctx)
  t.equal(server.sessionOf(session.id, alice, ctx), session)
  t.throws(() => server.sessionOf(session.id, { user: 'bob', client: 'c1' }, ctx), { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' }, 'another user: as unknown')
  t.throws(() => server.sessionOf(session.id, { user: 'alice', client: 'c2' }, ctx), { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' }, 'another client of the same user too')
  for (let i = 1; i < MAX_VIRTUAL_SESSIONS_PER_USER; i++) server.open(alice, HELLO, ctx)
  const refused = (() => { try { server.open(alice, HELLO, ctx) } catch (err) { return err as PortcullisError } return undefined })()
  t.equal(refused?.code, 'PORTCULLIS_ERR_TOO_MANY_SESSIONS')
  t.equal(refused?.status, 429)
  for (let i = 0; i <= MAX_VIRTUAL_SESSIONS_PER_USER; i++) server.open({ user: 'anonymous', client: '' }, HELLO, ctx)
  t.pass('the anonymous user (auth off) is held by the server-wide cap only')
  clock.now += 30_000
  server.sessionOf(session.id, alice, ctx)
  clock.now += 45_000
  await server.sweep()
  t.equal(server.sessions.size, 1, 'sessions unused for idleTimeoutMs end; the one used since stays')
  t.equal(server.sessionOf(session.id, alice, ctx), session)
})

t.test('a template\'s literal prefix', async (t) => {
  t.equal(literalPrefix('file:///{path}'), 'file:///')
  t.equal(literalPrefix('demo://resource/{id}/x'), 'demo://resource/')
  t.equal(literalPrefix('plain://uri'), 'plain://uri')
})

t.test('a member route\'s caller check: the caller the virtual route verified, for that member only; the member\'s scopes still apply; the old header names nothing', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const scopeChallenge = (scopes: readonly string[], description: string): string => `Bearer error="insufficient_scope", scope="${scopes.join(' ')}", error_description="${description}"`
  const revokedGrants = new Set<string>()
  // A token check that, as the real one, refuses a request without a token.
  const tokenCheck = async (request: { headers: Record<string, unknown> }): Promise<RequestIdentity> => {
    if (request.headers.authorization === undefined) throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'this MCP server needs an OAuth access token')
    return identity(['alpha:read'])
  }
  const route = { server: { name: 'alpha', scopes: ['alpha:read'] }, authenticate: tokenCheck, gateOptions: { scopeChallenge }, isRevoked: (who: RequestIdentity) => who.grantId !== undefined && revokedGrants.has(who.grantId) } as unknown as McpRoute
  const seen: Array<{ user: string | undefined, virtualServer: string | undefined }> = []
  const served: Step = (call) => {
    seen.push({ user: call.identity?.name, virtualServer: call.virtualServer })
    call.reply.code(200).send({})
    call.isAnswered = true
  }
  const link = new MemberLink((member) => member === 'alpha' ? memberEntry(route, [checkMemberCaller, served]) : undefined)
  const identity = (scopes: string[]): RequestIdentity => ({ id: 'u1', name: 'alice', clientId: 'c1', scopes: new Set(scopes), isClient: false, expiresAtS: 0, grantId: 'g1' })
  const post = async (caller: RequestIdentity | null, method: 'POST' | 'DELETE' = 'POST', member = 'alpha'): Promise<{ status: number, code?: string }> => {
    const res = await link.send({ method, member, ...(method === 'POST' ? { body: { jsonrpc: '2.0', id: 1, method: 'ping' } } : {}), ip: '127.0.0.1', grant: { identity: caller, virtualServer: 'work' }, log: app.log })
    challenge = res.headers['www-authenticate'] as string | undefined
    const text = await readAll(res.body)
    const code = text === '' ? undefined : (JSON.parse(text) as { error?: { data?: { code?: string } } }).error?.data?.code
    return { status: res.status, ...(code === undefined ? {} : { code }) }
  }
  let challenge: string | undefined
  t.same(await post(identity(['mcp', 'alpha:read'])), { status: 200 })
  t.same(seen.at(-1), { user: 'alice', virtualServer: 'work' }, 'the caller and the virtual server, for the audit')
  t.same(await post(identity(['mcp'])), { status: 403, code: 'PORTCULLIS_ERR_INSUFFICIENT_SCOPE' }, 'the member\'s own scopes')
  t.match(challenge, /^Bearer error="insufficient_scope", scope="mcp alpha:read"/, 'with an insufficient_scope challenge: the scopes held plus the missing one')
  await t.rejects(post(identity(['alpha:read']), 'POST', 'beta'), /no route for member beta/, 'the caller reaches the member it was sent to, no other')
  // Over a socket, the header the in-process credential once travelled in is nobody's: the token check decides.
  app.post('/alpha/mcp', async (request, reply) => {
    const call = new McpCall(route, request, reply)
    await runSteps(call, [authenticate])
    return reply.code(200).send({ user: call.identity?.name })
  })
  app.setErrorHandler(async (err: PortcullisError, _request, reply) => reply.code(err.status).send({ code: err.code }))
  const forged = await app.inject({ method: 'POST', url: '/alpha/mcp', headers: { 'x-portcullis-virtual': 'B'.repeat(43) } })
  t.same({ status: forged.statusCode, code: (forged.json() as { code?: string }).code }, { status: 401, code: 'PORTCULLIS_ERR_UNAUTHORIZED' }, 'the header without a token: 401')
  const withToken = await app.inject({ method: 'POST', url: '/alpha/mcp', headers: { 'x-portcullis-virtual': 'B'.repeat(43), authorization: 'Bearer t' } })
  t.same({ status: withToken.statusCode, body: withToken.json() }, { status: 200, body: { user: 'alice' } }, 'with a token: that token\'s caller, as without the header')
  t.same(await post(null), { status: 200 }, 'auth off: the anonymous caller')
  // An API key reaches the servers it names, never through a virtual server to others.
  const keyed = (servers: string[]): RequestIdentity => ({ ...identity(['alpha:read']), keyId: 'k1', servers })
  t.same(await post(keyed(['work'])), { status: 403, code: 'PORTCULLIS_ERR_API_KEY_SERVER' }, 'an API key made for another server (a reload made it a virtual server\'s name)')
  t.same(await post(keyed(['alpha'])), { status: 200 }, 'an API key made for this member')
  // Revoked (or blocked) since the virtual route checked the token: refused as the token would be.
  revokedGrants.add('g1')
  t.same(await post(identity(['alpha:read'])), { status: 401, code: 'PORTCULLIS_ERR_UNAUTHORIZED' }, 'a revoked caller: as a revoked token')
  t.same(await post(identity(['alpha:read']), 'DELETE'), { status: 200 }, 'except a DELETE, which only ends the user\'s session')
})

/** The virtual route itself on `app` (auth off), its body read as bytes as the MCP routes' plugin does. */
async function virtualRouteOn (app: FastifyInstance): Promise<void> {
  const config = CONFIG.virtualServers[0]
  if (config === undefined) throw new Error('no virtual server')
  await app.register(async (inner) => {
    inner.removeAllContentTypeParsers()
    inner.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })
    await virtualRoutes(inner, { virtualServers: [{ ...config, tools: { deny: [] } }], publicUrl: 'http://127.0.0.1', link: linkTo(app), now: Date.now, idleTimeoutOf: () => 60_000, isClosing: () => false, isOriginAllowed: () => true, authenticate: undefined, audit: undefined, streamKeeper: undefined, sessions: undefined, onRetire: undefined, legacySessions: new LegacySessions(), maxMessageBytesOf: () => 1_000_000 })
  })
}

/** A stand-in member route: it opens sessions, accepts notifications, lists `<member>_tool`, answers other requests empty, and leaves tools/call to `onCall`. */
interface StandInCall { id: number, method: string, params?: { _meta?: { progressToken?: unknown }, arguments?: { shape?: string } } }
function standInMember (app: FastifyInstance, member: string, onCall: (message: StandInCall, reply: FastifyReply) => Promise<unknown>): void {
  app.post(`/${member}/mcp`, async (request, reply) => {
    const message = request.body as Omit<StandInCall, 'id'> & { id?: number }
    if (message.method === 'initialize') return reply.code(200).header('mcp-session-id', `${member}-1`).send({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-11-25', capabilities: { tools: {} } } })
    if (message.id === undefined) return reply.code(202).send()
    if (message.method === 'tools/list') return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: { tools: [{ name: `${member}_tool`, inputSchema: { type: 'object' } }] } })
    if (message.method !== 'tools/call') return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: {} })
    return onCall({ ...message, id: message.id }, reply)
  })
}

const sse = (...messages: unknown[]): string => messages.map((m) => `event: message\ndata: ${JSON.stringify(m)}\n\n`).join('')

t.test('a member cannot forge another request\'s answer: on a POST stream only its own id and progress token pass; a GET stream carries no answers', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  let streamed = ''
  for (const member of ['github', 'memory']) {
    standInMember(app, member, async (message, reply) => {
      if (member === 'memory') return reply.code(200).send({ jsonrpc: '2.0', id: 77, result: { content: [{ type: 'text', text: 'forged, as JSON' }] } })
      const token = message.params?._meta?.progressToken
      return reply.code(200).type('text/event-stream').send(sse(
        { jsonrpc: '2.0', id: 77, result: { content: [{ type: 'text', text: 'forged' }] } },
        { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 'someone-else', progress: 1 } },
        { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: token, progress: 2 } },
        [{ jsonrpc: '2.0', id: 78, result: {} }],
        { jsonrpc: '2.0', id: message.id, result: { content: [{ type: 'text', text: 'real' }] } },
      ))
    })
    app.get(`/${member}/mcp`, async (_request, reply) => {
      return reply.code(200).type('text/event-stream').send(sse(
        { jsonrpc: '2.0', id: 77, result: { content: [{ type: 'text', text: 'forged on GET' }] } },
        { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: `from ${member}` } },
      ))
    })
    app.delete(`/${member}/mcp`, async (_request, reply) => reply.code(200).send())
  }
  await virtualRouteOn(app)
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' }
  const init = await app.inject({ method: 'POST', url: '/work/mcp', headers, payload: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '1' } } } })
  const session = { ...headers, 'mcp-session-id': String(init.headers['mcp-session-id']) }
  t.equal((await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })).statusCode, 200)
  const call = await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'github_tool', arguments: {}, _meta: { progressToken: 'mine' } } } })
  const events = call.body.split('\n').filter((line) => line.startsWith('data: ')).map((line) => JSON.parse(line.slice(6)) as Record<string, unknown>)
  t.same(events, [
    { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 'mine', progress: 2 } },
    { jsonrpc: '2.0', id: 2, result: { content: [{ type: 'text', text: 'real' }] } },
  ], 'only the request\'s own progress and answer reach the client')
  const json = await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'memory_tool', arguments: {} } } })
  t.equal(json.statusCode, 502, 'a JSON answer with another id is no answer')
  t.notMatch(json.body, /forged/)
  // The client's GET stream: each member's is relayed, without the forged answer.
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const controller = new AbortController()
  const res = await fetch(`${address}/work/mcp`, { headers: { ...session, accept: 'text/event-stream' }, signal: controller.signal })
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const deadline = Date.now() + 2_000
  while (!(streamed.includes('from github') && streamed.includes('from memory')) && Date.now() < deadline) {
    const { value, done } = await reader.read()
    if (done) break
    streamed += Buffer.from(value).toString()
  }
  controller.abort()
  t.match(streamed, /from github/)
  t.match(streamed, /from memory/)
  t.notMatch(streamed, /forged/, 'no answer relayed from a member\'s GET stream')
})

t.test('the 2026-07-28 era probe cannot be poisoned: an unknown _meta version is refused, the probe carries the gateway\'s _meta, only a 2025-era answer is remembered', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const probes: Array<{ member: string, meta: Record<string, unknown> }> = []
  let refuseFirst = true
  for (const member of ['github', 'memory']) {
    app.post(`/${member}/mcp`, async (request, reply) => {
      const message = request.body as { id?: string, method: string, params?: { _meta?: Record<string, unknown> } }
      if (message.method === 'server/discover') {
        probes.push({ member, meta: message.params?._meta ?? {} })
        // A refusal that says nothing about the member's era (a bad _meta would once have been answered so).
        if (member === 'github' && refuseFirst) {
          refuseFirst = false
          return reply.code(400).send({ jsonrpc: '2.0', id: message.id, error: { code: -32602, message: 'bad _meta' } })
        }
        return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: { supportedVersions: ['2026-07-28'], capabilities: { tools: {} } } })
      }
      if (message.method === 'tools/list') return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: { tools: [{ name: `${member}_tool`, inputSchema: { type: 'object' } }] } })
      return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: {} })
    })
  }
  await virtualRouteOn(app)
  // The headers mirror the body, as MCP 2026-07-28 requires (the virtual route checks them first).
  const modern = async (method: string, version: string, versionHeader = version): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await app.inject({ method: 'POST', url: '/work/mcp', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': versionHeader, 'mcp-method': method }, payload: { jsonrpc: '2.0', id: 1, method, params: { _meta: { 'io.modelcontextprotocol/protocolVersion': version, 'io.modelcontextprotocol/clientInfo': { name: 'evil', version: '1' } } } } })
    return { status: res.statusCode, body: res.json() }
  }
  const bogus = await modern('tools/list', '9999-bogus')
  t.equal(bogus.status, 400)
  t.match(bogus.body, { code: 'PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION' }, 'an unknown _meta version is refused')
  const mismatched = await modern('tools/list', '9999-bogus', '2026-07-28')
  t.equal(mismatched.status, 400)
  t.match(mismatched.body, { code: 'PORTCULLIS_ERR_HEADER_MISMATCH' }, 'a version header that differs from the body: header mismatch')
  t.equal(probes.length, 0, 'before any member is asked')
  t.equal((await modern('server/discover', '2026-07-28')).status, 200)
  t.equal(probes.length, 2, 'each member probed')
  t.same(probes.map((p) => (p.meta['io.modelcontextprotocol/clientInfo'] as { name?: string }).name), ['portcullis', 'portcullis'], 'with the gateway\'s own _meta, not the client\'s')
  const listed = await modern('tools/list', '2026-07-28')
  t.equal(listed.status, 200, 'a refused probe was not remembered as "2025-era": no fallback signal for every later caller')
  t.same((listed.body.result as { tools: Array<{ name: string }> }).tools.map((tool) => tool.name).sort(), ['github_tool', 'memory_tool'])
  t.equal(probes.length, 3, 'github probed again (its answer this time is remembered)')
  await modern('tools/list', '2026-07-28')
  t.equal(probes.length, 3, 'no probe once both are known')
})

t.test('the client\'s log level reaches members opened after it; what a session keeps of initialize is bounded', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const seen: Array<{ member: string, method: string, params?: Record<string, unknown> }> = []
  for (const member of ['github', 'memory']) {
    app.post(`/${member}/mcp`, async (request, reply) => {
      const message = request.body as { id?: string, method: string, params?: Record<string, unknown> }
      seen.push({ member, method: message.method, ...(message.params === undefined ? {} : { params: message.params }) })
      if (message.method === 'initialize') return reply.code(200).header('mcp-session-id', `${member}-1`).send({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-11-25', capabilities: { tools: {}, logging: {} } } })
      if (message.id === undefined) return reply.code(202).send()
      if (message.method === 'tools/list') return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: { tools: [] } })
      return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: {} })
    })
    app.delete(`/${member}/mcp`, async (_request, reply) => reply.code(200).send())
  }
  await virtualRouteOn(app)
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' }
  const initialize = async (capabilities: unknown, clientInfo: unknown): Promise<{ status: number, session?: string, body: Record<string, unknown> }> => {
    const res = await app.inject({ method: 'POST', url: '/work/mcp', headers, payload: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities, clientInfo } } })
    return { status: res.statusCode, session: res.headers['mcp-session-id'] as string | undefined, body: res.json() }
  }
  const huge = await initialize({ experimental: { blob: 'x'.repeat(20_000) } }, { name: 't', version: '1' })
  t.equal(huge.status, 400, 'capabilities beyond the bound: refused')
  t.match(huge.body, { code: 'PORTCULLIS_ERR_INVALID_PARAMS', message: /capabilities exceed 8192 characters/ })
  const init = await initialize({}, { name: 'big-icons', version: '2', icons: [{ src: `data:image/png;base64,${'A'.repeat(20_000)}` }] })
  t.equal(init.status, 200, 'a large client info is kept in part')
  const session = { ...headers, 'mcp-session-id': String(init.session) }
  const setLevel = await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 1, method: 'logging/setLevel', params: { level: 'debug' } } })
  t.equal(setLevel.statusCode, 200)
  t.equal(seen.length, 0, 'no member open yet')
  await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 2, method: 'tools/list' } })
  for (const member of ['github', 'memory']) {
    const methods = seen.filter((s) => s.member === member).map((s) => s.method)
    t.same(methods.slice(0, 4), ['initialize', 'notifications/initialized', 'logging/setLevel', 'tools/list'], `${member} opened later is told the level`)
    t.same(seen.find((s) => s.member === member && s.method === 'logging/setLevel')?.params, { level: 'debug' })
    t.same(seen.find((s) => s.member === member && s.method === 'initialize')?.params?.clientInfo, { name: 'big-icons', version: '2' }, 'the client info without its large parts')
  }
})

t.test('a member\'s answer passes byte for byte only when it parses as this request\'s answer: an escaped "method" is a request, and text that only ends like the answer is none', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const answer = (id: number): string => `{"result":{"content":[{"type":"text","text":"id last, \\"method\\" only quoted"}]},"jsonrpc":"2.0","id":${id}}`
  for (const member of ['github', 'memory']) {
    standInMember(app, member, async (message, reply) => {
      const id = message.id
      const shape = message.params?.arguments?.shape
      // A request spelled with an escape, carrying the client's id; then the real answer.
      const escaped = `{"jsonrpc":"2.0","\\u006dethod":"elicitation/create","params":{"message":"sure?","requestedSchema":{"type":"object"}},"id":${id}}`
      // Text that ends as the answer would but is not one JSON value: cut short, or two values.
      const cut = `{"jsonrpc":"2.0","result":{"rows":[{"n":1,"id":${id}}`
      const two = `{"jsonrpc":"2.0","result":{},"id":77}{"jsonrpc":"2.0","result":{},"id":${id}}`
      if (member === 'memory') return reply.code(200).type('application/json').send(shape === 'cut' ? cut : shape === 'two' ? two : answer(id))
      return reply.code(200).type('text/event-stream').send(`event: message\ndata: ${escaped}\n\nevent: message\ndata: ${cut}\n\nevent: message\ndata: ${two}\n\nevent: message\ndata: ${answer(id)}\n\n`)
    })
    app.delete(`/${member}/mcp`, async (_request, reply) => reply.code(200).send())
  }
  await virtualRouteOn(app)
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' }
  const init = await app.inject({ method: 'POST', url: '/work/mcp', headers, payload: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: { elicitation: {} }, clientInfo: { name: 't', version: '1' } } } })
  const session = { ...headers, 'mcp-session-id': String(init.headers['mcp-session-id']) }
  await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
  const streamed = await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'github_tool', arguments: {} } } })
  const data = streamed.body.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6))
  t.equal(data.length, 2, 'the member\'s request and its answer; nothing of the two impostors')
  const asked = JSON.parse(data[0] ?? '{}') as { id?: unknown, method?: string }
  t.equal(asked.method, 'elicitation/create', 'the escaped request reaches the client as a request')
  t.not(asked.id, 5, 'with an id of the virtual layer\'s, never the client\'s own request id')
  t.equal(data[1], answer(5), 'the answer byte for byte')
  const call = (id: number, shape: string): Promise<{ statusCode: number, body: string }> => app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'memory_tool', arguments: { shape } } } })
  const json = await call(6, 'whole')
  t.equal(json.statusCode, 200)
  t.equal(json.body, answer(6), 'a JSON answer byte for byte')
  for (const shape of ['cut', 'two']) {
    const refused = await call(7, shape)
    t.equal(refused.statusCode, 502, `${shape}: no answer, though the text ends as one would`)
    t.notMatch(refused.body, /"rows"|"id":77/)
  }
})

t.test('a tools/call goes to the member as the client\'s own bytes; a renamed one with only its name replaced', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  // The stand-in members see the bytes they are sent.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => { done(null, body) })
  const seen: string[] = []
  for (const member of ['github', 'memory']) {
    app.post(`/${member}/mcp`, async (request, reply) => {
      const text = request.body as string
      const message = JSON.parse(text) as { id?: number, method: string }
      if (message.method === 'initialize') return reply.code(200).header('mcp-session-id', `${member}-1`).send({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-11-25', capabilities: { tools: {} } } })
      if (message.id === undefined) return reply.code(202).send()
      if (message.method === 'tools/list') return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: { tools: [{ name: 'same', inputSchema: { type: 'object' } }, { name: `${member}_only`, inputSchema: { type: 'object' } }] } })
      seen.push(text)
      return reply.code(200).send({ jsonrpc: '2.0', id: message.id, result: { content: [] } })
    })
    app.delete(`/${member}/mcp`, async (_request, reply) => reply.code(200).send())
  }
  await virtualRouteOn(app)
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' }
  const init = await app.inject({ method: 'POST', url: '/work/mcp', headers, payload: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '1' } } } })
  const session = { ...headers, 'mcp-session-id': String(init.headers['mcp-session-id']) }
  await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
  // A number JSON.parse cannot hold exactly, and spacing JSON.stringify would not keep.
  const own = '{ "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": { "name": "memory_only", "arguments": { "n": 12345678901234567890 } } }'
  t.equal((await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: own })).statusCode, 200)
  t.equal(seen[0], own, 'unchanged: the client\'s bytes, exactly')
  // Renamed: the arguments' own "name" (before params.name) and the number stay as written; the
  // name, written with an escape, is the member's.
  const renamed = '{ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": { "arguments": { "name": "github__same", "n": 12345678901234567890, "x": 1.0 },\n "name" : "github\\u005f_same" } }'
  t.equal((await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: renamed })).statusCode, 200)
  t.equal(seen[1], renamed.replace('"github\\u005f_same"', '"same"'), 'renamed: the client\'s bytes with the member\'s name for the tool')
  t.same(JSON.parse(seen[1] ?? '{}').params.name, 'same')
  // call_tool's inner call is no message of the client's: encoded (covered with toolSearch); a
  // message with params.name written twice never gets here (inspectBody refuses it).
  const twice = '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"github__same","name":"memory_only"}}'
  const refused = await app.inject({ method: 'POST', url: '/work/mcp', headers: session, payload: twice })
  t.equal(refused.statusCode, 400)
  t.equal(seen.length, 2, 'nothing reached a member')
})
