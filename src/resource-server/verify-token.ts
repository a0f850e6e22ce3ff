/**
 * Access-token verification for every MCP request: an ES256 JWT (RFC 9068)
 * checked against the authorization server's keys held in memory — signature,
 * algorithm allow-list, `typ: at+jwt`, `iss`, `aud` = this server's resource
 * URL (RFC 8707), `exp`/`nbf` with a small clock tolerance.
 *
 * Verified tokens are cached until they expire (bounded, oldest evicted): a
 * signature check costs ~100-300 µs, a cache hit well under a microsecond, and
 * a client sends the same token for many requests. Only successes are cached;
 * the audience is checked again on every hit, and so is the revoked-grant
 * list (revoked-grants.ts) and the blocked-user list (admin/blocked-users.ts): a
 * token of a revoked grant or a blocked user is refused on its next request, cached or not.
 */
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose'
import type { UserIdentity } from '../identity.js'

export const TOKEN_CLOCK_TOLERANCE_S = 5
export const MAX_CACHED_TOKENS = 10_000

export interface RequestIdentity extends UserIdentity {
  readonly clientId: string
  readonly scopes: ReadonlySet<string>
  /** True for machine tokens (client_credentials): `sub` is the client. */
  readonly isClient: boolean
  readonly expiresAtS: number
  /** The grant the token was issued under (`grant_id`); machine tokens have none. */
  readonly grantId: string | undefined
  /** Set when the caller sent a personal API key (account/api-keys.ts) instead of an access token. */
  readonly keyId?: string
  /** An API key's servers (names): it reaches no other. */
  readonly servers?: readonly string[]
}

export type TokenFailure = 'malformed' | 'expired' | 'not_yet_valid' | 'signature' | 'algorithm' | 'type' | 'issuer' | 'audience' | 'claims' | 'unknown_key' | 'revoked' | 'blocked' | 'api_key' | 'api_keys_disabled' | 'idp_recheck'

export class TokenError extends Error {
  constructor (readonly reason: TokenFailure, message: string) {
    super(message)
    this.name = 'TokenError'
  }
}

const FAILURE_MESSAGES: Readonly<Record<TokenFailure, string>> = {
  malformed: 'the access token is not a valid JWT',
  expired: 'the access token has expired',
  not_yet_valid: 'the access token is not valid yet',
  signature: 'the access token signature is invalid',
  algorithm: 'the access token uses an algorithm this gateway does not accept',
  type: 'the token is not an access token',
  issuer: 'the access token was issued by another authorization server',
  audience: 'the access token is not for this MCP server',
  claims: 'the access token lacks required claims',
  unknown_key: 'the access token was signed with an unknown key',
  revoked: 'the access token has been revoked',
  blocked: 'this account is blocked on this gateway; ask its operator',
  // One message for unknown, expired and revoked keys: a key's holder learns no more than that.
  api_key: 'the API key is not valid',
  api_keys_disabled: 'API keys are disabled on this gateway (auth.apiKeys.enabled)',
  idp_recheck: 'the gateway cannot re-check this account with its identity provider; sign in again (its API keys then work again)',
}

export function tokenError (reason: TokenFailure): TokenError {
  return new TokenError(reason, FAILURE_MESSAGES[reason])
}

/** jose error codes (stable, per its docs) -> why the token was refused. */
function classify (err: unknown): TokenError {
  const { code, claim } = err as { code?: string, claim?: string }
  switch (code) {
    case 'ERR_JWT_EXPIRED': return tokenError('expired')
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return tokenError('signature')
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return tokenError('algorithm')
    case 'ERR_JWKS_NO_MATCHING_KEY': return tokenError('unknown_key')
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'iss') return tokenError('issuer')
      if (claim === 'aud') return tokenError('audience')
      if (claim === 'typ') return tokenError('type')
      if (claim === 'nbf' || claim === 'iat') return tokenError('not_yet_valid')
      return tokenError('claims')
    default: return tokenError('malformed')
  }
}

interface Cached { readonly identity: RequestIdentity, readonly audiences: readonly string[] }

