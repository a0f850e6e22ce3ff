// `portcullis admin …` (the built CLI, a real child process) against a running gateway's admin
// API: lists followed to the end, actions with their effect, refusals with the API's reason,
// and the credential taken from the environment and never printed.
import t from 'tap'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { hashPassword } from '../../src/auth-server/password.js'
import { SecretBox } from '../../src/auth-server/secret-box.js'
import { LinkedTokens } from '../../src/upstream-auth/linked-tokens.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { eventually, INIT_BODY, postJson, startGateway, startUpstream } from '../helpers.js'

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
const PASSWORD = 'correct horse battery staple'
const ADMIN_TOKEN = 'an-admin-bearer-token-of-at-least-32-characters'

async function admin (args: string[], env: NodeJS.ProcessEnv = { PORTCULLIS_ADMIN_TOKEN: ADMIN_TOKEN }): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'admin', ...args], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

t.test('admin sessions, users, clients, block and revoke-user through the CLI', async (t) => {
  const upstream = await startUpstream(t)
  const passwordHash = await hashPassword(PASSWORD)
  const gw = await startGateway(t, {
    admin: { bearerToken: ADMIN_TOKEN },
    auth: { users: [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  const url = ['--url', gw.baseUrl]
  const alice = await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const bob = await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl })
  const tokenOf = (c: typeof alice): string => c.oauth.savedTokens?.access_token ?? ''

  const sessions = await admin(['sessions', ...url, '--user', 'alice'])
  t.equal(sessions.code, 0, sessions.stderr)
  const listed = JSON.parse(sessions.stdout) as { items: Array<{ user: string, server: string }> }
  t.match(listed.items, [{ user: 'alice', server: 'fx' }], 'Alice\'s session, filtered by user')
  t.equal(listed.items.length, 1)
  const users = JSON.parse((await admin(['users', ...url])).stdout) as { items: Array<{ id: string }> }
  t.same(users.items.map((u) => u.id).sort(), ['alice', 'bob'], 'both users seen')
  t.equal((await admin(['clients', ...url])).code, 0, 'clients listed')

  const blocked = await admin(['block', 'bob', ...url])
  t.equal(blocked.code, 0, blocked.stderr)
  t.match(JSON.parse(blocked.stdout), { user: 'bob', blocked: true })
  t.ok(await eventually(async () => (await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${tokenOf(bob)}` })).status === 401), 'Bob is refused')
  t.equal((await admin(['unblock', 'bob', ...url])).code, 0)
  t.ok(await eventually(async () => (await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${tokenOf(bob)}` })).status === 200), 'and served again')

  const revoked = await admin(['revoke-user', 'alice', ...url])
  t.equal(revoked.code, 0, revoked.stderr)
  t.match(JSON.parse(revoked.stdout), { user: 'alice', revoked: { grants: 1 } })
  t.ok(await eventually(async () => (await postJson(gw.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${tokenOf(alice)}` })).status === 401), 'Alice\'s token is refused')

  const audited = gw.audit.lines.map((l) => JSON.parse(l) as { action?: string, actor?: string })
  t.ok(['sessions.list', 'users.block', 'users.revoke'].every((action) => audited.some((r) => r.action === action && r.actor === 'admin-token')), 'each call audited as the admin token')
})

t.test('admin linked-accounts and unlink: a user\'s links listed, one removed, audited; both in --help', async (t) => {
  // A server reached with each user's own account (upstreamAuth: oauth); its authorization server
  // is not running (the unlink's revocation there is best effort). Alice's link is written as the
  // gateway writes one (linked-tokens.ts, sealed with the key it generated into its store).
  const gw = await startGateway(t, {
    admin: { bearerToken: ADMIN_TOKEN },
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [{ name: 'linear', transport: 'http', url: 'http://127.0.0.1:9/mcp', upstreamAuth: { type: 'oauth' } }],
  })
  const store = gw.app.portcullis.store
  const tokens = new LinkedTokens(store, await SecretBox.load(store, undefined), () => {})
  await tokens.save('linear', 'alice', { accessToken: 'upstream-access-token', refreshToken: 'upstream-refresh-token', issuer: 'http://127.0.0.1:9', resource: 'http://127.0.0.1:9/mcp', linkedAtMs: Date.parse('2026-11-02T10:00:00Z') })
  const url = ['--url', gw.baseUrl]

  const listed = await admin(['linked-accounts', 'alice', ...url])
  t.equal(listed.code, 0, listed.stderr)
  t.same(JSON.parse(listed.stdout), { items: [{ server: 'linear', isLinked: true, linkedAt: '2026-11-02T10:00:00.000Z' }] }, 'Alice\'s link, when she linked')
  t.notMatch(listed.stdout, /upstream-access-token|upstream-refresh-token/, 'never a token')

  const unlinked = await admin(['unlink', 'alice', 'linear', ...url])
  t.equal(unlinked.code, 0, unlinked.stderr)
  t.same(JSON.parse(unlinked.stdout), { user: 'alice', server: 'linear', unlinked: true })
  t.equal(await tokens.get('linear', 'alice'), undefined, 'the link is gone from the store')
  t.same(JSON.parse((await admin(['linked-accounts', 'alice', ...url])).stdout), { items: [{ server: 'linear', isLinked: false }] })

  const again = await admin(['unlink', 'alice', 'linear', ...url])
  t.equal(again.code, 1, 'nothing left to unlink')
  t.match(again.stderr, /404 PORTCULLIS_ERR_ADMIN_NOT_FOUND Not found: the user has no linked account at this server/)
  t.equal((await admin(['unlink', 'alice', ...url])).code, 2, 'unlink without the server')
  t.match((await admin(['linked-accounts', ...url])).stderr, /admin linked-accounts needs <id>/)

  const audited = gw.audit.lines.map((l) => JSON.parse(l) as { action?: string, actor?: string, target?: unknown, outcome?: string }).filter((r) => r.action?.startsWith('linked-accounts.') === true)
  t.match(audited, [
    { action: 'linked-accounts.list', actor: 'admin-token', target: { kind: 'user', id: 'alice' }, outcome: 'ok' },
    { action: 'linked-accounts.unlink', actor: 'admin-token', target: { kind: 'linked-account', id: 'linear/alice' }, outcome: 'ok' },
    { action: 'linked-accounts.list', outcome: 'ok' },
    { action: 'linked-accounts.unlink', outcome: 'not_found' },
  ], 'each call audited as the admin token')

  const help = await admin(['--help'], {})
  t.equal(help.code, 0)
  t.match(help.stdout, /\n {2}linked-accounts <id> {2,}the user's accounts at servers with upstreamAuth: oauth\n {2}unlink <id> <server> {2,}remove the user's linked account/, 'both actions in the help')
})

t.test('refusals and usage errors: the API\'s reason on stderr, exit 1; missing pieces exit 2; the token never printed', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    admin: { bearerToken: ADMIN_TOKEN },
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  const wrong = 'a-wrong-token-that-must-never-be-printed-anywhere'
  const refused = await admin(['users', '--url', gw.baseUrl], { PORTCULLIS_ADMIN_TOKEN: wrong })
  t.equal(refused.code, 1)
  t.match(refused.stderr, /admin users: 401 PORTCULLIS_ERR_ADMIN_UNAUTHORIZED/)
  t.notMatch(refused.stdout + refused.stderr, wrong, 'the credential is not echoed')
  const missing = await admin(['revoke-client', 'no-such-client', '--url', gw.baseUrl])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /404 PORTCULLIS_ERR_ADMIN_NOT_FOUND/)
  const noToken = await admin(['users', '--url', gw.baseUrl], {})
  t.equal(noToken.code, 2)
  t.match(noToken.stderr, /needs a credential: PORTCULLIS_ADMIN_TOKEN/)
  t.equal((await admin(['revoke-user', '--url', gw.baseUrl])).code, 2, 'an action without its id')
  t.match((await admin(['nonsense', '--url', gw.baseUrl])).stderr, /unknown admin action "nonsense"/)
  const unreachable = await admin(['users', '--url', 'http://127.0.0.1:9'])
  t.equal(unreachable.code, 1)
  t.match(unreachable.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/)
})
