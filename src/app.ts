/**
 * buildApp(config) wires the gateway's modules into one Fastify instance.
 * It never listens: main.ts does, and tests use inject() or listen on port 0.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Config } from './config/schema.js'
import { PortcullisError, jsonRpcErrorPayload } from './errors.js'
import { createLogger, redactUrl } from './observability/logger.js'
import { healthRoutes } from './routes/health.js'
import { doctorProbeRoutes } from './doctor/probe-routes.js'
import { mcpRoutes } from './routes/mcp.js'
import { createToolGuards } from './guardrails/create-tool-guards.js'
import { createUpstream, type UpstreamOptions } from './upstreams/registry.js'
import { UpstreamPool, type UpstreamPlan } from './reload/upstream-pool.js'
import type { Reload } from './reload/report.js'
import type { FastifyServerFactory } from 'fastify'
import type { AuditLog } from './observability/audit.js'
import type { Upstream } from './upstreams/types.js'
import { VERSION } from './version.js'
import { mkdirSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { createOriginPolicy } from './mcp/origin.js'
import { createStore } from './store/create-store.js'
import { isStoreUnavailable, type Store } from './store/types.js'
import { loadKeys, type KeyMaterial } from './auth-server/keys.js'
import { UserDirectory, type FirstRunAccount } from './auth-server/users.js'
import { ResourceCatalog } from './auth-server/resources.js'
import { accessTokenLifetimeS, createProvider } from './auth-server/provider.js'
import { markClientSignedIn } from './auth-server/adapter.js'
import { createGuardedFetch, type OutboundTestAllowance } from './net/guarded-fetch.js'
import { authServerRoutes } from './auth-server/plugin.js'
import { interactionRoutes } from './auth-server/interactions.js'
import { SecretBox } from './auth-server/secret-box.js'
import { IdpSessions } from './auth-server/idp-sessions.js'
import { createUpstreamAuth } from './upstream-auth/create-upstream-auth.js'
import { upstreamAuthRoutes } from './upstream-auth/plugin.js'
import { AccountGrants } from './auth-server/account-grants.js'
import { ClusterNotices } from './cluster/notices.js'
import type { Socket } from 'node:net'
import { Offboarding } from './auth-server/offboarding.js'
import { backchannelLogoutRoutes } from './auth-server/backchannel-logout.js'
import { IdpKeySets } from './auth-server/idp-keys.js'
import { IdpSignIn } from './auth-server/idp-sign-in.js'
import { createAuthenticator, resourceMetadataRoutes, type Authenticator } from './resource-server/plugin.js'
import { TOKEN_CLOCK_TOLERANCE_S, TokenVerifier, type RequestIdentity } from './resource-server/verify-token.js'
import { RevokedGrants } from './resource-server/revoked-grants.js'
import rateLimitPlugin from '@fastify/rate-limit'
import type { DestinationStream } from 'pino'
import { LOCAL_COUNTERS_PER_RATE, RateLimiter } from './rate-limit/limiter.js'
import { createAuditLog } from './observability/audit.js'
import { Metrics, metricsRoute, recordHttpMetrics } from './observability/metrics.js'
import { SessionDirectory } from './cluster/sessions.js'
import { relayHeadersTimeoutMs, ReplicaForwarder } from './cluster/forward.js'
import { SessionOwners } from './upstreams/session-owners.js'
import { LegacySessions } from './routes/legacy-sessions.js'
import { VirtualSessionTable } from './virtual/session.js'
import { StreamKeeper } from './upstreams/stream-keeper.js'
import { bearerChallenge } from './resource-server/challenge.js'
import type { ServerConfig } from './config/schema.js'
import { createRedisClient, waitUntilReady, type RedisClient } from './store/redis-client.js'
import { ApiKeys } from './account/api-keys.js'
import { KeyOwners } from './account/key-owners.js'
import { accountRoutes } from './account/plugin.js'
import { AccountCookies } from './account/session.js'
import { ACCOUNT_CLIENT_ID, accountClientMetadata, type TokenExchange } from './account/sign-in.js'
import { accountProfile, ExternalAccounts, isExternalAccountId } from './auth-server/external-accounts.js'
import { ApiKeyVerifier } from './resource-server/verify-api-key.js'
import { BlockedUsers } from './admin/blocked-users.js'
import { UsersSeen } from './admin/users-seen.js'
import { createAdminAuthenticator } from './admin/admin-access.js'
import { adminRoutes, type AdminRoutesOptions } from './admin/plugin.js'
import { revokeAccountChanges, type AccountRevocation, type RevokeUserDeps } from './admin/revoke-user.js'
import { adminPageRoutes, adminSignInPage } from './admin/page-routes.js'
import { PageSessions } from './account/page-sessions.js'
import { EndedSignIns } from './auth-server/ended-sign-ins.js'
import { startTracing, type Tracing } from './observability/tracing.js'
import { instrumentApp, type TraceSettings } from './observability/request-trace.js'
import { identityProviderNames, machineClientIds } from './config/auth-parts.js'

export interface BuildOptions {
  /** A pino logger; by default one is made from config.log. */
  readonly logger?: Logger
  /** Clock for idle expiry, counters and token checks (tests drive it). */
  readonly now?: () => number
  /** A store to use instead of the configured one (the caller closes it). */
  readonly store?: Store
  /**
   * Test-only: hosts whose loopback/private addresses outbound fetches may reach, and a CA to
   * trust (tests serve metadata documents from 127.0.0.1). Never settable from configuration.
   */
  readonly outboundTestAllowance?: OutboundTestAllowance
  /** Where audit records go instead of config.audit.destination (tests collect them). */
  readonly auditDestination?: DestinationStream
  /** How long a start with auth on waits for Redis (default 15 s). */
  readonly redisStartupTimeoutMs?: number
  /** Test-only: how often a pending stdio handshake logs "still starting" (default 5 s). */
  readonly stdioStartingLogIntervalMs?: number
  /** Parts an earlier build made and a reload keeps (src/reload/gateway.ts); the caller closes them. */
  readonly shared?: SharedParts
  /** POST /admin/api/v1/reload and the admin page's button (README "Reloading"): only a gateway that can reload offers it. */
  readonly reload?: Reload
  /** The caller owns the listener (a reload's gateway): fastify hands it each build's request handler. */
  readonly serverFactory?: FastifyServerFactory
  /** Test-only: runs when everything is wired (a test throws here to fail a build after its upstreams were made, or adds a hook to the app). */
  readonly afterWiring?: (app: FastifyInstance) => Promise<void>
}

