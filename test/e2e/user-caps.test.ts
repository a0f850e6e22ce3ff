// Issue 12: one user cannot starve the rest. Per-user caps on stdio processes/sessions and on HTTP
// upstream sessions (two real users signed in through the real OAuth flow, real child processes, a
// real Streamable HTTP upstream), and sessions that never send a request after initialize are
// reclaimed at idleTimeoutMs / 10 (an injected clock, no sleeping).
import { request, type IncomingMessage } from 'node:http'
import t, { type Test } from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { INIT_BODY, eventually, postJson, startGateway, startUpstream, stdioServer, type HttpFixture, type RunningGateway } from '../helpers.js'
import { StdioUpstream } from '../../src/upstreams/stdio/stdio-upstream.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]

/** A user's access token through the real sign-in; the SDK client's own session is ended (DELETE). */
async function tokenFor (t: Test, gw: RunningGateway, server: string, username: string): Promise<string> {
  const signed = await connectWithOAuth(t, gw.mcpUrl(server), { username, password: PASSWORD, issuer: gw.baseUrl, oauth: new TestOAuthClient({ name: `${username}'s client` }) })
  await signed.transport.terminateSession()
  await signed.client.close()
  return signed.oauth.savedTokens?.access_token ?? ''
}

interface Opened { status: number, json: unknown, headers: Headers, sessionId: string }

async function initialize (gw: RunningGateway, server: string, token: string | undefined, id: string): Promise<Opened> {
  const res = await postJson(gw.mcpUrl(server), { ...INIT_BODY, id }, token === undefined ? {} : { authorization: `Bearer ${token}` })
  return { ...res, sessionId: res.headers.get('mcp-session-id') ?? '' }
}

function sessionHeaders (token: string | undefined, sessionId: string): Record<string, string> {
  return { ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
}

async function ping (gw: RunningGateway, server: string, token: string | undefined, sessionId: string, id: string): Promise<number> {
  return (await postJson(gw.mcpUrl(server), { jsonrpc: '2.0', id, method: 'ping' }, sessionHeaders(token, sessionId))).status
}

async function notifyInitialized (gw: RunningGateway, server: string, token: string | undefined, sessionId: string): Promise<number> {
  return (await postJson(gw.mcpUrl(server), { jsonrpc: '2.0', method: 'notifications/initialized' }, sessionHeaders(token, sessionId))).status
}

/** Opens the session's GET stream (a session in use) on a connection of its own; close() ends it. */
async function openStream (t: Test, gw: RunningGateway, server: string, token: string | undefined, sessionId: string): Promise<{ close: () => void }> {
  const req = request(gw.mcpUrl(server), { agent: false, headers: { accept: 'text/event-stream', ...sessionHeaders(token, sessionId) } })
  const res = await new Promise<IncomingMessage>((resolve, reject) => req.once('response', resolve).once('error', reject).end())
  if (res.statusCode !== 200) throw new Error(`GET stream answered ${res.statusCode ?? 0}`)
  // Read and drop the events; the stream lives until close().
  res.resume()
  const close = (): void => { req.destroy() }
  t.teardown(close)
  return { close }
}

interface Health { servers: Array<{ name: string, processes: Array<{ pid: number }> }> }
const processCount = async (gw: RunningGateway): Promise<number> => ((await (await fetch(`${gw.baseUrl}/readyz`)).json() as Health).servers[0]?.processes.length ?? -1)

const deletesSeen = (upstream: HttpFixture, sessionId: string): number =>
  upstream.seen.filter((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === sessionId).length

t.test('stdio maxProcessesPerUser: a user at the cap loses their own oldest idle session, then gets 429; another user is unaffected', async (t) => {
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [stdioServer('s', { maxProcessesPerUser: 2 })] })
  const alice = await tokenFor(t, gw, 's', 'alice')
  const bob = await tokenFor(t, gw, 's', 'bob')
  t.ok(await eventually(async () => await processCount(gw) === 0), 'the sign-in sessions are gone with their processes')

  const a1 = await initialize(gw, 's', alice, 'a1')
  const a2 = await initialize(gw, 's', alice, 'a2')
  t.equal(a1.status + a2.status, 400, 'two sessions')
  t.equal(await ping(gw, 's', alice, a1.sessionId, 'p1'), 200)
  await openStream(t, gw, 's', alice, a2.sessionId)
  const a3 = await initialize(gw, 's', alice, 'a3')
  t.equal(a3.status, 200, 'a third session: her oldest idle one (a1) made room')
  t.equal(await ping(gw, 's', alice, a1.sessionId, 'p2'), 404, 'a1 has ended')
  t.equal(await ping(gw, 's', alice, a2.sessionId, 'p3'), 200, 'a2, whose GET stream is open, goes on')
  t.ok(await eventually(async () => await processCount(gw) === 2), 'a1\'s process is gone: two processes, a2\'s and a3\'s')

  const a3Stream = await openStream(t, gw, 's', alice, a3.sessionId)
  const refused = await initialize(gw, 's', alice, 'a4')
  t.equal(refused.status, 429, 'nothing idle: 429')
  t.equal(refused.headers.get('retry-after'), '2')
  t.same(refused.json, {
    jsonrpc: '2.0',
    id: 'a4',
    error: {
      code: -32600,
      message: 'Too many sessions open: you have 2 sessions open on server "s" (servers[].maxProcessesPerUser is 2); close one (DELETE) or wait for one to finish',
      data: { code: 'PORTCULLIS_ERR_TOO_MANY_SESSIONS' },
    },
  })

  const b1 = await initialize(gw, 's', bob, 'b1')
  const b2 = await initialize(gw, 's', bob, 'b2')
  t.equal(b1.status + b2.status, 400, 'Bob opens his own two sessions while Alice is at her cap')
  t.equal(await ping(gw, 's', alice, a2.sessionId, 'p4'), 200, 'and Alice\'s sessions are untouched by his')
  t.equal(await ping(gw, 's', alice, a3.sessionId, 'p5'), 200)

  a3Stream.close()
  t.ok(await eventually(async () => (await initialize(gw, 's', alice, 'a5')).status === 200), 'once a3 is idle again, a new session takes its place')
  t.equal(await ping(gw, 's', alice, a2.sessionId, 'p6'), 200, 'the session in use stays')
})

