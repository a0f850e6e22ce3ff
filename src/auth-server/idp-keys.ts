/**
 * An identity provider's signing keys, to verify what it signs (ID-JAG
 * assertions). Where they are comes from OpenID Connect Discovery
 * (`<issuer>/.well-known/openid-configuration` → `jwks_uri`); both documents
 * are fetched through the guarded fetch (net/guarded-fetch.ts). jose caches the
 * key set and refetches it when a token names a kid it does not know (the IdP
 * rotated its keys), at most once per cooldown, so a stream of made-up kids
 * cannot turn into a stream of requests to the IdP.
 */
import { createRemoteJWKSet, customFetch, type FetchImplementation, type JWTVerifyGetKey } from 'jose'
import type { FetchLike } from '../net/guarded-fetch.js'

/** jose's defaults, spelled out: a key set is fresh for 10 minutes; an unknown kid refetches at most every 30 s. */
const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000
const JWKS_COOLDOWN_MS = 30_000

/** Discovery or the key set could not be read: the IdP's (or the network's) fault, not the client's. */
export class IdpKeysUnavailableError extends Error {
  override readonly name = 'IdpKeysUnavailableError'
}

/** The discovery document's URL (OpenID Connect Discovery 1.0, section 4: appended to the issuer, without a doubled slash). */
export function discoveryUrlOf (issuer: string): string {
  return `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`
}

export class IdpKeySets {
  private readonly sets = new Map<string, Promise<JWTVerifyGetKey>>()

  constructor (private readonly fetch: FetchLike) {}

  /** A key resolver for jwtVerify; discovery runs on first use and again after a failure. */
  keysOf (issuer: string): JWTVerifyGetKey {
    return async (header, token) => {
      const getKey = await this.keySet(issuer)
      return getKey(header, token)
    }
  }

  private async keySet (issuer: string): Promise<JWTVerifyGetKey> {
    let pending = this.sets.get(issuer)
    if (pending === undefined) {
      pending = this.discover(issuer)
      this.sets.set(issuer, pending)
      // A failed discovery is not remembered: the next assertion tries again.
      pending.catch(() => this.sets.delete(issuer))
    }
    return pending
  }

  private async discover (issuer: string): Promise<JWTVerifyGetKey> {
    let document: unknown
    try {
      const response = await this.fetch(discoveryUrlOf(issuer), { headers: { accept: 'application/json' } })
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`)
      document = await response.json()
    } catch (err) {
      throw new IdpKeysUnavailableError(`discovery at ${discoveryUrlOf(issuer)} failed: ${(err as Error).message}`)
    }
    const { issuer: published, jwks_uri: jwksUri } = (document ?? {}) as { issuer?: unknown, jwks_uri?: unknown }
    // OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was fetched for.
    if (published !== issuer) throw new IdpKeysUnavailableError(`discovery at ${discoveryUrlOf(issuer)} names issuer ${JSON.stringify(published)}, not ${issuer}`)
    if (typeof jwksUri !== 'string' || !URL.canParse(jwksUri)) throw new IdpKeysUnavailableError(`discovery at ${discoveryUrlOf(issuer)} has no jwks_uri`)
    return createRemoteJWKSet(new URL(jwksUri), {
      cacheMaxAge: JWKS_CACHE_MAX_AGE_MS,
      cooldownDuration: JWKS_COOLDOWN_MS,
      [customFetch]: this.fetch as FetchImplementation,
    })
  }
}
