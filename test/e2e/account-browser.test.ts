// The /account/keys page in a real browser (Debian's Chromium, playwright-core): sign in through the
// gateway's own OAuth flow, create a key, see it once, use it, revoke it, sign out. Without Chromium
// (and without CI) the test says so and stops, as login-browser.test.ts does.
import t from 'tap'
import { chromium } from 'playwright-core'
import { hashPassword } from '../../src/auth-server/password.js'
import { chromiumPath, INIT_BODY, postJson, startGateway, startUpstream } from '../helpers.js'

const CHROMIUM = chromiumPath(t)
const PASSWORD = 'correct horse battery staple'

if (CHROMIUM !== undefined) {
  t.test('sign in on /account/keys, create a key shown once, use it, revoke it, sign out', async (t) => {
    let clock = Date.now()
    const upstream = await startUpstream(t)
    const gw = await startGateway(t, {
      auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
      servers: [{ name: 'a', transport: 'http', url: upstream.url }, { name: 'b', transport: 'http', url: upstream.url }],
    }, {}, { now: () => clock })
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] })
    t.teardown(() => browser.close())
    const context = await browser.newContext()
    const page = await context.newPage()
    const consoleErrors: string[] = []
    page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()) })

    await page.goto(`${gw.baseUrl}/account/keys`)
    t.equal(await page.title(), 'Sign in · Portcullis', 'sent to the gateway\'s sign-in page')
    t.match(await page.locator('main').innerText(), /your Portcullis account wants to use MCP servers/)
    await page.getByLabel('Username').fill('alice')
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(`${gw.baseUrl}/account/keys`)
    t.equal(await page.title(), 'API keys · Portcullis', 'back on the keys page, no consent screen')
    t.match(await page.locator('main').innerText(), /Signed in as alice/)

    const cookie = (await context.cookies()).find((c) => c.name === 'portcullis_account')
    t.match(cookie, { httpOnly: true, sameSite: 'Lax', path: '/account' }, 'the session cookie: HttpOnly, SameSite=Lax, /account only')

    await page.getByLabel('Name').fill('laptop agent')
    await page.getByLabel('a', { exact: true }).check()
    await page.getByRole('button', { name: 'Create key' }).click()
    const secret = await page.locator('#secret').innerText()
    t.match(secret, /^pcs_[0-9A-Za-z]{43}$/, 'the new key, shown once')
    t.equal((await postJson(gw.mcpUrl('a'), INIT_BODY, { authorization: `Bearer ${secret}` })).status, 200, 'and it works')
    t.equal((await postJson(gw.mcpUrl('b'), INIT_BODY, { authorization: `Bearer ${secret}` })).status, 403, 'for server a only')

    await page.goto(`${gw.baseUrl}/account/keys`)
    t.equal(await page.locator('#secret').count(), 0, 'never shown again')
    t.equal(await page.locator('tbody tr').count(), 1)
    t.match(await page.locator('tbody tr').innerText(), /laptop agent/)
    await page.getByRole('button', { name: 'Revoke' }).click()
    await page.waitForURL(`${gw.baseUrl}/account/keys`)
    t.match(await page.locator('main').innerText(), /You have no API keys/, 'revoked from the page')
    clock += 5_000
    t.equal((await postJson(gw.mcpUrl('a'), INIT_BODY, { authorization: `Bearer ${secret}` })).status, 401, 'refused after the cache bound')

    await page.getByRole('button', { name: 'Sign out' }).click()
    t.match(await page.locator('main').innerText(), /You have signed out/)
    await page.goto(`${gw.baseUrl}/account/keys`)
    t.equal(await page.title(), 'Sign in · Portcullis', 'signed out: the password is asked again (prompt=login)')
    t.same(consoleErrors, [], 'no CSP violation or script error on any page')
  })
}