/**
 * What outlives one build of the app: connections (Redis), state held in memory (the store,
 * rate-limit counters, stdio processes and sessions, HTTP session owners), and what a
 * restart would lose or duplicate (metrics, the audit file, the /metrics listener).
 */
export interface SharedParts {
  readonly redis: RedisClient | undefined
  readonly store: Store
  readonly metrics: Metrics
  readonly audit: AuditLog | undefined
  readonly directory: SessionDirectory | undefined
  readonly httpSessionOwners: SessionOwners
  readonly streamKeeper: StreamKeeper
  /** The 2024-11-05 transport's sessions: a legacy client's stream outlives the build that opened it. */
  readonly legacySessions: LegacySessions
  /** Virtual servers' sessions: a reload keeps them (their member sessions live in the upstreams). */
  readonly virtualSessions: VirtualSessionTable
  readonly limiter: RateLimiter
  readonly upstreams: UpstreamPool
  /** The /metrics listener when metrics.listen is set (not yet listening). */
  readonly metricsServer: FastifyInstance | undefined
  close: () => Promise<void>
}

export interface GatewayState {
  isClosing: boolean
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly store: Store
  readonly metrics: Metrics
  /** Set when this start created the first-run account (its password, once). */
  readonly firstRun: FirstRunAccount | undefined
  /** Users' sessions at their identity providers (the IdP refresh token, sealed at rest); with auth on. */
  readonly idpSessions: IdpSessions | undefined
  /** The /metrics listener when metrics.listen is set (not yet listening). */
  readonly metricsServer?: FastifyInstance
  /** Stops the pollers and the cluster notice subscriber (a reload retires this build; closing does it too). */
  readonly stopBackground: () => Promise<void>
  /**
   * Puts the build's changes to shared parts in force: the upstream pool's plan, linked-token
   * source, metrics gauges, rate-limit store-error policy. A build with shared parts of its own
   * has done it; a reload's gateway calls it after the swap (a failed build changes nothing).
   */
  readonly activate: () => void
  /** A reload removed these users or identity providers, or changed these users' groups (README "Reloading"): their access revoked, each on its own. */
  readonly revokeAccounts: AccountRevoker
}

/** Accounts a reload takes away or changes (src/reload/users.ts). */
export interface AccountChanges {
  readonly removedUsers: readonly string[]
  readonly regroupedUsers: readonly string[]
  readonly removedProviders: readonly string[]
}

export type AccountRevoker = (changes: AccountChanges) => Promise<AccountRevocation>

declare module 'fastify' {
  interface FastifyInstance {
    portcullis: GatewayState
  }
}

/** How long a start with auth on waits for Redis before giving up (the keys are there). */
const REDIS_STARTUP_TIMEOUT_MS = 15_000
/** With auth off, Redis holds only rate-limit counters: start without it after this. */
const REDIS_OPTIONAL_STARTUP_TIMEOUT_MS = 2_000

const MCP_PATH_RE = /^\/[^/?]+\/mcp\/?(?:\?|$)/

export async function buildApp (config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const logger = options.logger ?? createLogger(config.log.level)
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: config.log.requests ? new CompletedRequestLog() : new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimit,
    // The MCP routes answer 503 themselves while closing, as a JSON-RPC error with Connection: close.
    return503OnClosing: false,
    routerOptions: { ignoreTrailingSlash: true },
    ...listenerTimeouts(config.limits),
    ...(options.serverFactory === undefined ? {} : { serverFactory: options.serverFactory }),
    // A hop count n means: trust the n nearest proxies (proxy-addr's own reading of a number).
    trustProxy: typeof config.trustProxy === 'number' ? ((_address: string, hop: number) => hop < (config.trustProxy as number)) : config.trustProxy,
  })
  try {
    await wireApp(app, config, options, logger)
  } catch (err) {
    // A reload's failed build must leave nothing running: each part closes with the app (onClose).
    await app.close().catch((closeErr: Error) => app.log.warn({ err: { message: closeErr.message } }, 'could not close a failed build'))
    throw err
  }
  return app
}

