/**
 * The gateway as an OAuth client of one upstream's authorization server (servers[].upstreamAuth
 * type oauth), with openid-client (panva) doing the protocol: RFC 8414 / OIDC discovery (the
 * issuer checked against the metadata, RFC 8414 3.3; PKCE S256 support required), authorization code + PKCE S256 and state
 * (MCP 2025-11-25 basic/authorization "Authorization Code Protection"), RFC 9207 `iss` on the
 * callback when the server announces it, `resource` = the upstream's canonical URL on every
 * authorization and token request (RFC 8707; MCP "Resource Parameter Implementation"), refresh,
 * and revocation (RFC 7009).
 *
 * Who the gateway is at that server (MCP "Client Registration Approaches", in this order):
 * `upstreamAuth.clientId` when the operator registered it; else the Client ID Metadata Document
 * the gateway serves (when the server says `client_id_metadata_document_supported` and the
 * gateway's publicUrl is https, which a CIMD client_id must be); else RFC 7591 dynamic
 * registration, kept in the store per server and issuer (sealed: it may hold a client secret).
 */
import * as oidc from 'openid-client'
import type { HttpServerConfig } from '../config/schema.js'
import type { FetchLike } from '../net/guarded-fetch.js'
import type { SecretBox } from '../auth-server/secret-box.js'
import type { Store } from '../store/types.js'
import { discoverUpstreamAuthorization, DiscoveryError, scopesToRequest, type UpstreamAuthorization } from './discovery.js'

export type UpstreamOAuthConfig = Extract<NonNullable<HttpServerConfig['upstreamAuth']>, { type: 'oauth' }>

/** Where the upstream's authorization server sends the browser back (beside the account pages, whose cookie it needs). */
export function linkCallbackPath (server: string): string {
  return `/account/links/${server}/callback`
}

/** The gateway's Client ID Metadata Document for one server: its URL is the client_id. */
export function clientMetadataPath (server: string): string {
  return `/oauth/client-metadata/${server}.json`
}

/**
 * draft-ietf-oauth-client-id-metadata-document: the document's `client_id` is its own URL. A
 * public client (PKCE): a document cannot hold a secret, and the gateway publishes no keys for it.
 */
export function clientMetadataDocument (publicUrl: string, server: string): Record<string, unknown> {
  return {
    ...registrationMetadata(publicUrl, server),
    client_id: `${publicUrl}${clientMetadataPath(server)}`,
  }
}

function registrationMetadata (publicUrl: string, server: string): Partial<oidc.ClientMetadata> {
  return {
    client_name: `Portcullis at ${new URL(publicUrl).host} (${server})`,
    client_uri: publicUrl,
    redirect_uris: [`${publicUrl}${linkCallbackPath(server)}`],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    // oidc-provider-based servers allow an http redirect only for native clients; publicUrl is
    // plain http only on loopback (or with allowInsecurePublicUrl).
    application_type: publicUrl.startsWith('http:') ? 'native' : 'web',
  }
}

export type ClientIdentityKind = 'configured' | 'metadata-document' | 'registration'

/**
 * The authorization server refused the operator's own client (`upstreamAuth.clientId` and
 * `clientSecret`: invalid_client, RFC 6749 5.2). The gateway's credential, not the user's
 * grant: only the operator can fix it, so a link is not dropped for it and linking again would
 * not help (as an identity provider's invalid_client, oidc-relying-party.ts isIdpRefusal).
 */
export class ConfiguredClientRefused extends Error {
  override readonly name = 'ConfiguredClientRefused'
}

/** Which client identity to use at this authorization server (see the header). */
export function chooseClientIdentity (configuredClientId: string | undefined, metadata: { readonly client_id_metadata_document_supported?: unknown, readonly registration_endpoint?: unknown }, publicUrl: string): ClientIdentityKind {
  if (configuredClientId !== undefined) return 'configured'
  if (metadata.client_id_metadata_document_supported === true && publicUrl.startsWith('https:')) return 'metadata-document'
  if (typeof metadata.registration_endpoint === 'string') return 'registration'
  throw new DiscoveryError('the authorization server supports neither client metadata documents (for an https publicUrl) nor dynamic registration: register the gateway there and set upstreamAuth.clientId')
}

/**
 * MCP 2025-11-25 basic/authorization "Authorization Code Protection": a client MUST refuse to
 * proceed when the authorization server's metadata does not list PKCE support
 * (`code_challenge_methods_supported`, RFC 8414 2) — the gateway sends S256 only.
 */
