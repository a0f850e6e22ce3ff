// The sign-in and consent pages in a real browser: Debian's Chromium driven by playwright-core.
// Chromium is installed by .ci/run (apt-get install chromium); on a machine without it and without
// CI set, the test says so and stops, rather than pretending.
import t from 'tap'
import { chromium, type Browser } from 'playwright-core'
import { hashPassword } from '../../src/auth-server/password.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { TestOAuthClient, REDIRECT_URL } from '../oauth-helpers.js'
import { chromiumPath, startGateway, startUpstream } from '../helpers.js'

const CHROMIUM = chromiumPath(t)
const PASSWORD = 'correct horse battery staple'

if (CHROMIUM !== undefined) {
  let browser: Browser | undefined
  t.before(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // As root in a sandbox: no user namespace sandbox; and no network beyond 127.0.0.1 here.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    })
  })
  t.teardown(() => browser?.close())

  t.test('sign in with a wrong password, then the right one; the consent page; back to the client with a code', async (t) => {
    const upstream = await startUpstream(t)
    const gw = await startGateway(t, {
      auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
      servers: [{ name: 'github', transport: 'http', url: upstream.url, scopes: ['repo:read'] }],
    })
    // The MCP SDK client discovers, registers and produces the authorization URL a user would open.
    const oauth = new TestOAuthClient({ name: 'Browser Test Client' })
    await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('github')), { authProvider: oauth })).catch(() => {})
    if (oauth.authorizationUrl === undefined || browser === undefined) throw new Error('no authorization URL')

    const context = await browser.newContext()
    t.teardown(() => context.close())
    const page = await context.newPage()
    let callback: URL | undefined
    // The client's loopback redirect: caught here instead of a listening client.
    await page.route(`${REDIRECT_URL}**`, async (route) => {
      callback = new URL(route.request().url())
      await route.fulfill({ status: 200, contentType: 'text/html', body: '<p>Signed in. You can close this window.</p>' })
    })

    await page.goto(oauth.authorizationUrl.href)
    t.equal(await page.title(), 'Sign in · Portcullis')
    t.equal(await page.locator('h1').innerText(), 'Sign in')
    t.match(await page.locator('main').innerText(), /Browser Test Client wants to use MCP servers/)
    t.equal(await page.locator('html').getAttribute('lang'), 'en')
    t.equal(await page.getByLabel('Username').getAttribute('autocomplete'), 'username', 'fields are labelled and autocompletable')

    await page.getByLabel('Username').fill('alice')
    await page.getByLabel('Password').fill('not the password')
    await page.getByRole('button', { name: 'Sign in' }).click()
    t.equal(await page.getByRole('alert').innerText(), 'Incorrect username or password.')
    t.equal(await page.getByLabel('Username').inputValue(), 'alice', 'the username is kept')
    t.equal(await page.getByLabel('Password').getAttribute('aria-describedby'), 'error', 'the error is tied to the fields for screen readers')

    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { name: 'Allow access?' }).waitFor()
    const consent = await page.locator('main').innerText()
    t.match(consent, /Browser Test Client wants to act on your behalf, alice/)
    t.match(consent, /sent back to http:\/\/127\.0\.0\.1:9\b/)
    t.match(consent, /github/)
    t.match(consent, /repo:read/)
    t.match(consent, /Client ID: /)

    await page.getByRole('button', { name: 'Allow' }).click()
    await page.waitForURL(`${REDIRECT_URL}**`)
    t.ok(callback?.searchParams.get('code'), 'redirected back to the client with a code')
    t.equal(callback?.searchParams.get('state'), oauth.stateValue)
    t.equal(callback?.searchParams.get('iss'), gw.baseUrl)
  })

  t.test('the pages forbid framing and scripts, and render without any external asset', async (t) => {
    const gw = await startGateway(t, {
      auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
      servers: [{ name: 'one', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
    })
    const oauth = new TestOAuthClient()
    await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('one')), { authProvider: oauth })).catch(() => {})
    if (oauth.authorizationUrl === undefined || browser === undefined) throw new Error('no authorization URL')
    const context = await browser.newContext()
    t.teardown(() => context.close())
    const page = await context.newPage()
    const outside: string[] = []
    page.on('request', (request) => { if (!request.url().startsWith(gw.baseUrl)) outside.push(request.url()) })
    const violations: string[] = []
    page.on('console', (message) => { if (/Content Security Policy/i.test(message.text())) violations.push(message.text()) })
    // goto follows the redirects; its response is the sign-in page's.
    const response = await page.goto(oauth.authorizationUrl.href)
    const pageHeaders = response?.headers() ?? {}
    t.equal(pageHeaders['content-type'], 'text/html; charset=utf-8')
    t.equal(pageHeaders['x-frame-options'], 'DENY')
    t.equal(pageHeaders['cache-control'], 'no-store')
    const csp = pageHeaders['content-security-policy'] ?? ''
    t.match(csp, /default-src 'none'/)
    t.match(csp, /frame-ancestors 'none'/)
    t.same(outside, [], 'no request left the gateway')
    t.same(violations, [], 'the inline style is allowed by its hash; nothing else ran')
    // Runs in the page: the DOM's getComputedStyle (this file is typed for Node).
    const color = await page.locator('button.primary').evaluate((el) => (globalThis as unknown as { getComputedStyle: (e: unknown) => { backgroundColor: string } }).getComputedStyle(el).backgroundColor)
    t.equal(color, 'rgb(31, 95, 191)', 'the stylesheet applied (CSP hash matches)')
  })
}