/** Everything buildApp wires; each part is closed with the app, registered as soon as it exists. */
async function wireApp (app: FastifyInstance, config: Config, options: BuildOptions, logger: Logger): Promise<void> {
  const now = options.now ?? (() => Date.now())
  // Tests and plain starts own their shared parts; a reload's gateway passes them from build to build.
  const ownsShared = options.shared === undefined
  const shared = options.shared ?? await createSharedParts(config, { ...options, logger }, () => config)
  const { metrics, redis, store, directory, httpSessionOwners, streamKeeper, legacySessions, virtualSessions, audit, limiter } = shared
  const pool = shared.upstreams
  // Filled in as they are made; the one onClose below (registered first, so it runs last) closes them.
  const made: { plan?: UpstreamPlan, forwarder?: ReplicaForwarder } = {}
  let grants: RevokedGrants | undefined
  let blockedUsers: BlockedUsers | undefined
  let notices: ClusterNotices | undefined
  // Pollers and subscribers: only the newest build runs them (a retired one may still finish requests).
  // What a retired build ends at once (virtual servers: the client streams it relays), and what
  // a build changes in shared parts once it is in force (virtual sessions of servers it removed).
  const retireHooks: Array<() => void> = []
  const activateHooks: Array<() => void> = []
  const stopBackground = async (): Promise<void> => {
    for (const hook of retireHooks.splice(0)) hook()
    grants?.stop()
    blockedUsers?.stop()
    await notices?.close()
  }
  app.addHook('onClose', async () => {
    await stopBackground()
    // A plan never put in force closes the stdio upstreams it made; once committed they are the pool's.
    await made.plan?.abort()
    await Promise.all([...(made.plan?.upstreams.values() ?? [])].filter((u) => !pool.owns(u)).map(async (u) => u.close()))
    await made.forwarder?.close()
    if (ownsShared) await shared.close()
  })
  if (config.metrics.enabled) recordHttpMetrics(app, metrics)
  // Traces (README "Tracing"): the SDK is loaded, once per process, only when an OTLP endpoint is set.
  const tracing = config.telemetry.otlp === undefined ? undefined : await startTracing(config.telemetry.otlp, app.log)
  if (tracing !== undefined) instrumentApp(app, tracing)
  const advertiseUrl = config.cluster.advertiseUrl
  const stdioRequestTimeoutsMs = config.servers.flatMap((server) => server.transport === 'stdio' ? [server.requestTimeoutMs] : [])
  const forwarder = advertiseUrl === undefined ? undefined : new ReplicaForwarder(advertiseUrl, config.bodyLimit, relayHeadersTimeoutMs(stdioRequestTimeoutsMs))
  made.forwarder = forwarder
  // The keys sign access tokens and, for servers[].identity, the identity each upstream is sent.
  const keys = config.auth.enabled ? await loadKeys(store, config.auth.signingKeysFile) : undefined
  const currentKey = keys?.signingKeys[0]
  // Secrets at rest (IdP refresh tokens, users' upstream credentials) are sealed with one key.
  const box = keys === undefined ? undefined : await SecretBox.load(store, config.auth.encryptionKeyFile)
  const idpSessions = box === undefined ? undefined : new IdpSessions(store, box)
  const upstreamAuth = box === undefined ? undefined : createUpstreamAuth({ config, store, box, idpSessions, log: app.log, now, outboundTestAllowance: options.outboundTestAllowance, sessionOwners: httpSessionOwners })
  if (upstreamAuth !== undefined) app.addHook('onClose', upstreamAuth.close)
  const upstreamOptions: UpstreamOptions = {
    httpSessionOwners,
    streamKeeper,
    log: app.log,
    version: VERSION,
    now,
    onStdioExit: (server) => metrics.stdioRestarts.inc({ server }),
    ...(directory === undefined ? {} : { sessionHooks: directory }),
    ...(currentKey === undefined ? {} : { identitySigner: { issuer: config.publicUrl, key: currentKey, now, onSigned: (server) => metrics.identityTokensSigned.inc({ server }) } }),
    ...(upstreamAuth === undefined ? {} : { credentialsFor: upstreamAuth.credentialsFor, linkedToken: pool.linkedToken }),
    ...(options.stdioStartingLogIntervalMs === undefined ? {} : { stdioStartingLogIntervalMs: options.stdioStartingLogIntervalMs }),
  }
  const upstreamPlan = pool.plan(config, (server) => createUpstream(server, upstreamOptions))
  made.plan = upstreamPlan
  const upstreams = upstreamPlan.upstreams
  const isOriginAllowed = createOriginPolicy(config.publicUrl, config.allowedOrigins)

  // One guard per server, shared by the MCP routes and the admin API (which approves tools).
  const toolGuards = createToolGuards(config, { store, log: app.log, now, metrics, audit })

  let authenticate: Authenticator | undefined
  /** A verified identity whose grant was revoked or whose user was blocked since (auth on). */
  let isRevoked: ((identity: RequestIdentity) => boolean) | undefined
  // With auth off there are no accounts: nothing to revoke.
  let revokeAccounts: AccountRevoker = async () => ({ providerAccounts: 0, failures: [] })
  let scopeChallenge: ((server: ServerConfig, scopes: readonly string[], description: string) => string) | undefined
  let firstRun: FirstRunAccount | undefined
  if (keys !== undefined && idpSessions !== undefined) {
    const users = await UserDirectory.load(config.auth.users, store, config.dataDir, config.auth.identityProviders.length > 0)
    firstRun = users.firstRun
    const catalog = new ResourceCatalog(config)
    // A revoked grant is listed until its last access token would have expired.
    const revokedGrants = new RevokedGrants({ store, retentionMs: (accessTokenLifetimeS(config) + TOKEN_CLOCK_TOLERANCE_S) * 1000, now, log: app.log })
    grants = revokedGrants
    await revokedGrants.start()
    // Users an administrator blocked: refused at sign-in and at every request (admin/blocked-users.ts).
    const blocked = new BlockedUsers({ store, now, log: app.log })
    blockedUsers = blocked
    await blocked.start()
    const isUserBlocked = (userId: string): boolean => blocked.has(userId)
    const providerNames = identityProviderNames(config.auth)
    const machineClients = machineClientIds(config.auth)
    const verifier = new TokenVerifier({ issuer: config.publicUrl, jwks: { keys: [...keys.publicJwks.keys] }, now, isGrantRevoked: (grantId) => revokedGrants.has(grantId), isUserBlocked, machineClients })
    isRevoked = (identity) => verifier.isRevoked(identity)
    const outbound = createGuardedFetch({
      allowedHosts: config.auth.clientMetadataDocuments.allowedHosts,
      ...(options.outboundTestAllowance === undefined ? {} : { testAllowance: options.outboundTestAllowance }),
      onRefused: (host, reason) => app.log.warn({ host: host.slice(0, 253), reason }, 'outbound request refused'),
    })
    app.addHook('onClose', outbound.close)
    // Identity providers are the operator's choice, not a registrant's: one guarded fetch for
    // sign-in and ID-JAG keys, without clientMetadataDocuments.allowedHosts, issuer hosts may be private.
    const idpOutbound = identityProviderFetch(config, options, app)
    const accountGrants = new AccountGrants(store, now)
    const endedSignIns = new EndedSignIns(store, config.auth.refreshTokenTtl, now)
    const provider = createProvider({ config, store, keys, users, catalog, isOriginAllowed, now, grants: revokedGrants, verifier, fetch: outbound.fetch, idpFetch: idpOutbound.fetch, isUserBlocked, endedSignIns,
      onGrantSaved: async (accountId, grantId, expiresAtMs) => accountGrants.add(accountId, grantId, expiresAtMs),
      onIdpKeysUnavailable: (issuer, reason) => app.log.warn({ issuer, reason }, 'identity provider keys unavailable'),
    })
    // Reads the X-Forwarded-* headers presentAsPublic() sets from publicUrl (never the client's own).
    provider.proxy = true
    provider.on('server_error', (_ctx: unknown, err: Error) => {
      if (isStoreUnavailable(err)) app.log.warn({ err: { message: err.message } }, 'authorization request failed: store unreachable (503)')
      else app.log.error({ err }, 'authorization server error')
    })
    // What escapes oidc-provider's own handling (Koa's 'error'): mostly a client cut at
    // limits.* mid-body. Logged, not printed to stderr as Koa does without a listener.
    const koa: NodeJS.EventEmitter = provider as unknown as NodeJS.EventEmitter
    koa.on('error', (err: Error & { code?: string }) => {
      app.log.info({ err: { message: err.message, code: err.code } }, 'authorization request ended early')
    })
    // Refusals are routine (bad clients, expired codes): info, with the OAuth error only — never the request.
    const refused = (event: string) => (_ctx: unknown, err: Error & { error_description?: string }): void => {
      app.log.info({ event, error: err.message, description: err.error_description }, 'authorization request refused')
    }
    provider.on('authorization.error', refused('authorization.error'))
    provider.on('grant.error', refused('grant.error'))
    provider.on('registration_create.error', refused('registration_create.error'))
    provider.on('revocation.error', refused('revocation.error'))
    // JWT access tokens are 'issued' (never stored); refresh tokens and codes are 'saved'.
    const usersSeen = new UsersSeen(store, config.auth.refreshTokenTtl, now)
    const externalAccounts = new ExternalAccounts(store)
    provider.on('access_token.issued', (token: { accountId?: unknown }) => {
      metrics.tokensIssued.inc({ type: 'access_token' })
      const accountId = token.accountId
      if (typeof accountId !== 'string') return
      // The admin API's user list: who holds tokens, with their provider and groups (admin/users-seen.ts).
      usersSeen.seen(accountId, async () => {
        const profile = await accountProfile(users, externalAccounts, accountId, providerNames)
        return profile === undefined ? undefined : { provider: isExternalAccountId(accountId) ? accountId.split(':')[0] ?? '' : 'local', groups: profile.groups }
      }).catch((err: Error) => app.log.warn({ err: { message: err.message } }, 'could not record a user as seen'))
    })
    provider.on('client_credentials.issued', () => metrics.tokensIssued.inc({ type: 'client_credentials' }))
    provider.on('refresh_token.saved', () => metrics.tokensIssued.inc({ type: 'refresh_token' }))
    const yamlClients = new Set([...config.auth.clients.map((c) => c.clientId), ACCOUNT_CLIENT_ID])
    provider.on('authorization_code.saved', (code: { clientId?: string }) => {
      metrics.tokensIssued.inc({ type: 'authorization_code' })
      // A user signed in with a registered client: it now lives auth.registeredClientTtl past each use.
      const clientId = code.clientId
      if (clientId !== undefined && !yamlClients.has(clientId)) {
        markClientSignedIn(store, clientId, config.auth.registeredClientTtl, now()).catch((err: Error) => app.log.warn({ err: { message: err.message } }, 'could not mark a client as signed in with (it keeps the unused-client lifetime)'))
      }
    })
    const idp = new IdpSignIn({ config, store, users, sessions: idpSessions, fetch: idpOutbound.fetch, log: app.log, now })
    // Replicas on Redis: a user offboarded or revoked here loses their sessions on every replica (notices.ts).
    notices = redis === undefined ? undefined : new ClusterNotices(redis, `${config.store.prefix}notices`, app.log)
    if (notices !== undefined) {
      await notices.start(config.store.redis ?? '')
      notices.onEndUser(async (accountId) => endUserSessions([...upstreams.values(), ...pool.drainingUpstreams()], virtualSessions, accountId))
    }
    const endEverywhere = async (accountId: string): Promise<void> => {
      await endUserSessions([...upstreams.values(), ...pool.drainingUpstreams()], virtualSessions, accountId)
      await notices?.publish({ type: 'end-user', accountId })
    }
    // An offboarded or revoked account also loses its linked upstream tokens (once, here: the rows are shared).
    const endAccount = async (accountId: string): Promise<void> => {
      await endEverywhere(accountId)
      await upstreamAuth?.links?.unlinkAll(accountId)
    }
    const adminSessions = new PageSessions(store, now, 'admin')
    const accountSessions = new PageSessions(store, now, 'account')
    const endBrowserSignIns = async (accountId: string): Promise<void> => {
      await endedSignIns.end(accountId)
      await adminSessions.endUser(accountId)
      await accountSessions.endUser(accountId)
    }
    const apiKeys = new ApiKeys(store, config.auth.apiKeys.maxPerUser, now)
    const revokeApiKeys = async (accountId: string): Promise<void> => {
      for (const key of await apiKeys.list(accountId)) await apiKeys.revoke(key.keyId, accountId)
    }
    const offboarding = new Offboarding({ config, store, idp, sessions: idpSessions, grants: accountGrants, revokeGrant: async (grantId) => revokedGrants.revoke(grantId), endUserSessions: endAccount, endSignIns: endBrowserSignIns, revokeApiKeys, log: app.log, now })
    const revalidate = config.auth.identityProviders.length === 0 ? undefined : async (accountId: string, grantId: string) => offboarding.atRefresh(accountId, grantId)
    const revalidateCode = revalidate === undefined ? undefined : async (accountId: string, grantId: string) => offboarding.atCodeExchange(accountId, grantId)
    await app.register(authServerRoutes, { provider, catalog, limiter, tokenRate: config.rateLimits.token, registrationRate: config.rateLimits.registration, ...(revalidate === undefined ? {} : { revalidate }), ...(revalidateCode === undefined ? {} : { revalidateCode }) })
    await app.register(interactionRoutes, { provider, config, store, keys, users, catalog, limiter, idp, isUserBlocked, now })
    if (idp.providers.length > 0) await app.register(backchannelLogoutRoutes, { idp, keys: new IdpKeySets(idpOutbound.fetch), store, offboarding, now })
    const isGatewayWideAllowed = config.auth.defaultResource === 'all'
    await app.register(resourceMetadataRoutes, { catalog, servers: config.servers, virtualServers: config.virtualServers, isGatewayWideAllowed })
    const owners = new KeyOwners(users, new ExternalAccounts(store), config.servers, catalog, providerNames)
    const apiKeyVerifier = new ApiKeyVerifier({
      isEnabled: config.auth.apiKeys.enabled,
      keys: apiKeys,
      owners,
      now,
      onRecordUseError: (err) => app.log.warn({ err: { message: err.message } }, 'could not record an API key\'s last use'),
      isUserBlocked,
      ...(revalidate === undefined ? {} : { revalidate: async (userId: string) => offboarding.atRefresh(userId) }),
    })
    authenticate = createAuthenticator(catalog, verifier, isGatewayWideAllowed, (result) => metrics.tokenValidations.inc({ result }), apiKeyVerifier)
    const cookies = new AccountCookies(keys.cookieKeys[0] ?? '', config.publicUrl.startsWith('https:'), now)
    const revokeDeps: RevokeUserDeps = {
      grants: accountGrants,
      revokeGrant: async (grantId) => revokedGrants.revoke(grantId),
      apiKeys,
      idpSessions,
      endUserSessions: endAccount,
      endAdminSessions: async (userId) => adminSessions.endUser(userId),
      endAccountSessions: async (userId) => accountSessions.endUser(userId),
      endSignIns: async (userId) => endedSignIns.end(userId),
      isKnownUser: async (userId) => await owners.identityOf(userId) !== undefined,
    }
    revokeAccounts = async (changes) => await revokeAccountChanges({ ...revokeDeps, revokedGrants, listSeenUsers: async () => usersSeen.list() }, changes)
    const isSignInPossible = accountClientMetadata(config.publicUrl) !== undefined
    await app.register(accountRoutes, {
      publicUrl: config.publicUrl,
      settings: config.auth.apiKeys,
      keys: apiKeys,
      owners,
      cookies,
      jwks: { keys: [...keys.publicJwks.keys] },
      exchange: tokenExchangeIn(app),
      isSignInPossible,
      ...(upstreamAuth?.links === undefined ? {} : { links: upstreamAuth.links }),
      // The admin page signs in here and comes back to /admin with its own cookie.
      otherPages: [adminSignInPage(adminSessions, audit)],
      sessions: accountSessions,
      isUserBlocked,
      endSignIns: async (userId) => endedSignIns.end(userId),
      now,
    })
    if (upstreamAuth?.links !== undefined) await app.register(upstreamAuthRoutes, { publicUrl: config.publicUrl, servers: upstreamAuth.links.servers })
    const admin: Omit<AdminRoutesOptions, 'authenticate'> = {
      upstreams,
      allUpstreams: () => [...upstreams.values(), ...pool.drainingUpstreams()],
      sessionHolder: (server, sessionId) => pool.holderOf(server, sessionId),
      store,
      configuredClients: config.auth.clients,
      replica: config.cluster.advertiseUrl ?? 'local',
      usersSeen,
      blocked,
      apiKeys,
      revoke: revokeDeps,
      revokeClient: { store, revokeGrant: async (grantId) => revokedGrants.revoke(grantId), fixedClients: yamlClients },
      toolGuards,
      ...(upstreamAuth?.links === undefined ? {} : { links: upstreamAuth.links }),
      audit,
      now,
      // Charged as the route names callers (routes/mcp.ts callerOf): machine clients as client:<id>, users as sub:<id>.
      rateLimitsOf: (userId) => limiter.stateOf(userId.startsWith('client:') ? userId : `sub:${userId}`),
    }
    const reloadOption = options.reload === undefined ? {} : { reload: options.reload }
    await app.register(adminRoutes, { ...admin, ...reloadOption, authenticate: createAdminAuthenticator({ audience: `${config.publicUrl}/admin`, groups: config.admin.groups, bearerToken: config.admin.bearerToken, verifier }) })
    // The /admin page: the same lists and actions, for administrators signed in through the account sign-in.
    await app.register(adminPageRoutes, { ...admin, ...reloadOption, cookies, identityOf: async (userId) => owners.identityOf(userId), groups: config.admin.groups, isSignInPossible, sessions: adminSessions, endSignIns: async (userId) => endedSignIns.end(userId) })
    scopeChallenge = (server, scopes, description) => bearerChallenge({ resourceMetadata: catalog.metadataUrlOf(server.name), scopes, error: 'insufficient_scope', description })
  }

  /**
   * What the build changes in the parts it shares with the generation in force: done only once
   * it is in force (a reload's gateway calls it after the swap; a build of its own at once).
   */
  const activate = (): void => {
    upstreamPlan.commit()
    pool.useLinkedToken(upstreamAuth?.linkedToken)
    metrics.upstreamLoads = () => [...upstreams.values()].map((u) => [u.name, u.load()] as const)
    metrics.stdioProcessCounts = () => [...upstreams.values()].flatMap((u) => u.processCount === undefined ? [] : [[u.name, u.processCount] as const])
    limiter.useOnStoreError(config.rateLimits.onStoreError)
    for (const hook of activateHooks) hook()
  }
  const state: GatewayState = { isClosing: false, upstreams, store, metrics, firstRun, idpSessions, stopBackground, activate, revokeAccounts, ...(shared.metricsServer === undefined ? {} : { metricsServer: shared.metricsServer }) }
  app.decorate('portcullis', state)
  const isClosing = (): boolean => state.isClosing

  // A connection that never sent a byte (a speculative connection, a client that gave up between
  // connecting and writing) is neither idle nor busy to Node: server.close() waited for it until
  // Node's own timeouts, over a minute. Nothing can be lost by closing it at shutdown.
  const connections = new Set<Socket>()
  app.server.on('connection', (socket: Socket) => {
    connections.add(socket)
    socket.once('close', () => connections.delete(socket))
  })
  app.addHook('preClose', async () => {
    state.isClosing = true
    // GET streams never end by themselves; without this, server.close() waits forever. The
    // pool's stdio upstreams outlive a retired build: whoever owns the pool ends theirs.
    for (const upstream of upstreams.values()) if (ownsShared || !pool.owns(upstream)) upstream.closeStreams()
    if (ownsShared) legacySessions.closeAll()
    for (const socket of connections) if (socket.bytesRead === 0) socket.destroy()
  })

  app.setNotFoundHandler(async (request, reply) => {
    if (MCP_PATH_RE.test(request.url)) {
      const server = request.url.split('/')[1] ?? ''
      const err = new PortcullisError('PORTCULLIS_ERR_UNKNOWN_SERVER', JSON.stringify(decodeURIComponentSafe(server).slice(0, 64)))
      return reply.code(404).type('application/json').send(jsonRpcErrorPayload(err, [], false))
    }
    return reply.code(404).send({ error: 'not_found', message: `${request.method} ${request.url.split('?')[0] ?? ''} is not a Portcullis route` })
  })

  await app.register(healthRoutes, { upstreams, store, audit, isClosing, version: VERSION, bearerToken: config.metrics.bearerToken })
  await app.register(doctorProbeRoutes)
  if (config.metrics.enabled && config.metrics.listen === undefined) await app.register(metricsRoute, { metrics, bearerToken: config.metrics.bearerToken })
  const drainingHolder = (server: string, sessionId: string): Upstream | undefined => pool.holderOf(server, sessionId)
  await app.register(mcpRoutes, { config, now, virtualSessions, ...(isRevoked === undefined ? {} : { isRevoked }), onRetire: (fn) => retireHooks.push(fn), onActivate: (fn) => activateHooks.push(fn), upstreams, isClosing, isOriginAllowed, authenticate, limiter, audit, metrics, scopeChallenge, toolGuards, streamKeeper, legacySessions, drainingHolder, ...(tracing === undefined ? {} : { tracing: traceSettings(tracing, keys, metrics) }), ...(directory === undefined || forwarder === undefined ? {} : { replicas: { directory, forwarder } }) })
  await options.afterWiring?.(app)
  if (ownsShared) activate()
}

