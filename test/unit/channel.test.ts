// Channel id rewriting against a real child process: a tiny stdio program that records every
// line it receives, answers `test/echo` at once, holds `test/hold` unanswered, writes whatever
// a `test/emit` notification carries, and returns its record for `test/received`. So the test
// sees both sides: what the child was sent (rewritten ids and progress tokens) and what each
// client got back (its own ids restored). No socket is involved.
import t from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import { Channel, type ChannelClient, type ReplySink } from '../../src/upstreams/stdio/channel.js'
import { McpChild } from '../../src/upstreams/stdio/child-process.js'
import { createLogger } from '../../src/observability/logger.js'
import type { JsonRpcId, PortcullisError } from '../../src/errors.js'
import { eventually, type Teardown } from '../helpers.js'

const RECORDER = `
import { createInterface } from 'node:readline'
const received = []
const out = (m) => process.stdout.write(JSON.stringify(m) + '\\n')
createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line)
  if (m.method === 'test/received') return out({ jsonrpc: '2.0', id: m.id, result: { received } })
  received.push(m)
  if (m.method === 'test/echo') out({ jsonrpc: '2.0', id: m.id, result: { sawId: m.id, sawToken: m.params?._meta?.progressToken ?? null } })
  if (m.method === 'test/emit') for (const e of m.params.messages) out(e)
})
`

type Message = Record<string, unknown>
const log = createLogger('silent') as unknown as FastifyBaseLogger

interface RecordingSink extends ReplySink {
  readonly delivered: Array<{ message: Message, clientId: JsonRpcId, isFinal: boolean }>
  readonly failed: Array<{ code: string, clientId: JsonRpcId }>
  readonly abandoned: JsonRpcId[]
}

function recordingSink (): RecordingSink {
  const sink: RecordingSink = {
    isOpen: true,
    delivered: [],
    failed: [],
    abandoned: [],
    deliver: (json, clientId, isFinal) => { sink.delivered.push({ message: JSON.parse(json) as Message, clientId, isFinal }) },
    fail: (err: PortcullisError, clientId) => { sink.failed.push({ code: err.code, clientId }) },
    abandon: (clientId) => { sink.abandoned.push(clientId) },
  }
  return sink
}

interface RecordingClient extends ChannelClient {
  readonly got: Array<{ message: Message, kind: string }>
  closed: boolean
}

function recordingClient (label: string): RecordingClient {
  const client: RecordingClient = {
    label,
    got: [],
    closed: false,
    deliver: (json, kind) => { client.got.push({ message: JSON.parse(json) as Message, kind }) },
    onChannelClosed: () => { client.closed = true },
  }
  return client
}

function openChannel (t: Teardown, isExclusive: boolean, requestTimeoutMs = 30_000): Channel {
  const child = new McpChild({ server: 'rec', command: process.execPath, args: ['--input-type=module', '-e', RECORDER], env: { PATH: process.env.PATH ?? '' }, cwd: undefined, maxMessageBytes: 1_000_000 }, log)
  t.teardown(() => child.terminate())
  return new Channel(child, { server: 'rec', isExclusive, requestTimeoutMs, log, now: () => Date.now() })
}

/** What the child has received so far (asked through the channel itself, on a rewriting channel). */
async function receivedBy (channel: Channel): Promise<Message[]> {
  const answer = await channel.call({ jsonrpc: '2.0', id: 'probe', method: 'test/received' }, 5_000)
  return (answer.result as { received: Message[] }).received
}

function request (id: JsonRpcId, method: string, progressToken?: string | number): Message {
  return { jsonrpc: '2.0', id, method, params: progressToken === undefined ? {} : { _meta: { progressToken } } }
}

