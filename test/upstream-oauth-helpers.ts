// Linking a user's account at an OAuth-protected upstream (servers[].upstreamAuth oauth) through
// the gateway's real pages, and reading the upstream Portcullis's audit: shared by the
// upstream-oauth end-to-end tests (dynamic registration, metadata document, pre-registered client).
import { hashPassword } from '../src/auth-server/password.js'
import { HeadlessBrowser } from './oauth-helpers.js'
import { INIT_BODY, postJson, type RunningGateway } from './helpers.js'

/** The local users of the upstream-OAuth tests: alice (with an email) and bob, one password. */
export const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
export const USERS = [
  { username: 'alice', passwordHash, email: 'alice@example.com' },
  { username: 'bob', passwordHash },
]

/** A link that ended on a page other than the linked accounts (a refused callback, say). */
export class LinkStopped extends Error {
  constructor (readonly status: number, readonly page: string, at: string) {
    super(`link stopped (${status}) at ${at}: ${page.slice(0, 300)}`)
  }
}

/**
 * `username` opens the link from the error, <publicUrl>/connect/<server>, signed out: the
 * account pages sign them in at the gateway first and come back, then they sign in at the
 * upstream's authorization server and consent, and land on the linked accounts page. On the
 * way they confirm the link on the gateway's page (a POST with its CSRF token).
 */
export async function linkAccount (gw: RunningGateway, server: string, username: string, password: string, via: { base: string, fetch?: typeof fetch } = { base: gw.baseUrl }): Promise<{ browser: HeadlessBrowser, html: string }> {
  const browser = new HeadlessBrowser(via.fetch)
  let next = `${via.base}/connect/${server}`
  let form: Record<string, string> | undefined
  for (let step = 0; step < 10; step++) {
    const res = await browser.request(next, form === undefined ? {} : { method: 'POST', form })
    form = undefined
    if (res.status === 200) {
      const html = await res.text()
      const confirm = /<form method="post" action="([^"]+\/connect)"><input type="hidden" name="csrf" value="([^"]+)">/.exec(html)
      if (confirm === null) return { browser, html }
      next = new URL(confirm[1] ?? '', next).href
      form = { csrf: confirm[2] ?? '' }
      continue
    }
    const location = res.headers.get('location')
    if (location === null) throw new LinkStopped(res.status, (await res.text()).replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' '), next)
    await res.arrayBuffer()
    next = new URL(location, next).href
    // An authorization request (the gateway's for the account pages, then the upstream's): login
    // (and consent at the upstream), until it sends the browser back.
    if (new URL(next).searchParams.has('redirect_uri')) next = (await browser.authorize(next, { username, password })).href
  }
  throw new Error('too many steps')
}

export interface RpcError { code: number, message: string, data: Record<string, unknown> }

/** The JSON-RPC error of a raw POST to an MCP URL with the user's gateway token. */
export async function rpcErrorOf (url: string, token: string, body: unknown = INIT_BODY): Promise<{ status: number, error: RpcError | undefined }> {
  const res = await postJson(url, body, { authorization: `Bearer ${token}` })
  return { status: res.status, error: (res.json as { error?: RpcError } | undefined)?.error }
}

/** Who the upstream Portcullis's own audit says sent each request of `method`. */
export function auditedUsers (upstream: RunningGateway, method: string): unknown[] {
  return upstream.audit.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.method === method).map((r) => (r.user as { username?: string } | null)?.username)
}
