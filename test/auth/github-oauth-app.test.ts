// GitHubOAuthApp.refresh is what a revalidation re-reads a GitHub user with (the stored access
// token). GitHub cannot run here: a local stand-in of its API (test/github.ts, and one small real
// server that plays a hostile API below) answers, through the real guarded fetch.
import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseConfig } from '../../src/config/load.js'
import { GitHubError, GitHubOAuthApp, isGitHubRefusal } from '../../src/auth-server/github-oauth-app.js'
import { createGuardedFetch } from '../../src/net/guarded-fetch.js'
import type { IdentityProviderConfig } from '../../src/config/schema.js'
import type { Teardown } from '../helpers.js'

function githubProvider (apiUrl: string): IdentityProviderConfig {
  const config = parseConfig(JSON.stringify({
    publicUrl: 'http://127.0.0.1:8080',
    servers: [{ name: 'echo', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
    auth: { identityProviders: [{ name: 'github', type: 'github', clientId: 'c', clientSecret: 's', apiUrl }] },
  }), 'test.yaml', {})
  const found = config.auth.identityProviders[0]
  if (found === undefined) throw new Error('no provider parsed')
  return found
}

/** A real HTTP server on 127.0.0.1 port 0; returns its URL as `host` and what it was asked. */
async function server (t: Teardown, host: string, handle: (path: string, authorization: string | undefined) => { status: number, body: unknown, link?: string }): Promise<{ url: string, seen: Array<{ path: string, authorization?: string }> }> {
  const seen: Array<{ path: string, authorization?: string }> = []
  const s = createServer((req, res) => {
    const path = req.url ?? '/'
    seen.push({ path, ...(req.headers.authorization === undefined ? {} : { authorization: req.headers.authorization }) })
    const answer = handle(path, req.headers.authorization)
    res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.link === undefined ? {} : { link: answer.link }) }).end(JSON.stringify(answer.body))
  })
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { s.closeAllConnections(); s.close(() => resolve()) }))
  return { url: `http://${host}:${(s.address() as AddressInfo).port}`, seen }
}

t.test('refresh: the user as GitHub sees them now; a revoked token or another user is a refusal, an outage is not', async (t) => {
  const elsewhere = await server(t, '127.0.0.1', () => ({ status: 200, body: [] }))
  const api = await server(t, 'localhost', (path, authorization) => {
    if (authorization === 'Bearer gho_outage') return { status: 502, body: { message: 'Bad gateway' } }
    if (authorization === 'Bearer gho_other') return { status: 200, body: { id: 2, login: 'someone-else' } }
    if (authorization !== 'Bearer gho_live' && authorization !== 'Bearer gho_wanders') return { status: 401, body: { message: 'Bad credentials' } }
    if (path.startsWith('/user/orgs')) return { status: 200, body: [{ login: 'Acme' }], ...(authorization === 'Bearer gho_wanders' ? { link: `<${elsewhere.url}/user/orgs?page=2>; rel="next"` } : {}) }
    if (path.startsWith('/user/teams')) return { status: 200, body: [{ slug: 'platform', organization: { login: 'Acme' } }] }
    if (path === '/user/emails') return { status: 200, body: [{ email: 'a@acme.example', primary: true, verified: true }] }
    return { status: 200, body: { id: 1, login: 'octo' } }
  })
  // Both hosts are reachable for the guarded fetch: only the app's own same-origin rule keeps the token home.
  const guarded = createGuardedFetch({ allowedHosts: [], operatorHosts: ['localhost', '127.0.0.1'] })
  t.teardown(guarded.close)
  const app = new GitHubOAuthApp(githubProvider(api.url), 'http://127.0.0.1:8080', guarded.fetch)

  t.same(await app.refresh('gho_live', '1'), { claims: { sub: '1', preferred_username: 'octo', email: 'a@acme.example', email_verified: true }, groups: ['acme', 'acme/platform'] }, 'claims and groups as at sign-in')
  const outcome = async (token: string, subject = '1'): Promise<unknown> => await app.refresh(token, subject).then(() => 'ok', (err: unknown) => err)
  const revoked = await outcome('gho_revoked')
  t.ok(revoked instanceof GitHubError && revoked.status === 401 && isGitHubRefusal(revoked), 'a revoked token (401) is a refusal')
  t.ok(isGitHubRefusal(await outcome('gho_other')), 'a token that now names another user is a refusal')
  const outage = await outcome('gho_outage')
  t.ok(outage instanceof GitHubError && !isGitHubRefusal(outage), 'GitHub failing (502) is not a refusal: nobody is offboarded for an outage')

  t.match(await outcome('gho_wanders'), /GitHub \/user\/orgs links to another host/)
  t.same(elsewhere.seen, [], 'the token was never sent to another host')
})
