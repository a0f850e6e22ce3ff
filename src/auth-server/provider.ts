/**
 * The embedded authorization server: oidc-provider, configured as MCP
 * authorization needs it (MCP basic/authorization, 2025-06-18 … 2026-07-28):
 *
 * - issuer = the gateway's origin; RFC 8414 and OpenID discovery
 * - authorization code + PKCE (S256 only, for every client); RFC 9207 `iss`
 * - clients: pre-registered in YAML, Dynamic Client Registration (RFC 7591),
 *   Client ID Metadata Documents
 * - RFC 8707: every access token is an ES256 JWT whose `aud` is one server
 * - refresh tokens for public clients without offline_access, rotated on
 *   every use, replay revokes the family (after a short grace window)
 * - a revoked grant takes its access tokens with it: each JWT names its grant
 *   (`grant_id`), checked against the revoked-grant list on every request
 *
 * Every option that departs from oidc-provider's defaults says why.
 */
import type { IncomingMessage } from 'node:http'
import type { EndedSignIns } from './ended-sign-ins.js'
import Provider, { errors, interactionPolicy, type Configuration, type KoaContextWithOIDC, type ClientMetadata, type ResourceServer, type UnknownObject } from 'oidc-provider'
import { BASE_SCOPE, MAX_CLIENT_NAME_CHARS, MAX_REGISTRATION_LIST_ITEMS, MAX_REGISTRATION_STRING_CHARS } from '../config/defaults.js'
import type { Config } from '../config/schema.js'
import type { OriginPolicy } from '../mcp/origin.js'
import { isStoreUnavailable, type Store } from '../store/types.js'
import { createAdapter } from './adapter.js'
import { SIGNING_ALG, type KeyMaterial } from './keys.js'
import type { ResourceCatalog } from './resources.js'
import type { UserDirectory } from './users.js'
import { accountProfile, ExternalAccounts, type AccountProfile } from './external-accounts.js'
import { hasIdJagProvider, idJagGrant, JWT_BEARER_GRANT } from './id-jag.js'
import { IdpKeySets } from './idp-keys.js'
import { messagePage, PAGE_HEADERS } from './pages.js'
import type { RevokedGrants } from '../resource-server/revoked-grants.js'
import type { TokenVerifier } from '../resource-server/verify-token.js'
import { revokeJwtAccessTokens } from './revoke-access-token.js'
import { HTTP_REDIRECT_RULE, isForbiddenRedirect, isLoopbackOrNative } from './redirect-rule.js'
import type { FetchLike } from '../net/guarded-fetch.js'
import { ACCOUNT_CLIENT_ID, accountClientMetadata } from '../account/sign-in.js'
import { STORE_RETRY_AFTER_S } from '../store/outage.js'
import { identityProviderNames, machineClientIds } from '../config/auth-parts.js'

export const OAUTH_ROUTES = {
  authorization: '/oauth/authorize',
  token: '/oauth/token',
  registration: '/oauth/register',
  jwks: '/oauth/jwks',
  revocation: '/oauth/revoke',
  end_session: '/oauth/logout',
  userinfo: '/oauth/userinfo',
  introspection: '/oauth/introspect',
  pushed_authorization_request: '/oauth/par',
  code_verification: '/oauth/device',
  device_authorization: '/oauth/device/auth',
  backchannel_authentication: '/oauth/backchannel',
  challenge: '/oauth/challenge',
} as const

export const INTERACTION_PATH = '/interaction'

/** What a client or a person is told while the store (Redis) is unreachable. */
/** Re-exported for the pages and plugins that import it from here. */
export { STORE_RETRY_AFTER_S }
export const STORE_UNAVAILABLE_MESSAGE = 'the authorization server cannot reach its store right now; retry in a few seconds'
export const STORE_UNAVAILABLE_PAGE = messagePage('Temporarily unavailable', 'Sign-in is unavailable for a moment.', 'Wait a few seconds, then reload this page or start again from the application.')