/** A shared channel with alice and bob attached, each with a sink for their answers. */
function sharedPair (t: Teardown): { channel: Channel, alice: RecordingClient, bob: RecordingClient, aliceSink: RecordingSink, bobSink: RecordingSink } {
  const channel = openChannel(t, false)
  const alice = recordingClient('alice')
  const bob = recordingClient('bob')
  channel.attach(alice)
  channel.attach(bob)
  return { channel, alice, bob, aliceSink: recordingSink(), bobSink: recordingSink() }
}

/** Long enough for the child to have answered a line just sent (it answers at once). */
const settle = async (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 300))

function emit (channel: Channel, client: ChannelClient, messages: Message[]): void {
  channel.forwardNotification(client, { jsonrpc: '2.0', method: 'test/emit', params: { messages } }, undefined)
}

t.test('shared channel: two clients with the same id and progress token get their own answers', async (t) => {
  const { channel, alice, bob, aliceSink, bobSink } = sharedPair(t)
  channel.forwardRequest(alice, request(1, 'test/echo', 'p'), undefined, aliceSink)
  channel.forwardRequest(bob, request(1, 'test/echo', 'p'), undefined, bobSink)
  t.ok(await eventually(() => aliceSink.delivered.length === 1 && bobSink.delivered.length === 1), 'both answered')
  const [a, b] = [aliceSink.delivered[0], bobSink.delivered[0]]
  if (a === undefined || b === undefined) throw new Error('unreachable: both were delivered')
  t.equal(a.message.id, 1, 'alice gets her id back')
  t.equal(b.message.id, 1, 'bob gets his id back')
  t.ok(a.isFinal && b.isFinal)
  const aSaw = a.message.result as { sawId: unknown, sawToken: unknown }
  const bSaw = b.message.result as { sawId: unknown, sawToken: unknown }
  t.not(aSaw.sawId, bSaw.sawId, 'the child saw two different ids')
  t.not(aSaw.sawToken, bSaw.sawToken, 'and two different progress tokens')
  t.equal(aSaw.sawToken, aSaw.sawId, 'the child-side token is the child-side id')
  t.equal(channel.inFlight, 0, 'nothing left pending')
})

t.test('shared channel: progress and late responses are routed by the child-side id and token', async (t) => {
  const { channel, alice, bob, aliceSink, bobSink } = sharedPair(t)
  // A batch from alice (string ids) and a request from bob, all held unanswered by the child.
  channel.forwardRequest(alice, request('a', 'test/hold', 'tok-a'), undefined, aliceSink)
  channel.forwardRequest(alice, request('b', 'test/hold'), undefined, aliceSink)
  channel.forwardRequest(bob, request('a', 'test/hold', 'tok-a'), undefined, bobSink)
  const held = (await receivedBy(channel)).filter((m) => m.method === 'test/hold')
  t.equal(held.length, 3)
  const childIds = held.map((m) => m.id)
  t.equal(new Set(childIds).size, 3, 'three distinct child-side ids')
  t.notOk(childIds.includes('a') || childIds.includes('b'), 'client ids never reach a shared child')
  const [aliceA, aliceB, bobA] = childIds
  // The child answers in reverse order and reports progress on bob's token only.
  emit(channel, alice, [
    { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: bobA, progress: 1 } },
    { jsonrpc: '2.0', id: bobA, result: { who: 'bob-a' } },
    { jsonrpc: '2.0', id: aliceB, result: { who: 'alice-b' } },
    { jsonrpc: '2.0', id: aliceA, result: { who: 'alice-a' } },
  ])
  t.ok(await eventually(() => aliceSink.delivered.length === 2 && bobSink.delivered.length === 2))
  t.same(bobSink.delivered.map((d) => [d.message, d.isFinal]), [
    [{ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 'tok-a', progress: 1 } }, false],
    [{ jsonrpc: '2.0', id: 'a', result: { who: 'bob-a' } }, true],
  ], 'bob: progress with his token, then his answer under his id')
  t.same(aliceSink.delivered.map((d) => [d.message.id, (d.message.result as { who: string }).who]), [['b', 'alice-b'], ['a', 'alice-a']], 'alice: each answer under its own id')
  t.same(alice.got, [], 'nothing leaked to alice as a stray message')
})

