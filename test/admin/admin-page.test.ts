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
import { PageSessions, MAX_SESSIONS_PER_USER } from '../../src/account/page-sessions.js'
import { createLogger } from '../../src/observability/logger.js'
import type { Reload, ReloadReport } from '../../src/reload/report.js'
import { ExternalAccounts } from '../../src/auth-server/external-accounts.js'
import { approveFirstUse, loadApproved, saveObserved } from '../../src/guardrails/tool-approvals.js'
import { listedTools } from '../../src/guardrails/tool-guard.js'
import { SecretBox } from '../../src/auth-server/secret-box.js'
import { LinkedTokens } from '../../src/upstream-auth/linked-tokens.js'
import { logSink, makeConfig } from '../helpers.js'

const passwordHash = await hashPassword('correct horse battery staple')
const USERS = [{ username: 'alice', passwordHash }, { username: 'carol', passwordHash, groups: ['portcullis-admins'] }]

interface AdminApp { app: FastifyInstance, audit: ReturnType<typeof logSink>, cookies: AccountCookies, sessions: PageSessions }

const ADMIN_TOKEN = 'an-admin-bearer-token-of-at-least-32-characters'

async function adminApp (t: Test, extra: { reload?: Reload, apiKeys?: boolean, publicUrl?: string, servers?: Array<Record<string, unknown>> } = {}): Promise<AdminApp> {
  const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-test-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const config = makeConfig({
    publicUrl: extra.publicUrl ?? 'http://127.0.0.1:8080',
    dataDir,
    admin: { bearerToken: ADMIN_TOKEN },
    store: { memory: true },
    // corp: the provider the tests' IdP accounts (corp:dana, …) come from; never reached (no sign-in through it here).
    auth: { users: USERS, clients: [{ clientId: 'yaml-client', name: 'YAML client', redirectUris: ['https://app.example.com/cb'] }], apiKeys: { enabled: extra.apiKeys ?? true }, identityProviders: [{ name: 'corp', type: 'oidc', issuer: 'https://idp.example.com', clientId: 'gw', clientSecret: 'a-client-secret-of-some-length' }] },
    servers: [{ name: 'fx', transport: 'http', url: 'http://127.0.0.1:9/mcp' }, ...extra.servers ?? []],
  })
  const audit = logSink()
  const app = await buildApp(config, { logger: createLogger('warn', logSink().stream), auditDestination: audit.stream, ...(extra.reload === undefined ? {} : { reload: extra.reload }) })
  t.teardown(() => app.close())
  const keys = await loadKeys(app.portcullis.store, undefined)
  return { app, audit, cookies: new AccountCookies(keys.cookieKeys[0] ?? '', false, Date.now), sessions: new PageSessions(app.portcullis.store, Date.now, 'admin') }
}

/** A signed-in admin page session (started in the gateway's store, as the sign-in does): the cookie header and the page's CSRF token. */
async function signedIn (a: AdminApp, userId: string): Promise<{ cookie: string, csrf: string }> {
  const cookie = (await a.cookies.sessionCookie(userId, ADMIN_SCOPE, await a.sessions.start(userId))).split(';')[0] ?? ''
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
  t.match(home.headers['content-security-policy'], /^default-src 'none'; style-src 'sha256-[^']+'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'$/, 'forms post only to the gateway')
  const accountPage = await a.app.inject({ url: '/account/callback' })
  t.equal(accountPage.statusCode, 400)
  t.notMatch(accountPage.headers['content-security-policy'], /form-action/, 'not on the shared sign-in and account pages (their redirects go to identity providers)')
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
  const carol = (await signedIn(a, 'carol')).cookie
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: carol } })).statusCode, 200, 'carol was not blocked by alice')
  t.match((await a.app.inject({ url: '/admin?blocked=true', headers: { cookie: carol } })).body, /No users match\./, 'nobody is blocked')
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

