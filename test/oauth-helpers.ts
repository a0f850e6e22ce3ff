/**
 * Driving the real OAuth flow headlessly: the official MCP SDK client (its
 * auth() with an in-memory OAuthClientProvider) and a cookie-jar "browser"
 * that follows the gateway's redirects and submits its real login and consent
 * forms. Only the browser is simulated here; test/e2e/login-page-browser.test.ts
 * drives the same pages in a real Chromium.
 */
import { randomBytes } from 'node:crypto'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js'
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js'
import type { ListChangedHandlers } from '@modelcontextprotocol/sdk/types.js'
import type { Teardown } from './helpers.js'

/** Port 9 is below the ephemeral range, so no gateway under test can ever listen there (a gateway on the callback's own port would swallow the redirect). */
export const REDIRECT_URL = 'http://127.0.0.1:9/callback'

export class TestOAuthClient implements OAuthClientProvider {
  info: OAuthClientInformationMixed | undefined
  savedTokens: OAuthTokens | undefined
  verifier = ''
  authorizationUrl: URL | undefined
  readonly stateValue = randomBytes(12).toString('base64url')
  readonly clientMetadataUrl: string | undefined

  /** `authMethod`: client_secret_basic registers a confidential client (the SDK then sends its secret at /oauth/token). */
  constructor (options: { clientMetadataUrl?: string, name?: string, authMethod?: 'none' | 'client_secret_basic' } = {}) {
    this.clientMetadataUrl = options.clientMetadataUrl
    this.metadata = {
      client_name: options.name ?? 'Portcullis test client',
      redirect_uris: [REDIRECT_URL],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: options.authMethod ?? 'none',
    }
  }

  private readonly metadata: OAuthClientMetadata
  get redirectUrl (): string { return REDIRECT_URL }
  get clientMetadata (): OAuthClientMetadata { return this.metadata }
  state (): string { return this.stateValue }
  clientInformation (): OAuthClientInformationMixed | undefined { return this.info }
  saveClientInformation (info: OAuthClientInformationMixed): void { this.info = info }
  tokens (): OAuthTokens | undefined { return this.savedTokens }
  saveTokens (tokens: OAuthTokens): void { this.savedTokens = tokens }
  redirectToAuthorization (url: URL): void { this.authorizationUrl = url }
  saveCodeVerifier (verifier: string): void { this.verifier = verifier }
  codeVerifier (): string { return this.verifier }
}

/** login / consent: the gateway's forms; provider: its "Sign in with …" button; idp-login: the test IdP's form (test/idp.ts). */
export type PageKind = 'login' | 'consent' | 'provider' | 'idp-login' | 'other'

export interface AuthorizeOptions {
  readonly username: string
  readonly password: string
  readonly consent?: 'allow' | 'deny'
  /** Sign in through this identity provider (its button, then its login form) instead of the local form. */
  readonly idp?: string
}

/** A cookie jar (per host, as a browser keeps them) and redirect follower that fills in the gateway's forms. */
export class HeadlessBrowser {
  readonly jars = new Map<string, Map<string, string>>()
  /** The pages seen during the last authorize() call, in order. */
  pages: PageKind[] = []
  lastStatus = 0
  lastHtml = ''
  /** Every URL requested, in order (an IdP's callback URL among them). */
  readonly visited: string[] = []
  /** Every Set-Cookie header received, as sent (attributes included). */
  readonly setCookies: string[] = []

  /** fetch: another one to trust a test certificate authority (the nginx TLS test). */
  constructor (private readonly fetchFn: typeof fetch = fetch) {}

  /** The cookies kept for a host (127.0.0.1 and localhost are two sites, as in a browser). */
  jar (host: string): Map<string, string> {
    let jar = this.jars.get(host)
    if (jar === undefined) {
      jar = new Map()
      this.jars.set(host, jar)
    }
    return jar
  }