t.test('cancellation: re-addressed to the child id; the late answer is dropped', async (t) => {
  const { channel, alice, bob, aliceSink, bobSink } = sharedPair(t)
  channel.forwardRequest(alice, request(7, 'test/hold'), undefined, aliceSink)
  channel.forwardRequest(bob, request(7, 'test/hold'), undefined, bobSink)
  channel.forwardRequest(bob, request(8, 'test/hold'), undefined, bobSink)
  // Bob cancels his 7 by notification; alice cancels some id she never sent (ignored).
  channel.forwardNotification(bob, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'user' } }, undefined)
  channel.forwardNotification(alice, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 99 } }, undefined)
  // Bob's stream for 8 closes (2026 cancellation).
  channel.cancel(bob, 8)
  t.same(bobSink.abandoned, [7], 'the notification abandons the request')
  t.equal(channel.inFlight, 1, 'only alice\'s request is left')
  const received = await receivedBy(channel)
  const [aliceId, bob7, bob8] = received.filter((m) => m.method === 'test/hold').map((m) => m.id)
  const cancels = received.filter((m) => m.method === 'notifications/cancelled').map((m) => m.params)
  t.same(cancels, [{ requestId: bob7, reason: 'user' }, { requestId: bob8, reason: 'client closed the stream' }], 'the child is told its own ids, never the client\'s 99')
  emit(channel, alice, [{ jsonrpc: '2.0', id: bob7, result: {} }, { jsonrpc: '2.0', id: aliceId, result: { ok: true } }])
  t.ok(await eventually(() => aliceSink.delivered.length === 1))
  t.same(aliceSink.delivered[0]?.message, { jsonrpc: '2.0', id: 7, result: { ok: true } }, 'alice\'s 7 still answered')
  t.same(bobSink.delivered, [], 'the cancelled request\'s late answer is dropped')
})

t.test('detach cancels a client\'s requests in flight at the child', async (t) => {
  const channel = openChannel(t, false)
  const alice = recordingClient('alice')
  channel.attach(alice)
  channel.forwardRequest(alice, request(1, 'test/hold'), undefined, recordingSink())
  channel.detach(alice)
  t.equal(channel.inFlight, 0)
  const received = await receivedBy(channel)
  const childId = received.find((m) => m.method === 'test/hold')?.id
  t.same(received.filter((m) => m.method === 'notifications/cancelled').map((m) => m.params), [{ requestId: childId, reason: 'client went away' }])
})

t.test('server-to-client requests: attributed to the one busy client, refused when ambiguous', async (t) => {
  const channel = openChannel(t, false)
  const alice = recordingClient('alice')
  const bob = recordingClient('bob')
  channel.attach(alice)
  channel.attach(bob)
  channel.forwardRequest(alice, request(1, 'test/hold'), undefined, recordingSink())
  emit(channel, alice, [{ jsonrpc: '2.0', id: 's1', method: 'sampling/createMessage', params: {} }])
  t.ok(await eventually(() => alice.got.length === 1), 'alice, the only busy client, gets the request')
  t.same(alice.got[0], { message: { jsonrpc: '2.0', id: 's1', method: 'sampling/createMessage', params: {} }, kind: 'related' })
  // Bob answering a request he was not sent is dropped; alice's answer reaches the child.
  channel.forwardResponse(bob, { jsonrpc: '2.0', id: 's1', result: { from: 'bob' } }, undefined)
  channel.forwardResponse(alice, { jsonrpc: '2.0', id: 's1', result: { from: 'alice' } }, undefined)
  channel.forwardRequest(bob, request(2, 'test/hold'), undefined, recordingSink())
  emit(channel, alice, [{ jsonrpc: '2.0', id: 's2', method: 'elicitation/create', params: {} }])
  let answers: Message[] = []
  // The refusal is written by the channel after the child's request arrives: ask until it is there.
  t.ok(await eventually(async () => {
    answers = (await receivedBy(channel)).filter((m) => m.method === undefined)
    return answers.length === 2
  }), 'the child got two answers')
  t.same(answers[0], { jsonrpc: '2.0', id: 's1', result: { from: 'alice' } }, 'only the addressee\'s answer is forwarded')
  t.match(answers[1], { id: 's2', error: { code: -32603 } }, 'with two busy clients the request is refused, not guessed')
  t.equal(bob.got.length, 0, 'bob never sees alice\'s elicitation')
  t.equal(alice.got.length, 1)
})

