// One user's HTTP upstream session is never another's: two real users signed in through the real
// OAuth flow, a real Streamable HTTP upstream, and (last test) two gateways on one real Redis.
import t, { type Test } from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { INIT_BODY, postJson, redisAvailable, scratchRedis, startGateway, startUpstream, stdioServer, textOf, type HttpFixture, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]
const CALL = { jsonrpc: '2.0', id: 'b-1', method: 'tools/call', params: { name: 'echo', arguments: { text: 'from bob' } } }

interface Signed { token: string, sessionId: string, call: (text: string) => Promise<string> }

async function signIn (t: Test, gw: RunningGateway, username: string): Promise<Signed> {
  const signed = await connectWithOAuth(t, gw.mcpUrl('fx'), { username, password: PASSWORD, issuer: gw.baseUrl, oauth: new TestOAuthClient({ name: `${username}'s client` }) })
  return {
    token: signed.oauth.savedTokens?.access_token ?? '',
    sessionId: signed.transport.sessionId ?? '',
    call: async (text) => textOf(await signed.client.callTool({ name: 'echo', arguments: { text } })),
  }
}

function withSession (token: string, sessionId: string): Record<string, string> {
  return { authorization: `Bearer ${token}`, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
}

/** Requests the upstream saw carrying this session id. */
function seenWith (upstream: HttpFixture, sessionId: string): number {
  return upstream.seen.filter((r) => r.headers['mcp-session-id'] === sessionId).length
}

t.test('an HTTP upstream session answers only the user and client that opened it: POST, GET and DELETE', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const alice = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  t.ok(alice.sessionId !== '' && bob.sessionId !== '' && alice.sessionId !== bob.sessionId, 'two sessions')
  t.equal(await alice.call('hello'), 'hello')

  const before = seenWith(upstream, alice.sessionId)
  const post = await postJson(gw.mcpUrl('fx'), CALL, withSession(bob.token, alice.sessionId))
  t.equal(post.status, 404, 'Bob posting into Alice\'s session: 404')
  t.same(post.json, { jsonrpc: '2.0', id: 'b-1', error: { code: -32600, message: 'Session not found: start a new session with initialize', data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })

  const get = await fetch(gw.mcpUrl('fx'), { headers: { ...withSession(bob.token, alice.sessionId), accept: 'text/event-stream' } })
  t.equal(get.status, 404, 'Bob opening Alice\'s GET stream: 404')
  t.match(await get.json(), { error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })

  const del = await fetch(gw.mcpUrl('fx'), { method: 'DELETE', headers: withSession(bob.token, alice.sessionId) })
  t.equal(del.status, 404, 'Bob deleting Alice\'s session: 404')
  await del.arrayBuffer()

  const made = await postJson(gw.mcpUrl('fx'), CALL, withSession(bob.token, 'no-such-session'))
  t.same(made.json, post.json, 'answered exactly as a session that does not exist')
  t.equal(seenWith(upstream, alice.sessionId), before, 'none of Bob\'s requests reached the upstream')
  t.equal(await alice.call('still mine'), 'still mine', 'Alice\'s session goes on')
  t.equal(await bob.call('mine too'), 'mine too', 'and Bob has his own')

  // The same user through another client (its own registration) is another owner.
  const aliceElsewhere = await signIn(t, gw, 'alice')
  const other = await postJson(gw.mcpUrl('fx'), CALL, withSession(aliceElsewhere.token, alice.sessionId))
  t.equal(other.status, 404, 'Alice\'s other client cannot use the first client\'s session')

  // Alice ends her session: the record goes with it.
  const ended = await fetch(gw.mcpUrl('fx'), { method: 'DELETE', headers: withSession(alice.token, alice.sessionId) })
  t.equal(ended.status, 200, 'the owner may DELETE')
  await ended.arrayBuffer()
  const seenAfterDelete = seenWith(upstream, alice.sessionId)
  const after = await postJson(gw.mcpUrl('fx'), CALL, withSession(alice.token, alice.sessionId))
  t.equal(after.status, 404)
  t.equal(seenWith(upstream, alice.sessionId), seenAfterDelete, 'a deleted session is refused at the gateway, not forwarded')
})

t.test('a session the upstream no longer knows, or left idle, is forgotten', async (t) => {
  let clock = Date.now()
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, idleTimeoutMs: 60_000 }] }, {}, { now: () => clock })
  const alice = await signIn(t, gw, 'alice')
  t.equal(await alice.call('one'), 'one')

  // The upstream drops the session by itself: its 404 passes through and the record goes.
  await upstream.sessions.get(alice.sessionId)?.close()
  const gone = await postJson(gw.mcpUrl('fx'), CALL, withSession(alice.token, alice.sessionId))
  t.equal(gone.status, 404, 'the upstream\'s own 404')
  const seen = seenWith(upstream, alice.sessionId)
  const again = await postJson(gw.mcpUrl('fx'), CALL, withSession(alice.token, alice.sessionId))
  t.match(again.json, { error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } }, 'now the gateway\'s own 404')
  t.equal(seenWith(upstream, alice.sessionId), seen, 'not forwarded any more')

  // Idle: a new session, unused past idleTimeoutMs, is refused at the gateway.
  const init = await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${alice.token}` })
  const idle = init.headers.get('mcp-session-id') ?? ''
  t.ok(idle !== '', 'a new session')
  const used = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 2, method: 'ping' }, withSession(alice.token, idle))
  t.equal(used.status, 200, 'used within the idle timeout')
  clock += 61_000
  const expired = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 3, method: 'ping' }, withSession(alice.token, idle))
  t.equal(expired.status, 404, 'refused once idle past idleTimeoutMs')
  t.match(expired.json, { id: 3, error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
})

t.test('a machine client is never the user of the same name, and owns its sessions apart', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const secret = 'machine-secret-with-at-least-32-characters!'
  const gw = await startGateway(t, {
    auth: { users: USERS, clients: [{ clientId: 'robot', clientSecret: secret, grantTypes: ['client_credentials'] }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  const issued = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`robot:${secret}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: gw.mcpUrl('fx') }).toString(),
  })
  const machineToken = String((await issued.json() as Record<string, unknown>).access_token)
  const alice = await signIn(t, gw, 'alice')
  const init = await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${machineToken}` })
  const machineSession = init.headers.get('mcp-session-id') ?? ''
  t.equal(init.status, 200)
  t.equal((await postJson(gw.mcpUrl('fx'), CALL, withSession(machineToken, alice.sessionId))).status, 404, 'the machine client cannot use Alice\'s session')
  t.equal((await postJson(gw.mcpUrl('fx'), CALL, withSession(alice.token, machineSession))).status, 404, 'nor Alice the machine client\'s')
  t.equal((await postJson(gw.mcpUrl('fx'), CALL, withSession(machineToken, machineSession))).status, 200, 'its own session works')
})

t.test('with Redis, every replica enforces the owner recorded by another', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const upstream = await startUpstream(t)
  const config = { auth: { users: USERS }, store: { redis: 'redis://127.0.0.1:6379', prefix }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }
  const gw1 = await startGateway(t, config)
  // One publicUrl for both, as behind a load balancer: tokens from one are good at the other.
  const gw2 = await startGateway(t, { ...config, publicUrl: gw1.baseUrl })
  const alice = await signIn(t, gw1, 'alice')
  const bob = await signIn(t, gw1, 'bob')
  const bobThere = await postJson(`${gw2.baseUrl}/fx/mcp`, CALL, withSession(bob.token, alice.sessionId))
  t.equal(bobThere.status, 404, 'Bob with Alice\'s session at the other replica: 404')
  const aliceThere = await postJson(`${gw2.baseUrl}/fx/mcp`, { ...CALL, params: { name: 'echo', arguments: { text: 'via replica 2' } } }, withSession(alice.token, alice.sessionId))
  t.equal(aliceThere.status, 200, 'Alice at the other replica: her session')
  t.match(aliceThere.text, /via replica 2/)
  const keys = await redis.keys(`${prefix}*http-session:fx:${alice.sessionId}`)
  t.equal(keys.length, 1, 'the owner record is in Redis')
  const ttl = await redis.pttl(keys[0] ?? '')
  t.ok(ttl > 0, `and expires (${ttl} ms left)`)
  const ended = await fetch(`${gw2.baseUrl}/fx/mcp`, { method: 'DELETE', headers: withSession(alice.token, alice.sessionId) })
  t.equal(ended.status, 200)
  await ended.arrayBuffer()
  t.same(await redis.keys(`${prefix}*http-session:fx:${alice.sessionId}`), [], 'DELETE at one replica removes the record for all')
})

t.test('a stdio session, too, belongs to the user and the client that opened it', async (t) => {
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ ...stdioServer('fx'), isolation: 'user' }] })
  const first = await signIn(t, gw, 'alice')
  const second = await signIn(t, gw, 'alice')
  const bob = await signIn(t, gw, 'bob')
  t.equal(await first.call('first client'), 'first client')
  const call = { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }
  t.equal((await postJson(gw.mcpUrl('fx'), call, withSession(second.token, first.sessionId))).status, 404, 'Alice\'s other client: 404')
  t.equal((await postJson(gw.mcpUrl('fx'), call, withSession(bob.token, first.sessionId))).status, 404, 'Bob: 404')
  t.equal((await postJson(gw.mcpUrl('fx'), call, withSession(first.token, first.sessionId))).status, 200, 'the first client: its session')
})