export function requirePkceS256 (metadata: { readonly code_challenge_methods_supported?: unknown }): void {
  const methods = metadata.code_challenge_methods_supported
  if (!Array.isArray(methods) || !methods.includes('S256')) {
    throw new DiscoveryError('the authorization server does not announce PKCE S256 (code_challenge_methods_supported): MCP clients must not use it without PKCE')
  }
}

/**
 * Where an issuer's metadata is looked for, in order (MCP 2025-11-25 basic/authorization
 * "Authorization Server Metadata Discovery"). `url` undefined: openid-client resolves it from
 * the issuer for `algorithm` (RFC 8414 path insertion for oauth2, path appended for oidc).
 * - no path: RFC 8414 `/.well-known/oauth-authorization-server`, then OIDC
 *   `/.well-known/openid-configuration`;
 * - with a path: RFC 8414 path insertion, then OIDC path insertion
 *   (`/.well-known/openid-configuration/<path>`), then OIDC path appended
 *   (`<path>/.well-known/openid-configuration`).
 */
/** Where an authorization server's metadata was found: the issuer with openid-client's rule for `algorithm`, or a URL whole. */
type MetadataSource = { readonly url?: string, readonly algorithm: 'oauth2' | 'oidc' }

export function metadataDiscoveryUrls (issuer: URL): MetadataSource[] {
  const path = issuer.pathname.replace(/\/$/, '')
  if (path === '') return [{ algorithm: 'oauth2' }, { algorithm: 'oidc' }]
  return [{ algorithm: 'oauth2' }, { url: `${issuer.origin}/.well-known/openid-configuration${path}`, algorithm: 'oidc' }, { algorithm: 'oidc' }]
}

/** What a token response leaves to keep. */
export interface UpstreamTokens {
  readonly accessToken: string
  readonly refreshToken?: string
  readonly expiresAtMs?: number
}

/**
 * Whom a link's tokens belong to: the authorization server that issued them (its validated
 * issuer) and the resource they were issued for (RFC 8707). A refresh token may only ever go
 * back to its issuer (RFC 6749 6; RFC 9700 4.4, mix-up), an access token only to its resource.
 */
export interface LinkBinding {
  readonly issuer: string
  readonly resource: string
}

/** Tokens as a redemption or a refresh leaves them, with the binding of the server that issued them. */
export type BoundTokens = UpstreamTokens & LinkBinding

/**
 * Whether a stored link was made with the upstream and authorization server found now. A row
 * without a binding (written before links were bound) matches nothing: whom it was issued by
 * cannot be known, so its tokens go nowhere and the user links once more.
 */
export function isBoundTo (link: Partial<LinkBinding>, current: LinkBinding): boolean {
  return link.issuer === current.issuer && link.resource === current.resource
}

/** The link's binding no longer matches discovery: its tokens are not sent (refresh, revocation). */
export class LinkNotBound extends Error {
  override readonly name = 'LinkNotBound'
}

interface Ready {
  readonly config: oidc.Configuration
  readonly kind: ClientIdentityKind
  /** The store key of a dynamic registration in use, else undefined. */
  readonly registrationKey: string | undefined
  readonly authorization: UpstreamAuthorization
  readonly scopes: readonly string[]
}

export interface UpstreamOAuthClientOptions {
  readonly server: string
  readonly url: string
  readonly auth: UpstreamOAuthConfig
  readonly publicUrl: string
  readonly store: Store
  readonly box: SecretBox
  readonly fetch: FetchLike
  readonly now: () => number
}

const REGISTRATION_PREFIX = 'upstream-oauth-client:'

export class UpstreamOAuthClient {
  private ready: Promise<Ready> | undefined

  constructor (private readonly opts: UpstreamOAuthClientOptions) {}

  get redirectUri (): string {
    return `${this.opts.publicUrl}${linkCallbackPath(this.opts.server)}`
  }