  async request (url: string, init: { method?: string, form?: Record<string, string> } = {}): Promise<Response> {
    const jar = this.jar(new URL(url).hostname)
    this.visited.push(url)
    const headers: Record<string, string> = { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') }
    let body: string | undefined
    if (init.form !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded'
      body = new URLSearchParams(init.form).toString()
    }
    const res = await this.fetchFn(url, { method: init.method ?? 'GET', headers, redirect: 'manual', ...(body === undefined ? {} : { body }) })
    for (const cookie of res.headers.getSetCookie()) {
      this.setCookies.push(cookie)
      const [pair = '', ...attributes] = cookie.split(';')
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1)
      const isExpired = attributes.some((a) => /expires=Thu, 01 Jan 1970/i.test(a)) || value === ''
      if (isExpired) jar.delete(name)
      else jar.set(name, value)
    }
    return res
  }

  /**
   * Follows an authorization URL through sign-in and consent until the gateway
   * redirects away to the client; returns that redirect (code, state, iss).
   */
  async authorize (authorizationUrl: URL | string, options: AuthorizeOptions): Promise<URL> {
    this.pages = []
    const origin = new URL(authorizationUrl).origin
    // Redirects are followed (to an identity provider and back) until one goes to the client.
    const redirectUri = new URL(authorizationUrl).searchParams.get('redirect_uri')
    const isToClient = (location: URL): boolean => redirectUri !== null ? location.href.startsWith(redirectUri) : location.origin !== origin
    let next = String(authorizationUrl)
    let form: Record<string, string> | undefined
    for (let step = 0; step < 20; step++) {
      const res = await this.request(next, form === undefined ? {} : { method: 'POST', form })
      form = undefined
      this.lastStatus = res.status
      if (res.status >= 300 && res.status < 400) {
        const location = new URL(res.headers.get('location') ?? '', next)
        if (isToClient(location)) return location
        next = location.href
        continue
      }
      const html = await res.text()
      this.lastHtml = html
      const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1]
      const loginAction = /action="([^"]*\/login)"/.exec(html)?.[1]
      const confirmAction = /action="([^"]*\/confirm)"/.exec(html)?.[1]
      const abortAction = /action="([^"]*\/abort)"/.exec(html)?.[1]
      const providerAction = options.idp === undefined ? undefined : new RegExp(`action="([^"]*/idp/${options.idp})"`).exec(html)?.[1]
      const idpLoginAction = /action="([^"]*)" data-idp-login/.exec(html)?.[1]
      if (idpLoginAction !== undefined) {
        if (this.pages.includes('idp-login')) throw new Error(`identity provider sign-in refused (${res.status})`)
        this.pages.push('idp-login')
        next = new URL(idpLoginAction, next).href
        form = { username: options.username, password: options.password }
      } else if (providerAction !== undefined && csrf !== undefined) {
        this.pages.push('provider')
        next = new URL(providerAction, origin).href
        form = { csrf }
      } else if (loginAction !== undefined && csrf !== undefined) {
        if (this.pages.includes('login') && res.status !== 200) throw new Error(`sign-in refused (${res.status}): ${/role="alert"[^>]*>([^<]*)/.exec(html)?.[1] ?? ''}`)
        this.pages.push('login')
        next = new URL(loginAction, origin).href
        form = { csrf, username: options.username, password: options.password }
      } else if (confirmAction !== undefined && abortAction !== undefined && csrf !== undefined) {
        this.pages.push('consent')
        next = new URL(options.consent === 'deny' ? abortAction : confirmAction, origin).href
        form = { csrf }
      } else {
        this.pages.push('other')
        throw new Error(`unexpected page (${res.status}): ${html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 300)}`)
      }
    }
    throw new Error('too many steps')
  }
}

export interface AuthorizedClient {
  readonly client: Client
  readonly transport: StreamableHTTPClientTransport
  readonly oauth: TestOAuthClient
  readonly browser: HeadlessBrowser
  /** The redirect the gateway sent the browser back with (code, state, iss). */
  readonly callback: URL
}

/**
 * The MCP client's first connect gets a 401; auth() discovers, registers
 * (DCR or a metadata document) and sends the browser to sign in; the code is
 * exchanged (state and iss checked here: the SDK checks neither) and the
 * client connects again, authorized.
 */
