/**
 * servers[].upstreamAuth type tokenExchange (issue 14 section 3, README "Token exchange
 * (RFC 8693)"): the upstream trusts the same identity provider as the gateway, and gets, per
 * caller, a token that IdP issued for the upstream's `audience` in exchange for the user's own
 * IdP access token (subject-tokens.ts).
 *
 * The request (RFC 8693 2.1) goes to `tokenEndpoint` with openid-client's genericGrantRequest:
 * grant_type urn:ietf:params:oauth:grant-type:token-exchange, subject_token (the user's IdP
 * access token) with subject_token_type access_token, requested_token_type access_token (it is
 * sent as a Bearer token: openid-client refuses a token_type other than Bearer or DPoP),
 * `audience`, `scope`; the client authenticates with client_secret_basic when a secret is set,
 * else sends only its client_id (a public client, RFC 6749 2.3).
 *
 * The exchanged token is kept per (user, server) in memory until shortly before its
 * `expires_in`, and never at rest: it is a bearer credential at the upstream, short-lived and
 * cheap to exchange again, so sealing it into the store would only add a secret to protect;
 * each replica exchanges once per user. On an upstream 401 the entry is dropped and exchanged
 * again, once (http-upstream.ts).
 *
 * Failures: no IdP sign-in for the user → PORTCULLIS_ERR_UPSTREAM_SIGN_IN_REQUIRED (HTTP 200); the
 * IdP refusing the exchange (its OAuth error, RFC 8693 2.2.2) or unreachable → 502
 * PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE, the IdP's error in logs only, never a token.
 */
import type { FastifyBaseLogger } from 'fastify'
import * as oidc from 'openid-client'
import type { Config, IdentityProviderConfig, UpstreamAuthConfig } from '../config/schema.js'
import { PortcullisError } from '../errors.js'
import type { IdpSessions } from '../auth-server/idp-sessions.js'
import { OidcRelyingParty } from '../auth-server/oidc-relying-party.js'
import { createGuardedFetch, type FetchLike, type OutboundTestAllowance } from '../net/guarded-fetch.js'
import type { McpExchange } from '../upstreams/types.js'
import type { UpstreamCredentials } from '../upstreams/upstream-credentials.js'
import { ExpiringCache, reuseUntil } from './expiring-cache.js'
import { idpError, SubjectTokens } from './subject-tokens.js'

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
/** RFC 8693 3: the token type identifiers. */
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt'
/** Users whose exchanged token for one server is kept at once. */
const MAX_EXCHANGED_TOKENS = 10_000
/** Stop sending an exchanged token this long before it expires: it must still be valid on arrival. */
const EXCHANGED_TOKEN_MARGIN_MS = 30_000
/** When the IdP does not say (expires_in is RECOMMENDED only, RFC 8693 2.2.1): reused briefly, then exchanged again. */
const DEFAULT_EXCHANGED_TOKEN_LIFETIME_MS = 60_000

type TokenExchangeConfig = Extract<UpstreamAuthConfig, { type: 'tokenExchange' }>

export interface TokenExchangeDeps {
  readonly config: Config
  readonly idpSessions: IdpSessions | undefined
  readonly log: FastifyBaseLogger
  readonly now: () => number
  readonly outboundTestAllowance: OutboundTestAllowance | undefined
}

export interface TokenExchanges {
  /** The credential source of one server with upstreamAuth type tokenExchange. */
  readonly credentialsFor: (server: string, auth: TokenExchangeConfig) => UpstreamCredentials
  readonly close: () => Promise<void>
}

/**
 * Everything the tokenExchange servers share: one guarded fetch (the token endpoints and IdP
 * issuers are the operator's choice, so they may be on private addresses, like an IdP's issuer:
 * operatorHosts), and one subject-token cache per identity provider.
 */
