// Linking an account at an OAuth-protected upstream in a real browser (Debian's Chromium,
// playwright-core): the link from the error, the gateway's sign-in, the upstream's sign-in and
// consent (a second Portcullis on localhost, the gateway on 127.0.0.1: two sites), the linked
// accounts page, and unlink. Without Chromium (and without CI) the test says so and stops, as
// account-browser.test.ts does.
import t from 'tap'
import { chromium } from 'playwright-core'
import { hashPassword } from '../../src/auth-server/password.js'
import { chromiumPath, freePort, INIT_BODY, postJson, startGateway, startUpstream } from '../helpers.js'
import { signInForTokens } from '../oauth-helpers.js'

const CHROMIUM = chromiumPath(t)
const PASSWORD = 'correct horse battery staple'

if (CHROMIUM !== undefined) {
  t.test('open /connect/<server>, sign in at the gateway and the upstream, consent, see the link, unlink', async (t) => {
    const users = [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }]
    const fixture = await startUpstream(t, { name: 'fx' })
    const port = await freePort()
    const upstreamBase = `http://localhost:${port}`
    await startGateway(t, { publicUrl: upstreamBase, listen: { host: '127.0.0.1', port }, auth: { users }, servers: [{ name: 'fx', transport: 'http', url: fixture.url }] })
    const gw = await startGateway(t, {
      auth: { users },
      servers: [
        { name: 'linear', transport: 'http', url: `${upstreamBase}/fx/mcp`, upstreamAuth: { type: 'oauth' } },
        { name: 'plain', transport: 'http', url: fixture.url },
      ],
    })
    const tokens = await signInForTokens(t, gw.mcpUrl('plain'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
    const linkError = await postJson(gw.mcpUrl('linear'), INIT_BODY, { authorization: `Bearer ${tokens.accessToken}` })
    // Alice's token is for "plain": the gateway refuses it for "linear" before any link question.
    t.equal(linkError.status, 401)
    const aliceLinear = await signInForTokens(t, gw.mcpUrl('linear'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
    const before = await postJson(gw.mcpUrl('linear'), INIT_BODY, { authorization: `Bearer ${aliceLinear.accessToken}` })
    const url = (before.json as { error?: { data?: { url?: string } } }).error?.data?.url ?? ''
    t.equal(url, `${gw.baseUrl}/connect/linear`, 'the error carries the link')

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] })
    t.teardown(() => browser.close())
    const context = await browser.newContext()
    const page = await context.newPage()
    const consoleErrors: string[] = []
    page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()) })

    await page.goto(url)
    t.equal(await page.title(), 'Sign in · Portcullis', 'first the gateway\'s own sign-in')
    t.ok(page.url().startsWith(gw.baseUrl))
    await page.getByLabel('Username').fill('alice')
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()

    await page.waitForSelector('text=Link your account')
    t.match(await page.locator('main').innerText(), /MCP server linear to alice/, 'the gateway asks first, naming the server and the account')
    await page.getByRole('button', { name: 'Link account' }).click()

    await page.waitForURL(`${upstreamBase}/**`)
    t.equal(await page.title(), 'Sign in · Portcullis', 'then the upstream\'s sign-in, on its own site')
    await page.getByLabel('Username').fill('alice')
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForSelector('text=Allow access?')
    t.match(await page.locator('main').innerText(), /Portcullis at 127\.0\.0\.1:\d+ \(linear\)/, 'the upstream names the gateway as the client asking')
    await page.getByRole('button', { name: 'Allow' }).click()

    await page.waitForURL(`${gw.baseUrl}/account/links`)
    t.equal(await page.title(), 'Linked accounts · Portcullis', 'back on the linked accounts page')
    t.match(await page.locator('tbody tr').innerText(), /linear\s+linked \d{4}-/)
    const after = await postJson(gw.mcpUrl('linear'), INIT_BODY, { authorization: `Bearer ${aliceLinear.accessToken}` })
    t.equal(after.status, 200)
    t.match(after.text, /"serverInfo"/, 'her requests now reach the upstream')

    await page.getByRole('button', { name: 'Unlink' }).click()
    await page.waitForURL(`${gw.baseUrl}/account/links`)
    t.match(await page.locator('tbody tr').innerText(), /linear\s+not linked/)
    const unlinked = await postJson(gw.mcpUrl('linear'), INIT_BODY, { authorization: `Bearer ${aliceLinear.accessToken}` })
    t.match(unlinked.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } } })
    t.same(consoleErrors, [], 'no CSP violation or script error on any page')
  })
}