t.test('a linked account is listed with an Unlink form: CSRF checked, the link removed, audited with the API\'s action name', async (t) => {
  // A server reached with each user's own account (upstreamAuth: oauth). Its authorization server
  // is unreachable here: the unlink's revocation there is best effort (upstream-links.ts), and
  // the link itself is written as the gateway writes it (linked-tokens.ts, sealed with its key).
  const a = await adminApp(t, { servers: [{ name: 'linear', transport: 'http', url: 'http://127.0.0.1:9/mcp', upstreamAuth: { type: 'oauth' } }] })
  const store = a.app.portcullis.store
  const tokens = new LinkedTokens(store, await SecretBox.load(store, undefined), () => {})
  await tokens.save('linear', 'alice', { accessToken: 'upstream-access', refreshToken: 'upstream-refresh', issuer: 'http://127.0.0.1:9', resource: 'http://127.0.0.1:9/mcp', linkedAtMs: Date.parse('2026-11-02T10:00:00Z') })
  const carol = await signedIn(a, 'carol')
  const unlinkPath = '/admin/users/alice/linked-accounts/linear/unlink'

  const shown = await a.app.inject({ url: '/admin/users/alice', headers: { cookie: carol.cookie } })
  t.match(shown.body, /<h2>Linked accounts<\/h2>[\s\S]*<td>linear<\/td><td>linked 2026-11-02 10:00 UTC<\/td><td><form method="post" action="\/admin\/users\/alice\/linked-accounts\/linear\/unlink"><input type="hidden" name="csrf" value="[^"]+"><button type="submit">Unlink<\/button><\/form><\/td>/, 'the link, with its Unlink form')
  t.notMatch(shown.body, /upstream-access|upstream-refresh/, 'never a token')
  t.notMatch((await a.app.inject({ url: '/admin/users/bob', headers: { cookie: carol.cookie } })).body, /linked-accounts\/linear\/unlink/, 'nothing to unlink for a user without a link')

  t.equal((await post(a, unlinkPath, carol.cookie, {})).statusCode, 403, 'no CSRF token: refused')
  t.equal((await post(a, unlinkPath, carol.cookie, { csrf: (await signedIn(a, 'carol')).csrf })).statusCode, 403, 'another session\'s token: refused')
  t.not(await tokens.get('linear', 'alice'), undefined, 'still linked')

  const done = await post(a, unlinkPath, carol.cookie, { csrf: carol.csrf })
  t.equal(done.statusCode, 303)
  t.equal(done.headers.location, '/admin/users/alice', 'back to the user')
  t.equal(await tokens.get('linear', 'alice'), undefined, 'the link is gone')
  const notice = String(done.headers['set-cookie']).split(';')[0] ?? ''
  const after = await a.app.inject({ url: '/admin/users/alice', headers: { cookie: `${carol.cookie}; ${notice}` } })
  t.match(after.body, /role="status" id="notice">Unlinked alice&#39;s account at linear\.</)
  t.match(after.body, /<td>linear<\/td><td><span class="muted">not linked<\/span><\/td><td><\/td>/, 'listed as not linked, without a form')

  const again = await post(a, unlinkPath, carol.cookie, { csrf: carol.csrf })
  const againNotice = String(again.headers['set-cookie']).split(';')[0] ?? ''
  t.match((await a.app.inject({ url: '/admin/users/alice', headers: { cookie: `${carol.cookie}; ${againNotice}` } })).body, /class="error" role="alert" id="notice">the user has no linked account at this server/)
  const notOauth = await post(a, '/admin/users/alice/linked-accounts/fx/unlink', carol.cookie, { csrf: carol.csrf })
  t.equal(notOauth.statusCode, 303, 'a server without upstreamAuth: oauth: back to the user')
  const notOauthNotice = String(notOauth.headers['set-cookie']).split(';')[0] ?? ''
  t.match((await a.app.inject({ url: '/admin/users/alice', headers: { cookie: `${carol.cookie}; ${notOauthNotice}` } })).body, /class="error" role="alert" id="notice">[^<]*upstreamAuth: oauth/, 'with its reason')

  const target = { kind: 'linked-account', id: 'linear/alice' }
  t.match(adminRecords(a).filter((r) => r.action === 'linked-accounts.unlink'), [
    { actor: 'carol', target, outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN' } },
    { actor: 'carol', target, outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN' } },
    { actor: 'carol', target, outcome: 'ok' },
    { actor: 'carol', target, outcome: 'not_found' },
    { actor: 'carol', target: { kind: 'linked-account', id: 'fx/alice' }, outcome: 'not_found' },
  ], 'every attempt audited as the API audits it, actor the administrator')
  t.equal(adminRecords(a).filter((r) => r.action === 'linked-accounts.unlink').length, 5)
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
  const report: ReloadReport = { applied: false, changed: [], needsRestart: ['listen'], errors: ['portcullis.yaml:3: servers.0.url: expected a URL <here>'], warnings: [] }
  const a = await adminApp(t, { reload: async () => { calls++; return report } })
  const admin = await signedIn(a, 'carol')
  t.match((await a.app.inject({ url: '/admin', headers: { cookie: admin.cookie } })).body, /action="\/admin\/reload"[\s\S]*Reload configuration/)
  t.equal((await post(a, '/admin/reload', admin.cookie, {})).statusCode, 403, 'not without the CSRF token')
  t.equal(calls, 0)
  const res = await post(a, '/admin/reload', admin.cookie, { csrf: admin.csrf })
  t.equal(calls, 1)
  t.equal(res.statusCode, 200)
  t.match(res.body, /The configuration file is invalid: nothing changed[\s\S]*Needs a restart[\s\S]*listen[\s\S]*expected a URL &#60;here&#62;/, 'the report, escaped')
  t.match(adminRecords(a).at(-1), { actor: 'carol', action: 'config.reload', outcome: 'refused', detail: { applied: false, changed: 0, needsRestart: ['listen'], code: 'PORTCULLIS_ERR_RELOAD_INVALID_CONFIG' } })

  const partly: ReloadReport = { applied: true, changed: ['auth.users changed'], needsRestart: [], errors: [], warnings: ['the access of alice (removed) is not revoked: NOPERM <no>'] }
  const b = await adminApp(t, { reload: async () => partly })
  const other = await signedIn(b, 'carol')
  const applied = await post(b, '/admin/reload', other.cookie, { csrf: other.csrf })
  t.match(applied.body, /The configuration was reloaded\.[\s\S]*Not done[\s\S]*role="alert"[\s\S]*alice \(removed\) is not revoked: NOPERM &#60;no&#62;/, 'what the reload could not do, shown as an alert')
  t.match(adminRecords(b).at(-1), { action: 'config.reload', outcome: 'ok', detail: { applied: true, changed: 1, warnings: 1 } })
})

/** The hidden fields of the page's tool approval form, decoded. */
function approvalFields (html: string): Record<string, string[]> {
  const decode = (v: string): string => v.replace(/&#(\d+);/g, (_m, code: string) => String.fromCharCode(Number(code)))
  const form = /<form method="post" action="\/admin\/servers\/fx\/tools\/approve">([\s\S]*?)<\/form>/.exec(html)?.[1] ?? ''
  const fields: Record<string, string[]> = {}
  for (const [, name = '', value = ''] of form.matchAll(/name="([^"]+)" value="([^"]*)"/g)) (fields[name] ??= []).push(decode(value))
  return fields
}

function formBody (fields: Record<string, string[]>): string {
  return new URLSearchParams(Object.entries(fields).flatMap(([name, values]) => values.map((v): [string, string] => [name, v]))).toString()
}

t.test('tool approval: the page shows what changed, escaped, and approves only what it showed, at the definition shown', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  const store = a.app.portcullis.store
  const V1 = listedTools({ tools: [{ name: 'a', description: 'old', inputSchema: { type: 'object' } }] }) ?? {}
  const V2 = listedTools({ tools: [{ name: 'a', description: 'read <secret> & send it', inputSchema: { type: 'object' } }, { name: 'c', description: 'new <b>tool</b>' }] }) ?? {}
  const V3 = listedTools({ tools: [{ name: 'a', description: 'worse, after the review', inputSchema: { type: 'object' } }, { name: 'c', description: 'new <b>tool</b>' }] }) ?? {}
  await approveFirstUse(store, 'fx', V1, 1)
  await saveObserved(store, 'fx', { tools: V2, observedAtMs: 2, isComplete: true })

  const page = await a.app.inject({ url: '/admin/tools', headers: { cookie: carol.cookie } })
  t.match(page.body, /<td>a<\/td><td>changed<\/td><td><p><code>description<\/code><\/p>[\s\S]*&#34;old&#34;[\s\S]*&#34;read &#60;secret&#62; &#38; send it&#34;/, 'a changed field, before and after, escaped')
  t.match(page.body, /<td>c<\/td><td>added<\/td><td><pre>[\s\S]*&#34;description&#34;: &#34;new &#60;b&#62;tool&#60;\/b&#62;&#34;/, 'an added tool\'s whole definition, escaped')
  t.notMatch(page.body, /<secret>|<b>tool/, 'nothing unescaped')
  const shown = approvalFields(page.body)
  t.same(shown.tool, ['a', 'c'], 'the form names the tools shown')
  t.same(shown.to, [V2.a?.fingerprint, V2.c?.fingerprint], 'each with the fingerprint shown')

  // The server changes `a` again after the page was drawn: approving what the page showed is refused.
  await saveObserved(store, 'fx', { tools: V3, observedAtMs: 3, isComplete: true })
  const stale = await a.app.inject({ method: 'POST', url: '/admin/servers/fx/tools/approve', headers: { cookie: carol.cookie, 'content-type': 'application/x-www-form-urlencoded' }, payload: formBody(shown) })
  t.equal(stale.statusCode, 303)
  const staleNotice = String(stale.headers['set-cookie']).split(';')[0] ?? ''
  t.match((await a.app.inject({ url: '/admin/tools', headers: { cookie: `${carol.cookie}; ${staleNotice}` } })).body, /class="error" role="alert" id="notice">Nothing approved: the definition of &#34;a&#34; changed since it was reviewed; review the changes again/)
  t.equal((await loadApproved(store, 'fx'))?.approvedBy, 'first-use', 'nothing was approved')
  const noTools = await post(a, '/admin/servers/fx/tools/approve', carol.cookie, { csrf: carol.csrf })
  t.equal(noTools.statusCode, 303, 'a form without the tools shown is refused too')
  t.equal((await loadApproved(store, 'fx'))?.approvedBy, 'first-use')

  const again = approvalFields((await a.app.inject({ url: '/admin/tools', headers: { cookie: carol.cookie } })).body)
  t.same(again.to, [V3.a?.fingerprint, V3.c?.fingerprint], 'the page drawn again shows the new definition')
  // And a tool listed after this page was drawn is not approved with it.
  await saveObserved(store, 'fx', { tools: { ...V3, ...(listedTools({ tools: [{ name: 'late', description: 'unseen' }] }) ?? {}) }, observedAtMs: 4, isComplete: true })
  const done = await a.app.inject({ method: 'POST', url: '/admin/servers/fx/tools/approve', headers: { cookie: carol.cookie, 'content-type': 'application/x-www-form-urlencoded' }, payload: formBody(again) })
  t.equal(done.statusCode, 303)
  const approved = await loadApproved(store, 'fx')
  t.match(approved, { approvedBy: 'carol' })
  t.same(Object.keys(approved?.tools ?? {}).sort(), ['a', 'c'], 'the tools shown, not the one listed since')
  t.equal(approved?.tools.a?.fingerprint, V3.a?.fingerprint)

  t.match(adminRecords(a).filter((r) => r.action === 'tools.approve'), [
    { actor: 'carol', target: { kind: 'server', id: 'fx' }, outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_CONFLICT' } },
    { actor: 'carol', outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST' } },
    { actor: 'carol', outcome: 'ok', detail: { approved: [{ name: 'a' }, { name: 'c' }] } },
  ], 'the refusals audited')

  const api = await a.app.inject({ method: 'POST', url: '/admin/api/v1/servers/fx/tools/approve', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: { tools: ['late'], reviewed: { late: 'sha256:not-what-it-is' } } })
  t.equal(api.statusCode, 409, 'the API shares the check')
  t.match(api.json(), { error: { code: 'PORTCULLIS_ERR_ADMIN_CONFLICT' } })
})

t.test('sessions live in the store: sign-out and revoking the user end them; a user gone is recorded by id', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  t.equal((await post(a, '/admin/logout', carol.cookie, { csrf: 'wrong' })).statusCode, 403, 'sign-out needs the CSRF token')
  const out = await post(a, '/admin/logout', carol.cookie, { csrf: carol.csrf })
  t.equal(out.statusCode, 200)
  t.match(String(out.headers['set-cookie']), /portcullis_admin=; Path=\/admin; Max-Age=0/)
  const kept = await a.app.inject({ url: '/admin', headers: { cookie: carol.cookie } })
  t.equal(kept.statusCode, 303, 'the signed cookie, kept after sign-out, no longer opens the page')
  t.equal(kept.headers.location, '/account/login?return=%2Fadmin')
  t.equal((await post(a, '/admin/users/alice/block', carol.cookie, { csrf: carol.csrf })).statusCode, 401, 'nor acts')

  const first = await signedIn(a, 'carol')
  const second = await signedIn(a, 'carol')
  const revoked = await post(a, '/admin/users/carol/revoke', first.cookie, { csrf: first.csrf })
  t.equal(revoked.statusCode, 303)
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: second.cookie } })).statusCode, 303, 'revoking a user ends their admin page sessions, on every replica (they are in the store)')
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: first.cookie } })).statusCode, 303)

  const ghost = await signedIn(a, 'ghost')
  t.equal((await post(a, '/admin/users/alice/block', ghost.cookie, { csrf: ghost.csrf })).statusCode, 401, 'a valid cookie of a user the gateway no longer knows')

  t.match(adminRecords(a).filter((r) => r.action !== 'users.list'), [
    { actor: 'carol', action: 'session.end', outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN' } },
    { actor: 'carol', action: 'session.end', outcome: 'ok' },
    { actor: 'carol', action: 'users.block', outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', reason: 'session-ended' } },
    { actor: 'carol', action: 'users.revoke', target: { id: 'carol' }, outcome: 'ok', detail: { adminSessions: 2 } },
    { actor: 'ghost', action: 'users.block', outcome: 'refused', detail: { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', reason: 'user-gone' } },
  ], 'sign-out, its refusal, and who a signed-out request was')
})

t.test('a user\'s admin page sessions are bounded: the oldest ends first', async (t) => {
  const a = await adminApp(t)
  const oldest = await signedIn(a, 'carol')
  for (let i = 0; i < MAX_SESSIONS_PER_USER; i++) await signedIn(a, 'carol')
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: oldest.cookie } })).statusCode, 303, `the ${MAX_SESSIONS_PER_USER + 1}th sign-in ended the first`)
  t.equal(await a.sessions.endUser('carol'), MAX_SESSIONS_PER_USER, 'the others were listed for the user')
})