/**
 * The shared parts for `config` (see SharedParts). `currentConfig` is the configuration in
 * force, read when it is needed: idle timeouts of sessions a reload keeps follow the new file.
 */
export async function createSharedParts (config: Config, options: BuildOptions & { readonly logger: Logger }, currentConfig: () => Config): Promise<SharedParts> {
  const log = options.logger as FastifyBaseLogger
  const now = options.now ?? (() => Date.now())
  const metrics = new Metrics()
  // State lives in the data directory (owner-only): the SQLite store, the first-run password file.
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
  const redis: RedisClient | undefined = config.store.redis === undefined ? undefined : createRedisClient(config.store.redis, log)
  const store = options.store ?? createStore(config, now, redis, log)
  if (redis !== undefined) {
    try {
      // Commands fail at once while disconnected (no offline queue): connect before serving.
      await waitUntilReady(redis, config.store.redis ?? '', config.auth.enabled ? options.redisStartupTimeoutMs ?? REDIS_STARTUP_TIMEOUT_MS : REDIS_OPTIONAL_STARTUP_TIMEOUT_MS)
    } catch (err) {
      // With auth on, the signing keys are in Redis: nothing to sign or check tokens with.
      if (config.auth.enabled) {
        redis.disconnect()
        throw err
      }
      log.warn({ err: { message: (err as Error).message } }, 'starting without Redis: rate limits follow rateLimits.onStoreError until it answers')
    }
  }
  const idleOf = (name: string): number => idleTimeoutOf(currentConfig(), name)
  // Several replicas: where each stdio session lives, so any replica can forward to its owner.
  const advertiseUrl = config.cluster.advertiseUrl
  const directory = advertiseUrl === undefined ? undefined : new SessionDirectory(store, advertiseUrl, idleOf, log, now)
  const httpSessionOwners = new SessionOwners(store, log, idleOf, now)
  const streamKeeper = new StreamKeeper(config.streamKeepAliveMs)
  const legacySessions = new LegacySessions()
  const virtualSessions = new VirtualSessionTable()
  const audit = createAuditLog(config.audit, log, options.auditDestination)
  // Limits decided after the body is read (createRateLimit); counters in Redis when the store is
  // Redis, else in this process — on an instance of their own, so a reload keeps them.
  const counters = Fastify({ loggerInstance: log, logController: new LogController({ disableRequestLogging: true }) })
  await counters.register(rateLimitPlugin, {
    global: false,
    skipOnError: false,
    nameSpace: `${config.store.prefix}rl:`,
    cache: LOCAL_COUNTERS_PER_RATE,
    ...(redis === undefined ? {} : { redis }),
  })
  await counters.ready()
  const limiter = new RateLimiter(counters, config.rateLimits.onStoreError, log, {
    onReject: (bucket) => metrics.rateLimitRejections.inc({ bucket }),
    onStoreError: () => metrics.rateLimitStoreErrors.inc(),
  })
  const upstreams = new UpstreamPool(log)
  let metricsServer: FastifyInstance | undefined
  if (config.metrics.enabled && config.metrics.listen !== undefined) {
    // /metrics on a port of its own (only the scraper reaches it); main.ts listens on it after the main port.
    metricsServer = Fastify({ loggerInstance: log.child({ listener: 'metrics' }), logController: new LogController({ disableRequestLogging: true }) })
    await metricsServer.register(metricsRoute, { metrics, bearerToken: config.metrics.bearerToken })
  }
  const close = async (): Promise<void> => {
    await upstreams.close()
    httpSessionOwners.close()
    streamKeeper.close()
    if (options.store === undefined) await store.close()
    await audit?.close()
    await metricsServer?.close()
    await counters.close()
    if (redis !== undefined) await redis.quit().catch(() => redis.disconnect())
  }
  return { redis, store, metrics, audit, directory, httpSessionOwners, streamKeeper, legacySessions, virtualSessions, limiter, upstreams, metricsServer, close }
}

