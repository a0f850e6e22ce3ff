/**
 * A local stand-in for GitHub, because GitHub itself cannot run here: a small
 * real HTTP server (127.0.0.1, port 0, reached as `localhost` so its site is
 * not the gateway's) serving the three endpoints a `type: github` provider is
 * configured with — authorizationUrl (a login form, then consent is implied),
 * tokenUrl (code + client secret + PKCE S256 verifier -> access token, JSON
 * when asked with Accept: application/json, errors as 200 + `error` like
 * GitHub) and apiUrl (/user, /user/emails, /user/orgs, /user/teams, paginated
 * with Link headers, each needing its scope). It checks what GitHub checks, so
 * a gateway that skipped PKCE, the secret or the redirect URI would fail here.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { escapeHtml } from '../src/auth-server/pages.js'
import { freePort, startGateway, type RunningGateway, type Teardown } from './helpers.js'
import type { BuildOptions } from '../src/app.js'

export interface GitHubAccount {
  readonly id: number
  readonly login: string
  readonly password: string
  readonly emails: ReadonlyArray<{ readonly email: string, readonly primary: boolean, readonly verified: boolean }>
  readonly orgs: readonly string[]
  /** `org/team-slug` */
  readonly teams: readonly string[]
}

export interface GitHubStandIn {
  /** http://localhost:<port>: authorizationUrl, tokenUrl and apiUrl of a provider entry, see githubEntry. */
  readonly url: string
  readonly clientId: string
  readonly clientSecret: string
  /** Access tokens issued, newest last. */
  readonly accessTokens: string[]
  /** Every request's method, path and the headers the gateway must send. */
  readonly requests: Array<{ method: string, path: string, accept?: string, userAgent?: string }>
  /** Changes an account from now on (an org or team left, as at GitHub). */
  readonly update: (id: number, changes: Partial<Omit<GitHubAccount, 'id'>>) => void
  /** Revokes every access token of an account: the API answers 401 Bad credentials to them. */
  readonly revokeTokensOf: (id: number) => void
  /** Every API call answers this status (a GitHub outage, 502) until called with undefined. */
  readonly failApi: (status: number | undefined) => void
}

interface PendingAuthorization { readonly accountId?: number, readonly redirectUri: string, readonly state: string, readonly scope: string, readonly challenge: string }

const PAGE_DEFAULT = 30