/**
 * oidc-provider (Koa underneath) builds endpoint URLs and decides whether
 * cookies are Secure from the request's Host and X-Forwarded-* headers. The
 * public origin is configured, not guessed: every request it sees is made to
 * say so (publicUrl's host and scheme; the client address as the gateway
 * resolved it through trustProxy). Used with provider.proxy = true.
 */
export function presentAsPublic (req: IncomingMessage, publicUrl: URL, clientIp: string): void {
  req.headers['x-forwarded-host'] = publicUrl.host
  req.headers['x-forwarded-proto'] = publicUrl.protocol.slice(0, -1)
  req.headers['x-forwarded-for'] = clientIp
}
const AUTHORIZATION_CODE_TTL_S = 60
const INTERACTION_TTL_S = 10 * 60

/** Consent is remembered per user and client, across browser sessions. */
export function consentKey (accountId: string, clientId: string): string {
  return `auth:consent:${accountId}:${clientId}`
}

export interface ProviderDeps {
  readonly config: Config
  readonly store: Store
  readonly keys: KeyMaterial
  readonly users: UserDirectory
  readonly catalog: ResourceCatalog
  readonly isOriginAllowed: OriginPolicy
  readonly now: () => number
  /** Revoked grants: every revocation goes through it, so access tokens die with their grant. */
  readonly grants: RevokedGrants
  /** The resource server's verifier (revoking a JWT access token checks it first). */
  readonly verifier: TokenVerifier
  /** Every request oidc-provider makes (CIMD, jwks_uri, sector_identifier_uri): the guarded fetch. */
  readonly fetch: FetchLike
  /** Identity providers' discovery documents and key sets: guarded too, but not limited to clientMetadataDocuments.allowedHosts. */
  readonly idpFetch: FetchLike
  /** A Grant was saved: listed under its account, so offboarding can revoke every grant of a user. */
  readonly onGrantSaved?: (accountId: string, grantId: string, expiresAtMs: number | undefined) => Promise<void>
  /** An identity provider's signing keys could not be read (ID-JAG verification): for the operator's log. */
  readonly onIdpKeysUnavailable: (issuer: string, reason: string) => void
  /** Users an administrator blocked (admin/blocked-users.ts): no account, so no code, token or refresh for them. */
  readonly isUserBlocked?: (accountId: string) => boolean
  /** Sign-ins ended since they began (revoked, blocked, signed out of a page): the password is asked again. */
  readonly endedSignIns?: EndedSignIns
}

/**
 * Metadata that would make the gateway fetch a URL the anonymous registrant chose, at
 * registration (sector_identifier_uri, OIDC Core 8.1) or at every /token
 * (jwks_uri of private_key_jwt clients). Refused for registered clients: MCP clients need
 * neither, and each is a request from inside the gateway's network (RFC 7591 5).
 */
function refuseFetchedMetadata (metadata: UnknownObject): void {
  for (const key of ['sector_identifier_uri', 'jwks_uri'] as const) {
    if (metadata[key] !== undefined) throw new errors.InvalidClientMetadata(`${key} cannot be registered dynamically`)
  }
}

/** Caps on what one registration may store (defaults.ts): every list, client_name, every other string. */
function checkRegistrationSizes (metadata: UnknownObject): void {
  for (const [key, value] of Object.entries(metadata)) {
    if (Array.isArray(value)) {
      if (value.length > MAX_REGISTRATION_LIST_ITEMS) throw new errors.InvalidClientMetadata(`${key} may list at most ${MAX_REGISTRATION_LIST_ITEMS} values`)
      if (value.some((item) => typeof item === 'string' && item.length > MAX_REGISTRATION_STRING_CHARS)) throw new errors.InvalidClientMetadata(`${key}: each value may be at most ${MAX_REGISTRATION_STRING_CHARS} characters`)
    } else if (typeof value === 'string') {
      const max = key === 'client_name' ? MAX_CLIENT_NAME_CHARS : MAX_REGISTRATION_STRING_CHARS
      if (value.length > max) throw new errors.InvalidClientMetadata(`${key} may be at most ${max} characters`)
    }
  }
}

