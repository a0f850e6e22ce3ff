// The /admin page through app.inject (no socket): access, CSRF, the lists with their filters and
// paging, the actions and their audit records, the reload button. The admin session cookie is
// made here with the gateway's own cookie key and the page's own AccountCookies (the real code):
// the sign-in that issues it in production — the account pages' OAuth flow — is driven for real
// in test/e2e/admin-page-browser.test.ts. The reload is a stub returning a report: the real one
// (src/reload) is another part of issue 15, and the page only calls it and renders its report.
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadKeys } from '../../src/auth-server/keys.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { AccountCookies } from '../../src/account/session.js'
import { ADMIN_SCOPE } from '../../src/admin/page-routes.js'
import { createLogger } from '../../src/observability/logger.js'
import type { Reload, ReloadReport } from '../../src/reload/report.js'
import { logSink, makeConfig } from '../helpers.js'

const passwordHash = await hashPassword('correct horse battery staple')
const USERS = [{ username: 'alice', passwordHash }, { username: 'carol', passwordHash, groups: ['portcullis-admins'] }]

interface AdminApp { app: FastifyInstance, audit: ReturnType<typeof logSink>, cookies: AccountCookies }

async function adminApp (t: Test, extra: { reload?: Reload, apiKeys?: boolean } = {}): Promise<AdminApp> {
  const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-test-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const config = makeConfig({
    publicUrl: 'http://127.0.0.1:8080',
    dataDir,
    store: { memory: true },
    auth: { users: USERS, clients: [{ clientId: 'yaml-client', name: 'YAML client', redirectUris: ['https://app.example.com/cb'] }], apiKeys: { enabled: extra.apiKeys ?? true } },
    servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
  })
  const audit = logSink()
  const app = await buildApp(config, { logger: createLogger('warn', logSink().stream), auditDestination: audit.stream, ...(extra.reload === undefined ? {} : { reload: extra.reload }) })
  t.teardown(() => app.close())
  const keys = await loadKeys(app.portcullis.store, undefined)
  return { app, audit, cookies: new AccountCookies(keys.cookieKeys[0] ?? '', false, Date.now) }
}

/** A signed-in admin page session: the cookie header and the page's CSRF token. */
async function signedIn (a: AdminApp, userId: string): Promise<{ cookie: string, csrf: string }> {
  const cookie = (await a.cookies.sessionCookie(userId, ADMIN_SCOPE)).split(';')[0] ?? ''
  const session = await a.cookies.session(cookie, ADMIN_SCOPE)
  if (session === undefined) throw new Error('no session')
  return { cookie, csrf: a.cookies.csrfFor(session) }
}

async function post (a: AdminApp, url: string, cookie: string, form: Record<string, string>): Promise<Awaited<ReturnType<FastifyInstance['inject']>>> {
  return await a.app.inject({ method: 'POST', url, headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(form).toString() })
}

function adminRecords (a: AdminApp): Array<Record<string, unknown>> {
  return a.audit.lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((r) => r.event === 'admin_action')
}

t.test('signed out: /admin sends the browser to the account sign-in, which comes back to /admin even with API keys off', async (t) => {
  const a = await adminApp(t, { apiKeys: false })
  const res = await a.app.inject({ url: '/admin' })
  t.equal(res.statusCode, 303)
  t.equal(res.headers.location, '/account/login?return=%2Fadmin')
  const login = await a.app.inject({ url: '/account/login?return=%2Fadmin' })
  t.equal(login.statusCode, 303, 'the account sign-in starts for the admin page though API keys are disabled')
  t.match(login.headers.location, /^\/oauth\/authorize\?client_id=portcullis-account&/)
  t.match(String(login.headers['set-cookie']), /portcullis_account_login=.*Path=\/account/)
  const other = await a.app.inject({ url: '/account/login?return=%2Fadmin%2Fusers' })
  t.equal(other.statusCode, 404, 'any other return path still needs the account pages (API keys off here)')
  const signedOutPost = await a.app.inject({ method: 'POST', url: '/admin/users/alice/block', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'csrf=x' })
  t.equal(signedOutPost.statusCode, 401)
  t.match(adminRecords(a), [{ actor: 'unknown', action: 'users.block', target: { kind: 'user', id: 'alice' }, outcome: 'refused' }], 'a signed-out action is audited as refused')
})