/**
 * A user's virtual sessions (with their member sessions), then their stdio sessions and processes
 * on this replica end (offboarding, revoke; other replicas hear of it through ClusterNotices).
 */
async function endUserSessions (upstreams: Iterable<Upstream>, virtualSessions: VirtualSessionTable, accountId: string): Promise<void> {
  await virtualSessions.endUser(accountId)
  await Promise.all([...upstreams].map(async (upstream) => upstream.endUser?.(accountId)))
}

/**
 * The guarded fetch for identity providers: any public https host (an IdP's endpoints and
 * JWKS often live on other hosts than its issuer), and the issuers and GitHub endpoints the
 * operator configured even on private addresses (a company IdP inside the company network).
 */
function identityProviderFetch (config: Config, options: BuildOptions, app: FastifyInstance): ReturnType<typeof createGuardedFetch> {
  // GitHub Enterprise Server inside the company network is the operator's choice like an issuer is.
  const issuerHosts = config.auth.identityProviders.flatMap((idp) => [idp.issuer, idp.authorizationUrl, idp.tokenUrl, idp.apiUrl]).flatMap((url) => url === undefined ? [] : [new URL(url).hostname])
  const outbound = createGuardedFetch({
    allowedHosts: [],
    operatorHosts: issuerHosts,
    ...(options.outboundTestAllowance === undefined ? {} : { testAllowance: options.outboundTestAllowance }),
    onRefused: (host, reason) => app.log.warn({ host: host.slice(0, 253), reason }, 'outbound request to an identity provider refused'),
  })
  app.addHook('onClose', outbound.close)
  return outbound
}

