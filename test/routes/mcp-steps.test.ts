// The MCP route's steps (src/routes/mcp/) in the fast layer: app.inject where no socket matters
// on the client side, real fastify, the real gate and limiter, a real HTTP upstream fixture.
import t from 'tap'
import Fastify from 'fastify'
import { McpCall, runSteps, type McpRoute, type Step } from '../../src/routes/mcp/call.js'
import { sendRpcError } from '../../src/upstreams/respond.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { PortcullisError } from '../../src/errors.js'
import { ServerPolicy } from '../../src/policy/policy.js'
import { gate } from '../../src/policy/gate.js'
import { record } from '../../src/routes/mcp/record.js'
import { Metrics } from '../../src/observability/metrics.js'
import { createAuditLog } from '../../src/observability/audit.js'
import { request as httpRequest } from 'node:http'
import { once } from 'node:events'
import type { MessageOutcome } from '../../src/policy/gate.js'
import { makeConfig, INIT_BODY, MCP_HEADERS, startGateway, startUpstream } from '../helpers.js'

/** runSteps and the failure record read nothing of the route: no server needs to exist for them. */
const NO_ROUTE = {} as McpRoute

t.test('runSteps runs the table in order and stops at the step that answered or threw', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const ran: string[] = []
  const first: Step = () => { ran.push('first') }
  const answers: Step = async (call) => {
    ran.push('answers')
    await call.reply.code(202).send()
    call.isAnswered = true
  }
  const refuses: Step = () => { throw new PortcullisError('PORTCULLIS_ERR_ACCESS_DENIED', 'not on the list') }
  const never: Step = () => { ran.push('never') }
  app.post('/answered', async (request, reply) => {
    await runSteps(new McpCall(NO_ROUTE, request, reply), [first, answers, never])
    return reply
  })
  app.post('/refused', async (request, reply) => {
    await runSteps(new McpCall(NO_ROUTE, request, reply), [first, refuses, never])
  })
  t.equal((await app.inject({ method: 'POST', url: '/answered' })).statusCode, 202)
  t.same(ran, ['first', 'answers'], 'the step after the answer never ran')
  ran.length = 0
  t.equal((await app.inject({ method: 'POST', url: '/refused' })).statusCode, 403, 'a step\'s error is the answer')
  t.same(ran, ['first'])
})

t.test('the failure record is the exchange\'s: sendRpcError notes every request, a per-id mark only that one', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const body = Buffer.from(JSON.stringify([
    { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo' } },
    { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo' } },
  ]))
  const seen: boolean[][] = []
  app.post('/', async (request, reply) => {
    reply.hijack()
    const call = new McpCall(NO_ROUTE, request, reply)
    call.markFailed(8)
    seen.push([call.hasFailed(7), call.hasFailed(8)])
    sendRpcError({ res: reply.raw, inspection: inspectBody(body), failures: call }, new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT'))
    seen.push([call.hasFailed(7), call.hasFailed(8)])
  })
  const res = await app.inject({ method: 'POST', url: '/' })
  t.equal(res.statusCode, 504)
  t.same((res.json() as Array<{ id: number }>).map((m) => m.id), [7, 8], 'each request of the batch gets the error')
  t.same(seen, [[false, true], [true, true]], 'one id, then the whole exchange')
  // A relayed request (cluster/forward.ts) has no record: nothing to note, and no error.
  const plain = Fastify()
  t.teardown(() => plain.close())
  plain.get('/', async (_request, reply) => {
    reply.hijack()
    sendRpcError({ res: reply.raw, inspection: undefined }, new PortcullisError('PORTCULLIS_ERR_SESSION_NOT_FOUND'))
  })
  t.equal((await plain.inject({ method: 'GET', url: '/' })).statusCode, 404)
})

t.test('the gate decides only: an allowed tool call carries its rule for charging, a refused one no cost', async (t) => {
  const config = makeConfig({ servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:1', tools: { deny: ['slow'], echo: { cost: 3, rateLimit: '1/min' } } }] })
  const server = config.servers[0]
  if (server === undefined) throw new Error('no server')
  const caller = { name: 'ada', groups: [], clientId: undefined, isClient: false, scopes: undefined }
  const inspection = inspectBody(Buffer.from(JSON.stringify([
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } },
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'slow' } },
  ])))
  const outcomes = gate({ policy: new ServerPolicy(server), scopeChallenge: undefined }, caller, inspection)
  t.match(outcomes[0], { decision: 'allowed', kind: 'tool', name: 'echo', rule: { cost: 3 } })
  t.equal(outcomes[0]?.release, undefined, 'no slot taken: charging is not the gate\'s')
  t.match(outcomes[1], { decision: 'denied', error: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } })
  t.equal(outcomes[1]?.rule, undefined)
})

