/**
 * The gateway as an OpenID Connect relying party of one identity provider
 * (openid-client, panva): discovery, authorization code + PKCE S256, state and
 * nonce, RFC 9207 `iss` on the callback (checked whenever the IdP sends it, and
 * required when its metadata announces it), ID token validation (signature
 * against the IdP's JWKS, iss, aud, exp, nonce), and userinfo when the claims
 * the configuration reads are not in the ID token. Every request goes through
 * the guarded fetch (net/guarded-fetch.ts).
 */
import { readFileSync } from 'node:fs'
import { importJWK, type JWK } from 'jose'
import * as oidc from 'openid-client'
import type { IdentityProviderConfig } from '../config/schema.js'
import type { FetchLike } from '../net/guarded-fetch.js'
import { claimAt } from './idp-identity.js'
import { KeyFileError } from './keys.js'

/** `auth.identityProviders[].scopes` when unset. */
export const DEFAULT_IDP_SCOPES = ['openid', 'email', 'profile'] as const

/** What one sign-in at the IdP needs to remember between leaving and coming back. */
export interface PendingSignIn {
  /** The gateway interaction this sign-in continues. */
  readonly uid: string
  readonly provider: string
  readonly state: string
  /** OpenID Connect only (GitHub has no ID token to bind it to). */
  readonly nonce?: string
  readonly codeVerifier: string
}

export interface IdpSignInResult {
  /** ID token claims, completed from userinfo where needed (GitHub: the user read from its API, as claims). */
  readonly claims: Readonly<Record<string, unknown>>
  /** Groups read beside the claims (GitHub's orgs and teams), before groupMap. */
  readonly groups?: readonly string[]
  readonly refreshToken?: string
  /** Kept only where there is no refresh token to re-check the user with (GitHub's tokens do not expire). */
  readonly accessToken?: string
}

export function idpCallbackPath (name: string): string {
  return `/oauth/idp/${name}/callback`
}

/** Google's own issuer: it lists no offline_access scope and issues refresh tokens only for these parameters. */
const GOOGLE_ISSUER = 'https://accounts.google.com'

/**
 * What an authorization request needs beyond the scopes for the IdP to issue a refresh
 * token (the gateway re-checks users with it): Google wants access_type=offline, and
 * prompt=consent, without which it issues a refresh token only at a user's first consent.
 */
export function offlineParameters (issuer: string): Record<string, string> {
  return issuer === GOOGLE_ISSUER ? { access_type: 'offline', prompt: 'consent' } : {}
}

export class OidcRelyingParty {
  readonly redirectUri: string
  private discovered: Promise<oidc.Configuration> | undefined

  constructor (readonly idp: IdentityProviderConfig, publicUrl: string, private readonly fetch: FetchLike) {
    this.redirectUri = new URL(idpCallbackPath(idp.name), publicUrl).href
  }

