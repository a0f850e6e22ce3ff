// The limiter (src/rate-limit/limiter.ts) and the charge step (charge.ts) without a gateway:
// the real @fastify/rate-limit counters, set up as app.ts does, the real policy gate deciding
// what is allowed, and for store failures a real Redis client pointed at a port nobody listens
// on (the unreachable store is real; only its address is chosen to fail).
import t from 'tap'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import rateLimitPlugin from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import { RateLimiter, type Bucket } from '../../src/rate-limit/limiter.js'
import { charge } from '../../src/rate-limit/charge.js'
import { gate, type MessageOutcome } from '../../src/policy/gate.js'
import { ServerPolicy } from '../../src/policy/policy.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { createLogger } from '../../src/observability/logger.js'
import type { Config } from '../../src/config/schema.js'
import { freePort, logSink, makeConfig, type Teardown } from '../helpers.js'

async function countersApp (t: Teardown, redis?: Redis): Promise<ReturnType<typeof Fastify>> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(rateLimitPlugin, { global: false, skipOnError: false, nameSpace: 'unit-rl:', cache: 1000, ...(redis === undefined ? {} : { redis }) })
  await app.ready()
  return app
}

function serverOf (config: Config): Config['servers'][number] {
  const server = config.servers[0]
  if (server === undefined) throw new Error('no server')
  return server
}

/** A limiter and a `call(user, ...bodies)` that gates then charges one POST body, as the route does. */
async function harness (t: Teardown, object: Record<string, unknown>) {
  const config = makeConfig(object)
  const server = serverOf(config)
  const rejected: string[] = []
  const limiter = new RateLimiter(await countersApp(t), 'allow', createLogger('silent') as unknown as FastifyBaseLogger, { onReject: (b) => rejected.push(b) })
  const options = { server, limiter, defaults: { perUser: config.rateLimits.perUser, perUserPerTool: config.rateLimits.perUserPerTool, sessionCost: config.rateLimits.sessionCost } }
  const policy = new ServerPolicy(server)
  const call = async (user: string, ...messages: Array<Record<string, unknown>>): Promise<readonly MessageOutcome[]> => {
    const inspection = inspectBody(Buffer.from(JSON.stringify(messages.length === 1 ? messages[0] : messages)))
    const outcomes = gate({ policy, scopeChallenge: undefined }, { name: user, groups: [], clientId: undefined, isClient: false, scopes: undefined }, inspection)
    return await charge(options, `sub:${user}`, outcomes)
  }
  return { limiter, call, rejected }
}

const tool = (id: number, name: string): Record<string, unknown> => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name } })
const decisions = (outcomes: readonly MessageOutcome[]): Array<[string, string | undefined]> => outcomes.map((o) => [o.decision, o.reason])

t.test('per-user bucket: a tool\'s cost is charged as that many units; the refusal names the bucket', async (t) => {
  const { call, limiter, rejected } = await harness(t, {
    rateLimits: { sessionCost: 0 },
    servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:1', rateLimit: '5/min', tools: { heavy: { cost: 3 } } }],
  })
  t.same(decisions(await call('ada', tool(1, 'heavy'))), [['allowed', undefined]], '3 of 5 units')
  const [refused] = await call('ada', tool(2, 'heavy'))
  t.equal(refused?.decision, 'rate_limited', '6 units exceed 5')
  t.equal(refused?.reason, 'user')
  t.equal(refused?.error?.code, 'PORTCULLIS_ERR_RATE_LIMITED')
  t.match(refused?.error?.message, /rate limit for server "fx": 5 per minute; retry in \d+ s/)
  t.match(refused?.error?.headers, { 'ratelimit-limit': '5', 'ratelimit-remaining': '0', 'ratelimit-policy': '5;w=60' })
  t.ok(Number(refused?.error?.headers['retry-after']) >= 1, 'retry-after is at least a second')
  t.same(decisions(await call('bob', tool(1, 'heavy'))), [['allowed', undefined]], 'another user has a budget of his own')
  t.same(rejected, ['user'], 'the reject hook counted one refusal')
  t.match(limiter.stateOf('sub:bob'), [{ kind: 'user', on: 'fx', subject: 'server "fx"', limit: 5, windowS: 60, remaining: 2 }], 'the admin view of bob\'s bucket')
  t.same(limiter.stateOf('sub:nobody'), [])
})