export interface TokenVerifierOptions {
  readonly issuer: string
  readonly jwks: JSONWebKeySet
  readonly now?: () => number
  /** Whether a grant was revoked (an in-memory lookup: this runs on every request). */
  readonly isGrantRevoked?: (grantId: string) => boolean
  /** Whether an administrator blocked the user (admin/blocked-users.ts; an in-memory lookup too). */
  readonly isUserBlocked?: (userId: string) => boolean
  /**
   * The clients that may hold machine tokens (auth.clients with client_credentials, as the
   * configuration in force lists them): a machine token of a client removed since is refused.
   */
  readonly machineClients?: ReadonlySet<string>
}

export class TokenVerifier {
  private readonly keySet: ReturnType<typeof createLocalJWKSet>
  private readonly cache = new Map<string, Cached>()
  private readonly now: () => number

  constructor (private readonly options: TokenVerifierOptions) {
    this.keySet = createLocalJWKSet(options.jwks)
    this.now = options.now ?? (() => Date.now())
  }

  /** The caller's identity, or a TokenError. `audiences`: any of them is acceptable. */
  async verify (token: string, audiences: readonly string[]): Promise<RequestIdentity> {
    const nowS = this.now() / 1000
    const cached = this.cache.get(token)
    if (cached !== undefined) {
      if (cached.identity.expiresAtS + TOKEN_CLOCK_TOLERANCE_S <= nowS) {
        this.cache.delete(token)
        throw tokenError('expired')
      }
      if (!audiences.some((a) => cached.audiences.includes(a))) throw tokenError('audience')
      return this.unlessRevoked(cached.identity)
    }
    let payload: JWTPayload
    try {
      ({ payload } = await jwtVerify(token, this.keySet, {
        issuer: this.options.issuer,
        audience: [...audiences],
        algorithms: ['ES256'],
        typ: 'at+jwt',
        clockTolerance: TOKEN_CLOCK_TOLERANCE_S,
        currentDate: new Date(this.now()),
        requiredClaims: ['exp', 'iat', 'sub', 'client_id'],
      }))
    } catch (err) {
      throw classify(err)
    }
    const identity = identityOf(payload)
    // A user's token without its grant could never be revoked: refused (machine tokens have no grant).
    if (identity.grantId === undefined && !identity.isClient) throw tokenError('claims')
    if (this.cache.size >= MAX_CACHED_TOKENS) {
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    const aud = payload.aud
    this.cache.set(token, { identity, audiences: Array.isArray(aud) ? aud : [String(aud)] })
    return this.unlessRevoked(identity)
  }

  /**
   * An identity verified earlier that must no longer act: its grant revoked or its user blocked
   * since (a virtual session's retries and in-process member requests act on an identity checked once).
   */
  isRevoked (identity: RequestIdentity): boolean {
    if (identity.grantId !== undefined && this.options.isGrantRevoked?.(identity.grantId) === true) return true
    if (this.isRemovedClient(identity)) return true
    return !identity.isClient && this.options.isUserBlocked?.(identity.id) === true
  }

  /** A machine token (client_credentials) of a client the configuration no longer lists with that grant. */
  private isRemovedClient (identity: RequestIdentity): boolean {
    const clients = this.options.machineClients
    return clients !== undefined && identity.isClient && !clients.has(identity.clientId)
  }

  private unlessRevoked (identity: RequestIdentity): RequestIdentity {
    if (identity.grantId !== undefined && this.options.isGrantRevoked?.(identity.grantId) === true) throw tokenError('revoked')
    if (this.isRemovedClient(identity)) throw tokenError('revoked')
    if (!identity.isClient && this.options.isUserBlocked?.(identity.id) === true) throw tokenError('blocked')
    return identity
  }
}

function identityOf (payload: JWTPayload): RequestIdentity {
  const sub = String(payload.sub)
  const clientId = String(payload.client_id)
  const username = typeof payload.preferred_username === 'string' ? payload.preferred_username : undefined
  const groups = Array.isArray(payload.groups) ? payload.groups.filter((g): g is string => typeof g === 'string') : []
  const email = typeof payload.email === 'string' ? payload.email : undefined
  return {
    id: sub,
    name: username ?? sub,
    ...(email === undefined ? {} : { email }),
    groups,
    clientId,
    scopes: new Set(typeof payload.scope === 'string' ? payload.scope.split(' ').filter((s) => s !== '') : []),
    // oidc-provider sets sub to the client id for client_credentials tokens, and adds no username.
    isClient: username === undefined && sub === clientId,
    expiresAtS: Number(payload.exp),
    grantId: typeof payload.grant_id === 'string' ? payload.grant_id : undefined,
  }
}
