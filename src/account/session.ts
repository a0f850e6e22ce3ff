/**
 * The account pages' own sign-in state, in two cookies, both HMAC-signed JWTs
 * (HS256, a key derived from the authorization server's cookie key), HttpOnly,
 * SameSite=Lax, Secure when publicUrl is https, scoped to /account:
 *
 *   portcullis_account         who is signed in (sub), a random session id, 30 min
 *   portcullis_account_login   an OAuth sign-in under way: state, PKCE verifier, nonce, 10 min
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
export interface PendingLogin { readonly state: string, readonly verifier: string, readonly nonce: string, readonly returnTo: string }

export class AccountCookies {
  private readonly key: Uint8Array
  private readonly csrfKey: Buffer

  constructor (cookieKey: string, private readonly isSecure: boolean, private readonly now: () => number) {
    this.key = createHmac('sha256', cookieKey).update('portcullis account session').digest()
    this.csrfKey = createHmac('sha256', cookieKey).update('portcullis account csrf').digest()
  }

  async sessionCookie (userId: string): Promise<string> {
    const token = await this.sign({ sid: randomBytes(16).toString('base64url') }, userId, ACCOUNT_SESSION_TTL_MS, 'session')
    return this.cookie(SESSION_COOKIE, token, ACCOUNT_SESSION_TTL_MS)
  }

  async loginCookie (login: PendingLogin): Promise<string> {
    return this.cookie(LOGIN_COOKIE, await this.sign({ ...login }, 'login', LOGIN_TTL_MS, 'login'), LOGIN_TTL_MS)
  }

  clearCookie (name: string): string {
    return `${name}=; Path=${ACCOUNT_PATH}; Max-Age=0; HttpOnly; SameSite=Lax${this.isSecure ? '; Secure' : ''}`
  }

  async session (cookieHeader: string | undefined): Promise<AccountSession | undefined> {
    const payload = await this.verify(cookieOf(cookieHeader, SESSION_COOKIE), 'session')
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

  private cookie (name: string, value: string, ttlMs: number): string {
    return `${name}=${value}; Path=${ACCOUNT_PATH}; Max-Age=${Math.floor(ttlMs / 1000)}; HttpOnly; SameSite=Lax${this.isSecure ? '; Secure' : ''}`
  }
}

function cookieOf (header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}