t.test('through the route: a refused call is not charged, the next ones are, in order', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    rateLimits: { sessionCost: 0 },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, rateLimit: '2/min', tools: { deny: ['slow'] } }],
  })
  const post = async (body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, json: unknown, session: string | undefined }> => {
    const res = await gw.app.inject({ method: 'POST', url: '/fx/mcp', headers: { ...MCP_HEADERS, ...headers }, payload: JSON.stringify(body) })
    const session = res.headers['mcp-session-id']
    return { status: res.statusCode, json: res.body === '' ? undefined : res.json(), session: typeof session === 'string' ? session : undefined }
  }
  const init = await post(INIT_BODY)
  t.equal(init.status, 200, 'initialize (sessionCost 0: free)')
  const headers = { 'mcp-session-id': init.session ?? '', 'mcp-protocol-version': '2025-11-25' }
  t.equal((await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status, 202)
  const call = async (name: string, id: number) => await post({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: name === 'echo' ? { text: 'x' } : { ms: 1 } } }, headers)
  const denied = await call('slow', 2)
  t.equal(denied.status, 403, 'judge refused it')
  t.match(denied.json, { id: 2, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
  t.equal((await call('echo', 3)).status, 200, '1 of 2: the refused call cost nothing')
  t.equal((await call('echo', 4)).status, 200, '2 of 2')
  const limited = await call('echo', 5)
  t.equal(limited.status, 429, 'charge refused the third')
  t.match(limited.json, { id: 5, error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' } } })
})

t.test('record: a client gone before the step ran still frees its slots and gets its audit records', async (t) => {
  // A batch whose first member took a concurrency slot while the second waited on the rate-limit
  // store: the client left meanwhile, so the response had closed before record ran.
  const lines: string[] = []
  const audit = createAuditLog({ enabled: true, destination: 'stdout', includeArguments: false, includeResults: false }, { error: () => {}, info: () => {} }, { write: (line: string) => { lines.push(line); return true } })
  const route = { server: { name: 'fx', transport: 'http' }, metrics: new Metrics(), audit, captured: new WeakMap(), redactions: new WeakMap() } as unknown as McpRoute
  const inspection = inspectBody(Buffer.from(JSON.stringify([
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'gate' } },
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo' } },
  ])))
  let released = 0
  const outcomes: MessageOutcome[] = inspection.messages.map((message, i) => ({ message, decision: 'allowed', kind: 'tool', name: message.target, ...(i === 0 ? { release: () => { released++ } } : {}) }))
  const app = Fastify()
  t.teardown(() => app.close())
  const recorded = new Promise<void>((resolve) => {
    app.post('/', async (request, reply) => {
      reply.hijack()
      if (!reply.raw.closed) await once(reply.raw, 'close')
      const call = new McpCall(route, request, reply)
      call.outcomes = outcomes
      record(call)
      resolve()
    })
  })
  const { port } = (await app.listen({ port: 0, host: '127.0.0.1' }), app.server.address() as { port: number })
  const client = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: { 'content-type': 'application/json' } })
  client.on('error', () => {})
  client.end(JSON.stringify({}))
  client.on('socket', (socket) => { socket.on('connect', () => setTimeout(() => client.destroy(), 50)) })
  await recorded
  t.equal(released, 1, 'the slot was released')
  t.same(lines.map((line) => (JSON.parse(line) as { jsonrpcId: number }).jsonrpcId), [1, 2], 'one audit record per request')
  t.same(lines.map((line) => (JSON.parse(line) as { outcome: string }).outcome), ['cancelled', 'cancelled'], 'each says the client left first')
  const metrics = await route.metrics.registry.getSingleMetricAsString('portcullis_tool_calls_total')
  t.match(metrics, /outcome="cancelled"\} 2/, 'both calls counted as cancelled')
})