function staticClients (config: Config): ClientMetadata[] {
  return config.auth.clients.map((client) => ({
    client_id: client.clientId,
    ...(client.clientSecret === undefined ? { token_endpoint_auth_method: 'none' } : { client_secret: client.clientSecret, token_endpoint_auth_method: 'client_secret_basic' }),
    ...(client.name === undefined ? {} : { client_name: client.name }),
    grant_types: [...client.grantTypes],
    response_types: client.grantTypes.includes('authorization_code') ? ['code'] : [],
    redirect_uris: [...client.redirectUris],
    // Loopback and custom-scheme redirects are native apps (RFC 8252: any loopback port).
    application_type: client.redirectUris.some(isLoopbackOrNative) ? 'native' : 'web',
  }))
}

function optional<T> (value: T | undefined): T[] {
  return value === undefined ? [] : [value]
}

/**
 * The gateway's own account pages (account/sign-in.ts) ask for `openid` only and are part of
 * the gateway: no consent screen, a grant made on the spot (oidc-provider's documented way to
 * skip consent for first-party clients).
 */
async function firstPartyGrant (ctx: KoaContextWithOIDC): Promise<InstanceType<Provider['Grant']> | undefined> {
  const { session, client, provider } = ctx.oidc
  if (session?.accountId === undefined || client === undefined) return undefined
  const existing = session.grantIdFor(client.clientId)
  const found = existing === undefined ? undefined : await provider.Grant.find(existing)
  if (found !== undefined) return found
  const grant = new provider.Grant({ accountId: session.accountId, clientId: client.clientId })
  grant.addOIDCScope('openid')
  await grant.save()
  return grant
}

/**
 * RFC 8252 8.6 (client impersonation): a public client whose code goes to a loopback port (any
 * port matches, RFC 8252 7.3) or a private-use scheme cannot prove it is the client the user
 * approved. Whatever listens there — another user's program on a shared machine — redeems the code
 * with its own PKCE verifier, and any web page can send a signed-in browser to such an
 * authorization (a metadata document's client_id is public). "Unless the identity of the client
 * can be proven, the request SHOULD be processed as if no previous request had been approved":
 * the user approves each one (MCP authorization, security considerations, localhost redirect URIs).
 * An https redirect (the code goes to its host) or client authentication at /token proves it. The
 * account pages' own client returns to the gateway itself.
 */
function isUnprovableClient (ctx: KoaContextWithOIDC): boolean {
  const client = ctx.oidc.client
  const redirectUri = ctx.oidc.params?.redirect_uri
  if (client === undefined || client.clientId === ACCOUNT_CLIENT_ID || client.clientAuthMethod !== 'none') return false
  return typeof redirectUri === 'string' && isLoopbackOrNative(redirectUri)
}

/** Access token lifetime in whole seconds, as tokens carry it. */
export function accessTokenLifetimeS (config: Config): number {
  return Math.max(1, Math.round(config.auth.accessTokenTtl / 1000))
}