function loginForm (session: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in to GitHub (stand-in)</title></head><body>
<form method="post" action="/session/${escapeHtml(session)}" data-idp-login>
<label for="login">Username</label><input id="login" name="username"><label for="password">Password</label><input id="password" type="password" name="password">
<button type="submit">Sign in</button></form></body></html>`
}

async function readBody (req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
}

export async function startGitHubStandIn (t: Teardown, options: { accounts: readonly GitHubAccount[], redirectUris: readonly string[] }): Promise<GitHubStandIn> {
  const clientId = 'Iv1.standin0123456789'
  const clientSecret = 'github-standin-secret-0123456789abcdef'
  const sessions = new Map<string, PendingAuthorization>()
  const codes = new Map<string, PendingAuthorization & { accountId: number }>()
  const tokens = new Map<string, { accountId: number, scopes: Set<string> }>()
  const accessTokens: string[] = []
  const requests: GitHubStandIn['requests'] = []
  const accounts = [...options.accounts]
  let apiFailure: number | undefined
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers }).end(JSON.stringify(body))
  }
  let base = ''

  const authorize = (url: URL, res: ServerResponse): void => {
    const q = url.searchParams
    const redirectUri = q.get('redirect_uri') ?? ''
    if (q.get('client_id') !== clientId || !options.redirectUris.includes(redirectUri)) return json(res, 400, { error: 'redirect_uri_mismatch' })
    if (q.get('code_challenge_method') !== 'S256' || (q.get('code_challenge') ?? '') === '') return json(res, 400, { error: 'invalid_request', error_description: 'PKCE S256 expected' })
    const session = randomBytes(12).toString('hex')
    sessions.set(session, { redirectUri, state: q.get('state') ?? '', scope: q.get('scope') ?? '', challenge: q.get('code_challenge') ?? '' })
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginForm(session))
  }

  const signIn = async (session: string, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const form = await readBody(req)
    const pending = sessions.get(session)
    const account = accounts.find((a) => a.login === form.get('username') && a.password === form.get('password'))
    if (pending === undefined || account === undefined) return json(res, 401, { error: 'bad credentials' })
    sessions.delete(session)
    const code = randomBytes(10).toString('hex')
    codes.set(code, { ...pending, accountId: account.id })
    const back = new URL(pending.redirectUri)
    back.searchParams.set('code', code)
    back.searchParams.set('state', pending.state)
    res.writeHead(302, { location: back.href }).end()
  }

  const token = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const form = await readBody(req)
    const code = codes.get(form.get('code') ?? '')
    codes.delete(form.get('code') ?? '')
    const verifier = form.get('code_verifier') ?? ''
    const error = form.get('client_id') !== clientId || form.get('client_secret') !== clientSecret
      ? 'incorrect_client_credentials'
      : code === undefined || code.redirectUri !== form.get('redirect_uri') || createHash('sha256').update(verifier).digest('base64url') !== code.challenge ? 'bad_verification_code' : undefined
    // Like GitHub: 200 with an error field.
    if (error !== undefined || code === undefined) return json(res, 200, { error: error ?? 'bad_verification_code' })
    const accessToken = `gho_${randomBytes(18).toString('base64url')}`
    accessTokens.push(accessToken)
    tokens.set(accessToken, { accountId: code.accountId, scopes: new Set(code.scope.split(/[\s,]+/)) })
    if (!(req.headers.accept ?? '').includes('application/json')) {
      res.writeHead(200, { 'content-type': 'application/x-www-form-urlencoded' }).end(new URLSearchParams({ access_token: accessToken, token_type: 'bearer', scope: code.scope }).toString())
      return
    }
    json(res, 200, { access_token: accessToken, token_type: 'bearer', scope: code.scope })
  }

  const page = (res: ServerResponse, url: URL, items: unknown[]): void => {
    const perPage = Number(url.searchParams.get('per_page') ?? PAGE_DEFAULT)
    const number = Number(url.searchParams.get('page') ?? 1)
    const slice = items.slice((number - 1) * perPage, number * perPage)
    const next = new URL(url.href)
    next.searchParams.set('page', String(number + 1))
    json(res, 200, slice, number * perPage < items.length ? { link: `<${next.href}>; rel="next"` } : {})
  }

  const api = (url: URL, req: IncomingMessage, res: ServerResponse): void => {
    if (apiFailure !== undefined) return json(res, apiFailure, { message: 'Server Error' })
    const grant = tokens.get((req.headers.authorization ?? '').replace(/^Bearer /, ''))
    const account = accounts.find((a) => a.id === grant?.accountId)
    if (grant === undefined || account === undefined) return json(res, 401, { message: 'Bad credentials' })
    const needs = (scope: string): boolean => grant.scopes.has(scope)
    switch (url.pathname.slice('/api/v3'.length)) {
      case '/user':
        // The public profile email may be any address the user typed: the gateway must not use it.
        return json(res, 200, { login: account.login, id: account.id, email: account.emails.find((e) => !e.verified)?.email ?? null })
      case '/user/emails':
        return needs('user:email') ? json(res, 200, account.emails) : json(res, 404, { message: 'Not Found' })
      case '/user/orgs':
        return needs('read:org') ? page(res, url, account.orgs.map((login, i) => ({ login, id: 9000 + i, description: 'x'.repeat(200) }))) : json(res, 403, { message: 'read:org needed' })
      case '/user/teams':
        return needs('read:org')
          ? page(res, url, account.teams.map((t, i) => { const [org, slug] = t.split('/'); return { id: 7000 + i, slug, name: slug, organization: { login: org, id: 9000, description: 'y'.repeat(900) } } }))
          : json(res, 403, { message: 'read:org needed' })
      default:
        return json(res, 404, { message: 'Not Found' })
    }
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', base)
    requests.push({ method: req.method ?? '', path: url.pathname, ...(req.headers.accept === undefined ? {} : { accept: req.headers.accept }), ...(req.headers['user-agent'] === undefined ? {} : { userAgent: req.headers['user-agent'] }) })
    const fail = (err: Error): void => { res.writeHead(500).end(err.message) }
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') return authorize(url, res)
    const session = /^\/session\/([0-9a-f]+)$/.exec(url.pathname)?.[1]
    if (req.method === 'POST' && session !== undefined) { signIn(session, req, res).catch(fail); return }
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') { token(req, res).catch(fail); return }
    if (req.method === 'GET' && url.pathname.startsWith('/api/v3/')) return api(url, req, res)
    json(res, 404, { message: 'Not Found' })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://localhost:${(server.address() as AddressInfo).port}`
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const update = (id: number, changes: Partial<Omit<GitHubAccount, 'id'>>): void => {
    const i = accounts.findIndex((a) => a.id === id)
    const account = accounts[i]
    if (account === undefined) throw new Error(`no GitHub account ${id}`)
    accounts[i] = { ...account, ...changes }
  }
  const revokeTokensOf = (id: number): void => {
    for (const [token, grant] of tokens) if (grant.accountId === id) tokens.delete(token)
  }
  return { url: base, clientId, clientSecret, accessTokens, requests, update, revokeTokensOf, failApi: (status) => { apiFailure = status } }
}

/**
 * A `type: github` provider entry pointing at the stand-in, laid out like GitHub Enterprise
 * Server (<host>/login/oauth/… and <host>/api/v3).
 */
export function githubEntry (gh: GitHubStandIn, entry: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'github', type: 'github', displayName: 'GitHub', clientId: gh.clientId, clientSecret: gh.clientSecret, authorizationUrl: `${gh.url}/login/oauth/authorize`, tokenUrl: `${gh.url}/login/oauth/access_token`, apiUrl: `${gh.url}/api/v3`, ...entry }
}

/** A gateway and the GitHub stand-in: the gateway's port first, so the stand-in knows its callbacks. */
export async function startGatewayWithGitHub (t: Teardown, accounts: readonly GitHubAccount[], gateway: (gh: GitHubStandIn) => Record<string, unknown>, options: Omit<BuildOptions, 'logger'> = {}): Promise<{ gh: GitHubStandIn, gw: RunningGateway }> {
  const port = await freePort()
  const gh = await startGitHubStandIn(t, { accounts, redirectUris: ['github', 'github-strict'].map((name) => `http://127.0.0.1:${port}/oauth/idp/${name}/callback`) })
  const gw = await startGateway(t, { ...gateway(gh), listen: { host: '127.0.0.1', port } }, {}, options)
  return { gh, gw }
}