t.test('per user per tool and per tool for all users; initialize weighs sessionCost; refused calls cost nothing', async (t) => {
  const { call } = await harness(t, {
    rateLimits: { sessionCost: 2, perUser: '3/min' },
    servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:1', tools: { deny: ['slow'], mine: { rateLimit: '1/min' }, shared: { globalRateLimit: '2/min' } } }],
  })
  t.same(decisions(await call('ada', tool(1, 'mine'))), [['allowed', undefined]])
  t.same(decisions(await call('ada', tool(2, 'mine'))), [['rate_limited', 'user-tool']], 'second call of the tool by the same user')
  t.same(decisions(await call('bob', tool(1, 'mine'), tool(2, 'shared'))), [['allowed', undefined], ['allowed', undefined]], 'bob has his own per-tool bucket')
  const [carol] = await call('carol', tool(1, 'shared'))
  t.same([carol?.decision, carol?.reason], ['allowed', undefined])
  const [dan] = await call('dan', tool(1, 'shared'))
  t.same([dan?.decision, dan?.reason], ['rate_limited', 'tool'], 'the third call of the tool by anyone')
  t.match(dan?.error?.message, /tool "shared" \(all users together\)/)
  // eve: a denied call, then initialize (2 units) and one call (1 unit) fill her 3/min exactly.
  t.same(decisions(await call('eve', tool(1, 'slow'))), [['denied', 'tool "slow" is denied by tools.deny "slow" of server "fx"']])
  const init = { jsonrpc: '2.0', id: 2, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }
  t.same(decisions(await call('eve', init, tool(3, 'mine'))), [['allowed', undefined], ['allowed', undefined]], 'the denied call took no unit')
  t.same(decisions(await call('eve', { jsonrpc: '2.0', id: 4, method: 'ping' })), [['rate_limited', 'user']], 'the budget is spent')
})

t.test('concurrency: slots per user per tool, each freed once by its release', async (t) => {
  const { call, rejected } = await harness(t, {
    rateLimits: { sessionCost: 0 },
    servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:1', tools: { busy: { concurrency: 1 }, pair: { concurrency: 2 } } }],
  })
  const [first] = await call('ada', tool(1, 'busy'))
  t.equal(first?.decision, 'allowed')
  t.type(first?.release, 'function', 'an allowed call holds a slot')
  const [second] = await call('ada', tool(2, 'busy'))
  t.same([second?.decision, second?.reason], ['rate_limited', 'concurrency'])
  t.match(second?.error?.message, /tool "busy" allows 1 call in flight per user/)
  t.same(second?.error?.headers, { 'retry-after': '1' })
  const [other] = await call('bob', tool(1, 'busy'))
  t.equal(other?.decision, 'allowed', 'slots are per user')
  first?.release?.()
  const [third] = await call('ada', tool(3, 'busy'))
  t.equal(third?.decision, 'allowed', 'released: the next call gets the slot')
  // Two slots held; one call's release run twice (a stream closing after an error) frees one.
  const held = await call('ada', tool(4, 'pair'), tool(5, 'pair'))
  t.same(decisions(held), [['allowed', undefined], ['allowed', undefined]])
  held[0]?.release?.()
  held[0]?.release?.()
  t.same(decisions(await call('ada', tool(6, 'pair'))), [['allowed', undefined]], 'the freed slot is taken')
  t.same(decisions(await call('ada', tool(7, 'pair'))), [['rate_limited', 'concurrency']], 'the double release did not free the other call\'s slot')
  t.same(rejected, ['concurrency', 'concurrency'])
})

