// Sign-in with GitHub (an OAuth app, not OpenID Connect), end to end: the official MCP SDK client
// runs the gateway's whole OAuth flow, and the gateway signs the user in at GitHub. GitHub itself
// cannot run here, so its three configurable endpoints (authorizationUrl, tokenUrl, apiUrl) are a
// local stand-in (test/github.ts: a real HTTP server on localhost that checks the client secret,
// the redirect URI and PKCE like GitHub does); everything else — gateway, upstream — is real.
import t from 'tap'
import { decodeJwt } from 'jose'
import { connectWithOAuth, HeadlessBrowser, TestOAuthClient } from '../oauth-helpers.js'
import { startUpstream, textOf } from '../helpers.js'
import { githubEntry, startGatewayWithGitHub, type GitHubAccount } from '../github.js'

// Enough teams to need a second page of /user/teams (the gateway asks 20 per page).
const ALICE_TEAMS = ['Acme/platform', ...Array.from({ length: 22 }, (_, i) => `acme/guild-${i}`)]
const ALICE: GitHubAccount = { id: 1001, login: 'octo-alice', password: 'alice-at-github', emails: [{ email: 'alice@old.example', primary: false, verified: true }, { email: 'alice@acme.example', primary: true, verified: true }], orgs: ['Acme', 'oss-club'], teams: ALICE_TEAMS }
const BOB: GitHubAccount = { id: 2002, login: 'octo-bob', password: 'bob-at-github', emails: [{ email: 'bob@acme.example', primary: true, verified: true }], orgs: ['other-org'], teams: ['other-org/sales'] }
// Carol's primary address is unverified; a verified secondary one is not what names her either.
const CAROL: GitHubAccount = { id: 3003, login: 'octo-carol', password: 'carol-at-github', emails: [{ email: 'carol@acme.example', primary: true, verified: false }, { email: 'carol@elsewhere.example', primary: false, verified: true }], orgs: ['acme'], teams: [] }

t.test('the SDK client signs in with GitHub: github:<id>, orgs and teams as groups used by access.groups, the access token kept sealed', async (t) => {
  const upstream = await startUpstream(t)
  const { gh, gw } = await startGatewayWithGitHub(t, [ALICE, BOB], (gh) => ({
    auth: { identityProviders: [githubEntry(gh, { groupMap: { 'oss-club': 'community' } })] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url, access: { groups: ['acme/platform'] } }],
  }))
  const alice = await connectWithOAuth(t, gw.mcpUrl('tools'), { username: ALICE.login, password: ALICE.password, idp: 'github', issuer: gw.baseUrl })
  t.same(alice.browser.pages, ['idp-login', 'consent'], 'one provider and no local users: straight to GitHub')
  t.equal(textOf(await alice.client.callTool({ name: 'whoami', arguments: {} })), 'fixture', 'tools/call works: access.groups [acme/platform] let the team member in')
  const claims = decodeJwt(alice.oauth.savedTokens?.access_token ?? '')
  const teams = ALICE_TEAMS.map((team) => team.toLowerCase())
  t.match(claims, { sub: 'github:1001', preferred_username: 'github:octo-alice', email: 'alice@acme.example' }, 'identity from the numeric id, name from the login, the verified primary email')
  t.same(claims.groups, ['acme', 'community', ...teams].sort(), 'orgs and teams (both pages) as org and org/team, lowercased, through groupMap')
  t.match(alice.browser.lastHtml, /act on your behalf, <strong>octo-alice \(github\)<\/strong>/)

  const authorize = alice.browser.visited.find((url) => url.startsWith(`${gh.url}/login/oauth/authorize?`)) ?? ''
  t.same(Object.fromEntries([...new URL(authorize).searchParams].filter(([k]) => ['scope', 'code_challenge_method', 'client_id'].includes(k))),
    { client_id: gh.clientId, scope: 'read:user user:email read:org', code_challenge_method: 'S256' }, 'the default scopes and PKCE S256 were asked for')
  t.match(gh.requests.find((r) => r.path === '/login/oauth/access_token'), { method: 'POST', accept: 'application/json' }, 'the code was redeemed asking for JSON')
  t.same([...new Set(gh.requests.filter((r) => r.path.startsWith('/api/v3/')).map((r) => r.path))], ['/api/v3/user', '/api/v3/user/emails', '/api/v3/user/orgs', '/api/v3/user/teams'], 'the user was read from the API under apiUrl')
  t.ok(gh.requests.every((r) => r.userAgent === 'portcullis' || r.path === '/login/oauth/authorize' || r.path.startsWith('/session/')), 'every API call names a User-Agent (GitHub refuses requests without one)')

  const bob = await connectWithOAuth(t, gw.mcpUrl('tools'), { username: BOB.login, password: BOB.password, idp: 'github', issuer: gw.baseUrl }).then(() => 'connected', (err: Error) => err.message)
  t.match(bob, /user \\"github:octo-bob\\" is not in the access list of server \\"tools\\".*PORTCULLIS_ERR_ACCESS_DENIED/, 'access.groups refuses a user outside the team')

  // No refresh token at GitHub: the access token is what a revalidation re-reads the user with.
  const issued = gh.accessTokens[0] ?? ''
  t.match(issued, /^gho_/)
  const raw = await gw.app.portcullis.store.kvGet('idp-session:github:1001') ?? ''
  t.match(raw, /"sealedAccessToken":"v1\./, 'kept sealed')
  t.notOk(raw.includes(issued), 'the token text is not in the stored value')
  t.equal((await gw.app.portcullis.idpSessions?.idpSession('github:1001'))?.accessToken, issued, 'idpSession() opens it')
  t.notOk(gw.logs.text().includes(issued), 'never logged')
  t.notOk(gw.logs.text().includes(gh.clientSecret), 'the client secret is never logged')
})

