/**
 * The /account pages driven headlessly: the real sign-in (the gateway as an OAuth
 * client of its own authorization server, the real login form) with the cookie-jar
 * browser from oauth-helpers.ts, then the keys page's real forms.
 */
import { HeadlessBrowser } from './oauth-helpers.js'

export interface AccountPage {
  readonly browser: HeadlessBrowser
  readonly baseUrl: string
  /** The last keys page's HTML. */
  html: string
  readonly csrf: () => string
}

/** Follows /account/keys through sign-in until the keys page answers 200. */
export async function signInToAccount (baseUrl: string, username: string, password: string, browser = new HeadlessBrowser()): Promise<AccountPage> {
  let next = `${baseUrl}/account/keys`
  let form: Record<string, string> | undefined
  for (let step = 0; step < 20; step++) {
    const res = await browser.request(next, form === undefined ? {} : { method: 'POST', form })
    form = undefined
    if (res.status >= 300 && res.status < 400) {
      next = new URL(res.headers.get('location') ?? '', next).href
      continue
    }
    const html = await res.text()
    const loginAction = /action="([^"]*\/login)"/.exec(html)?.[1]
    const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1]
    if (loginAction !== undefined && csrf !== undefined && new URL(next).pathname.startsWith('/interaction/')) {
      if (res.status !== 200) throw new Error(`sign-in refused (${res.status})`)
      next = new URL(loginAction, baseUrl).href
      form = { csrf, username, password }
      continue
    }
    if (res.status === 200 && new URL(next).pathname === '/account/keys') return accountPage(browser, baseUrl, html)
    throw new Error(`unexpected page (${res.status}) at ${next}: ${html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 300)}`)
  }
  throw new Error('too many steps')
}

/**
 * The same for an identity-provider user: the account page sends the browser to the
 * authorization server, which sends it on to the IdP `idp` (its login form), and back.
 */
export async function signInToAccountWithIdp (baseUrl: string, idp: string, username: string, password: string, browser = new HeadlessBrowser()): Promise<AccountPage> {
  let next = `${baseUrl}/account/keys`
  for (let step = 0; step < 20; step++) {
    const res = await browser.request(next)
    if (res.status === 200 && new URL(next).pathname === '/account/keys') return accountPage(browser, baseUrl, await res.text())
    await res.arrayBuffer()
    const location = res.headers.get('location')
    if (location === null) throw new Error(`unexpected page (${res.status}) at ${next}`)
    next = new URL(location, next).href
    // The authorization request: sign-in at the IdP and consent, up to the redirect back to the account pages.
    if (new URL(next).searchParams.has('redirect_uri')) next = (await browser.authorize(next, { username, password, idp })).href
  }
  throw new Error('too many steps')
}

function accountPage (browser: HeadlessBrowser, baseUrl: string, html: string): AccountPage {
  const page: AccountPage = {
    browser,
    baseUrl,
    html,
    csrf: () => /name="csrf" value="([^"]+)"/.exec(page.html)?.[1] ?? '',
  }
  return page
}

/** Posts the create form; returns the status, the new key (shown once) and its id. */
export async function createKeyOnPage (page: AccountPage, fields: { name: string, servers: string[], scopes?: string[], expires?: string, csrf?: string }): Promise<{ status: number, secret: string | undefined, keyId: string | undefined, html: string }> {
  const body = new URLSearchParams({ csrf: fields.csrf ?? page.csrf(), name: fields.name, expires: fields.expires ?? '30d' })
  for (const s of fields.servers) body.append('servers', s)
  for (const s of fields.scopes ?? []) body.append('scopes', s)
  const res = await fetch(`${page.baseUrl}/account/keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: [...page.browser.jar(new URL(page.baseUrl).hostname)].map(([k, v]) => `${k}=${v}`).join('; ') },
    body: body.toString(),
    redirect: 'manual',
  })
  const html = await res.text()
  if (res.status === 200 || res.status === 201 || res.status === 400) page.html = html
  return {
    status: res.status,
    secret: /<code id="secret">(pcs_[0-9A-Za-z]+)<\/code>/.exec(html)?.[1],
    keyId: /id="new-key">[\s\S]*?\(<code>([0-9a-f]+)<\/code>\)/.exec(html)?.[1],
    html,
  }
}

/** Posts a revoke button's form. */
export async function revokeOnPage (page: AccountPage, keyId: string, csrf = page.csrf()): Promise<number> {
  const res = await page.browser.request(`${page.baseUrl}/account/keys/${keyId}/revoke`, { method: 'POST', form: { csrf } })
  await res.arrayBuffer()
  return res.status
}