t.test('server-to-client requests: never to another client while a request someone gave up may still run', async (t) => {
  // Alice gives up a call (cancels it, or leaves) whose tool keeps running; bob is then the only
  // busy client. What the child sends meanwhile may be alice's work: it must not reach bob.
  const { channel, alice, bob } = sharedPair(t)
  channel.forwardRequest(alice, request(1, 'test/hold'), undefined, recordingSink())
  const aliceChildId = (await receivedBy(channel)).find((m) => m.method === 'test/hold')?.id
  channel.forwardNotification(alice, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1 } }, undefined)
  channel.forwardRequest(bob, request(2, 'test/hold'), undefined, recordingSink())
  emit(channel, bob, [
    { jsonrpc: '2.0', id: 'e1', method: 'elicitation/create', params: { message: 'secret of alice' } },
    { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'alice\'s log line' } },
  ])
  // No probe of the child's record until its messages are in: the probe is a request in flight
  // of its own, which would make the channel refuse for that reason instead.
  await settle()
  t.same(bob.got, [], 'bob saw neither the elicitation nor the log line')
  let answers: Message[] = []
  t.ok(await eventually(async () => {
    answers = (await receivedBy(channel)).filter((m) => m.id === 'e1' && m.method === undefined)
    return answers.length === 1
  }), 'the child got an answer to its request')
  t.match(answers[0], { id: 'e1', error: { code: -32603 } }, 'refused, not given to bob')
  // Once the child answers alice's abandoned call, its work is over: bob is the sole client again.
  emit(channel, bob, [{ jsonrpc: '2.0', id: aliceChildId, result: {} }, { jsonrpc: '2.0', id: 'e2', method: 'elicitation/create', params: { message: 'for bob' } }])
  t.ok(await eventually(() => bob.got.length === 1), 'then the next one goes to bob')
  t.match(bob.got[0]?.message, { id: 'e2', method: 'elicitation/create' })
  t.equal(alice.got.length, 0)

  // Alice leaves with a call in flight; bob alone is attached, with nothing in flight.
  const after = sharedPair(t)
  after.channel.forwardRequest(after.alice, request(1, 'test/hold'), undefined, recordingSink())
  after.channel.detach(after.alice)
  emit(after.channel, after.bob, [{ jsonrpc: '2.0', id: 'e3', method: 'sampling/createMessage', params: {} }])
  await settle()
  t.same(after.bob.got, [], 'bob, the only client left, does not get the departed client\'s sampling request')
  t.ok(await eventually(async () => (await receivedBy(after.channel)).some((m) => m.id === 'e3' && m.method === undefined)), 'it is refused')
})