t.test('requiredGroups refuses a user outside the org; an unverified primary email is not used', async (t) => {
  const upstream = await startUpstream(t)
  const { gw } = await startGatewayWithGitHub(t, [ALICE, BOB, CAROL], (gh) => ({
    auth: { identityProviders: [githubEntry(gh, { requiredGroups: ['acme'] }), githubEntry(gh, { name: 'github-strict', displayName: 'GitHub (acme.example)', allowedDomains: ['acme.example'] })] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }))
  const oauth = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl('tools'), { username: CAROL.login, password: CAROL.password, idp: 'github', oauth, issuer: gw.baseUrl })
  const carol = decodeJwt(oauth.savedTokens?.access_token ?? '')
  t.match(carol, { sub: 'github:3003', preferred_username: 'github:octo-carol', groups: ['acme'] })
  t.notOk('email' in carol, 'no email: the primary one is unverified (and a verified secondary one is not the user\'s address)')

  const bob = new HeadlessBrowser()
  const refused = await bob.authorize(String(oauth.authorizationUrl), { username: BOB.login, password: BOB.password, idp: 'github' }).then(() => 'signed in', (e: Error) => e.message)
  t.match(refused, /unexpected page \(403\)/, 'bob is refused')
  t.match(bob.lastHtml, /<h1>Not allowed<\/h1>/)
  t.match(bob.lastHtml, /signed in at GitHub as octo-bob, but you are not in a group allowed to use this gateway \(one of: acme\)/)

  const strict = new HeadlessBrowser()
  const unverified = await strict.authorize(String(oauth.authorizationUrl), { username: CAROL.login, password: CAROL.password, idp: 'github-strict' }).then(() => 'signed in', (e: Error) => e.message)
  t.match(unverified, /unexpected page \(403\)/, 'allowedDomains: carol\'s unverified address does not admit her')
  t.match(strict.lastHtml, /email domain is not one of those allowed/)
  t.match(gw.logs.text(), /"provider":"github","user":"github:2002".*"msg":"identity provider sign-in refused"/)
})

t.test('a GitHub answer with another state is refused; a code GitHub will not redeem gets a clear page', async (t) => {
  const upstream = await startUpstream(t)
  const { gh, gw } = await startGatewayWithGitHub(t, [ALICE], (gh) => ({
    auth: { identityProviders: [githubEntry(gh)] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }))
  const oauth = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl('tools'), { username: 'x', password: 'x', idp: 'github', oauth, browser: new HeadlessBrowser(), issuer: gw.baseUrl }).catch(() => undefined)
  const toGitHub = async (browser: HeadlessBrowser): Promise<URL> => {
    let next = String(oauth.authorizationUrl)
    for (let i = 0; i < 5 && next.startsWith(gw.baseUrl); i++) next = new URL((await browser.request(next)).headers.get('location') ?? '', next).href
    return new URL(next)
  }

  const browser = new HeadlessBrowser()
  const github = await toGitHub(browser)
  t.equal(github.origin, gh.url, 'the browser was sent to GitHub')
  const callback = await browser.authorize(github, { username: ALICE.login, password: ALICE.password })
  t.equal(callback.pathname, '/oauth/idp/github/callback')
  const forged = new URL(callback)
  forged.searchParams.set('state', 'a-state-of-another-sign-in')
  const mismatch = await browser.request(forged.href)
  t.equal(mismatch.status, 400, 'another state is refused')
  t.match(await mismatch.text(), /not valid here/)
  t.equal(gh.accessTokens.length, 0, 'the code was not redeemed')

  // The real state with a code GitHub does not know: GitHub answers 200 + error; the gateway says it could not verify.
  const badCode = new URL(callback)
  badCode.searchParams.set('code', 'not-a-code-github-issued')
  const forwarded = await browser.request(badCode.href)
  const failed = await browser.request(new URL(forwarded.headers.get('location') ?? '', gw.baseUrl).href)
  t.equal(failed.status, 502)
  t.match(await failed.text(), /The answer from GitHub could not be verified/)
  t.match(gw.logs.text(), /"provider":"github".*"message":"GitHub refused the code: bad_verification_code".*"msg":"identity provider sign-in failed"/)
  t.equal(gh.accessTokens.length, 0, 'no token issued')
})