/** With log.requests on: one line per request, when it completes (not two), URL credentials masked. */
class CompletedRequestLog extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const line = { method: request.method, url: redactUrl(request.url), statusCode: reply.raw.statusCode, responseTimeMs: Math.round(reply.elapsedTime * 10) / 10 }
    if (error === null || error === undefined) request.log.info(line, 'request completed')
    else request.log.error({ ...line, err: error }, 'request errored')
  }
}

/**
 * Slow clients (slowloris), answered by Node's own HTTP server, which sees every request —
 * oidc-provider's raw-handled routes included — before any handler: `headersTimeout` counts
 * from a request's first byte to the end of its headers, `requestTimeout` from the same first
 * byte until the request (body included) is fully received; past either, 408 and the
 * connection closes. A request fully received leaves the check, so responses — MCP event
 * streams, long answers — are never cut. Fastify's default requestTimeout is 0 (off), which
 * left a half-sent body on /oauth/token open for minutes. Node checks every
 * connectionsCheckingInterval (30 s by default): 1 s here, so the deadlines hold to a second.
 */
export function listenerTimeouts (limits: Config['limits']): { keepAliveTimeout: number, requestTimeout: number, http: { headersTimeout: number, connectionsCheckingInterval: number } } {
  return {
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.bodyTimeoutMs,
    http: {
      headersTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
    },
  }
}

