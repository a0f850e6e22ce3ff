// Enterprise sign-in through an OpenID Connect identity provider, end to end: the official MCP SDK
// client runs the whole OAuth flow through the gateway and a real second oidc-provider (the IdP,
// test/idp.ts, on localhost while the gateway is 127.0.0.1), with real upstreams and stdio children.
import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { decodeJwt, exportJWK, generateKeyPair } from 'jose'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, HeadlessBrowser, TestOAuthClient } from '../oauth-helpers.js'
import { eventually, postJson, startUpstream, stdioServer, STDIO_MODERN_FIXTURE, textOf, type RunningGateway } from '../helpers.js'
import { idpEntry, startGatewayWithIdp, type IdpAccount } from '../idp.js'
import { FIRST_RUN_PASSWORD_FILE } from '../../src/auth-server/users.js'
import { MemoryStore } from '../../src/store/memory-store.js'

const ALICE: IdpAccount = { sub: 'a-100', password: 'alice-at-corp', email: 'alice@example.com', email_verified: true, preferred_username: 'alice', groups: ['0b3f-eng-guid', 'staff'] }
const BOB: IdpAccount = { sub: 'b-200', password: 'bob-at-corp', email: 'bob@example.com', email_verified: true, preferred_username: 'bob', groups: ['sales', 'staff'] }
const CAROL: IdpAccount = { sub: 'c-300', password: 'carol-at-corp', email: 'carol@example.com', email_verified: true, preferred_username: 'carol.c', groups: ['staff'] }
const DAVE: IdpAccount = { sub: 'd-400', password: 'dave-at-corp', email: 'dave@other.org', email_verified: true, preferred_username: 'dave', groups: ['staff'] }
const ERIN: IdpAccount = { sub: 'e-500', password: 'erin-at-corp', email: 'erin@example.com', email_verified: true, preferred_username: 'erin', groups: ['contractors'] }
const LOCAL_PASSWORD_HASH = await hashPassword('a local password 123')

interface AuditRecord { method?: string, user?: { sub: string, username: string } | null, decision?: string }
const auditRecords = (gw: RunningGateway): AuditRecord[] => gw.audit.lines.map((l) => JSON.parse(l) as AuditRecord)