t.test('an administrator sees the lists, under a strict CSP, without scripts, uncached', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  const home = await a.app.inject({ url: '/admin', headers: { cookie: carol.cookie } })
  t.equal(home.statusCode, 200)
  t.match(home.headers['content-security-policy'], /^default-src 'none'; style-src 'sha256-[^']+'; base-uri 'none'; frame-ancestors 'none'$/)
  t.equal(home.headers['cache-control'], 'no-store')
  t.equal(home.headers['x-frame-options'], 'DENY')
  t.notMatch(home.body, /<script/i, 'no script on the page')
  t.match(home.body, /Signed in as <strong>carol<\/strong>/)
  t.match(home.body, /No users match\./, 'nobody seen yet')

  const clients = await a.app.inject({ url: '/admin/clients', headers: { cookie: carol.cookie } })
  t.match(clients.body, /YAML client[\s\S]*yaml-client[\s\S]*app\.example\.com[\s\S]*in the YAML/, 'the YAML client, without a revoke button')
  t.match((await a.app.inject({ url: '/admin/sessions', headers: { cookie: carol.cookie } })).body, /No live sessions on this replica/)
  t.match((await a.app.inject({ url: '/admin/tools', headers: { cookie: carol.cookie } })).body, /<h2>fx <span class="muted">\(pinTools: warn\)<\/span><\/h2>\n<p class="muted">No tool listing seen through the gateway yet/, 'the pinned server (pinTools: warn by default), nothing to approve')
  const bad = await a.app.inject({ url: '/admin?cursor=nonsense', headers: { cookie: carol.cookie } })
  t.equal(bad.statusCode, 400, 'the shared paging refuses a made-up cursor')
  t.match(bad.body, /not a cursor this API returned/)
  t.match(adminRecords(a).map((r) => [r.actor, r.action, r.outcome]), [['carol', 'users.list', 'ok'], ['carol', 'clients.list', 'ok'], ['carol', 'sessions.list', 'ok'], ['carol', 'tools.list', 'ok'], ['carol', 'users.list', 'refused']], 'views audited with the API\'s list names')
})

t.test('a signed-in user outside admin.groups gets a 403 page, for views and actions', async (t) => {
  const a = await adminApp(t)
  const alice = await signedIn(a, 'alice')
  const view = await a.app.inject({ url: '/admin', headers: { cookie: alice.cookie } })
  t.equal(view.statusCode, 403)
  t.match(view.body, /Not an administrator[\s\S]*alice is in none of the administrator groups/)
  const action = await post(a, '/admin/users/carol/block', alice.cookie, { csrf: alice.csrf })
  t.equal(action.statusCode, 403)
  t.match(adminRecords(a), [{ actor: 'alice', action: 'users.list', outcome: 'refused' }, { actor: 'alice', action: 'users.block', target: { id: 'carol' }, outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN' } }])
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: (await signedIn(a, 'carol')).cookie } })).body.includes('blocked</strong>'), false, 'carol was not blocked by alice')
  const stranger = (await a.cookies.sessionCookie('alice')).split(';')[0] ?? ''
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: stranger.replace('portcullis_account=', 'portcullis_admin=') } })).statusCode, 303, 'an account page session is not an admin page session')
})

