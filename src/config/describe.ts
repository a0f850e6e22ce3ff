/** `portcullis check` output: the resolved config as a human reads it, secrets masked. */
import type { Config, NamedRule, ServerConfig } from './schema.js'
import { describeAudience } from '../policy/policy.js'

const MASK = '***'

/** The resolved config as a human reads it, with every secret masked. */
export function describeConfig (config: Config): string {
  const lines = [
    `config: ${config.source} (valid)`,
    `publicUrl: ${config.publicUrl}`,
    `listen: ${config.listen.host}:${config.listen.port}`,
    `bodyLimit: ${config.bodyLimit} bytes`,
    `dataDir: ${config.dataDir}`,
    `allowedOrigins: ${[config.publicUrl, ...config.allowedOrigins].join(', ')}`,
    `trustProxy: ${describeTrustProxy(config.trustProxy)}`,
    `store: ${describeStore(config)}`,
    ...(config.cluster.advertiseUrl === undefined ? [] : [`cluster: this replica is ${config.cluster.advertiseUrl} (stdio sessions held by other replicas are forwarded)`]),
    describeAuth(config),
    ...(config.auth.enabled ? [`admin API: groups ${config.admin.groups.join(', ') || '(none)'}${config.admin.bearerToken === undefined ? '' : `; bearer token ${MASK}`}`] : []),
    `metrics: ${describeMetrics(config)}`,
    'servers:',
  ]
  for (const server of config.servers) lines.push(...describeServer(config, server))
  if (config.virtualServers.length > 0) lines.push('virtual servers:')
  for (const virtual of config.virtualServers) {
    const tools = [...(virtual.tools.allow === undefined ? [] : [`allow ${virtual.tools.allow.join(' ')}`]), ...(virtual.tools.deny.length === 0 ? [] : [`deny ${virtual.tools.deny.join(' ')}`])]
    lines.push(`  - ${virtual.name}: ${config.publicUrl}/${virtual.name}/mcp`, `      members: ${virtual.members.join(', ')}; prefix ${virtual.prefix}, separator ${JSON.stringify(virtual.separator)}`)
    if (tools.length > 0) lines.push(`      tools: ${tools.join('; ')}`)
    if (virtual.toolSearch !== undefined) lines.push(`      toolSearch: search_tools and call_tool above ${virtual.toolSearch.above} tools`)
  }
  return `${lines.join('\n')}\n`
}

function describePolicy (config: Config, server: ServerConfig): string[] {
  const out: string[] = []
  if (server.access !== undefined) {
    const who = [...(server.access.users ?? []).map((u) => `user ${u}`), ...(server.access.groups ?? []).map((g) => `group ${g}`), ...(server.access.clients ?? []).map((c) => `client ${c}`)]
    out.push(`      access: ${who.length === 0 ? 'nobody' : who.join(', ')}`)
  }
  for (const [kind, list] of [['tools', server.tools], ['prompts', server.prompts], ['resources', server.resources]] as const) {
    const rules = Object.entries(list).filter(([k]) => k !== 'allow' && k !== 'deny').map(([k, rule]) => describeRule(k, rule as NamedRule))
    const parts = [
      ...(list.allow === undefined ? [] : [`allow ${list.allow.join(' ')}`]),
      ...(list.deny.length === 0 ? [] : [`deny ${list.deny.join(' ')}`]),
      ...(rules.length === 0 ? [] : [`rules for ${rules.join(', ')}`]),
    ]
    if (parts.length > 0) out.push(`      ${kind}: ${parts.join('; ')}`)
  }
  const perUser = server.rateLimit ?? config.rateLimits.perUser
  if (perUser !== undefined) out.push(`      rate limit per user: ${perUser.text}`)
  return out
}

/** A rule key, and who it is for when it names users, groups or clients: "deploy (only group sre)". */
function describeRule (key: string, rule: NamedRule): string {
  const who = describeAudience(rule)
  return who === '' ? key : `${key} (only ${who})`
}

function describeTrustProxy (trust: Config['trustProxy']): string {
  if (trust === false) return 'no (X-Forwarded-* ignored)'
  if (trust === true) return 'any proxy'
  if (typeof trust === 'number') return `the nearest ${trust} hop(s)`
  return trust.join(', ')
}

function describeMetrics (config: Config): string {
  const m = config.metrics
  if (!m.enabled) return 'off'
  const where = m.listen === undefined ? `${config.publicUrl}/metrics` : `http://${m.listen.host}:${m.listen.port}/metrics`
  return `${where}${m.bearerToken === undefined ? '' : ` (bearer token ${MASK})`}`
}

