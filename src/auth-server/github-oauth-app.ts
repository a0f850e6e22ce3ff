/**
 * The gateway as a GitHub OAuth app (GitHub is not an OpenID Connect provider):
 * authorization code with `state` and PKCE S256, the code redeemed at
 * `tokenUrl` (Accept: application/json), then the user read from the REST API
 * at `apiUrl` with that access token: /user (numeric id, login), /user/emails
 * (the verified primary address only), /user/orgs and /user/teams (read:org).
 * Every request goes through the guarded fetch (net/guarded-fetch.ts); the
 * access token is only ever sent to `apiUrl`'s origin.
 *
 * The user becomes claims the shared identity code reads (idp-identity.ts):
 * `sub` = the numeric id (a login can be renamed, the id cannot),
 * `preferred_username` = login, `email` + `email_verified` when the primary
 * address is verified; groups = the orgs (`acme`) and teams (`acme/platform`).
 */
import { randomBytes } from 'node:crypto'
import * as oidc from 'openid-client'
import type { IdentityProviderConfig } from '../config/schema.js'
import type { FetchLike } from '../net/guarded-fetch.js'
import { idpCallbackPath, type IdpSignInResult, type PendingSignIn } from './oidc-relying-party.js'

export const GITHUB_DEFAULT_AUTHORIZATION_URL = 'https://github.com/login/oauth/authorize'
export const GITHUB_DEFAULT_TOKEN_URL = 'https://github.com/login/oauth/access_token'
export const GITHUB_DEFAULT_API_URL = 'https://api.github.com'
/** `auth.identityProviders[].scopes` of a `type: github` provider when unset. */
export const GITHUB_DEFAULT_SCOPES = ['read:user', 'user:email', 'read:org'] as const
/** Items per page of /user/orgs and /user/teams: a team carries its whole organisation, and responses are capped at 64 KiB. */
const PAGE_SIZE = 20
/** 10 pages of 20: a user in more orgs or teams than that is refused rather than given half their groups. */
const MAX_PAGES = 10

/** What GitHub says about the user, read with their access token. */
interface GitHubUser {
  readonly claims: Readonly<Record<string, unknown>>
  /** `org` logins and `org/team-slug`s, lowercased (GitHub logins are case-insensitive). */
  readonly groups: readonly string[]
}

export class GitHubOAuthApp {
  readonly redirectUri: string
  private readonly authorizationUrl: string
  private readonly tokenUrl: string
  private readonly apiUrl: URL