t.test('stdio maxProcessesPerUser defaults to half of maxProcesses', async (t) => {
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [stdioServer('s', { maxProcesses: 3 })] })
  const alice = await tokenFor(t, gw, 's', 'alice')
  const a1 = await initialize(gw, 's', alice, 'a1')
  await openStream(t, gw, 's', alice, a1.sessionId)
  const refused = await initialize(gw, 's', alice, 'a2')
  t.equal(refused.status, 429)
  t.match(refused.json, { id: 'a2', error: { message: /you have 1 session open on server "s" \(servers\[\]\.maxProcessesPerUser is 1\)/ } })
})

t.test('HTTP maxSessionsPerUser: the oldest idle session is DELETEd upstream to make room, then 429; another user is unaffected', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, maxSessionsPerUser: 2, headers: { 'x-gateway-key': 'configured' } }] })
  const alice = await tokenFor(t, gw, 'fx', 'alice')
  const bob = await tokenFor(t, gw, 'fx', 'bob')

  const a1 = await initialize(gw, 'fx', alice, 'a1')
  const a2 = await initialize(gw, 'fx', alice, 'a2')
  t.equal(a1.status + a2.status, 400, 'two sessions')
  t.equal(await ping(gw, 'fx', alice, a1.sessionId, 'p1'), 200)
  await openStream(t, gw, 'fx', alice, a2.sessionId)
  const a3 = await initialize(gw, 'fx', alice, 'a3')
  t.equal(a3.status, 200, 'a third session: her oldest idle one (a1) made room')
  t.ok(await eventually(() => deletesSeen(upstream, a1.sessionId) === 1), 'the upstream was told: DELETE for a1')
  const deleted = upstream.seen.find((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === a1.sessionId)
  t.equal(deleted?.headers['x-gateway-key'], 'configured', 'with the gateway\'s configured headers')
  t.equal(deleted?.headers.authorization, undefined, 'and no client credentials')
  t.equal(await ping(gw, 'fx', alice, a1.sessionId, 'p2'), 404, 'a1 has ended')
  t.equal(await ping(gw, 'fx', alice, a2.sessionId, 'p3'), 200, 'a2, whose GET stream is open, goes on')

  const a3Stream = await openStream(t, gw, 'fx', alice, a3.sessionId)
  const refused = await initialize(gw, 'fx', alice, 'a4')
  t.equal(refused.status, 429, 'nothing idle: 429')
  t.equal(refused.headers.get('retry-after'), '2')
  t.same(refused.json, {
    jsonrpc: '2.0',
    id: 'a4',
    error: {
      code: -32600,
      message: 'Too many sessions open: you have 2 sessions open on server "fx" (servers[].maxSessionsPerUser is 2); close one (DELETE) or wait for one to finish',
      data: { code: 'PORTCULLIS_ERR_TOO_MANY_SESSIONS' },
    },
  })
  const initializes = upstream.seen.filter((r) => r.method === 'POST' && r.headers['mcp-session-id'] === undefined).length

  const b1 = await initialize(gw, 'fx', bob, 'b1')
  const b2 = await initialize(gw, 'fx', bob, 'b2')
  t.equal(b1.status + b2.status, 400, 'Bob opens his own two sessions while Alice is at her cap')
  t.equal(upstream.seen.filter((r) => r.method === 'POST' && r.headers['mcp-session-id'] === undefined).length, initializes + 2, 'Alice\'s refused initialize never reached the upstream')
  t.equal(await ping(gw, 'fx', alice, a2.sessionId, 'p4'), 200, 'Alice\'s sessions are untouched by his')
  t.equal(await ping(gw, 'fx', alice, a3.sessionId, 'p5'), 200)

  a3Stream.close()
  t.ok(await eventually(async () => (await initialize(gw, 'fx', alice, 'a5')).status === 200), 'once a3 is idle again, a new session takes its place')
  t.ok(await eventually(() => deletesSeen(upstream, a3.sessionId) === 1), 'a3 was ended upstream')
})

