/**
 * servers[].identity (issue 14): a short-lived ES256 JWT naming the caller, sent to an HTTP
 * upstream on every request so that it can tie data and sessions to a user it verified itself
 * against `<publicUrl>/oauth/jwks` (README "Upstream identity").
 *
 * Claims: `iss` = publicUrl, `aud` = the upstream's configured url (a token one upstream
 * receives is refused by every other), `sub`, `preferred_username`, `email`, `groups`,
 * `client_id`, `iat`, `exp` = iat + 60 s, `jti`. Header `typ: portcullis-identity+jwt`: never
 * `at+jwt`, so the gateway's own token check (verify-token.ts, RFC 9068 `typ`) can never take
 * one for an access token even when an upstream's url is a gateway resource URL.
 *
 * Signing costs ~100-300 µs (FINDINGS.md): one token per (caller, server) is signed at most
 * every 30 s and reused, so an upstream gets a token with at least 30 s to live and the hot path
 * is a map lookup. `jti` is therefore unique per signed token, not per request.
 */
import { randomUUID } from 'node:crypto'
import { importJWK, SignJWT, type JWK } from 'jose'
import type { UserIdentity } from '../identity.js'
import { SIGNING_ALG } from '../auth-server/keys.js'

export const IDENTITY_TOKEN_TTL_S = 60
/** A cached token is reused this long, so it always reaches the upstream with >= 30 s left. */
export const IDENTITY_TOKEN_REUSE_MS = 30_000
export const IDENTITY_TOKEN_TYPE = 'portcullis-identity+jwt'
/** Distinct callers cached per server; beyond it the oldest entry goes (a bounded map, not a leak). */
const MAX_CACHED_IDENTITIES = 10_000

/** What signs identity tokens for every server: the authorization server's current key. */
export interface IdentitySigner {
  readonly issuer: string
  readonly key: JWK
  readonly now: () => number
  /** Told about each signature (a metric: shows the cache working). */
  readonly onSigned: (server: string) => void
}

interface Cached {
  readonly signedAtMs: number
  /** The token once signed; until then the signing in progress, shared by concurrent requests. */
  token: string | Promise<string>
}

/**
 * One server's identity tokens. The cache key holds every claim that comes from the caller,
 * so a changed email or group list (an IdP re-check) gets a fresh token, never a stale one.
 */
export class IdentityTokens {
  private readonly cache = new Map<string, Cached>()
  private privateKey: ReturnType<typeof importJWK> | undefined

  constructor (private readonly signer: IdentitySigner, private readonly server: string, private readonly audience: string) {}

  /** The token for this caller: cached (a string) or being signed (a promise). */
  tokenFor (user: UserIdentity, clientId: string): string | Promise<string> {
    const key = cacheKey(user, clientId)
    const nowMs = this.signer.now()
    const hit = this.cache.get(key)
    if (hit !== undefined && nowMs - hit.signedAtMs < IDENTITY_TOKEN_REUSE_MS && nowMs >= hit.signedAtMs) return hit.token
    if (hit !== undefined) this.cache.delete(key)
    if (this.cache.size >= MAX_CACHED_IDENTITIES) this.cache.delete(this.cache.keys().next().value as string)
    const entry: Cached = { signedAtMs: nowMs, token: '' }
    entry.token = this.sign(user, clientId, nowMs).then((token) => {
      entry.token = token
      return token
    }, (err: unknown) => {
      // A failed signature is not cached: the next request tries again.
      if (this.cache.get(key) === entry) this.cache.delete(key)
      throw err
    })
    this.cache.set(key, entry)
    return entry.token
  }

  private async sign (user: UserIdentity, clientId: string, nowMs: number): Promise<string> {
    this.privateKey ??= importJWK(this.signer.key, SIGNING_ALG)
    const iat = Math.floor(nowMs / 1000)
    const token = await new SignJWT(identityClaims(user, clientId))
      .setProtectedHeader({ alg: SIGNING_ALG, typ: IDENTITY_TOKEN_TYPE, ...(this.signer.key.kid === undefined ? {} : { kid: this.signer.key.kid }) })
      .setIssuer(this.signer.issuer)
      .setAudience(this.audience)
      .setSubject(user.id)
      .setIssuedAt(iat)
      .setExpirationTime(iat + IDENTITY_TOKEN_TTL_S)
      .setJti(randomUUID())
      .sign(await this.privateKey)
    this.signer.onSigned(this.server)
    return token
  }
}

/**
 * The caller's claims. A machine client (client_credentials, `sub` = `client:<id>`) is no
 * person: no preferred_username, email or groups, only its client_id.
 */
function identityClaims (user: UserIdentity, clientId: string): Record<string, unknown> {
  if (user.isClient === true) return { client_id: clientId }
  return {
    preferred_username: user.name,
    ...(user.email === undefined ? {} : { email: user.email }),
    groups: [...(user.groups ?? [])],
    ...(clientId === '' ? {} : { client_id: clientId }),
  }
}

/**
 * Each value length-prefixed, so that no two callers share a key whatever their claims hold (an
 * IdP's value may contain any separator), and a machine client never shares a person's key; an
 * absent email is `-`, which no length starts with.
 * Built and looked up on every request: ~230-350 ns where the JSON.stringify it replaces took
 * ~390-530 ns (docs/benchmarks.md, 2026-11-30 identity entry).
 */
function cacheKey (user: UserIdentity, clientId: string): string {
  // A machine client's claims differ from a person's (identityClaims): never one key for both.
  let key = `${user.isClient === true ? 'c' : 'u'}${user.id.length}:${user.id}${clientId.length}:${clientId}${user.name.length}:${user.name}${user.email === undefined ? '-' : `${user.email.length}:${user.email}`}`
  for (const group of user.groups ?? []) key += `${group.length}:${group}`
  return key
}