export function createProvider (deps: ProviderDeps): Provider {
  const { config, store, keys, users, catalog } = deps
  const externalAccounts = new ExternalAccounts(store)
  /**
   * A local user from YAML, or a user an identity provider vouched for (not one it has since
   * disabled), not blocked by an administrator: oidc-provider then finds no account, and refuses
   * the code exchange and every refresh (invalid_grant) — the login pages refuse them too.
   */
  const profileOf = async (accountId: string): Promise<AccountProfile | undefined> => deps.isUserBlocked?.(accountId) === true ? undefined : await accountProfile(users, externalAccounts, accountId, providerNames)
  const auth = config.auth
  const providerNames = identityProviderNames(auth)
  /** The clients that may use client_credentials: those the operator lists with it (auth.clients). */
  const machineClients = machineClientIds(auth)
  const accessTokenTtlS = accessTokenLifetimeS(config)
  const refreshTokenTtlS = Math.max(1, Math.round(auth.refreshTokenTtl / 1000))
  const clientScopes = new Map(auth.clients.map((c) => [c.clientId, c.scopes]))
  const revokeGrant = async (grantId: string): Promise<void> => deps.grants.revoke(grantId)
  /** What a token for one (canonical) resource may carry and how it is made, for every grant. */
  const resourceServerInfo = (audience: string, clientId: string): ResourceServer => {
    let scopes = catalog.grantableScopes(audience)
    // A machine client may only obtain the scopes its YAML entry lists.
    const allowed = clientScopes.get(clientId)
    if (allowed !== undefined) scopes = scopes.filter((s) => s === BASE_SCOPE || allowed.includes(s))
    return {
      scope: scopes.join(' '),
      audience,
      accessTokenTTL: accessTokenTtlS,
      accessTokenFormat: 'jwt',
      jwt: { sign: { alg: SIGNING_ALG } },
    }
  }

  /**
   * Tokens for the admin API go only to users in admin.groups, signed in interactively (no
   * machine client, no ID-JAG). Before sign-in the account is unknown and the request goes on
   * (the consent page names the admin API); every code exchange and refresh knows the account
   * from its grant and is refused (invalid_target) for anyone outside admin.groups — group
   * changes reach the next refresh.
   */
  const adminGroups = new Set(config.admin.groups)
  const checkAdminAudience = async (ctx: KoaContextWithOIDC): Promise<void> => {
    const grantType = ctx.oidc.params?.grant_type
    if (grantType === 'client_credentials' || grantType === JWT_BEARER_GRANT) throw new errors.InvalidTarget('the admin API needs a user signed in through the gateway')
    const accountId = ctx.oidc.entities.Grant?.accountId ?? ctx.oidc.session?.accountId
    if (accountId === undefined) return
    const profile = await profileOf(accountId)
    if (profile === undefined || !profile.groups.some((group) => adminGroups.has(group))) throw new errors.InvalidTarget('the admin API is only for members of admin.groups')
  }

  // Native (and every dynamically registered) client gets the consent prompt on every
  // authorization by default; consent here is remembered per user and client instead — for the
  // clients whose identity can be proven (isUnprovableClient).
  const policy = interactionPolicy.base()
  policy.get('consent')?.checks.remove('native_client_prompt')
  policy.get('consent')?.checks.add(new interactionPolicy.Check('unprovable_client_prompt', 'this client\'s identity cannot be verified: End-User interaction is required', 'interaction_required', (ctx) =>
    ctx.oidc.result?.consent === undefined && isUnprovableClient(ctx) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT), 0)
  const endedSignIns = deps.endedSignIns
  if (endedSignIns !== undefined) {
    // A browser's sign-in the user's revocation, blocking or sign-out ended (./ended-sign-ins.ts)
    // no longer stands for them: the login prompt runs again, as without a session.
    policy.get('login')?.checks.add(new interactionPolicy.Check('sign_in_ended', 'End-User authentication is required', async (ctx) => {
      const session = ctx.oidc.session
      const accountId = session?.accountId
      if (accountId === undefined || ctx.oidc.result?.login !== undefined) return interactionPolicy.Check.NO_NEED_TO_PROMPT
      const isEnded = await endedSignIns.isEnded(accountId, (session?.loginTs ?? 0) * 1000)
      return isEnded ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT
    }))
  }

  const configuration: Configuration = {
    adapter: createAdapter(store, { refreshGraceS: Math.round(auth.refreshTokenReuseGrace / 1000), registeredClientTtlMs: auth.registeredClientTtl, unusedClientTtlMs: auth.unusedClientTtl, now: deps.now, revokeGrant, ...(deps.onGrantSaved === undefined ? {} : { onGrantSaved: deps.onGrantSaved }) }) as Configuration['adapter'],
    jwks: { keys: keys.signingKeys.map((k) => ({ ...k })) } as Configuration['jwks'],
    cookies: {
      keys: [...keys.cookieKeys],
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    routes: OAUTH_ROUTES,
    // OpenID scopes only: server scopes come from getResourceServerInfo. Listing them here would
    // make them grantable without a resource, for an opaque token valid nowhere.
    scopes: ['openid', 'offline_access'],
    responseTypes: ['code'],
    clients: [...staticClients(config), ...optional(accountClientMetadata(config.publicUrl))],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      id_token_signed_response_alg: SIGNING_ALG,
    },
    // OAuth 2.1: PKCE for every client, confidential ones included (S256 is the only method oidc-provider offers).
    pkce: { required: () => true },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'] },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: auth.dynamicRegistration, initialAccessToken: false, issueRegistrationAccessToken: true },
      registrationManagement: { enabled: auth.dynamicRegistration, rotateRegistrationAccessToken: false },
      clientCredentials: { enabled: machineClients.size > 0 },
      revocation: { enabled: true },
      // DPoP-bound tokens checked as plain bearers would lose their binding: off until verified end to end.
      dPoP: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      userinfo: { enabled: false },
      introspection: { enabled: false },
      clientIdMetadataDocument: {
        enabled: auth.clientMetadataDocuments.enabled,
        ack: 'draft-02',
        allowFetch: (_ctx: KoaContextWithOIDC, clientId: string) => {
          const allowed = auth.clientMetadataDocuments.allowedHosts
          return allowed.length === 0 || allowed.includes(new URL(clientId).hostname)
        },
      } as NonNullable<Configuration['features']>['clientIdMetadataDocument'],
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        defaultResource: (ctx: KoaContextWithOIDC, client: { clientId?: string } | undefined, oneOf?: readonly string[]) => {
          // The account pages sign in for an ID token only: their tokens reach no MCP server.
          if (client?.clientId === ACCOUNT_CLIENT_ID) return undefined
          if (oneOf !== undefined && oneOf.length > 0) return oneOf[0] as string
          const requested = String(ctx.oidc.params?.scope ?? '').split(' ').filter((s) => s !== '')
          const chosen = catalog.defaultFor(requested)
          if (chosen === undefined) {
            throw new errors.InvalidTarget(`send the resource parameter (RFC 8707) with the URL of the MCP server, e.g. ${catalog.urlOf(config.servers[0]?.name ?? 'name')}`)
          }
          return chosen
        },
        getResourceServerInfo: async (ctx: KoaContextWithOIDC, indicator: string, client: { clientId: string }) => {
          const audience = catalog.canonical(indicator)
          if (audience === undefined) throw new errors.InvalidTarget(`no MCP server at ${indicator.slice(0, 200)}`)
          if (audience === catalog.adminUrl) await checkAdminAudience(ctx)
          return resourceServerInfo(audience, client.clientId)
        },
      },
    },
    extraClientMetadata: {
      properties: ['scope', 'application_type', 'grant_types'],
      // Runs before oidc-provider's own checks, for every client it builds: registered (DCR),
      // fetched (Client ID Metadata Documents), loaded from the store, and listed in YAML.
      validator (ctx: KoaContextWithOIDC | undefined, key: string, value: unknown, metadata: UnknownObject) {
        if (key === 'application_type') {
          // One redirect rule for every client source (redirect-rule.ts). CIMD documents are fetched
          // at authorization time and reach no registration route: they are checked here too.
          const uris = Array.isArray(metadata.redirect_uris) ? metadata.redirect_uris as unknown[] : []
          if (uris.some((uri) => typeof uri === 'string' && isForbiddenRedirect(uri))) throw new errors.InvalidClientMetadata(`redirect_uris ${HTTP_REDIRECT_RULE}`)
        }
        // A machine token is for the clients the operator lists with client_credentials, whatever
        // a client's metadata says: a Client ID Metadata Document reaches no registration route,
        // and one listing client_credentials with its author's own keys (private_key_jwt) got a
        // token with no user behind it once any YAML client had turned the grant on.
        if (key === 'grant_types' && Array.isArray(value) && value.includes('client_credentials') && !machineClients.has(String(metadata.client_id))) {
          throw new errors.InvalidClientMetadata('client_credentials is only for clients registered by the gateway operator')
        }
        const route = ctx?.oidc?.route
        if (route !== 'registration' && route !== 'client_update') return
        if (key === 'scope') {
          // Clients copy the challenged scope (and claude.ai its own) into the registration body;
          // a registered scope would also become an allow-list. Scopes are decided per request.
          delete metadata.scope
        } else if (key === 'application_type') {
          refuseFetchedMetadata(metadata)
          checkRegistrationSizes(metadata)
          // Native rules are exactly MCP's: http only on loopback (any port), https elsewhere,
          // custom schemes (cursor://, vscode://) allowed.
          metadata.application_type = 'native'
          if (metadata.token_endpoint_auth_method === 'none') {
            // RFC 7591 2: an omitted token_endpoint_auth_method means the default — here `none`
            // (clientDefaults), a public client. oidc-provider generates a secret before that default
            // applies (it reads client_secret_basic); a secret the client can never use is dropped.
            delete metadata.client_secret
            delete metadata.client_secret_expires_at
          }
        }
      },
    } as Configuration['extraClientMetadata'],
    interactions: { policy, url: (_ctx: KoaContextWithOIDC, interaction: { uid: string }) => `${INTERACTION_PATH}/${interaction.uid}` },
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const { session, client, result } = ctx.oidc
      if (client === undefined || session === undefined) return undefined
      if (client.clientId === ACCOUNT_CLIENT_ID) return await firstPartyGrant(ctx)
      const remembered = session.accountId === undefined ? undefined : await store.kvGet(consentKey(session.accountId, client.clientId))
      const grantId = (result?.consent as { grantId?: string } | undefined)?.grantId ?? session.grantIdFor(client.clientId) ?? remembered
      return grantId === undefined ? undefined : await ctx.oidc.provider.Grant.find(grantId)
    },
    findAccount: async (_ctx: KoaContextWithOIDC, sub: string) => {
      const profile = await profileOf(sub)
      if (profile === undefined) return undefined
      return {
        accountId: sub,
        claims: () => ({ sub, preferred_username: profile.preferred_username, ...(profile.name === undefined ? {} : { name: profile.name }), ...(profile.email === undefined ? {} : { email: profile.email }) }),
      }
    },
    // The gateway's policy reads who the user is from the token itself: no lookup per request.
    // grant_id: the resource server refuses tokens of revoked grants (revoked-grants.ts).
    extraTokenClaims: async (_ctx: KoaContextWithOIDC, token: object) => {
      const grantId = 'grantId' in token && typeof token.grantId === 'string' ? { grant_id: token.grantId } : {}
      const accountId = 'accountId' in token && typeof token.accountId === 'string' ? token.accountId : undefined
      const profile = accountId === undefined ? undefined : await profileOf(accountId)
      if (profile === undefined) return grantId
      return { ...grantId, preferred_username: profile.preferred_username, groups: [...profile.groups], ...(profile.email === undefined ? {} : { email: profile.email }) }
    },
    // Public clients too, without offline_access (MCP clients rarely ask for it).
    issueRefreshToken: (_ctx: KoaContextWithOIDC, client: { grantTypeAllowed: (g: string) => boolean }) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    // Tokens outlive the browser session at the gateway (by default they die with it unless offline_access).
    expiresWithSession: () => false,
    ttl: {
      AccessToken: accessTokenTtlS,
      ClientCredentials: accessTokenTtlS,
      AuthorizationCode: AUTHORIZATION_CODE_TTL_S,
      Interaction: INTERACTION_TTL_S,
      // A JWT-bearer (ID-JAG) grant has no refresh token: it is needed only while its access token lives.
      Grant: (ctx: KoaContextWithOIDC | undefined) => ctx?.oidc?.params?.grant_type === JWT_BEARER_GRANT ? accessTokenTtlS : refreshTokenTtlS,
      RefreshToken: refreshTokenTtlS,
      Session: refreshTokenTtlS,
      IdToken: accessTokenTtlS,
    },
    clientBasedCORS: (_ctx: KoaContextWithOIDC, origin: string, client: { redirectUris?: readonly string[] }) =>
      deps.isOriginAllowed(origin) || (client.redirectUris ?? []).some((uri) => { try { return new URL(uri).origin === origin } catch { return false } }),
    renderError: (ctx: KoaContextWithOIDC, out: { error: string, error_description?: string }) => {
      ctx.set(PAGE_HEADERS)
      ctx.body = messagePage('Sign-in could not continue', `${out.error}${out.error_description === undefined ? '' : `: ${out.error_description}`}`, 'Return to the application and try again.')
    },
    // Anonymous registrants choose these URLs: public https hosts only (net/guarded-fetch.ts).
    fetch: deps.fetch as Configuration['fetch'],
  }

  const provider = new Provider(config.publicUrl, configuration)
  // Offered (in discovery, to registrations) only while some IdP is trusted for ID-JAGs: the
  // client must also be allowed the grant (YAML grantTypes, or grant_types when registering).
  if (hasIdJagProvider(auth.identityProviders)) {
    provider.registerGrantType(JWT_BEARER_GRANT, idJagGrant({
      identityProviders: auth.identityProviders,
      catalog,
      store,
      keySets: new IdpKeySets(deps.idpFetch),
      accounts: externalAccounts,
      now: deps.now,
      resourceServerInfo,
      onKeysUnavailable: deps.onIdpKeysUnavailable,
    }), ['assertion', 'scope'])
  }
  // The store down (Redis unreachable) is not a server bug: 503 "retry shortly", page or JSON.
  provider.on('server_error', (ctx: KoaContextWithOIDC, err: unknown) => {
    if (isStoreUnavailable(err)) ctx.state.storeUnavailable = true
  })
  provider.use(async (ctx, next) => {
    await next()
    if (ctx.status !== 500 || ctx.state.storeUnavailable !== true) return
    ctx.status = 503
    ctx.set('retry-after', String(STORE_RETRY_AFTER_S))
    ctx.set('cache-control', 'no-store')
    if (ctx.response.is('html') !== false) {
      ctx.set(PAGE_HEADERS)
      ctx.body = STORE_UNAVAILABLE_PAGE
    } else {
      ctx.body = { error: 'temporarily_unavailable', error_description: STORE_UNAVAILABLE_MESSAGE }
    }
  })
  provider.use(revokeJwtAccessTokens({ verifier: deps.verifier, audiences: [config.publicUrl, catalog.adminUrl, ...config.servers.map((s) => catalog.urlOf(s.name)), ...config.virtualServers.map((s) => catalog.urlOf(s.name))], revokeGrant }))
  // Registration answers browser-based clients too (oidc-provider sends no CORS there).
  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith(OAUTH_ROUTES.registration)) {
      const origin = ctx.get('origin')
      if (origin !== '') {
        ctx.set('access-control-allow-origin', origin)
        ctx.set('vary', 'Origin')
        ctx.set('access-control-expose-headers', 'location')
      }
      if (ctx.method === 'OPTIONS') {
        ctx.set('access-control-allow-methods', 'GET, POST, PUT, DELETE, OPTIONS')
        ctx.set('access-control-allow-headers', ctx.get('access-control-request-headers') || 'content-type, authorization')
        ctx.set('access-control-max-age', '600')
        ctx.status = 204
        return
      }
    }
    await next()
    // Publish the servers' scopes (not OpenID scopes, so not in `scopes`).
    if (ctx.method === 'GET' && ctx.path.startsWith('/.well-known/') && typeof ctx.body === 'object' && ctx.body !== null && 'scopes_supported' in ctx.body) {
      const body = ctx.body as { scopes_supported: string[] }
      body.scopes_supported = [...new Set([...body.scopes_supported, ...catalog.allScopes()])]
    }
  })
  return provider
}
