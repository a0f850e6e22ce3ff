// Per-user stdio processes across users, sessions and protocol eras: which user's process answers
// a request, which protocol version each session is told, and what happens to a user who lacks a
// per-user value. Two real local users sign in through the real OAuth flow; real child processes.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { postJson, startGateway, stdioServer, STDIO_MODERN_FIXTURE, textOf, type RunningGateway, type Teardown } from '../helpers.js'

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

interface ChildView { argv: string[], DATA_FILE?: string, pid: number }

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

t.test('isolation session: two users\' first 2026-07-28 requests at once each reach their own process', async (t) => {
  const gw = await gatewayWith(t, stdioServer('modern', { script: STDIO_MODERN_FIXTURE, flags: ['--user=${user.name}'] }))
  const alice = await tokenFor(t, gw, 'modern', ALICE)
  const bob = await tokenFor(t, gw, 'modern', BOB)
  const [a, b] = await Promise.all([modernCall(gw, 'modern', alice, 'a'), modernCall(gw, 'modern', bob, 'b')])
  t.same(childView(a.json).argv, ['--user=alice'])
  t.same(childView(b.json).argv, ['--user=bob'])
})
