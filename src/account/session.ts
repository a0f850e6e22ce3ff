/**
 * The account pages' own sign-in state, in two cookies, both HMAC-signed JWTs
 * (HS256, a key derived from the authorization server's cookie key), HttpOnly,
 * SameSite=Lax, Secure when publicUrl is https, scoped to /account:
 *
 *   portcullis_account         who is signed in (sub), a random session id, 30 min
 *   portcullis_account_login   an OAuth sign-in under way: state, PKCE verifier, nonce, 10 min
 *
 * Other pages that sign in through the account sign-in (the admin page) get a session cookie of
 * their own (a SessionScope: its name, path and purpose), so a cookie never reaches a path it
 * is not for, and one page's session is not the other's.
 *
 * Nothing in them is secret from the user they belong to; the signature is what
 * matters. CSRF: every form carries HMAC(key, session id), so a form posted from
 * another site (which cannot read the page) or for another session is refused;
 * SameSite=Lax already keeps the cookie off cross-site POSTs in current browsers.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { SignJWT, jwtVerify } from 'jose'

export const ACCOUNT_PATH = '/account'
export const SESSION_COOKIE = 'portcullis_account'
export const LOGIN_COOKIE = 'portcullis_account_login'
export const ACCOUNT_SESSION_TTL_MS = 30 * 60_000
const LOGIN_TTL_MS = 10 * 60_000
const ALG = 'HS256'

export interface AccountSession { readonly userId: string, readonly sid: string }
/** A signed-in session's cookie: its name, its Path, and the purpose signed into it. */
export interface SessionScope { readonly cookie: string, readonly path: string, readonly use: string }
export const ACCOUNT_SCOPE: SessionScope = { cookie: SESSION_COOKIE, path: ACCOUNT_PATH, use: 'session' }
/** The one-time notice a page shows after a form (POST/redirect/GET), at most this long. */
const NOTICE_TTL_MS = 60_000
export interface Notice { readonly isError: boolean, readonly text: string }
export interface PendingLogin { readonly state: string, readonly verifier: string, readonly nonce: string, readonly returnTo: string }

export class AccountCookies {
  private readonly key: Uint8Array
  private readonly csrfKey: Buffer

  constructor (cookieKey: string, private readonly isSecure: boolean, private readonly now: () => number) {
    this.key = createHmac('sha256', cookieKey).update('portcullis account session').digest()
    this.csrfKey = createHmac('sha256', cookieKey).update('portcullis account csrf').digest()
  }

  async sessionCookie (userId: string, scope = ACCOUNT_SCOPE): Promise<string> {
    const token = await this.sign({ sid: randomBytes(16).toString('base64url') }, userId, ACCOUNT_SESSION_TTL_MS, scope.use)
    return this.cookie(scope.cookie, token, ACCOUNT_SESSION_TTL_MS, scope.path)
  }

  /** A notice for the next page of `scope` (signed: a sibling site tossing a cookie cannot forge one). */
  async noticeCookie (notice: Notice, scope: SessionScope): Promise<string> {
    const token = await this.sign({ text: notice.text, kind: notice.isError ? 'error' : 'ok' }, 'notice', NOTICE_TTL_MS, `${scope.use} notice`)
    return this.cookie(noticeCookieName(scope), token, NOTICE_TTL_MS, scope.path)
  }

  async notice (cookieHeader: string | undefined, scope: SessionScope): Promise<Notice | undefined> {
    const p = await this.verify(cookieOf(cookieHeader, noticeCookieName(scope)), `${scope.use} notice`)
    if (p === undefined || typeof p.text !== 'string') return undefined
    return { isError: p.kind === 'error', text: p.text }
  }

  clearNoticeCookie (scope: SessionScope): string {
    return this.clearCookie(noticeCookieName(scope), scope.path)
  }

  async loginCookie (login: PendingLogin): Promise<string> {
    return this.cookie(LOGIN_COOKIE, await this.sign({ ...login }, 'login', LOGIN_TTL_MS, 'login'), LOGIN_TTL_MS)
  }

  clearCookie (name: string, path = ACCOUNT_PATH): string {
    return `${name}=; Path=${path}; Max-Age=0; HttpOnly; SameSite=Lax${this.isSecure ? '; Secure' : ''}`
  }

  async session (cookieHeader: string | undefined, scope = ACCOUNT_SCOPE): Promise<AccountSession | undefined> {
    const payload = await this.verify(cookieOf(cookieHeader, scope.cookie), scope.use)
    if (payload === undefined || typeof payload.sub !== 'string' || typeof payload.sid !== 'string') return undefined
    return { userId: payload.sub, sid: payload.sid }
  }

  async pendingLogin (cookieHeader: string | undefined): Promise<PendingLogin | undefined> {
    const p = await this.verify(cookieOf(cookieHeader, LOGIN_COOKIE), 'login')
    if (p === undefined || typeof p.state !== 'string' || typeof p.verifier !== 'string' || typeof p.nonce !== 'string' || typeof p.returnTo !== 'string') return undefined
    return { state: p.state, verifier: p.verifier, nonce: p.nonce, returnTo: p.returnTo }
  }

  csrfFor (session: AccountSession): string {
    return createHmac('sha256', this.csrfKey).update(session.sid).digest('base64url')
  }

  isCsrfValid (session: AccountSession, token: string | undefined): boolean {
    if (token === undefined) return false
    const expected = Buffer.from(this.csrfFor(session))
    const given = Buffer.from(token)
    return given.length === expected.length && timingSafeEqual(given, expected)
  }

  private async sign (claims: Record<string, string>, sub: string, ttlMs: number, purpose: string): Promise<string> {
    const nowS = Math.floor(this.now() / 1000)
    return new SignJWT({ ...claims, use: purpose }).setProtectedHeader({ alg: ALG }).setSubject(sub).setIssuedAt(nowS).setExpirationTime(nowS + Math.floor(ttlMs / 1000)).sign(this.key)
  }

  private async verify (token: string | undefined, purpose: string): Promise<Record<string, unknown> | undefined> {
    if (token === undefined) return undefined
    try {
      const { payload } = await jwtVerify(token, this.key, { algorithms: [ALG], currentDate: new Date(this.now()) })
      return payload.use === purpose ? payload : undefined
    } catch {
      return undefined
    }
  }

  private cookie (name: string, value: string, ttlMs: number, path = ACCOUNT_PATH): string {
    return `${name}=${value}; Path=${path}; Max-Age=${Math.floor(ttlMs / 1000)}; HttpOnly; SameSite=Lax${this.isSecure ? '; Secure' : ''}`
  }
}

function noticeCookieName (scope: SessionScope): string {
  return `${scope.cookie}_notice`
}

function cookieOf (header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}
