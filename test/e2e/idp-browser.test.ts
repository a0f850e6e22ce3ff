// Sign-in through an identity provider in a real browser (Debian's Chromium, playwright-core): the
// gateway's "Sign in with …" button, the IdP's own login page on another site (localhost vs
// 127.0.0.1, so each keeps its own cookies), back through the callback to consent and the client.
import t from 'tap'
import { chromium, type Browser } from 'playwright-core'
import { decodeJwt } from 'jose'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { TestOAuthClient, REDIRECT_URL } from '../oauth-helpers.js'
import { chromiumPath, startUpstream, textOf } from '../helpers.js'
import { idpEntry, startGatewayWithIdp } from '../idp.js'

const CHROMIUM = chromiumPath(t)
const LOCAL_HASH = await hashPassword('a local password 123')

if (CHROMIUM !== undefined) {
  let browser: Browser | undefined
  t.before(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    })
  })
  t.teardown(() => browser?.close())

  t.test('the provider button, the IdP login page, consent, and back to the client with a code that works', async (t) => {
    const upstream = await startUpstream(t)
    const { idp, gw } = await startGatewayWithIdp(t, {
      accounts: [{ sub: 'a-100', password: 'alice-at-corp', email: 'alice@example.com', email_verified: true, preferred_username: 'alice', groups: ['eng'] }],
    }, (idp) => ({
      auth: {
        users: [{ username: 'local-admin', passwordHash: LOCAL_HASH }],
        identityProviders: [idpEntry(idp)],
      },
      servers: [{ name: 'gh', transport: 'http', url: upstream.url, access: { groups: ['eng'] } }],
    }))
    const oauth = new TestOAuthClient({ name: 'Browser Test Client' })
    await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('gh')), { authProvider: oauth })).catch(() => {})
    if (oauth.authorizationUrl === undefined || browser === undefined) throw new Error('no authorization URL')

    const context = await browser.newContext()
    t.teardown(() => context.close())
    const page = await context.newPage()
    const violations: string[] = []
    page.on('console', (message) => { if (/Content Security Policy/i.test(message.text())) violations.push(message.text()) })
    let callback: URL | undefined
    await page.route(`${REDIRECT_URL}**`, async (route) => {
      callback = new URL(route.request().url())
      await route.fulfill({ status: 200, contentType: 'text/html', body: '<p>Signed in.</p>' })
    })

    await page.goto(oauth.authorizationUrl.href)
    t.equal(await page.title(), 'Sign in · Portcullis')
    t.ok(await page.getByLabel('Password').isVisible(), 'the local form is there (auth.users is not empty)')
    await page.getByRole('button', { name: 'Sign in with Corp SSO' }).click()

    await page.waitForURL(`${idp.issuer}/**`)
    t.equal(await page.title(), 'Corp IdP sign-in', 'the browser is at the IdP')
    await page.getByLabel('IdP username').fill('alice')
    await page.getByLabel('IdP password').fill('alice-at-corp')
    await page.getByRole('button', { name: 'Continue' }).click()

    await page.getByRole('heading', { name: 'Allow access?' }).waitFor()
    t.match(await page.locator('main').innerText(), /act on your behalf, alice \(corp\)/)
    const gatewayCookies = await context.cookies(gw.baseUrl)
    const idpCookies = await context.cookies(idp.issuer)
    t.ok(gatewayCookies.length > 0 && idpCookies.length > 0, 'each site kept its own cookies')
    await page.getByRole('button', { name: 'Allow' }).click()
    await page.waitForURL(`${REDIRECT_URL}**`)
    t.equal(callback?.searchParams.get('state'), oauth.stateValue)
    t.equal(callback?.searchParams.get('iss'), gw.baseUrl)
    t.same(violations, [], 'no CSP violation on the gateway pages')

    // The SDK client redeems the code: a token for corp:a-100, and tools/call works.
    const transport = new StreamableHTTPClientTransport(new URL(gw.mcpUrl('gh')), { authProvider: oauth })
    await transport.finishAuth(callback?.searchParams.get('code') ?? '')
    t.equal(decodeJwt(oauth.savedTokens?.access_token ?? '').sub, 'corp:a-100')
    const client = new Client({ name: 'x', version: '1' })
    await client.connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('gh')), { authProvider: oauth }))
    t.teardown(() => client.close())
    t.equal(textOf(await client.callTool({ name: 'whoami', arguments: {} })), 'fixture')
    // Closed now, not at teardown: the browser's keep-alive connections would hold the IdP's and the gateway's close.
    await context.close()
  })
}
