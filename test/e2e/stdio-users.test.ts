// Per-user stdio processes across users, sessions and protocol eras: which user's process answers
// a request, which protocol version each session is told, and what happens to a user who lacks a
// per-user value. Two real local users sign in through the real OAuth flow; real child processes.
import t from 'tap'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { INIT_BODY, postJson, startGateway, stdioServer, STDIO_MODERN_FIXTURE, textOf, type RunningGateway, type Teardown } from '../helpers.js'

const ALICE = { username: 'alice', password: 'alice-password-123' }
const BOB = { username: 'bob', password: 'bob-password-123' }
// Alice has an email address; Bob has none.
const USERS = [
  { username: ALICE.username, passwordHash: await hashPassword(ALICE.password), email: 'alice@example.com' },
  { username: BOB.username, passwordHash: await hashPassword(BOB.password) },
]

const META = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
}

interface ChildView { argv: string[], DATA_FILE?: string, pid: number, cwd?: string }
interface Health { servers: Array<{ processes: Array<{ pid: number, role: string }> }> }

async function gatewayWith (t: Teardown, server: Record<string, unknown>): Promise<RunningGateway> {
  return startGateway(t, { auth: { users: USERS }, servers: [server] })
}

/**
 * A user's access token for one server, through the real sign-in. The client's own connect
 * may be refused (a user without a needed value): the token is what the test needs.
 */
async function tokenFor (t: Teardown, gw: RunningGateway, server: string, who: { username: string, password: string }): Promise<string> {
  const oauth = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl(server), { ...who, oauth, issuer: gw.baseUrl }).catch(() => undefined)
  const token = oauth.savedTokens?.access_token
  if (token === undefined) throw new Error(`${who.username} got no token`)
  return token
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

async function modernCall (gw: RunningGateway, server: string, token: string, id: string, tool = 'env'): Promise<{ status: number, json: unknown }> {
  return postJson(gw.mcpUrl(server),
    { jsonrpc: '2.0', id, method: 'tools/call', params: { name: tool, arguments: {}, _meta: META } },
    { ...bearer(token), 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': tool })
}

function childView (json: unknown): ChildView {
  return JSON.parse(textOf((json as { result?: unknown }).result)) as ChildView
}

async function initialize (gw: RunningGateway, server: string, token: string, protocolVersion: string, id: number | string = 1): Promise<{ status: number, json: unknown, sessionId: string | null }> {
  const res = await postJson(gw.mcpUrl(server), { ...INIT_BODY, id, params: { ...INIT_BODY.params, protocolVersion } }, bearer(token))
  return { status: res.status, json: res.json, sessionId: res.headers.get('mcp-session-id') }
}

const health = async (gw: RunningGateway): Promise<Health> => await (await fetch(`${gw.baseUrl}/readyz`)).json() as Health

// --- issue 11 item 2: stateless requests reach only the caller's own process ------------------

for (const isolation of ['session', 'user'] as const) {
  t.test(`isolation ${isolation}: a 2026-07-28 request is answered only by a process started with the caller's own values`, async (t) => {
    const gw = await gatewayWith(t, stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation, flags: ['--user=${user.name}'], env: { DATA_FILE: '/data/memory-${user.id}.jsonl' } }))
    const alice = await tokenFor(t, gw, 'modern', ALICE)
    const bob = await tokenFor(t, gw, 'modern', BOB)
    // Alice's request comes first: the era probe's process is started with her values.
    const a1 = await modernCall(gw, 'modern', alice, 'a1')
    t.equal(a1.status, 200)
    const b1 = await modernCall(gw, 'modern', bob, 'b1')
    t.equal(b1.status, 200)
    const [a2, b2] = await Promise.all([modernCall(gw, 'modern', alice, 'a2'), modernCall(gw, 'modern', bob, 'b2')])
    for (const [name, res] of [['alice', a1], ['alice', a2]] as const) {
      t.same(childView(res.json).argv, ['--user=alice'], `${name}'s request reached her own process`)
      t.equal(childView(res.json).DATA_FILE, '/data/memory-alice.jsonl')
    }
    for (const res of [b1, b2]) {
      t.same(childView(res.json).argv, ['--user=bob'], 'Bob is never answered by the process started for Alice (nor by the probe)')
      t.equal(childView(res.json).DATA_FILE, '/data/memory-bob.jsonl')
    }
    t.not(childView(a1.json).pid, childView(b1.json).pid, 'one process per user for stateless traffic')
    t.equal(childView(a1.json).pid, childView(a2.json).pid, 'a user\'s stateless requests share that user\'s process')
  })
}