  /** Where to send the browser, and what to remember until it comes back. */
  async begin (uid: string): Promise<{ url: URL, pending: PendingSignIn }> {
    const config = await this.configuration()
    const nonce = oidc.randomNonce()
    const pending: PendingSignIn = { uid, provider: this.idp.name, state: oidc.randomState(), nonce, codeVerifier: oidc.randomPKCECodeVerifier() }
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri,
      scope: this.scopes(config).join(' '),
      state: pending.state,
      nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.codeVerifier),
      code_challenge_method: 'S256',
      ...offlineParameters(config.serverMetadata().issuer),
    })
    return { url, pending }
  }

  /** Redeems the code of `callbackUrl` (the redirect URI with the IdP's query) and reads the user's claims. */
  async complete (callbackUrl: URL, pending: PendingSignIn): Promise<IdpSignInResult> {
    const config = await this.configuration()
    if (pending.nonce === undefined) throw new Error('an OpenID Connect sign-in without a nonce')
    const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: pending.codeVerifier,
      expectedState: pending.state,
      expectedNonce: pending.nonce,
      idTokenExpected: true,
    })
    const idClaims = tokens.claims()
    if (idClaims === undefined) throw new Error('the identity provider sent no ID token')
    let claims: Record<string, unknown> = { ...idClaims }
    if (this.needsUserinfo(claims) && config.serverMetadata().userinfo_endpoint !== undefined) {
      // The ID token's claims win: they are signed; userinfo only fills in what is missing.
      const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, idClaims.sub)
      claims = { ...userinfo, ...claims }
    }
    return { claims, ...(tokens.refresh_token === undefined ? {} : { refreshToken: tokens.refresh_token }) }
  }

  /**
   * Re-reads a signed-in user's claims with the IdP refresh token the gateway kept
   * (revalidation): refresh grant, then userinfo (the claims the IdP holds now, for the
   * subject it issued the token to). The ID token of a refresh, when the IdP sends one,
   * is checked by openid-client (signature, iss, aud, sub unchanged).
   * Throws what openid-client throws: see `idpRefusal` for which errors mean "no".
   */
  async refresh (refreshToken: string, subject: string): Promise<IdpSignInResult> {
    const config = await this.configuration()
    const tokens = await oidc.refreshTokenGrant(config, refreshToken)
    const idClaims = tokens.claims()
    if (idClaims !== undefined && idClaims.sub !== subject) throw new Error('the identity provider refreshed a token for another subject')
    let claims: Record<string, unknown> = { ...idClaims, sub: subject }
    if (config.serverMetadata().userinfo_endpoint !== undefined) {
      // Userinfo is what the IdP says now (a refreshed ID token may repeat the sign-in's claims).
      const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, subject)
      claims = { ...claims, ...userinfo }
    }
    return { claims, ...(tokens.refresh_token === undefined ? {} : { refreshToken: tokens.refresh_token }) }
  }

  /**
   * A fresh IdP access token for a signed-in user, from the refresh token the gateway kept: the
   * subject token of a token exchange (RFC 8693, servers[].upstreamAuth). The ID token of the
   * refresh, when the IdP sends one, is checked as in `refresh`. `refreshToken` in the result is
   * the rotated one when the IdP rotated it: the caller keeps it, the old one is spent.
   */
  async accessToken (refreshToken: string, subject: string): Promise<{ accessToken: string, expiresInS?: number, refreshToken?: string }> {
    const config = await this.configuration()
    const tokens = await oidc.refreshTokenGrant(config, refreshToken)
    const idClaims = tokens.claims()
    if (idClaims !== undefined && idClaims.sub !== subject) throw new Error('the identity provider refreshed a token for another subject')
    const expiresInS = tokens.expiresIn()
    return {
      accessToken: tokens.access_token,
      ...(expiresInS === undefined ? {} : { expiresInS }),
      ...(tokens.refresh_token === undefined ? {} : { refreshToken: tokens.refresh_token }),
    }
  }

  /**
   * The configured scopes (default openid email profile), plus offline_access when the IdP
   * lists it: the refresh token is what lets the gateway re-check the user later.
   * Google lists no offline_access: it gets access_type=offline instead (offlineParameters).
   */
  private scopes (config: oidc.Configuration): string[] {
    const scopes = new Set(this.idp.scopes ?? DEFAULT_IDP_SCOPES)
    if (config.serverMetadata().scopes_supported?.includes('offline_access') === true) scopes.add('offline_access')
    return [...scopes]
  }

  private needsUserinfo (claims: Readonly<Record<string, unknown>>): boolean {
    const paths = ['email', ...(this.idp.groupsClaim === undefined ? [] : [this.idp.groupsClaim]), ...(this.idp.usernameClaim === undefined ? [] : [this.idp.usernameClaim])]
    return paths.some((path) => claimAt(claims, path) === undefined)
  }

  /** Discovery once, kept; a failed discovery is retried at the next sign-in. */
  private async configuration (): Promise<oidc.Configuration> {
    this.discovered ??= this.discover().catch((err: unknown) => {
      this.discovered = undefined
      throw err
    })
    return await this.discovered
  }

  private async discover (): Promise<oidc.Configuration> {
    if (this.idp.issuer === undefined) throw new Error(`identity provider "${this.idp.name}" has no issuer`)
    const issuer = new URL(this.idp.issuer)
    const config = await oidc.discovery(issuer, this.idp.clientId, undefined, await this.clientAuth(), {
      [oidc.customFetch]: async (url, options) => await this.fetch(url, { ...options }),
      // The schema allows http only for loopback issuers (a local IdP, tests).
      ...(issuer.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
    })
    return config
  }

  private async clientAuth (): Promise<oidc.ClientAuth> {
    if (this.idp.clientSecret !== undefined) return oidc.ClientSecretBasic(this.idp.clientSecret)
    if (this.idp.privateKeyJwt !== undefined) return oidc.PrivateKeyJwt(await readPrivateKey(this.idp.privateKeyJwt.keysFile, this.idp.name))
    return oidc.None()
  }
}

/**
 * Whether an error from `refresh` is the IdP refusing the user (invalid_grant: the token
 * or the account is gone or disabled; userinfo 401/403) rather than the IdP being
 * unreachable or failing (network, 5xx) or the gateway being misconfigured (invalid_client):
 * only a refusal offboards the user.
 */
export function isIdpRefusal (err: unknown): boolean {
  if (err instanceof oidc.ResponseBodyError) return err.error === 'invalid_grant'
  if (err instanceof oidc.WWWAuthenticateChallengeError) return err.status === 401 || err.status === 403
  return false
}

/** The first key of a JWKS file (or one JWK), for private_key_jwt client authentication (RFC 7523). */
type PrivateKey = Parameters<typeof oidc.PrivateKeyJwt>[0]

async function readPrivateKey (file: string, provider: string): Promise<PrivateKey> {
  const where = `auth.identityProviders "${provider}" privateKeyJwt.keysFile ${file}`
  let jwk: JWK | undefined
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { keys?: JWK[] } & JWK
    jwk = parsed.keys?.[0] ?? parsed
  } catch (err) {
    throw new KeyFileError(`${where}: cannot read a JWKS (${(err as Error).message})`)
  }
  if (typeof jwk.d !== 'string') throw new KeyFileError(`${where}: expected a private JWK (with "d")`)
  const alg = jwk.alg ?? (jwk.kty === 'EC' ? 'ES256' : 'RS256')
  const key = await importJWK(jwk, alg)
  if (key instanceof Uint8Array) throw new KeyFileError(`${where}: expected an asymmetric private key (RSA or EC)`)
  return { key, ...(jwk.kid === undefined ? {} : { kid: jwk.kid }) } as PrivateKey
}