t.test('counter store unreachable: onStoreError allow lets through, deny refuses; one log line per interval', async (t) => {
  const port = await freePort()
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null })
  t.teardown(() => redis.disconnect())
  const sink = logSink()
  let storeErrors = 0
  const limiter = new RateLimiter(await countersApp(t, redis), 'allow', createLogger('info', sink.stream) as unknown as FastifyBaseLogger, { onStoreError: () => storeErrors++ })
  const bucket: Bucket = { kind: 'user', key: 'fx:sub:ada', rate: { max: 1, windowMs: 60_000, text: '1/min' }, cost: 1, subject: 'server "fx"', caller: 'sub:ada' }
  t.equal(await limiter.consume([bucket]), undefined, 'allow: let through')
  t.equal(await limiter.consume([bucket]), undefined, 'allow: still let through, though 1/min would refuse')
  limiter.useOnStoreError('deny')
  t.equal(await limiter.consume([bucket]), 'store-unavailable', 'deny: refused')
  t.equal(storeErrors, 3, 'every failure is counted')
  const errors = sink.lines.map((l) => JSON.parse(l) as { msg: string, level: number }).filter((l) => l.level === 50)
  t.same(errors.map((l) => l.msg), ['rate-limit store unreachable: requests are let through unlimited'], 'one line for the whole burst')
  t.same(limiter.stateOf('sub:ada'), [], 'a failed charge is not remembered')
})

t.test('the admin view keeps the 10 000 callers charged last: a caller charged again is kept, the one charged longest ago is dropped', async (t) => {
  const limiter = new RateLimiter(await countersApp(t), 'allow', createLogger('silent') as unknown as FastifyBaseLogger)
  const rate = { max: 1000, windowMs: 60_000, text: '1000/min' }
  const buckets = (caller: string): Bucket[] => [
    { kind: 'user', key: `fx:${caller}`, rate, cost: 1, subject: 'server "fx"', caller },
    { kind: 'user-tool', key: `fx:echo:${caller}`, rate, cost: 1, subject: 'tool "echo"', caller },
  ]
  t.equal(await limiter.consume(buckets('sub:ada')), undefined)
  t.equal(await limiter.consume(buckets('sub:bob')), undefined)
  // ada again: now charged after bob, bob is the one charged longest ago.
  t.equal(await limiter.consume(buckets('sub:ada')), undefined)
  t.match(limiter.stateOf('sub:ada'), [{ kind: 'user', remaining: 998 }, { kind: 'user-tool', remaining: 998 }], 'one entry per bucket, with the latest count')
  t.equal(limiter.stateOf('sub:ada').length, 2)
  // 9 998 more callers fill the view to 10 000; one more drops the caller charged longest ago.
  for (let i = 0; i < 9_998; i++) await limiter.consume(buckets(`sub:u${i}`))
  t.equal(limiter.stateOf('sub:bob').length, 2, 'at 10 000 callers nobody is dropped yet')
  await limiter.consume(buckets('sub:last'))
  t.same(limiter.stateOf('sub:bob'), [], 'bob, charged longest ago, is dropped')
  t.equal(limiter.stateOf('sub:ada').length, 2, 'ada, charged again after bob, is kept')
  await limiter.consume(buckets('sub:next'))
  t.same(limiter.stateOf('sub:ada'), [], 'then ada')
  t.equal(limiter.stateOf('sub:u0').length, 2)
})

t.test('in-memory counters: a caller at its limit stays there while 6,000 other keys are counted at the same rate', async (t) => {
  // A batch of made-up tool names makes one new user-tool counter each; the store's LRU must not
  // forget the real tool's counter for them (createRateLimit's default LRU held 5,000).
  const limiter = new RateLimiter(await countersApp(t), 'allow', createLogger('silent') as unknown as FastifyBaseLogger)
  const rate = { max: 1, windowMs: 3_600_000, text: '1/hour' }
  const bucket = (name: string): Bucket => ({ kind: 'user-tool', key: `fx:${name}:sub:mallory`, rate, cost: 1, subject: `tool "${name}"`, caller: 'sub:mallory' })
  t.equal(await limiter.consume([bucket('real')]), undefined, 'the first call of the hour')
  t.match(await limiter.consume([bucket('real')]), { bucket: 'user-tool' }, 'the second is refused')
  for (let i = 0; i < 6000; i++) await limiter.consume([bucket(`x${i}`)])
  t.match(await limiter.consume([bucket('real')]), { bucket: 'user-tool' }, 'and still is after 6,000 other counters')
})