function describeStore (config: Config): string {
  const store = config.store
  if (store.memory === true) return 'memory (nothing survives a restart)'
  if (store.redis !== undefined) return `redis ${maskUrl(store.redis)} (keys prefixed ${store.prefix})`
  return `sqlite ${store.sqlite ?? `${config.dataDir}/portcullis.db`}`
}

function describeAuth (config: Config): string {
  const auth = config.auth
  if (!auth.enabled) return 'auth: DISABLED (every server is reachable without a token)'
  const users = auth.users.length === 0 ? 'first-run account' : `${auth.users.length} user${auth.users.length === 1 ? '' : 's'}`
  return `auth: issuer ${config.publicUrl}; ${users}; ${auth.clients.length} configured client(s); dynamic registration ${auth.dynamicRegistration ? 'on' : 'off'}; metadata documents ${auth.clientMetadataDocuments.enabled ? 'on' : 'off'}; access tokens ${auth.accessTokenTtl / 1000} s`
}

function describeServer (config: Config, server: ServerConfig): string[] {
  const out = [
    `  - ${server.name} (${server.transport})`,
    `      route: ${config.publicUrl}/${server.name}/mcp`,
  ]
  if (config.auth.enabled) out.push(`      scopes required: ${server.scopes.length === 0 ? '(none beyond a token for this server)' : server.scopes.join(' ')}`)
  out.push(...describePolicy(config, server))
  // Operator patterns by name only: a pattern can spell out what it is meant to hide.
  if (server.redactResults.length > 0) out.push(`      results masked: ${server.redactResults.map((e) => typeof e === 'string' ? e : e.name).join(', ')}`)
  if (server.transport === 'http') {
    out.push(`      upstream: ${maskUrl(server.url)}`, `      timeoutMs: ${server.timeoutMs}`)
    const headerNames = Object.keys(server.headers)
    if (headerNames.length > 0) out.push(`      headers: ${headerNames.map((h) => `${h}: ${MASK}`).join(', ')}`)
    if (server.forwardHeaders.length > 0) out.push(`      forwardHeaders: ${server.forwardHeaders.join(', ')}`)
    if (server.identity !== undefined) out.push(`      identity: signed ES256 JWT in ${server.identity.header} (aud ${maskUrl(server.url)}, verify at ${config.publicUrl}/oauth/jwks)`)
    const auth = server.upstreamAuth
    if (auth?.type === 'tokenExchange') {
      const idp = auth.identityProvider ?? config.auth.identityProviders.find((p) => p.type === 'oidc')?.name ?? '?'
      out.push(`      upstreamAuth: token exchange (RFC 8693) of ${idp} tokens at ${maskUrl(auth.tokenEndpoint)} for audience ${auth.audience}${auth.scopes.length === 0 ? '' : `, scopes ${auth.scopes.join(' ')}`}, client ${auth.clientId}${auth.clientSecret === undefined ? '' : ` (secret ${MASK})`}`)
    }
    return out
  }
  if (server.transport === 'sse') {
    out.push(`      upstream (2024-11-05 HTTP+SSE): ${maskUrl(server.url)}`, `      timeoutMs: ${server.timeoutMs}`)
    const headerNames = Object.keys(server.headers)
    if (headerNames.length > 0) out.push(`      headers: ${headerNames.map((h) => `${h}: ${MASK}`).join(', ')}`)
    if (server.identity !== undefined) out.push(`      identity: signed ES256 JWT in ${server.identity.header} (aud ${maskUrl(server.url)}, verify at ${config.publicUrl}/oauth/jwks)`)
    return out
  }
  // Arguments may carry secrets too (tokens passed as flags): show the command, count the arguments.
  out.push(
    `      command: ${server.command} (${server.args.length} argument${server.args.length === 1 ? '' : 's'})`,
    `      isolation: ${server.isolation}, maxProcesses: ${server.maxProcesses}, prestart: ${server.prestart}`,
    `      timeouts: startup ${server.startupTimeoutMs} ms, request ${server.requestTimeoutMs} ms, idle ${server.idleTimeoutMs} ms`,
  )
  if (server.cwd !== undefined) out.push(`      cwd: ${server.cwd}`)
  const envNames = Object.keys(server.env)
  if (envNames.length > 0) out.push(`      env: ${envNames.map((k) => `${k}=${MASK}`).join(', ')}`)
  return out
}

/** The URL with its credentials and every query value masked: safe to show or log. */
export function maskUrl (value: string): string {
  const url = new URL(value)
  if (url.username !== '' || url.password !== '') {
    url.username = MASK
    url.password = ''
  }
  for (const key of [...url.searchParams.keys()]) url.searchParams.set(key, MASK)
  return url.toString()
}