t.test('actions need the page\'s CSRF token; done, they redirect back with a one-time notice and an audit record', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  const other = await signedIn(a, 'carol')
  t.equal((await post(a, '/admin/users/alice/block', carol.cookie, {})).statusCode, 403, 'no token: refused')
  t.equal((await post(a, '/admin/users/alice/block', carol.cookie, { csrf: other.csrf })).statusCode, 403, 'another session\'s token: refused')
  t.match((await a.app.inject({ url: '/admin?blocked=true', headers: { cookie: carol.cookie } })).body, /No users match/, 'nothing was blocked')

  const done = await post(a, '/admin/users/alice/block', carol.cookie, { csrf: carol.csrf })
  t.equal(done.statusCode, 303)
  t.equal(done.headers.location, '/admin/users/alice')
  const notice = String(done.headers['set-cookie']).split(';')[0] ?? ''
  t.match(notice, /^portcullis_admin_notice=/)
  const shown = await a.app.inject({ url: '/admin/users/alice', headers: { cookie: `${carol.cookie}; ${notice}` } })
  t.match(shown.body, /id="notice">Blocked alice\.</, 'the notice, once')
  t.match(String(shown.headers['set-cookie']), /portcullis_admin_notice=; Path=\/admin; Max-Age=0/, 'and cleared')
  t.match(shown.body, /action="\/admin\/users\/alice\/unblock"/, 'now offered: unblock')
  const list = await a.app.inject({ url: '/admin?blocked=true', headers: { cookie: carol.cookie } })
  t.match(list.body, /href="\/admin\/users\/alice">alice<\/a>[\s\S]*<strong>blocked<\/strong>/, 'the blocked filter (shared with the API) lists her')

  const unblocked = await post(a, '/admin/users/alice/unblock', carol.cookie, { csrf: carol.csrf })
  t.equal(unblocked.statusCode, 303)
  const missing = await post(a, '/admin/clients/no-such-client/revoke', carol.cookie, { csrf: carol.csrf })
  t.equal(missing.headers.location, '/admin/clients')
  const missingNotice = String(missing.headers['set-cookie']).split(';')[0] ?? ''
  t.match((await a.app.inject({ url: '/admin/clients', headers: { cookie: `${carol.cookie}; ${missingNotice}` } })).body, /class="error" role="alert" id="notice">no registered client has this id/)
  const yaml = await post(a, '/admin/clients/yaml-client/revoke', carol.cookie, { csrf: carol.csrf })
  t.equal(yaml.statusCode, 303, 'a refused action also comes back with its reason')

  const actions = adminRecords(a).filter((r) => String(r.action).includes('.') && !String(r.action).endsWith('.list') && r.action !== 'users.show')
  t.match(actions, [
    { actor: 'carol', action: 'users.block', target: { kind: 'user', id: 'alice' }, outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN' } },
    { actor: 'carol', action: 'users.block', outcome: 'refused' },
    { actor: 'carol', action: 'users.block', target: { kind: 'user', id: 'alice' }, outcome: 'ok', detail: { changed: true } },
    { actor: 'carol', action: 'users.unblock', target: { kind: 'user', id: 'alice' }, outcome: 'ok', detail: { changed: true } },
    { actor: 'carol', action: 'clients.revoke', target: { kind: 'client', id: 'no-such-client' }, outcome: 'not_found' },
    { actor: 'carol', action: 'clients.revoke', target: { kind: 'client', id: 'yaml-client' }, outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST' } },
  ], 'every action audited like the API\'s, actor the administrator')
  t.equal(actions.length, 6)
})

t.test('a blocked administrator is refused; paging follows the shared cursor', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  for (const id of ['u1', 'u2', 'u3']) t.equal((await post(a, `/admin/users/${id}/block`, carol.cookie, { csrf: carol.csrf })).statusCode, 303)
  const first = await a.app.inject({ url: '/admin?limit=2', headers: { cookie: carol.cookie } })
  t.match(first.body, /u1[\s\S]*u2/)
  t.notMatch(first.body, /users\/u3/)
  const next = /href="([^"]+)" rel="next"/.exec(first.body)?.[1]?.replace(/&#38;/g, '&')
  t.match(next, /^\/admin\?limit=2&cursor=/, 'the next page keeps the limit')
  const second = await a.app.inject({ url: next ?? '', headers: { cookie: carol.cookie } })
  t.match(second.body, /users\/u3/)
  t.notMatch(second.body, /rel="next"/, 'the last page')

  t.equal((await post(a, '/admin/users/carol/block', carol.cookie, { csrf: carol.csrf })).statusCode, 303, 'carol blocks herself')
  const refused = await a.app.inject({ url: '/admin', headers: { cookie: carol.cookie } })
  t.equal(refused.statusCode, 403)
  t.match(refused.body, /This account is blocked on this gateway/)
})

t.test('reload: shown and run only when the gateway was given one; its report rendered', async (t) => {
  const none = await adminApp(t)
  const carol = await signedIn(none, 'carol')
  t.notMatch((await none.app.inject({ url: '/admin', headers: { cookie: carol.cookie } })).body, /Reload configuration/)
  t.equal((await post(none, '/admin/reload', carol.cookie, { csrf: carol.csrf })).statusCode, 404)

  let calls = 0
  const report: ReloadReport = { applied: false, changed: [], needsRestart: ['listen'], errors: ['portcullis.yaml:3: servers.0.url: expected a URL <here>'] }
  const a = await adminApp(t, { reload: async () => { calls++; return report } })
  const admin = await signedIn(a, 'carol')
  t.match((await a.app.inject({ url: '/admin', headers: { cookie: admin.cookie } })).body, /action="\/admin\/reload"[\s\S]*Reload configuration/)
  t.equal((await post(a, '/admin/reload', admin.cookie, {})).statusCode, 403, 'not without the CSRF token')
  t.equal(calls, 0)
  const res = await post(a, '/admin/reload', admin.cookie, { csrf: admin.csrf })
  t.equal(calls, 1)
  t.equal(res.statusCode, 200)
  t.match(res.body, /The configuration file is invalid: nothing changed[\s\S]*Needs a restart[\s\S]*listen[\s\S]*expected a URL &#60;here&#62;/, 'the report, escaped')
  t.match(adminRecords(a).at(-1), { actor: 'carol', action: 'reload', outcome: 'failed', detail: { applied: false, errors: 1, needsRestart: 1 } })
})
