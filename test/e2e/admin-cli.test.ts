// `portcullis admin …` (the built CLI, a real child process) against a running gateway's admin
// API: lists followed to the end, actions with their effect, refusals with the API's reason,
// and the credential taken from the environment and never printed.
import t from 'tap'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { hashPassword } from '../../src/auth-server/password.js'
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