t.test('a per-user cwd: each user\'s process starts in a directory of its own, made for it', async (t) => {
  const homes = mkdtempSync(join(tmpdir(), 'portcullis-homes-'))
  t.teardown(() => rmSync(homes, { recursive: true, force: true }))
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user', cwd: join(homes, '${user.name}') })] })
  const alice = await tokenFor(t, gw, 'modern', ALICE)
  const bob = await tokenFor(t, gw, 'modern', BOB)
  const a = childView((await modernCall(gw, 'modern', alice, 'a1')).json)
  const b = childView((await modernCall(gw, 'modern', bob, 'b1')).json)
  t.equal(a.cwd, join(homes, 'alice'), 'alice\'s process runs in her directory')
  t.equal(b.cwd, join(homes, 'bob'), 'bob\'s in his')
  t.equal(statSync(a.cwd ?? '').mode & 0o777, 0o700, 'made readable by its process\'s account alone')
})

t.test('isolation session: two users\' first 2026-07-28 requests at once each reach their own process', async (t) => {
  const gw = await gatewayWith(t, stdioServer('modern', { script: STDIO_MODERN_FIXTURE, flags: ['--user=${user.name}'] }))
  const alice = await tokenFor(t, gw, 'modern', ALICE)
  const bob = await tokenFor(t, gw, 'modern', BOB)
  const [a, b] = await Promise.all([modernCall(gw, 'modern', alice, 'a'), modernCall(gw, 'modern', bob, 'b')])
  t.same(childView(a.json).argv, ['--user=alice'])
  t.same(childView(b.json).argv, ['--user=bob'])
})

// --- issue 11 item 3: each session is told the version the child answered to its own request ---

for (const isolation of ['user', 'shared'] as const) {
  t.test(`isolation ${isolation}: sessions asking different protocol versions each get their own answer`, async (t) => {
    const gw = await gatewayWith(t, stdioServer('v', { isolation }))
    // Each connect made a session at the SDK client's version (2025-11-25): the child's first handshake.
    const alice = await tokenFor(t, gw, 'v', ALICE)
    const bob = await tokenFor(t, gw, 'v', BOB)
    const asked = [
      { who: 'alice', token: alice, version: '2025-03-26' },
      { who: 'alice', token: alice, version: '2025-06-18' },
      { who: 'bob', token: bob, version: '2025-06-18' },
      { who: 'bob', token: bob, version: '2025-03-26' },
      { who: 'alice', token: alice, version: '2025-11-25' },
    ]
    for (const [i, { who, token, version }] of asked.entries()) {
      const init = await initialize(gw, 'v', token, version, `init-${i}`)
      t.equal(init.status, 200)
      t.match(init.json, { id: `init-${i}`, result: { protocolVersion: version, serverInfo: { name: 'stdio-fixture' } } }, `${who} asked ${version} and got ${version}`)
      const headers = { ...bearer(token), 'mcp-session-id': init.sessionId ?? '' }
      const echo = await postJson(gw.mcpUrl('v'), { jsonrpc: '2.0', id: 'e', method: 'tools/call', params: { name: 'echo', arguments: { text: `${who} at ${version}` } } }, headers)
      t.equal(textOf((echo.json as { result?: unknown }).result), `${who} at ${version}`, 'the session works')
    }
    // A version the child does not support: the child's own answer (its latest), per the spec's negotiation.
    const unknown = await initialize(gw, 'v', bob, '2024-01-01', 'old')
    t.match(unknown.json, { id: 'old', result: { protocolVersion: '2025-11-25' } })
  })
}