  constructor (readonly idp: IdentityProviderConfig, publicUrl: string, private readonly fetch: FetchLike) {
    this.redirectUri = new URL(idpCallbackPath(idp.name), publicUrl).href
    this.authorizationUrl = idp.authorizationUrl ?? GITHUB_DEFAULT_AUTHORIZATION_URL
    this.tokenUrl = idp.tokenUrl ?? GITHUB_DEFAULT_TOKEN_URL
    // GitHub Enterprise Server's API lives under a path (<host>/api/v3): keep it when joining.
    this.apiUrl = new URL((idp.apiUrl ?? GITHUB_DEFAULT_API_URL).replace(/\/*$/, '/'))
  }

  /** Where to send the browser, and what to remember until it comes back. */
  async begin (uid: string): Promise<{ url: URL, pending: PendingSignIn }> {
    const pending: PendingSignIn = { uid, provider: this.idp.name, state: randomBytes(32).toString('base64url'), codeVerifier: oidc.randomPKCECodeVerifier() }
    const url = new URL(this.authorizationUrl)
    url.searchParams.set('client_id', this.idp.clientId)
    url.searchParams.set('redirect_uri', this.redirectUri)
    url.searchParams.set('scope', (this.idp.scopes ?? GITHUB_DEFAULT_SCOPES).join(' '))
    url.searchParams.set('state', pending.state)
    url.searchParams.set('code_challenge', await oidc.calculatePKCECodeChallenge(pending.codeVerifier))
    url.searchParams.set('code_challenge_method', 'S256')
    return { url, pending }
  }

  /** Redeems the code of `callbackUrl` and reads the user; the access token is returned for revalidation. */
  async complete (callbackUrl: URL, pending: PendingSignIn): Promise<IdpSignInResult> {
    // The caller found `pending` by this state; checked again so this class is safe on its own.
    if (callbackUrl.searchParams.get('state') !== pending.state) throw new GitHubError('the state of GitHub\'s answer is not this sign-in\'s')
    const code = callbackUrl.searchParams.get('code')
    if (code === null || code === '') throw new GitHubError('GitHub\'s answer carries no code')
    const accessToken = await this.redeem(code, pending.codeVerifier)
    const user = await this.readUser(accessToken)
    return { claims: user.claims, groups: user.groups, accessToken }
  }

  /**
   * Revalidation: the user as GitHub sees them now, read with the access token kept at sign-in
   * (GitHub's OAuth app tokens do not expire and come without a refresh token), as claims and
   * groups like a sign-in's, so revalidation maps and admits them the same way. Throws a GitHubError; see
   * `isGitHubRefusal` for which ones mean "no".
   */
  async refresh (accessToken: string, subject: string): Promise<IdpSignInResult> {
    const user = await this.readUser(accessToken, subject)
    return { claims: user.claims, groups: user.groups }
  }

  /** The user behind an access token, as now; with `subject`, a token that names anyone else is refused (as a 401). */
  private async readUser (accessToken: string, subject?: string): Promise<GitHubUser> {
    const profile = await this.api(accessToken, 'user')
    if (profile === null || typeof profile !== 'object' || !Number.isSafeInteger((profile as { id?: unknown }).id) || typeof (profile as { login?: unknown }).login !== 'string') {
      throw new GitHubError('GitHub /user did not name a user (id, login)')
    }
    const { id, login } = profile as { id: number, login: string }
    if (subject !== undefined && String(id) !== subject) throw new GitHubError('the kept GitHub token now belongs to another user', 401)
    const emails = await this.api(accessToken, 'user/emails')
    const primary = Array.isArray(emails) ? (emails as Array<{ email?: unknown, primary?: unknown, verified?: unknown }>).find((e) => e.primary === true) : undefined
    // Only a verified primary address names the user: an unverified one could be anyone's.
    const email = primary?.verified === true && typeof primary.email === 'string' ? primary.email : undefined
    const orgs = (await this.pages(accessToken, 'user/orgs')).map((o) => stringAt(o, 'login'))
    const teams = (await this.pages(accessToken, 'user/teams')).map((team) => `${stringAt((team as { organization?: unknown }).organization, 'login')}/${stringAt(team, 'slug')}`)
    return {
      claims: { sub: String(id), preferred_username: login, ...(email === undefined ? {} : { email, email_verified: true }) },
      groups: [...new Set([...orgs, ...teams].map((g) => g.toLowerCase()))],
    }
  }

  /** The token endpoint answers 200 with `error` when the code is bad: both are checked. */
  private async redeem (code: string, codeVerifier: string): Promise<string> {
    const body = new URLSearchParams({ client_id: this.idp.clientId, client_secret: this.idp.clientSecret ?? '', code, redirect_uri: this.redirectUri, code_verifier: codeVerifier })
    const response = await this.fetch(this.tokenUrl, { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded', 'user-agent': USER_AGENT }, body })
    const json = await response.json().catch(() => undefined) as { access_token?: unknown, error?: unknown, token_type?: unknown } | undefined
    if (json?.error !== undefined) throw new GitHubError(`GitHub refused the code: ${String(json.error).slice(0, 64)}`)
    if (!response.ok || typeof json?.access_token !== 'string' || json.access_token === '') throw new GitHubError(`GitHub's token endpoint answered ${response.status} without an access token`)
    if (typeof json.token_type === 'string' && json.token_type.toLowerCase() !== 'bearer') throw new GitHubError(`GitHub issued a ${json.token_type.slice(0, 32)} token, not a bearer token`)
    return json.access_token
  }

  /** A list endpoint, page by page (Link: rel="next"), never following a link off the API's origin. */
  private async pages (accessToken: string, path: string): Promise<unknown[]> {
    const items: unknown[] = []
    let url: URL | undefined = this.endpoint(path)
    url.searchParams.set('per_page', String(PAGE_SIZE))
    for (let page = 0; url !== undefined; page++) {
      if (page >= MAX_PAGES) throw new GitHubError(`GitHub /${path} has more than ${MAX_PAGES * PAGE_SIZE} entries`)
      const response = await this.get(accessToken, url)
      const json: unknown = await response.json()
      if (!Array.isArray(json)) throw new GitHubError(`GitHub /${path} did not answer a list`)
      items.push(...json)
      url = nextLink(response.headers.get('link'), url)
      if (url !== undefined && url.origin !== this.apiUrl.origin) throw new GitHubError(`GitHub /${path} links to another host`)
    }
    return items
  }

  private async api (accessToken: string, path: string): Promise<unknown> {
    return await (await this.get(accessToken, this.endpoint(path))).json()
  }

  private async get (accessToken: string, url: URL): Promise<Response> {
    const response = await this.fetch(url, { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28', 'user-agent': USER_AGENT } })
    if (!response.ok) {
      await response.body?.cancel()
      throw new GitHubError(`GitHub ${url.pathname} answered ${response.status}`, response.status)
    }
    return response
  }

  private endpoint (path: string): URL {
    return new URL(path, this.apiUrl)
  }
}

/** GitHub's API refuses requests without a User-Agent. */
const USER_AGENT = 'portcullis'

/** A GitHub answer the gateway cannot use; `status` is the API's HTTP status (401: the token was revoked). */
export class GitHubError extends Error {
  override readonly name = 'GitHubError'
  constructor (message: string, readonly status?: number) {
    super(message)
  }
}

/**
 * Whether an error of `refresh` is GitHub refusing the user — 401: the token was revoked, the
 * user removed the app's authorization, or the account is gone — rather than GitHub being
 * unreachable or limiting the rate (403, 429, 5xx, network): only a refusal offboards the user.
 */
export function isGitHubRefusal (err: unknown): boolean {
  return err instanceof GitHubError && err.status === 401
}

function stringAt (value: unknown, key: string): string {
  const field = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined
  if (typeof field !== 'string' || field === '') throw new GitHubError(`GitHub sent an entry without ${key}`)
  return field
}

/** The rel="next" URL of an RFC 8288 Link header, resolved against the request's URL. */
function nextLink (header: string | null, base: URL): URL | undefined {
  const next = header?.split(',').map((part) => /<([^>]*)>\s*;\s*rel="?next"?/.exec(part.trim())).find((m) => m !== null)
  return next?.[1] === undefined ? undefined : new URL(next[1], base)
}
