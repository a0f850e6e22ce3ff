// Signing out of the account page, and an administrator revoking the user, end what that
// browser was signed in to: the account page's session (a kept cookie opens nothing) and the
// sign-in at the gateway's authorization server (the next authorization, for any client and
// the admin API's included, asks for the password again). Real users signed in through the
// real pages and the real authorization flow; a second user shows the others keep theirs.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { hashPassword } from '../../src/auth-server/password.js'
import { REDIRECT_URL, type HeadlessBrowser } from '../oauth-helpers.js'
import { signInToAccount, type AccountPage } from '../account-helpers.js'
import { startGateway, startUpstream, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const ADMIN_TOKEN = randomBytes(32).toString('base64url')
const passwordHash = await hashPassword(PASSWORD)

async function gateway (t: Parameters<typeof startUpstream>[0]): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return await startGateway(t, {
    admin: { bearerToken: ADMIN_TOKEN },
    auth: { users: [{ username: 'alice', passwordHash, groups: ['portcullis-admins'] }, { username: 'bob', passwordHash }], apiKeys: { enabled: true } },
    servers: [{ name: 'alpha', transport: 'http', url: upstream.url }],
  })
}

/**
 * The pages a new client's authorization shows this browser (the right password given when
 * asked): for the admin API (an administrator's), or for the MCP server `alpha`.
 */
async function authorizeAnotherClient (gw: RunningGateway, browser: HeadlessBrowser, username: string, target: 'admin' | 'mcp' = 'admin'): Promise<string[]> {
  const registered = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  const clientId = (await registered.json() as { client_id: string }).client_id
  const verifier = randomBytes(32).toString('base64url')
  const params = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 'st', code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', ...(target === 'admin' ? { resource: `${gw.baseUrl}/admin`, scope: 'portcullis:admin' } : { resource: gw.mcpUrl('alpha'), scope: 'mcp' }) })
  await browser.authorize(`${gw.baseUrl}/oauth/authorize?${params.toString()}`, { username, password: PASSWORD })
  return [...browser.pages]
}

/** What the account page answers a browser holding `cookies` (as kept before a sign-out). */
async function withKeptCookies (page: AccountPage, cookies: ReadonlyMap<string, string>): Promise<{ keys: number, create: number }> {
  const jar = page.browser.jar('127.0.0.1')
  for (const [name, value] of cookies) jar.set(name, value)
  const keys = (await page.browser.request(`${page.baseUrl}/account/keys`)).status
  const create = (await page.browser.request(`${page.baseUrl}/account/keys`, { method: 'POST', form: { csrf: page.csrf(), name: 'after', servers: 'alpha', expires: '30d' } })).status
  return { keys, create }
}

t.test('signing out of the account page ends its session and the sign-in behind it', async (t) => {
  const gw = await gateway(t)
  const page = await signInToAccount(gw.baseUrl, 'alice', PASSWORD)
  t.same(await authorizeAnotherClient(gw, page.browser, 'alice'), ['consent'], 'signed in: another client needs only consent')
  const kept = new Map(page.browser.jar('127.0.0.1'))
  const out = await page.browser.request(`${gw.baseUrl}/account/logout`, { method: 'POST', form: { csrf: page.csrf() } })
  t.equal(out.status, 200, 'signed out')
  const after = await withKeptCookies(page, kept)
  t.equal(after.keys, 303, 'the kept cookie opens no page: back to sign-in')
  t.equal(after.create, 401, 'and creates no API key')
  t.same(await authorizeAnotherClient(gw, page.browser, 'alice'), ['login', 'consent'], 'the next authorization asks for the password')

  const bob = await signInToAccount(gw.baseUrl, 'bob', PASSWORD)
  t.equal((await bob.browser.request(`${gw.baseUrl}/account/keys`)).status, 200, 'another user is not signed out')
})

t.test('revoking a user ends their account page sessions and their sign-in at the authorization server', async (t) => {
  const gw = await gateway(t)
  const alice = await signInToAccount(gw.baseUrl, 'alice', PASSWORD)
  const bob = await signInToAccount(gw.baseUrl, 'bob', PASSWORD)
  const revoked = await fetch(`${gw.baseUrl}/admin/api/v1/users/alice/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(revoked.status, 200)
  t.match(await revoked.json(), { user: 'alice', revoked: { accountSessions: 1 } })
  t.same(await withKeptCookies(alice, new Map(alice.browser.jar('127.0.0.1'))), { keys: 303, create: 401 }, 'her account session opens nothing')
  t.same(await authorizeAnotherClient(gw, alice.browser, 'alice'), ['login', 'consent'], 'her browser is asked for the password again')
  t.equal((await bob.browser.request(`${gw.baseUrl}/account/keys`)).status, 200, 'bob keeps his session')
  t.same(await authorizeAnotherClient(gw, bob.browser, 'bob', 'mcp'), ['consent'], 'and his sign-in')
})

t.test('a blocked user\'s account session opens nothing, and once unblocked their browser is asked for the password again', async (t) => {
  const gw = await gateway(t)
  const alice = await signInToAccount(gw.baseUrl, 'alice', PASSWORD)
  const admin = async (action: string): Promise<number> => (await fetch(`${gw.baseUrl}/admin/api/v1/users/alice/${action}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status
  t.equal(await admin('block'), 200)
  t.same(await withKeptCookies(alice, new Map(alice.browser.jar('127.0.0.1'))), { keys: 303, create: 401 }, 'no page, no new key while blocked')
  t.equal(await admin('unblock'), 200)
  t.same(await authorizeAnotherClient(gw, alice.browser, 'alice', 'mcp'), ['login', 'consent'], 'unblocked, her browser signs in again')
})