/**
 * What the MCP routes' spans need. The session-id key comes from the stored keys when auth is on,
 * so every replica hashes a session alike. With auth off no keys are loaded: a random key per
 * process still hides the ids, but replicas (and restarts) then hash one session differently.
 */
function traceSettings ({ api, tracer }: Tracing, keys: KeyMaterial | undefined, metrics: Metrics): TraceSettings {
  return { api, tracer, sessionKey: keys?.sessionHashKey ?? randomBytes(32), toolLabel: (server, tool) => metrics.toolLabel(server, tool) }
}

/** The account pages' code exchange: /oauth/token in-process (no socket, no outbound request). */
function tokenExchangeIn (app: FastifyInstance): TokenExchange {
  return async (form, clientIp) => {
    const res = await app.inject({ method: 'POST', url: '/oauth/token', remoteAddress: clientIp, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form.toString() })
    let body: unknown
    try {
      body = res.json()
    } catch {
      body = undefined
    }
    return { status: res.statusCode, body }
  }
}

function idleTimeoutOf (config: Config, server: string): number {
  return config.servers.find((s) => s.name === server)?.idleTimeoutMs ?? 0
}

function decodeURIComponentSafe (value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}

/**
 * Graceful shutdown: stop accepting, end GET streams, let in-flight requests
 * finish; at the deadline fail what is left (JSON-RPC errors) and drop the
 * remaining connections.
 */
export async function closeGracefully (app: FastifyInstance, timeoutMs: number): Promise<void> {
  app.portcullis.isClosing = true
  const deadline = setTimeout(() => {
    app.log.warn({ timeoutMs }, 'shutdown deadline reached; failing in-flight requests')
    void Promise.all([...app.portcullis.upstreams.values()].map((u) => u.close())).finally(() => {
      app.server.closeAllConnections()
    })
  }, timeoutMs)
  deadline.unref()
  try {
    await app.close()
  } finally {
    clearTimeout(deadline)
  }
}