t.test('revoking an unknown user: not_found on the page and in the API; a known user with nothing left: ok with zero counts', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  const page = await post(a, '/admin/users/nobody/revoke', carol.cookie, { csrf: carol.csrf })
  const notice = String(page.headers['set-cookie']).split(';')[0] ?? ''
  t.match((await a.app.inject({ url: '/admin/users/nobody', headers: { cookie: `${carol.cookie}; ${notice}` } })).body, /class="error" role="alert" id="notice">no user nobody is known to this gateway, and there was nothing of theirs to revoke/)
  const api = await a.app.inject({ method: 'POST', url: '/admin/api/v1/users/nobody/revoke', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(api.statusCode, 404)
  t.match(api.json(), { error: { code: 'PORTCULLIS_ERR_ADMIN_NOT_FOUND' } })
  const known = await a.app.inject({ method: 'POST', url: '/admin/api/v1/users/alice/revoke', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(known.statusCode, 200)
  t.same(known.json(), { user: 'alice', revoked: { grants: 0, apiKeys: 0, adminSessions: 0, accountSessions: 0 } })
  t.match(adminRecords(a).filter((r) => r.action === 'users.revoke'), [{ actor: 'carol', target: { id: 'nobody' }, outcome: 'not_found' }, { actor: 'admin-token', target: { id: 'nobody' }, outcome: 'not_found' }, { actor: 'admin-token', target: { id: 'alice' }, outcome: 'ok' }])
})

t.test('POSTs refused before their handler are audited; cross-site views go to /admin unrecorded', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  const json = await a.app.inject({ method: 'POST', url: '/admin/users/alice/block', headers: { cookie: carol.cookie, 'content-type': 'application/json' }, payload: '{}' })
  t.equal(json.statusCode, 415)
  const big = await post(a, '/admin/users/alice/block', carol.cookie, { csrf: carol.csrf, pad: 'x'.repeat(17 * 1024) })
  t.equal(big.statusCode, 413)
  const logout = await a.app.inject({ method: 'POST', url: '/admin/logout', headers: { cookie: carol.cookie, 'content-type': 'text/plain' }, payload: 'x' })
  t.equal(logout.statusCode, 415)
  t.match(adminRecords(a), [
    { actor: 'carol', action: 'users.block', outcome: 'refused', detail: { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', status: 415 } },
    { actor: 'carol', action: 'users.block', outcome: 'refused', detail: { code: 'FST_ERR_CTP_BODY_TOO_LARGE', status: 413 } },
    { actor: 'carol', action: 'session.end', outcome: 'refused', detail: { status: 415 } },
  ])
  t.equal(adminRecords(a).length, 3)

  const crossSite = { cookie: carol.cookie, 'sec-fetch-site': 'cross-site' }
  const targeted = await a.app.inject({ url: '/admin/users/alice', headers: crossSite })
  t.equal(targeted.statusCode, 303, 'a link from another site to a user\'s page')
  t.equal(targeted.headers.location, '/admin')
  t.equal((await a.app.inject({ url: '/admin?group=portcullis-admins', headers: crossSite })).headers.location, '/admin', 'a filtered list too')
  t.equal(adminRecords(a).length, 3, 'nothing recorded in the administrator\'s name')
  t.equal((await a.app.inject({ url: '/admin', headers: crossSite })).statusCode, 200, 'the bare /admin opens (no redirect loop)')
  t.equal((await a.app.inject({ url: '/admin/users/alice', headers: { cookie: carol.cookie, 'sec-fetch-site': 'same-origin' } })).statusCode, 200, 'from the page itself: shown')
  t.match(adminRecords(a).slice(3), [{ action: 'users.list', outcome: 'ok' }, { action: 'users.show', target: { id: 'alice' }, outcome: 'ok' }])
})

t.test('a user removed from the admin group while signed in loses the page at their next request', async (t) => {
  const a = await adminApp(t)
  const accounts = new ExternalAccounts(a.app.portcullis.store)
  const dana = { id: 'corp:dana', provider: 'corp', subject: 'dana', name: 'dana', emailVerified: true, groups: ['portcullis-admins'] }
  await accounts.save(dana, Date.now())
  const session = await signedIn(a, dana.id)
  t.equal((await a.app.inject({ url: '/admin', headers: { cookie: session.cookie } })).statusCode, 200)
  await accounts.save({ ...dana, groups: ['staff'] }, Date.now())
  const after = await a.app.inject({ url: '/admin', headers: { cookie: session.cookie } })
  t.equal(after.statusCode, 403, 'the groups are read on every request')
  t.match(after.body, /corp:dana is in none of the administrator groups/)
  t.equal((await post(a, '/admin/users/alice/block', session.cookie, { csrf: session.csrf })).statusCode, 403)
})

t.test('the admin cookie is not an account page session; Secure with an https publicUrl', async (t) => {
  const a = await adminApp(t, { publicUrl: 'https://gw.example.com' })
  const carol = await signedIn(a, 'carol')
  const asIs = await a.app.inject({ url: '/account/keys', headers: { cookie: carol.cookie } })
  t.equal(asIs.statusCode, 303, '/account ignores the admin cookie')
  t.equal(asIs.headers.location, '/account/login?return=%2Faccount%2Fkeys')
  const renamed = await a.app.inject({ url: '/account/keys', headers: { cookie: carol.cookie.replace('portcullis_admin=', 'portcullis_account=') } })
  t.equal(renamed.statusCode, 303, 'and refuses its token under the account cookie\'s name (signed for another use)')

  t.match(String((await a.app.inject({ url: '/account/login?return=%2Fadmin' })).headers['set-cookie']), /^portcullis_account_login=[^;]+; Path=\/account; Max-Age=600; HttpOnly; SameSite=Lax; Secure$/)
  const done = await post(a, '/admin/users/alice/block', carol.cookie, { csrf: carol.csrf })
  t.match(String(done.headers['set-cookie']), /^portcullis_admin_notice=[^;]+; Path=\/admin; Max-Age=60; HttpOnly; SameSite=Lax; Secure$/)
  t.match(String((await post(a, '/admin/logout', carol.cookie, { csrf: carol.csrf })).headers['set-cookie']), /^portcullis_admin=; Path=\/admin; Max-Age=0; HttpOnly; SameSite=Lax; Secure$/)
})

t.test('filters: the page size is kept; blocked takes true or false only, on the page and in the API', async (t) => {
  const a = await adminApp(t)
  const carol = await signedIn(a, 'carol')
  t.match((await a.app.inject({ url: '/admin?limit=2', headers: { cookie: carol.cookie } })).body, /<form method="get" action="\/admin" class="filters">[\s\S]*<input type="hidden" name="limit" value="2">\n<button type="submit">Filter<\/button>/)
  t.match((await a.app.inject({ url: '/admin/clients?limit=3', headers: { cookie: carol.cookie } })).body, /<input type="hidden" name="limit" value="3">/)
  t.notMatch((await a.app.inject({ url: '/admin', headers: { cookie: carol.cookie } })).body, /name="limit"/, 'none asked for, none kept')
  const page = await a.app.inject({ url: '/admin?blocked=yes', headers: { cookie: carol.cookie } })
  t.equal(page.statusCode, 400)
  t.match(page.body, /blocked: expected true or false/)
  const api = await a.app.inject({ url: '/admin/api/v1/users?blocked=yes', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(api.statusCode, 400)
  t.match(api.json(), { error: { code: 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST', message: /blocked: expected true or false/ } })
})

t.test('a failed admin sign-in points back at /admin, not at the account pages (a 404 with API keys off)', async (t) => {
  const a = await adminApp(t, { apiKeys: false })
  const login = await a.app.inject({ url: '/account/login?return=%2Fadmin' })
  const loginCookie = String(login.headers['set-cookie']).split(';')[0] ?? ''
  const failed = await a.app.inject({ url: '/account/callback?state=not-the-state&iss=x', headers: { cookie: loginCookie } })
  t.equal(failed.statusCode, 400)
  t.match(failed.body, /Sign-in failed[\s\S]*Start again at http:\/\/127\.0\.0\.1:8080\/admin\./)
  const expired = await a.app.inject({ url: '/account/callback' })
  t.match(expired.body, /Start again from the page you were signing in to\./, 'without the sign-in cookie: no 404 address either')
})

t.test('the admin API also audits a POST whose body is refused before its handler', async (t) => {
  const a = await adminApp(t)
  const xml = await a.app.inject({ method: 'POST', url: '/admin/api/v1/users/alice/block', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/xml' }, payload: '<x/>' })
  t.equal(xml.statusCode, 415)
  const big = await a.app.inject({ method: 'POST', url: '/admin/api/v1/servers/fx/tools/approve', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ tools: ['x'.repeat(5 * 1024 * 1024)] }) })
  t.equal(big.statusCode, 413)
  t.match(adminRecords(a), [
    { actor: 'admin-token', action: 'users.block', target: { kind: 'user', id: 'alice' }, outcome: 'refused', detail: { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', status: 415 } },
    { actor: 'unknown', action: 'tools.approve', target: { kind: 'server', id: 'fx' }, outcome: 'refused', detail: { code: 'FST_ERR_CTP_BODY_TOO_LARGE', status: 413 } },
  ], 'actor: the credential\'s, if any')
  t.equal(adminRecords(a).length, 2)
})