t.test('shared channel: one subscription per resource at the child; the last client to leave ends it', async (t) => {
  const { channel, alice, bob } = sharedPair(t)
  const sub = (id: number, method: string): Message => ({ jsonrpc: '2.0', id, method, params: { uri: 'file:///x' } })
  const aliceSink = recordingSink()
  channel.forwardRequest(alice, sub(1, 'resources/subscribe'), undefined, aliceSink)
  const bobSink = recordingSink()
  channel.forwardRequest(bob, sub(1, 'resources/subscribe'), undefined, bobSink)
  t.same(bobSink.delivered.map((d) => d.message), [{ jsonrpc: '2.0', id: 1, result: {} }], 'bob, subscribing to what alice follows, is answered by the gateway')
  const aliceOff = recordingSink()
  channel.forwardRequest(alice, sub(2, 'resources/unsubscribe'), undefined, aliceOff)
  t.same(aliceOff.delivered.map((d) => d.message), [{ jsonrpc: '2.0', id: 2, result: {} }], 'alice leaves it while bob still follows: answered here')
  const subscriptions = async (): Promise<Message[]> => (await receivedBy(channel)).filter((m) => m.method === 'resources/subscribe' || m.method === 'resources/unsubscribe')
  t.same((await subscriptions()).map((m) => m.method), ['resources/subscribe'], 'the child was asked once and never told to stop')
  emit(channel, alice, [{ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'file:///x' } }])
  t.ok(await eventually(() => bob.got.length === 1), 'bob still gets the updates')
  t.equal(alice.got.length, 0, 'alice, who left, does not')
  channel.detach(bob)
  t.ok(await eventually(async () => (await subscriptions()).length === 2), 'the last follower gone: the child is told to stop')
  t.same((await subscriptions()).map((m) => [m.method, (m.params as { uri: string }).uri]), [['resources/subscribe', 'file:///x'], ['resources/unsubscribe', 'file:///x']])
})

t.test('exclusive channel: ids pass untouched and verbatim; a reused id in flight is refused', async (t) => {
  const channel = openChannel(t, true)
  const alice = recordingClient('alice')
  channel.attach(alice)
  const sink = recordingSink()
  const raw = '{"jsonrpc":"2.0","id":42,"method":"test/echo","params":{"_meta":{"progressToken":"p"}}}'
  channel.forwardRequest(alice, JSON.parse(raw) as Message, raw, sink)
  t.ok(await eventually(() => sink.delivered.length === 1))
  t.same(sink.delivered[0]?.message, { jsonrpc: '2.0', id: 42, result: { sawId: 42, sawToken: 'p' } }, 'the child saw the client\'s own id and token')
  channel.forwardRequest(alice, request(5, 'test/hold'), undefined, sink)
  channel.forwardRequest(alice, request(5, 'test/hold'), undefined, sink)
  t.same(sink.failed, [{ code: 'PORTCULLIS_ERR_INVALID_REQUEST', clientId: 5 }], 'the second 5 is refused while the first is pending')
  t.equal(channel.inFlight, 1)
  t.throws(() => channel.call(request('g', 'test/echo'), 1000), /rewriting/, 'the gateway never sends its own ids on an exclusive channel')
})

t.test('a silent request times out: the client is failed, the child told to cancel', async (t) => {
  const channel = openChannel(t, false, 150)
  const alice = recordingClient('alice')
  channel.attach(alice)
  const sink = recordingSink()
  channel.forwardRequest(alice, request(3, 'test/hold'), undefined, sink)
  t.ok(await eventually(() => sink.failed.length === 1))
  t.same(sink.failed, [{ code: 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT', clientId: 3 }])
  const received = await receivedBy(channel)
  t.same(received.filter((m) => m.method === 'notifications/cancelled').map((m) => (m.params as { reason: string }).reason), ['timed out at the gateway'])
})

t.test('the child exits: requests in flight fail, clients are told the channel closed', async (t) => {
  const channel = openChannel(t, false)
  const alice = recordingClient('alice')
  channel.attach(alice)
  const sink = recordingSink()
  channel.forwardRequest(alice, request(1, 'test/hold'), undefined, sink)
  channel.child.kill('test')
  t.ok(await eventually(() => alice.closed))
  t.same(sink.failed, [{ code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', clientId: 1 }])
  t.notOk(channel.isAlive)
  const late = recordingSink()
  channel.forwardRequest(alice, request(2, 'test/echo'), undefined, late)
  t.same(late.failed, [{ code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', clientId: 2 }], 'a dead channel refuses at once')
})