export async function connectWithOAuth (t: Teardown, url: string, options: AuthorizeOptions & { oauth?: TestOAuthClient, browser?: HeadlessBrowser, issuer: string, fetch?: typeof fetch, listChanged?: ListChangedHandlers }): Promise<AuthorizedClient> {
  const oauth = options.oauth ?? new TestOAuthClient()
  const browser = options.browser ?? new HeadlessBrowser(options.fetch)
  const transportOptions = { authProvider: oauth, ...(options.fetch === undefined ? {} : { fetch: options.fetch }) }
  const first = new StreamableHTTPClientTransport(new URL(url), transportOptions)
  const probe = new Client({ name: 'portcullis-oauth-test', version: '1.0.0' })
  let callback: URL | undefined
  try {
    await probe.connect(first)
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err
  }
  if (oauth.authorizationUrl !== undefined) {
    callback = await browser.authorize(oauth.authorizationUrl, options)
    if (callback.searchParams.get('state') !== oauth.stateValue) throw new Error(`state mismatch: ${callback.searchParams.get('state') ?? '(none)'}`)
    if (callback.searchParams.get('iss') !== options.issuer) throw new Error(`iss mismatch (RFC 9207): ${callback.searchParams.get('iss') ?? '(none)'}`)
    const code = callback.searchParams.get('code')
    if (code === null) throw new Error(`no code: ${callback.search}`)
    await first.finishAuth(code)
  }
  await probe.close().catch(() => {})
  const transport = new StreamableHTTPClientTransport(new URL(url), transportOptions)
  const client = new Client({ name: 'portcullis-oauth-test', version: '1.0.0' }, options.listChanged === undefined ? {} : { listChanged: options.listChanged })
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport, oauth, browser, callback: callback ?? new URL('about:blank') }
}

/** A user's gateway tokens for one server, kept current by refreshTokens. */
export interface SignedInTokens { readonly oauth: TestOAuthClient, accessToken: string, refreshToken: string }

/** A user signed in (IdP login + consent) for one server; the SDK's connect may fail on a 2026-only stdio server, the tokens are what counts. */
export async function signInForTokens (t: Teardown, url: string, options: AuthorizeOptions & { issuer: string }): Promise<SignedInTokens> {
  const oauth = new TestOAuthClient()
  await connectWithOAuth(t, url, { ...options, oauth }).catch(() => undefined)
  const tokens = oauth.savedTokens
  if (tokens?.refresh_token === undefined) throw new Error(`${options.username}: no tokens`)
  return { oauth, accessToken: tokens.access_token, refreshToken: tokens.refresh_token }
}

/** The client's refresh_token grant at the gateway (`resource`: the server's MCP URL): the new tokens are kept on success. */
export async function refreshTokens (issuer: string, user: SignedInTokens, resource: string, path = '/oauth/token'): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${issuer}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: user.refreshToken, client_id: String(user.oauth.info?.client_id), resource }).toString(),
  })
  const body = await res.json() as Record<string, unknown>
  if (res.status === 200) {
    user.accessToken = String(body.access_token)
    user.refreshToken = String(body.refresh_token)
  }
  return { status: res.status, body }
}

/** RFC 7636 appendix B's pair. */
const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'
const CHALLENGE = 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'

/**
 * An access token for the admin API (resource `<issuer>/admin`): a registered client, the browser
 * through sign-in and consent, the code exchanged. The token endpoint's answer, or the error sent to the client.
 */
export async function adminToken (issuer: string, username: string, password: string, scope = 'portcullis:admin'): Promise<{ accessToken?: string, refreshToken?: string, clientId: string, error?: string }> {
  const registered = await fetch(`${issuer}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_name: 'admin script', redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  const clientId = String((await registered.json() as Record<string, unknown>).client_id)
  const url = new URL(`${issuer}/oauth/authorize`)
  url.search = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, code_challenge: CHALLENGE, code_challenge_method: 'S256', scope, resource: `${issuer}/admin` }).toString()
  const callback = await new HeadlessBrowser().authorize(url, { username, password })
  const code = callback.searchParams.get('code')
  if (code === null) return { clientId, error: callback.searchParams.get('error') ?? 'no code' }
  const exchanged = await fetch(`${issuer}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', code, client_id: clientId, redirect_uri: REDIRECT_URL, code_verifier: VERIFIER }).toString() })
  const body = await exchanged.json() as Record<string, unknown>
  if (exchanged.status !== 200) return { clientId, error: String(body.error) }
  return { clientId, accessToken: String(body.access_token), ...(typeof body.refresh_token === 'string' ? { refreshToken: body.refresh_token } : {}) }
}