t.test('one provider, no local users: straight to the IdP; the token, policy, audit and per-user values carry corp:<sub>', async (t) => {
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { groupMap: { '0b3f-eng-guid': 'eng' } })] },
    servers: [
      { name: 'gh', transport: 'http', url: upstream.url, access: { groups: ['eng'] } },
      stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user', flags: ['--user=${user.name}'], env: { DATA_FILE: '/data/memory-${user.id}.jsonl' } }),
    ],
  }))
  t.equal(gw.app.portcullis.firstRun, undefined, 'no first-run admin account with a provider and no local users')
  t.notOk(existsSync(join(gw.config.dataDir, FIRST_RUN_PASSWORD_FILE)), 'no first-run password file')

  const alice = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'alice', password: ALICE.password, idp: 'corp', issuer: gw.baseUrl })
  t.same(alice.browser.pages, ['idp-login', 'consent'], 'no gateway sign-in page: the browser went straight to the IdP')
  t.ok(alice.browser.visited.some((url) => url.startsWith(`${idp.issuer}/`)), 'the IdP was visited')
  t.equal(textOf(await alice.client.callTool({ name: 'whoami', arguments: {} })), 'fixture', 'tools/call works')
  const claims = decodeJwt(alice.oauth.savedTokens?.access_token ?? '')
  t.match(claims, { sub: 'corp:a-100', preferred_username: 'corp:alice', email: 'alice@example.com', groups: ['eng', 'staff'] }, 'the access token names the IdP user, with mapped groups')
  t.match(alice.browser.lastHtml, /act on your behalf, <strong>alice \(corp\)<\/strong>/, 'the consent page names the IdP user')

  const bob = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'bob', password: BOB.password, idp: 'corp', issuer: gw.baseUrl }).then(() => 'connected', (err: Error) => err.message)
  t.match(bob, /user \\"corp:bob\\" is not in the access list of server \\"gh\\".*PORTCULLIS_ERR_ACCESS_DENIED/, 'access.groups refuses the IdP user outside the group')

  await eventually(() => auditRecords(gw).some((r) => r.method === 'tools/call'))
  t.match(auditRecords(gw).find((r) => r.method === 'tools/call'), { user: { sub: 'corp:a-100', username: 'corp:alice' }, decision: 'allowed' }, 'the audit record names the IdP user')

  // Per-user values of a stdio server: the IdP user's own, qualified by the provider.
  const oauth = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl('modern'), { username: 'alice', password: ALICE.password, idp: 'corp', oauth, issuer: gw.baseUrl }).catch(() => undefined)
  const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' } }
  const env = await postJson(gw.mcpUrl('modern'), { jsonrpc: '2.0', id: 'e1', method: 'tools/call', params: { name: 'env', arguments: {}, _meta: meta } },
    { authorization: `Bearer ${oauth.savedTokens?.access_token ?? ''}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'env' })
  t.equal(env.status, 200)
  const child = JSON.parse(textOf((env.json as { result?: unknown }).result)) as { argv: string[], DATA_FILE: string }
  t.same(child.argv, ['--user=corp%3Aalice'], '${user.name} is the provider-qualified name (never a local user\'s)')
  t.equal(child.DATA_FILE, '/data/memory-corp%3Aa-100.jsonl', '${user.id} is corp:<sub>')

  // The IdP's refresh token is kept, sealed: the raw store value does not contain it.
  const issued = idp.refreshTokens.at(-1) ?? ''
  t.ok(issued.length > 20, 'the IdP issued a refresh token')
  const raw = await gw.app.portcullis.store.kvGet('idp-session:corp:a-100') ?? ''
  t.match(raw, /"sealedRefreshToken":"v1\./, 'stored sealed')
  t.notOk(raw.includes(issued), 'the token text is not in the stored value')
  t.equal((await gw.app.portcullis.idpSessions?.idpSession('corp:a-100'))?.refreshToken, issued, 'idpSession() opens it for the revalidation to come')
  t.notOk(gw.logs.text().includes(issued), 'never logged')
  t.match(gw.logs.text(), /"provider":"corp","user":"corp:a-100","name":"alice","msg":"signed in through identity provider"/, 'the log names provider and user')
})

t.test('buttons per provider beside the local form; linkByEmail; allowedDomains and requiredGroups refusals', async (t) => {
  const upstream = await startUpstream(t)
  const { gw } = await startGatewayWithIdp(t, { accounts: [CAROL, DAVE, ERIN] }, (idp) => ({
    auth: {
      users: [{ username: 'carol', passwordHash: LOCAL_PASSWORD_HASH, email: 'Carol@example.com', groups: ['local-eng'] }],
      identityProviders: [
        idpEntry(idp, { linkByEmail: true }),
        idpEntry(idp, { name: 'other', displayName: 'Other SSO', allowedDomains: ['example.com'], requiredGroups: ['staff'] }),
      ],
    },
    servers: [{ name: 'gh', transport: 'http', url: upstream.url }],
  }))
  const browser = new HeadlessBrowser()
  const oauth = new TestOAuthClient()
  const carol = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'carol.c', password: CAROL.password, idp: 'corp', oauth, browser, issuer: gw.baseUrl })
  t.same(browser.pages, ['provider', 'idp-login', 'consent'])
  t.equal(decodeJwt(oauth.savedTokens?.access_token ?? '').sub, 'carol', 'linkByEmail: the verified IdP email signs in as the local user')
  t.match(decodeJwt(oauth.savedTokens?.access_token ?? ''), { preferred_username: 'carol', groups: ['local-eng'] })
  await carol.client.close()

  // The sign-in page: one button per provider (CSRF-protected forms) and the local form.
  const page = new HeadlessBrowser()
  const first = await page.request(String(oauth.authorizationUrl))
  const html = await (await page.request(new URL(first.headers.get('location') ?? '', gw.baseUrl).href)).text()
  t.match(html, /<button class="primary" type="submit">Sign in with Corp SSO<\/button>/)
  t.match(html, /<button class="primary" type="submit">Sign in with Other SSO<\/button>/)
  t.match(html, /name="password"/, 'the local form is there: auth.users is not empty')
  t.equal((html.match(/name="csrf"/g) ?? []).length, 3, 'every form carries the CSRF token')
  t.notMatch(html, /<script/i)

  for (const [who, account, reason] of [['dave', DAVE, /email domain is not one of those allowed/], ['erin', ERIN, /not in a group allowed to use this gateway \(one of: staff\)/]] as const) {
    const refused = new HeadlessBrowser()
    const err = await refused.authorize(String(oauth.authorizationUrl), { username: who, password: account.password, idp: 'other' }).then(() => 'signed in', (e: Error) => e.message)
    t.match(err, /unexpected page \(403\)/, `${who} is refused`)
    t.match(refused.lastHtml, /<h1>Not allowed<\/h1>/)
    t.match(refused.lastHtml, reason, 'the page names the reason')
    t.notMatch(refused.lastHtml, /code=|eyJ/, 'no code or token on the page')
    t.notOk(refused.visited.some((url) => url.startsWith('http://127.0.0.1:9/')), 'never sent back to the client: no code')
  }
  t.match(gw.logs.text(), /"provider":"other","user":"other:d-400".*"msg":"identity provider sign-in refused"/)
})

t.test('the IdP answer is bound to the browser and used once; IdP errors get a clear page', async (t) => {
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp)] },
    servers: [{ name: 'gh', transport: 'http', url: upstream.url }],
  }))
  const alice = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'alice', password: ALICE.password, idp: 'corp', issuer: gw.baseUrl })
  const callback = alice.browser.visited.find((url) => url.startsWith(`${gw.baseUrl}/oauth/idp/corp/callback?`)) ?? ''
  t.match(callback, /[?&]code=.*state=/, 'the IdP called back with a code and state')
  const idpCode = new URL(callback).searchParams.get('code') ?? ''
  t.ok(idpCode.length > 10 && !gw.logs.text().includes(idpCode), 'the IdP\'s code is never logged')
  const replay = await alice.browser.request(callback)
  t.equal(replay.status, 400, 'the same answer again (same browser) is refused')
  t.match(await replay.text(), /already used, it expired, or it belongs to another sign-in/)

  // Someone starts a sign-in and hands the IdP link to a victim: the victim's browser lacks the interaction.
  const attacker = new HeadlessBrowser()
  const oauth = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'x', password: 'x', idp: 'corp', oauth, browser: new HeadlessBrowser(), issuer: gw.baseUrl }).catch(() => undefined)
  let next = String(oauth.authorizationUrl)
  for (let i = 0; i < 5 && next.startsWith(gw.baseUrl); i++) next = new URL((await attacker.request(next)).headers.get('location') ?? '', next).href
  t.ok(next.startsWith(`${idp.issuer}/`), 'the attacker holds an IdP sign-in link')
  const victim = new HeadlessBrowser()
  const victimCallback = await victim.authorize(next, { username: 'alice', password: ALICE.password })
  t.equal(victimCallback.pathname, '/oauth/idp/corp/callback')
  const forwarded = await victim.request(victimCallback.href)
  t.equal(forwarded.status, 303)
  const landed = await victim.request(new URL(forwarded.headers.get('location') ?? '', gw.baseUrl).href)
  t.equal(landed.status, 400, 'the victim\'s browser cannot finish the attacker\'s sign-in')
  t.match(await landed.text(), /Sign-in expired/)

  // An IdP that answers with an error (the user cancelled): a clear page, no sign-in.
  const cancelled = new HeadlessBrowser()
  let idpUrl = String(oauth.authorizationUrl)
  for (let i = 0; i < 5 && idpUrl.startsWith(gw.baseUrl); i++) idpUrl = new URL((await cancelled.request(idpUrl)).headers.get('location') ?? '', idpUrl).href
  const state = new URL(idpUrl).searchParams.get('state') ?? ''
  const denied = await cancelled.request(`${gw.baseUrl}/oauth/idp/corp/callback?error=access_denied&state=${state}&iss=${encodeURIComponent(idp.issuer)}`)
  const deniedPage = await cancelled.request(new URL(denied.headers.get('location') ?? '', gw.baseUrl).href)
  t.equal(deniedPage.status, 403)
  t.match(await deniedPage.text(), /Corp SSO did not sign you in \(access_denied\)/)
})

t.test('groups only at userinfo are read there; an Entra groups overage is logged, not fatal', async (t) => {
  const upstream = await startUpstream(t)
  const OLIVIA: IdpAccount = { sub: 'o-600', password: 'olivia-at-corp', email: 'olivia@example.com', email_verified: true, preferred_username: 'olivia', extra: { _claim_names: { groups: 'src1' } } }
  const { gw } = await startGatewayWithIdp(t, { accounts: [ALICE, OLIVIA], claimsIn: 'userinfo' }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp)] },
    servers: [{ name: 'gh', transport: 'http', url: upstream.url }],
  }))
  const alice = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'alice', password: ALICE.password, idp: 'corp', issuer: gw.baseUrl })
  t.match(decodeJwt(alice.oauth.savedTokens?.access_token ?? ''), { sub: 'corp:a-100', groups: ['0b3f-eng-guid', 'staff'], email: 'alice@example.com' }, 'groups and email came from userinfo')
  await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'olivia', password: OLIVIA.password, idp: 'corp', issuer: gw.baseUrl })
  t.match(gw.logs.text(), /"level":40,.*"provider":"corp","user":"corp:o-600","name":"olivia","msg":"identity provider left out the groups claim \(Entra ID groups overage\)/)
})

t.test('privateKeyJwt: the gateway authenticates to the IdP with a signed assertion (RFC 7523), no client secret', async (t) => {
  const upstream = await startUpstream(t)
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const kid = 'gateway-at-corp'
  const keysFile = join(t.testdir({}), 'idp-client-keys.json')
  writeFileSync(keysFile, JSON.stringify({ keys: [{ ...await exportJWK(privateKey), kid, alg: 'ES256' }] }))
  const { gw } = await startGatewayWithIdp(t, { accounts: [ALICE], clientJwks: { keys: [{ ...await exportJWK(publicKey), kid, alg: 'ES256', use: 'sig' }] } }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { clientSecret: undefined, privateKeyJwt: { keysFile } })] },
    servers: [{ name: 'gh', transport: 'http', url: upstream.url }],
  }))
  const alice = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'alice', password: ALICE.password, idp: 'corp', issuer: gw.baseUrl })
  t.match(decodeJwt(alice.oauth.savedTokens?.access_token ?? ''), { sub: 'corp:a-100', email: 'alice@example.com' }, 'signed in: the IdP took the signed client assertion at its token endpoint')
  t.notOk(gw.logs.text().includes('"d":'), 'the private key is never logged')
})

t.test('usernameClaim: email does not make an address the IdP marks unverified anyone\'s name', async (t) => {
  // An IdP where users set their own address (Keycloak, Auth0) says so with email_verified: false.
  // Such an address names nobody - unless usernameClaim pointed at the email claim, which read it
  // raw: Mallory claimed Dana's address and signed in as corp:dana@example.com, the name
  // access.users lists and ${user.name} renders.
  const DANA: IdpAccount = { sub: 'd-1', password: 'dana-at-corp', email: 'dana@example.com', email_verified: true }
  const MALLORY: IdpAccount = { sub: 'm-666', password: 'mallory-at-corp', email: 'dana@example.com', email_verified: false }
  const upstream = await startUpstream(t)
  const { gw } = await startGatewayWithIdp(t, { accounts: [DANA, MALLORY] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { usernameClaim: 'email' })] },
    servers: [{ name: 'finance', transport: 'http', url: upstream.url, access: { users: ['corp:dana@example.com'] } }],
  }))
  const dana = await connectWithOAuth(t, gw.mcpUrl('finance'), { username: DANA.sub, password: DANA.password, idp: 'corp', issuer: gw.baseUrl })
  t.match(decodeJwt(dana.oauth.savedTokens?.access_token ?? ''), { sub: 'corp:d-1', preferred_username: 'corp:dana@example.com' }, 'a verified address names its owner')

  const oauth = new TestOAuthClient()
  const mallory = await connectWithOAuth(t, gw.mcpUrl('finance'), { username: MALLORY.sub, password: MALLORY.password, idp: 'corp', oauth, issuer: gw.baseUrl }).then(() => 'connected', (err: Error) => err.message)
  const claims = decodeJwt(oauth.savedTokens?.access_token ?? '')
  t.equal(claims.sub, 'corp:m-666')
  t.not(claims.preferred_username, 'corp:dana@example.com', 'the unverified address is not her name')
  t.equal(claims.email, undefined, 'nor her email')
  t.match(mallory, /PORTCULLIS_ERR_ACCESS_DENIED/, 'access.users does not let her in as Dana')
})

t.test('starting an identity-provider sign-in counts against rateLimits.login: each start stores a pending sign-in', async (t) => {
  // One interaction (anyone can start one) was enough to loop on its "Sign in with …" button, or on
  // the page itself with a single provider, each time storing a pending sign-in for 10 minutes.
  const store = new MemoryStore()
  const { gw } = await startGatewayWithIdp(t, { accounts: [ALICE] }, (idp) => ({
    auth: { users: [{ username: 'local', passwordHash: LOCAL_PASSWORD_HASH }], identityProviders: [idpEntry(idp)] },
    rateLimits: { login: '3/min' },
    servers: [{ name: 'gh', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
  }), { store })
  const oauth = new TestOAuthClient()
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js')
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js')
  await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('gh')), { authProvider: oauth })).catch(() => {})
  const browser = new HeadlessBrowser()
  const first = await browser.request(String(oauth.authorizationUrl))
  const interaction = new URL(first.headers.get('location') ?? '', gw.baseUrl).href
  const page = await (await browser.request(interaction)).text()
  const csrf = /name="csrf" value="([^"]+)"/.exec(page)?.[1] ?? ''
  const pending = async (): Promise<number> => {
    let n = 0
    for await (const entry of store.entries()) if ((entry as { key?: string }).key?.startsWith('idp-pending:') === true) n++
    return n
  }
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push((await browser.request(`${interaction}/idp/corp`, { method: 'POST', form: { csrf } })).status)
  t.same(statuses, [303, 303, 303, 429], 'the 4th start from one address within the minute is refused')
  t.equal(await pending(), 3, 'and stores nothing')
  const refused = await browser.request(`${interaction}/idp/corp`, { method: 'POST', form: { csrf } })
  t.ok(Number(refused.headers.get('retry-after')) > 0, 'Retry-After says when')
  t.match(await refused.text(), /Too many sign-in attempts from your network/)
})