t.test('stdio: a session that sends no request after initialize is reclaimed at idleTimeoutMs / 10', async (t) => {
  let clock = Date.now()
  const gw = await startGateway(t, { servers: [stdioServer('s', { idleTimeoutMs: 100_000 })] }, {}, { now: () => clock })
  const upstream = gw.app.portcullis.upstreams.get('s')
  if (!(upstream instanceof StdioUpstream)) throw new Error('not a stdio upstream')
  const unused = await initialize(gw, 's', undefined, 'u')
  t.equal(await notifyInitialized(gw, 's', undefined, unused.sessionId), 202, 'a notification is not a request')
  const used = await initialize(gw, 's', undefined, 'v')
  t.equal(await ping(gw, 's', undefined, used.sessionId, 'v1'), 200)
  const listening = await initialize(gw, 's', undefined, 'w')
  await openStream(t, gw, 's', undefined, listening.sessionId)
  t.equal(await processCount(gw), 3)

  clock += 9_999
  upstream.sweep()
  t.equal(await processCount(gw), 3, 'nothing reclaimed before idleTimeoutMs / 10')
  clock += 2
  upstream.sweep()
  t.equal(await ping(gw, 's', undefined, unused.sessionId, 'u1'), 404, 'the never-used session is gone')
  t.equal(await ping(gw, 's', undefined, used.sessionId, 'v2'), 200, 'a session in use keeps the full idle timeout')
  t.equal(await ping(gw, 's', undefined, listening.sessionId, 'w1'), 200, 'so does one with an open GET stream')
  t.ok(await eventually(async () => await processCount(gw) === 2), 'and its process with it')
})

t.test('HTTP: a session that sends no request after initialize is forgotten at idleTimeoutMs / 10 and DELETEd upstream', async (t) => {
  let clock = Date.now()
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, idleTimeoutMs: 100_000 }] }, {}, { now: () => clock })
  const unused = await initialize(gw, 'fx', undefined, 'u')
  t.equal(await notifyInitialized(gw, 'fx', undefined, unused.sessionId), 202, 'a notification is not a request')
  const used = await initialize(gw, 'fx', undefined, 'v')
  t.equal(await ping(gw, 'fx', undefined, used.sessionId, 'v1'), 200)

  clock += 9_999
  t.equal(await ping(gw, 'fx', undefined, used.sessionId, 'v2'), 200)
  const early = await initialize(gw, 'fx', undefined, 'x')
  t.equal(early.status, 200)
  t.equal(deletesSeen(upstream, unused.sessionId), 0, 'nothing reclaimed before idleTimeoutMs / 10')
  clock += 2
  const gone = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 'u1', method: 'ping' }, sessionHeaders(undefined, unused.sessionId))
  t.equal(gone.status, 404, 'the never-used session is gone')
  t.match(gone.json, { id: 'u1', error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
  t.ok(await eventually(() => deletesSeen(upstream, unused.sessionId) === 1), 'and the upstream was told (DELETE)')
  t.equal(await ping(gw, 'fx', undefined, used.sessionId, 'v3'), 200, 'a session in use keeps the full idle timeout')
})