t.test('isolation shared: a process serves every session asking a version it answered; another version gets its own', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('v', { isolation: 'shared' })] })
  const ask = async (protocolVersion: string): Promise<unknown> => (await postJson(gw.mcpUrl('v'), { ...INIT_BODY, params: { ...INIT_BODY.params, protocolVersion } })).json
  t.match(await ask('2024-01-01'), { result: { protocolVersion: '2025-11-25' } }, 'an unsupported version: the child\'s own answer')
  t.match(await ask('2025-11-25'), { result: { protocolVersion: '2025-11-25' } })
  t.equal((await health(gw)).servers[0]?.processes.length, 1, 'the child answered 2025-11-25, so its connection serves that version too')
  t.match(await ask('2025-06-18'), { result: { protocolVersion: '2025-06-18' } })
  t.equal((await health(gw)).servers[0]?.processes.length, 2, 'a version not yet asked gets a handshake (and process) of its own')
  for (const made of ['1999-01-01', 'draft', 'x'.repeat(40)]) {
    t.match(await ask(made), { result: { protocolVersion: '2025-11-25' } }, `${made.slice(0, 12)}: the child's own answer`)
  }
  t.equal((await health(gw)).servers[0]?.processes.length, 2, 'versions the gateway does not know start no process of their own')
})

// --- issue 11 item 4: a missing per-user value refuses the session, never a shared fallback ----

const USER_FIELD_MISSING = {
  jsonrpc: '2.0',
  error: {
    code: -32600,
    message: 'Forbidden: your account lacks a value this MCP server needs: MCP server "mem" needs your account\'s email (${user.email}), and your account has none; ask an administrator to add it',
    data: { code: 'PORTCULLIS_ERR_USER_FIELD_MISSING', field: 'email' },
  },
}

for (const isolation of ['session', 'user'] as const) {
  t.test(`isolation ${isolation}: a user without an email is refused where \${user.email} is needed (args and env)`, async (t) => {
    const gw = await gatewayWith(t, stdioServer('mem', { isolation, flags: ['--owner=${user.name}'], env: { DATA_FILE: '/data/memory-${user.email}.jsonl' } }))
    const alice = await tokenFor(t, gw, 'mem', ALICE)
    const bob = await tokenFor(t, gw, 'mem', BOB)
    const before = (await health(gw)).servers[0]?.processes.length
    const refused = await initialize(gw, 'mem', bob, '2025-11-25', 'bob-init')
    t.equal(refused.status, 403)
    t.same(refused.json, { ...USER_FIELD_MISSING, id: 'bob-init' })
    t.equal(refused.sessionId, null, 'no session')
    t.equal((await health(gw)).servers[0]?.processes.length, before, 'no process was started for Bob')
    const init = await initialize(gw, 'mem', alice, '2025-11-25')
    t.equal(init.status, 200)
    const env = await postJson(gw.mcpUrl('mem'), { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'env', arguments: {} } }, { ...bearer(alice), 'mcp-session-id': init.sessionId ?? '' })
    const view = childView(env.json)
    t.equal(view.DATA_FILE, '/data/memory-alice@example%2Ecom.jsonl')
    t.same(view.argv, ['--owner=alice'])
  })
}

t.test('2026-07-28: a user without an email is refused before any process (or era probe) starts for them', async (t) => {
  const gw = await gatewayWith(t, stdioServer('mem', { script: STDIO_MODERN_FIXTURE, flags: ['--email=${user.email}'] }))
  const alice = await tokenFor(t, gw, 'mem', ALICE)
  const bob = await tokenFor(t, gw, 'mem', BOB)
  const before = (await health(gw)).servers[0]?.processes.length ?? 0
  const refused = await modernCall(gw, 'mem', bob, 'bob-call')
  t.equal(refused.status, 403)
  t.same(refused.json, { ...USER_FIELD_MISSING, id: 'bob-call' })
  t.equal((await health(gw)).servers[0]?.processes.length, before, 'no probe and no process for Bob')
  const ok = await modernCall(gw, 'mem', alice, 'alice-call')
  t.same(childView(ok.json).argv, ['--email=alice@example%2Ecom'])
})

t.test('auth disabled: every caller is "anonymous", which has no email: refused, not rendered as a shared value', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('mem', { env: { DATA_FILE: '/data/memory-${user.email}.jsonl' } })] })
  const res = await postJson(gw.mcpUrl('mem'), INIT_BODY)
  t.equal(res.status, 403)
  t.match(res.json, { id: 1, error: { data: { code: 'PORTCULLIS_ERR_USER_FIELD_MISSING', field: 'email' } } })
})