export function createTokenExchanges (deps: TokenExchangeDeps): TokenExchanges {
  const servers = deps.config.servers.flatMap((s) => s.transport === 'http' && s.upstreamAuth?.type === 'tokenExchange' ? [s.upstreamAuth] : [])
  if (servers.length === 0) return { credentialsFor: () => { throw new Error('no tokenExchange server is configured') }, close: async () => {} }
  const sessions = deps.idpSessions
  if (sessions === undefined) throw new Error('tokenExchange needs the identity-provider sessions (auth.enabled)')
  const idps = deps.config.auth.identityProviders.filter((idp) => idp.type === 'oidc')
  const hosts = [...servers.map((auth) => auth.tokenEndpoint), ...idps.flatMap((idp) => idp.issuer === undefined ? [] : [idp.issuer])].map((url) => new URL(url).hostname)
  const outbound = createGuardedFetch({
    allowedHosts: [],
    operatorHosts: hosts,
    ...(deps.outboundTestAllowance === undefined ? {} : { testAllowance: deps.outboundTestAllowance }),
    onRefused: (host, reason) => deps.log.warn({ host: host.slice(0, 253), reason }, 'outbound request for a token exchange refused'),
  })
  const subjects = new Map<string, SubjectTokens>()
  const subjectTokensOf = (idp: IdentityProviderConfig): SubjectTokens => {
    let tokens = subjects.get(idp.name)
    if (tokens === undefined) {
      const refresher = new OidcRelyingParty(idp, deps.config.publicUrl, outbound.fetch)
      tokens = new SubjectTokens({ idp, refresher, sessions, sessionTtlMs: deps.config.auth.refreshTokenTtl, now: deps.now })
      subjects.set(idp.name, tokens)
    }
    return tokens
  }
  return {
    credentialsFor: (server, auth) => {
      // The schema names exactly one oidc provider (identityProvider, or the only one).
      const idp = idps.find((p) => p.name === (auth.identityProvider ?? idps[0]?.name))
      if (idp?.issuer === undefined) throw new Error(`server ${server}: upstreamAuth.identityProvider names no oidc identity provider`)
      return new TokenExchangeCredentials({ server, auth, issuer: idp.issuer, subjects: subjectTokensOf(idp), fetch: outbound.fetch, now: deps.now })
    },
    close: outbound.close,
  }
}

interface TokenExchangeOptions {
  readonly server: string
  readonly auth: TokenExchangeConfig
  /** The identity provider's issuer (openid-client needs one; the token endpoint is configured). */
  readonly issuer: string
  readonly subjects: SubjectTokens
  readonly fetch: FetchLike
  readonly now: () => number
}

export class TokenExchangeCredentials implements UpstreamCredentials {
  private readonly client: oidc.Configuration
  private readonly cache: ExpiringCache<string>

  constructor (private readonly opts: TokenExchangeOptions) {
    const { auth } = opts
    const clientAuth = auth.clientSecret === undefined ? oidc.None() : oidc.ClientSecretBasic(auth.clientSecret)
    this.client = new oidc.Configuration({ issuer: opts.issuer, token_endpoint: auth.tokenEndpoint }, auth.clientId, undefined, clientAuth)
    this.client[oidc.customFetch] = async (url, options) => await opts.fetch(url, { ...options })
    // The schema allows http only for a loopback token endpoint (a local IdP, tests).
    if (new URL(auth.tokenEndpoint).protocol === 'http:') oidc.allowInsecureRequests(this.client)
    this.cache = new ExpiringCache(MAX_EXCHANGED_TOKENS, opts.now)
  }

  async authorizationFor (ex: McpExchange): Promise<string> {
    return await this.cache.get(ex.user.id, async () => await this.exchange(ex))
  }

  /** The upstream refused `rejected`: exchanged again, once — unless another request already did. */
  async renew (ex: McpExchange, rejected: string): Promise<string> {
    const current = this.cache.peek(ex.user.id)
    if (current !== undefined && current !== rejected) return current
    this.cache.delete(ex.user.id)
    return await this.authorizationFor(ex)
  }

  private async exchange (ex: McpExchange): Promise<{ value: string, expiresAtMs: number }> {
    const { server, auth, subjects } = this.opts
    const subjectToken = await subjects.tokenFor(ex.user, server, ex.log)
    let response
    try {
      response = await oidc.genericGrantRequest(this.client, TOKEN_EXCHANGE_GRANT, {
        subject_token: subjectToken,
        subject_token_type: ACCESS_TOKEN_TYPE,
        requested_token_type: ACCESS_TOKEN_TYPE,
        audience: auth.audience,
        ...(auth.scopes.length === 0 ? {} : { scope: auth.scopes.join(' ') }),
      })
    } catch (err) {
      // The IdP may refuse because the subject token was revoked early: the next call refreshes it.
      subjects.forget(ex.user.id)
      const detail = idpError(err)
      // An OAuth error (RFC 8693 2.2.2) is the IdP saying no; anything else is the IdP or the path to it failing.
      ex.log.error({ server, user: ex.user.id, tokenEndpoint: auth.tokenEndpoint, ...detail }, detail.error === undefined ? 'token exchange failed' : 'identity provider refused the token exchange')
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', undefined, { cause: err })
    }
    const issued = response.issued_token_type
    if (issued !== undefined && issued !== ACCESS_TOKEN_TYPE && issued !== JWT_TOKEN_TYPE) {
      ex.log.error({ server, user: ex.user.id, tokenEndpoint: auth.tokenEndpoint, issuedTokenType: String(issued).slice(0, 100) }, 'identity provider exchanged for a token that is no access token')
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE')
    }
    const expiresInS = response.expiresIn()
    const lifetimeMs = expiresInS === undefined ? DEFAULT_EXCHANGED_TOKEN_LIFETIME_MS : expiresInS * 1000
    return { value: `Bearer ${response.access_token}`, expiresAtMs: reuseUntil(this.opts.now(), lifetimeMs, EXCHANGED_TOKEN_MARGIN_MS) }
  }
}