  /** The authorization request for one link: PKCE S256 from `verifier`, bound to `state`. */
  async authorizationUrl (state: string, verifier: string): Promise<URL> {
    const { config, authorization, scopes } = await this.prepared()
    return oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri,
      state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      resource: authorization.resource,
      ...(scopes.length === 0 ? {} : { scope: scopes.join(' ') }),
    })
  }

  /**
   * Redeems the callback (the redirect URI with the server's query): state, iss and PKCE
   * checked. The tokens carry the binding of the discovery the code was redeemed with.
   */
  async redeem (callbackUrl: URL, state: string, verifier: string): Promise<BoundTokens> {
    const ready = await this.prepared()
    const tokens = await this.forgettingRefusedRegistration(ready, async () => await oidc.authorizationCodeGrant(ready.config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: false }, { resource: ready.authorization.resource }))
    return { ...this.kept(tokens), ...bindingOf(ready) }
  }

  /**
   * A new access token (and perhaps a rotated refresh token: the old one is kept otherwise).
   * `link`: the binding the refresh token was stored with; checked against the very discovery
   * whose token endpoint would receive it (LinkNotBound otherwise, and nothing is sent).
   */
  async refresh (refreshToken: string, link: Partial<LinkBinding>): Promise<BoundTokens> {
    const ready = this.boundTo(await this.prepared(), link)
    const tokens = await this.forgettingRefusedRegistration(ready, async () => await oidc.refreshTokenGrant(ready.config, refreshToken, { resource: ready.authorization.resource }))
    const kept = { ...this.kept(tokens), ...bindingOf(ready) }
    return kept.refreshToken === undefined ? { ...kept, refreshToken } : kept
  }

  /** Whom tokens redeemed or refreshed now would be bound to (discovery done first, then kept). */
  async binding (): Promise<LinkBinding> {
    return bindingOf(await this.prepared())
  }

  /**
   * Discovery and client identity done (kept after the first success): a refresh does this
   * before taking its cross-replica lock, so that the lock covers only the token request.
   */
  async discover (): Promise<void> {
    await this.prepared()
  }

  /**
   * RFC 7009 at the server's revocation endpoint, when it has one; false when it has none.
   * `link` as for refresh: a token is revoked only where it was issued (LinkNotBound otherwise).
   */
  async revoke (token: string, hint: 'access_token' | 'refresh_token', link: Partial<LinkBinding>): Promise<boolean> {
    const { config } = this.boundTo(await this.prepared(), link)
    if (config.serverMetadata().revocation_endpoint === undefined) return false
    await oidc.tokenRevocation(config, token, { token_type_hint: hint })
    return true
  }

  /**
   * An authorization server may delete a dynamic registration (Portcullis does for unused
   * ones): on invalid_client the stored registration is forgotten, so that the next link
   * registers again instead of failing for ever. The operator's configured client refused is
   * ConfiguredClientRefused: the callers tell it apart from a refused grant.
   */
  private async forgettingRefusedRegistration<T> (ready: Ready, grant: () => Promise<T>): Promise<T> {
    try {
      return await grant()
    } catch (err) {
      if (!isClientRefusal(err)) throw err
      if (ready.kind === 'configured') {
        throw new ConfiguredClientRefused(`the authorization server refused the configured client "${ready.config.clientMetadata().client_id}" (invalid_client): check upstreamAuth.clientId and clientSecret`, { cause: err })
      }
      if (ready.registrationKey !== undefined) {
        this.ready = undefined
        await this.opts.store.kvDelete(ready.registrationKey)
      }
      throw err
    }
  }

  private boundTo (ready: Ready, link: Partial<LinkBinding>): Ready {
    if (!isBoundTo(link, bindingOf(ready))) throw new LinkNotBound(`the link at "${this.opts.server}" was made with another upstream or authorization server than discovery finds now`)
    return ready
  }

  private kept (tokens: oidc.TokenEndpointResponse): UpstreamTokens {
    const expiresIn = typeof tokens.expires_in === 'number' && tokens.expires_in > 0 ? tokens.expires_in : undefined
    return {
      accessToken: tokens.access_token,
      ...(tokens.refresh_token === undefined ? {} : { refreshToken: tokens.refresh_token }),
      ...(expiresIn === undefined ? {} : { expiresAtMs: this.opts.now() + expiresIn * 1000 }),
    }
  }

  /** Discovery and client identity once, kept; a failure is retried at the next use. */
  private async prepared (): Promise<Ready> {
    this.ready ??= this.prepare().catch((err: unknown) => {
      this.ready = undefined
      throw err
    })
    return await this.ready
  }

  private async prepare (): Promise<Ready> {
    const authorization = await discoverUpstreamAuthorization(this.opts.url, this.opts.fetch)
    const issuer = new URL(authorization.issuer)
    const { metadata, source } = await this.serverMetadata(issuer)
    requirePkceS256(metadata)
    const kind = chooseClientIdentity(this.opts.auth.clientId, metadata, this.opts.publicUrl)
    const client = kind === 'configured'
      ? { client_id: this.opts.auth.clientId ?? '', ...(this.opts.auth.clientSecret === undefined ? {} : { client_secret: this.opts.auth.clientSecret }) }
      : kind === 'metadata-document'
        ? { client_id: `${this.opts.publicUrl}${clientMetadataPath(this.opts.server)}` }
        : await this.registered(issuer, source)
    const registrationKey = kind === 'registration' ? this.registrationKeyOf(issuer) : undefined
    const config = new oidc.Configuration(metadata, client.client_id, { ...client }, clientAuth(client.client_secret, metadata))
    this.guard(config, issuer)
    return { config, kind, registrationKey, authorization, scopes: scopesToRequest(this.opts.auth.scopes, authorization) }
  }

  /**
   * The issuer's metadata from the first well-known URI that has it (metadataDiscoveryUrls). A
   * URL given whole to openid-client skips its issuer check (it checks only what it resolved
   * itself), so it is done here: RFC 8414 3.3, OIDC Discovery 4.3.
   */
  private async serverMetadata (issuer: URL): Promise<{ metadata: oidc.ServerMetadata, source: MetadataSource }> {
    let firstError: unknown
    for (const source of metadataDiscoveryUrls(issuer)) {
      const { url, algorithm } = source
      try {
        const given = url === undefined
        const found = await oidc.discovery(given ? issuer : new URL(url), 'discovery', undefined, oidc.None(), { ...this.options(issuer), algorithm })
        const metadata = found.serverMetadata()
        if (!given && new URL(metadata.issuer).href !== issuer.href) throw new DiscoveryError(`the metadata at ${url} is for another issuer (${metadata.issuer.slice(0, 200)})`)
        return { metadata, source }
      } catch (err) {
        firstError ??= err
      }
    }
    throw firstError
  }

  /** The dynamic registration for this server at this issuer: the stored one, or a new one stored. */
  private async registered (issuer: URL, source: MetadataSource): Promise<{ client_id: string, client_secret?: string }> {
    const key = this.registrationKeyOf(issuer)
    const stored = await this.opts.store.kvGet(key)
    if (stored !== undefined) return JSON.parse(this.opts.box.open(stored, key)) as { client_id: string, client_secret?: string }
    // openid-client discovers again before registering: from the document discovery found (by
    // default it would read OpenID Connect's only, and an RFC 8414 server could not be registered with).
    const from = source.url === undefined ? issuer : new URL(source.url)
    const config = await oidc.dynamicClientRegistration(from, registrationMetadata(this.opts.publicUrl, this.opts.server), undefined, { ...this.options(issuer), algorithm: source.algorithm })
    const registered = config.clientMetadata()
    const client = { client_id: registered.client_id, ...(typeof registered.client_secret === 'string' ? { client_secret: registered.client_secret } : {}) }
    // Replicas registering at once: the first stored registration wins, the others use it.
    const isFirst = await this.opts.store.kvSetIfAbsent(key, this.opts.box.seal(JSON.stringify(client), key))
    if (isFirst) return client
    const winner = await this.opts.store.kvGet(key)
    return winner === undefined ? client : JSON.parse(this.opts.box.open(winner, key)) as { client_id: string, client_secret?: string }
  }

  private registrationKeyOf (issuer: URL): string {
    return `${REGISTRATION_PREFIX}${this.opts.server}:${issuer.href}`
  }

  private options (issuer: URL): oidc.DiscoveryRequestOptions {
    return {
      [oidc.customFetch]: async (url: string, options: oidc.CustomFetchOptions) => await this.opts.fetch(url, { ...options }),
      // http only reaches the guarded fetch's operator hosts on loopback (a local upstream, tests); it refuses the rest.
      ...(issuer.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
    }
  }

  private guard (config: oidc.Configuration, issuer: URL): void {
    config[oidc.customFetch] = async (url, options) => await this.opts.fetch(url, { ...options })
    if (issuer.protocol === 'http:') oidc.allowInsecureRequests(config)
  }
}

/** The issuer as its metadata was validated (RFC 8414 3.3) and the resource from the upstream's metadata. */
function bindingOf (ready: Ready): LinkBinding {
  return { issuer: ready.config.serverMetadata().issuer, resource: ready.authorization.resource }
}

/**
 * The token endpoint refused the client itself (RFC 6749 5.2 invalid_client): in the body, or
 * as a bare 401 with a challenge, which 5.2 requires when the client authenticated with the
 * Authorization header (client_secret_basic) and which openid-client does not parse further.
 */
function isClientRefusal (err: unknown): boolean {
  return (err instanceof oidc.ResponseBodyError && err.error === 'invalid_client') ||
    (err instanceof oidc.WWWAuthenticateChallengeError && err.status === 401)
}

/** A secret: Basic when the server takes it (RFC 8414's default), else Post; none: a public client with PKCE. */
function clientAuth (secret: string | undefined, metadata: oidc.ServerMetadata): oidc.ClientAuth {
  if (secret === undefined) return oidc.None()
  const methods = metadata.token_endpoint_auth_methods_supported
  return methods === undefined || methods.includes('client_secret_basic') ? oidc.ClientSecretBasic(secret) : oidc.ClientSecretPost(secret)
}
