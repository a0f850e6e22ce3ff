/**
 * The configuration schema: the single source of truth for both validation
 * and the TypeScript types the rest of the gateway uses. Unknown keys are
 * rejected everywhere (strictObject) so a typo never silently means "default".
 */
import { z } from 'zod'
import {
  BASE_SCOPE, DEFAULT_ADMIN_GROUPS, DEFAULT_TELEMETRY_SERVICE_NAME, MIN_ADMIN_BEARER_TOKEN_CHARS, DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_AUDIT_DESTINATION, DEFAULT_LOGIN_RATE, DEFAULT_TOKEN_RATE, DEFAULT_REGISTRATION_RATE, DEFAULT_LOGIN_FAILURE_WINDOW, DEFAULT_LOGIN_MAX_FAILURES, DEFAULT_LOGIN_MAX_FAILURES_PER_IP, DEFAULT_LOGIN_MAX_FAILURES_PER_ACCOUNT,
  DEFAULT_REFRESH_TOKEN_REUSE_GRACE, DEFAULT_REGISTERED_CLIENT_TTL, DEFAULT_UNUSED_CLIENT_TTL, DEFAULT_REFRESH_TOKEN_TTL, RESERVED_SCOPES,
  DEFAULT_IDP_REVALIDATE_EVERY, DEFAULT_API_KEY_TTL, DEFAULT_API_KEY_MAX_TTL, DEFAULT_API_KEYS_PER_USER,
  DEFAULT_BODY_LIMIT_BYTES, DEFAULT_DATA_DIR, DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, DEFAULT_SHUTDOWN_TIMEOUT_MS,
  DEFAULT_STDIO_IDLE_TIMEOUT_MS, DEFAULT_HTTP_SESSION_IDLE_TIMEOUT_MS, DEFAULT_HTTP_MAX_SESSIONS_PER_USER, DEFAULT_SESSION_COST, DEFAULT_STREAM_KEEPALIVE_MS, DEFAULT_STDIO_MAX_MESSAGE_BYTES, DEFAULT_MAX_SSE_EVENT_BYTES, DEFAULT_MAX_LEGACY_SESSIONS, DEFAULT_SSE_MAX_SESSIONS, DEFAULT_STDIO_MAX_PROCESSES, DEFAULT_STDIO_REQUEST_TIMEOUT_MS,
  DEFAULT_STDIO_STARTUP_TIMEOUT_MS, DEFAULT_UPSTREAM_TIMEOUT_MS, FIRST_RUN_USERNAME, RESERVED_SERVER_NAMES,
  DEFAULT_HEADERS_TIMEOUT_MS, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS,
} from './defaults.js'
import { parseByteSize, parseDuration, parseRate } from './units.js'
import { isPasswordHash } from '../auth-server/password.js'
import { DETECTOR_NAMES, patternProblem } from '../guardrails/detectors.js'
import { HTTP_REDIRECT_RULE, isForbiddenRedirect } from '../auth-server/redirect-rule.js'
import { credentialServers, hasUserTemplate, OPTIONAL_USER_FIELDS, stdioTemplateValues, templateFields, unknownTemplateFields } from './user-template.js'
import { compileDenyPattern } from '../policy/argument-rules.js'
import { isLoopbackHost, LOOPBACK_HOSTS } from '../net/loopback.js'
import { HOP_BY_HOP_HEADERS } from '../net/hop-by-hop.js'

const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** RFC 9110 field-value: visible ASCII, space and tab; no CR/LF (header injection). */
const HEADER_VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/

/** Headers the gateway owns on the upstream hop; configuring them would break framing or routing. */
const UNSETTABLE_UPSTREAM_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, 'host', 'content-length', 'expect'])

/** Client headers that are never forwarded, whatever `forwardHeaders` says (MCP authorization: no token passthrough). */
export const NEVER_FORWARDED_HEADERS: ReadonlySet<string> = new Set([
  'authorization', 'cookie', 'proxy-authorization', ...UNSETTABLE_UPSTREAM_HEADERS,
])

/**
 * Client headers the gateway passes on to an HTTP upstream by itself: the MCP transport's
 * (Streamable HTTP) and a few harmless ones. Mcp-Param-* go too (matched by prefix).
 */
export const FORWARDED_CLIENT_HEADERS: ReadonlySet<string> = new Set([
  'accept', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'mcp-method', 'mcp-name',
  'user-agent', 'traceparent', 'tracestate',
])

/** `${PORT}`-style values arrive as strings; accept a string of digits where a whole number is expected. */
const wholeNumber = (message: string) => z.preprocess(
  (value) => typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value,
  z.number({ error: message }).int(message),
)

/** `${FLAG}` arrives as a string too: "true" and "false" are the booleans they spell. */
const flag = () => z.preprocess((value) => value === 'true' ? true : value === 'false' ? false : value, z.boolean())

/** `${RATIO}` likewise: a string that is a plain decimal number is that number. */
const decimal = (message: string) => z.preprocess(
  (value) => typeof value === 'string' && /^\s*\d*\.?\d+\s*$/.test(value) ? Number(value) : value,
  z.number({ error: message }),
)

const positiveMs = (what: string) => wholeNumber(`expected ${what} in milliseconds (a whole number)`).pipe(z.number().positive(`expected ${what} in milliseconds, greater than 0`))

const byteSize = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseByteSize(value)
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size such as 4mb, 512kb or a number of bytes, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return bytes
})

const durationMs = (what: string) => z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value)
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected ${what} such as 30s, 15m, 14d or a number of milliseconds, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return ms
})

/** RFC 6749 scope-token characters; the authorization server's own scopes are reserved. */
const scopeName = z.string()
  .regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'expected a scope name (visible ASCII without spaces, quotes or backslashes)')
  .refine((scope) => !RESERVED_SCOPES.has(scope) && scope !== BASE_SCOPE, { error: (issue) => `"${String(issue.input)}" is reserved by the authorization server` })

const rate = z.string({ error: 'expected a rate such as 60/min, 1000/day or 10/30s' }).transform((value, ctx) => {
  const parsed = parseRate(value)
  if (parsed === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a rate such as 60/min, 1000/day or 10/30s, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return parsed
})

/** `*` matches any run of characters, `?` one; everything else literally. */
const glob = z.string().min(1, 'expected a name or a pattern with * and ?')

const accessSchema = z.strictObject({
  users: z.array(z.string().min(1)).optional(),
  groups: z.array(z.string().min(1)).optional(),
  /** Machine clients (client_credentials), by client id. */
  clients: z.array(z.string().min(1)).optional(),
})

/**
 * A rule's audience: when any of these is set, only a caller who is one of the users, in one
 * of the groups, or one of the machine clients may use the name (scopes still apply). Names
 * are not checked against auth.users (groups come from an identity provider too), but an
 * empty list would admit nobody and is refused: deny the name to keep it from everyone.
 */
const audienceList = (what: string) => z.array(z.string().min(1, `expected a ${what}`))
  .min(1, `an empty list admits nobody; remove the key to admit everyone, or list the name under deny`)
  .optional()
const ruleAudienceFields = {
  users: audienceList('username'),
  groups: audienceList('group name'),
  /** Machine clients (client_credentials), by client id: user and group rules never admit them. */
  clients: audienceList('client id'),
}

/** A regular expression an argument must not match; a leading (?i) means case-insensitive. Refused when unsafe (ReDoS). */
const denyPattern = z.string().min(1, 'expected a regular expression').superRefine((pattern, ctx) => {
  const compiled = compileDenyPattern(pattern)
  if (typeof compiled === 'string') ctx.addIssue({ code: 'custom', message: `${JSON.stringify(pattern)} ${compiled}` })
})

const argumentRulesSchema = z.strictObject({
  deny: z.record(z.string().min(1, 'expected an argument name'), z.array(denyPattern, { error: 'expected a list of regular expressions' }),
    { error: (issue) => issue.code === 'invalid_type' ? 'expected a mapping of argument name to a list of regular expressions, e.g. { sql: ["(?i)\\bdrop\\b"] }' : undefined }).default({}),
}, { error: (issue) => issue.code === 'invalid_type' ? 'expected { deny: { <argument>: [regex, ...] } }' : undefined })

const toolRuleSchema = z.strictObject({
  /** Scopes a token must carry to call this tool (the client is asked to step up otherwise). */
  scopes: z.array(scopeName).default([]),
  ...ruleAudienceFields,
  /** Calls per user. */
  rateLimit: rate.optional(),
  /** Calls by all users together. */
  globalRateLimit: rate.optional(),
  /** How many units one call takes from the user's per-server budget. */
  cost: wholeNumber('expected a whole number').pipe(z.number().min(1).max(1000)).default(1),
  /** Calls in flight per user. */
  concurrency: wholeNumber('expected a whole number').pipe(z.number().min(1)).optional(),
  /** Argument rules schemas cannot express: deny patterns per argument name (src/policy/argument-rules.ts). */
  arguments: argumentRulesSchema.optional(),
}, { error: (issue) => issue.code === 'invalid_type' ? 'expected a rule such as { scopes: [...], rateLimit: 10/min } (allow and deny are lists of names)' : undefined })

const namedRuleSchema = z.strictObject({
  scopes: z.array(scopeName).default([]),
  ...ruleAudienceFields,
}, { error: (issue) => issue.code === 'invalid_type' ? 'expected a rule such as { scopes: [...], groups: [...] } (allow and deny are lists of names)' : undefined })

/** allow/deny lists plus rules keyed by name (or pattern). */
const policyListSchema = <T extends z.ZodType>(rule: T) => z.object({
  allow: z.array(glob).optional(),
  deny: z.array(glob).default([]),
}).catchall(rule)

const detectorName = z.string().refine((name) => DETECTOR_NAMES.includes(name), {
  error: (issue) => `unknown detector ${JSON.stringify(issue.input)}: expected one of ${DETECTOR_NAMES.join(', ')}, or { name, pattern } for a pattern of your own`,
})

const operatorPattern = z.strictObject({
  /** Shown as [redacted:<name>] and counted under it. */
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/, 'expected 1-40 lowercase letters, digits or "-"')
    .refine((name) => !DETECTOR_NAMES.includes(name), { error: (issue) => `"${String(issue.input)}" is a built-in detector's name; choose another` }),
  pattern: z.string().min(1, 'expected a regular expression').superRefine((pattern, ctx) => {
    const problem = patternProblem(pattern)
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem })
  }),
}, { error: (issue) => issue.code === 'invalid_type' ? 'expected a detector name (secrets, emails, ...) or { name, pattern }' : undefined })

/** What to mask in this server's results before they reach the client (none by default). */
const redactResults = z.array(z.union([detectorName, operatorPattern], {
  error: (issue) => issue.code === 'invalid_union' ? 'expected a detector name (secrets, emails, ...) or { name, pattern }' : undefined,
})).default([]).superRefine((entries, ctx) => {
  const names = entries.map((e) => typeof e === 'string' ? e : e.name)
  names.forEach((name, i) => {
    if (names.indexOf(name) !== i) ctx.addIssue({ code: 'custom', path: [i], message: `"${name}" is listed twice` })
  })
})

/** Who may reach a server and use what, how often: shared by every transport. */
/** 2024-11-05 clients (GET /<name>/sse), on every transport: a server-wide budget, since with auth off every caller is one user. */
const legacyFields = {
  /** Legacy event streams open at once on this server, all callers together; beyond it 503. */
  maxLegacySessions: wholeNumber('expected a number of sessions').pipe(z.number().min(1, 'expected at least 1 session')).default(DEFAULT_MAX_LEGACY_SESSIONS),
}

const policyFields = {
  access: accessSchema.optional(),
  tools: policyListSchema(toolRuleSchema).prefault({}),
  prompts: policyListSchema(namedRuleSchema).prefault({}),
  /** Keyed by resource URI (patterns allowed). */
  resources: policyListSchema(namedRuleSchema).prefault({}),
  /** Requests per user to this server (overrides rateLimits.perUser). */
  rateLimit: rate.optional(),
  redactResults,
}

/** Guardrails on tool traffic (README "Guardrails"). */
const guardrailFields = {
  /** Tool definitions pinned to the approved set: warn (log, count, audit), enforce (also hide and refuse), off. */
  pinTools: z.enum(['warn', 'enforce', 'off']).default('warn'),
  /** tools/call arguments checked against the tool's inputSchema before they leave the gateway. */
  validateArguments: flag().default(false),
}

const httpUrl = z.string().refine((value) => {
  try {
    const u = new URL(value)
    return u.protocol === 'http:' || u.protocol === 'https:'
  } catch {
    return false
  }
}, { error: (issue) => `expected an absolute http(s) URL, got ${JSON.stringify(issue.input)}` })

const serverName = z.string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit (it becomes the URL path /<name>/mcp)')
  .refine((name) => !RESERVED_SERVER_NAMES.has(name), { error: (issue) => `"${String(issue.input)}" is reserved for the gateway's own routes; choose another name` })

const templateFieldsKnown = (value: string): boolean => unknownTemplateFields(value).length === 0
/** `${user.credentials.<server>}` belongs in stdio `env` only. */
const hasNoCredentials = (value: string): boolean => credentialServers([value]).length === 0
const credentialsMessage = (where: string) => (issue: { input: unknown }): string =>
  `${JSON.stringify(issue.input)}: \${user.credentials.<server>} is for the env of stdio servers only (${where})`
const templateMessage = (issue: { input: unknown }): string =>
  `unknown per-user field in ${JSON.stringify(issue.input)}: expected \${user.id}, \${user.name} or \${user.email}`

/**
 * A header value that could be sent empty: made of optional per-user fields only
 * (`${user.email}`), nothing that every caller has. Such a value is refused at check.
 */
function couldBeEmpty (value: string): boolean {
  if (!hasUserTemplate(value)) return false
  const isOnlyOptional = templateFields([value]).every((field) => OPTIONAL_USER_FIELDS.has(field))
  return isOnlyOptional && value.replace(/\$\{user\.[A-Za-z_][A-Za-z0-9_]*\}/g, '').trim() === ''
}

/** Header values may use `${user.*}` (rendered per request, header-safe: README "Upstream identity"). */
const headerMap = z.record(
  z.string().regex(HEADER_NAME_RE, 'expected an HTTP header name')
    .refine((name) => !UNSETTABLE_UPSTREAM_HEADERS.has(name.toLowerCase()), { error: (issue) => `header "${String(issue.input)}" is managed by the gateway and cannot be configured` }),
  z.string({ error: 'expected a header value (a string; quote numbers)' }).regex(HEADER_VALUE_RE, 'header values cannot contain line breaks or control characters')
    .refine(templateFieldsKnown, { error: templateMessage })
    .refine(hasNoCredentials, { error: credentialsMessage('an HTTP server gets each caller\'s own token with upstreamAuth') })
    .refine((value) => !couldBeEmpty(value), {
      error: (issue) => `${JSON.stringify(issue.input)} could be sent empty (a caller without that field, e.g. a machine client, has no value): use a field every caller has (\${user.id}, \${user.name}) or the signed identity header (identity.header), which carries email when there is one`,
    }),
)

/**
 * servers[].identity.header: the gateway sets it on every request, so a client must never be
 * able to send it (not forwarded, not an MCP transport header) nor the operator configure it twice.
 */
const identityHeaderName = z.string().regex(HEADER_NAME_RE, 'expected an HTTP header name')
  .refine((name) => {
    const lower = name.toLowerCase()
    return !NEVER_FORWARDED_HEADERS.has(lower) && !FORWARDED_CLIENT_HEADERS.has(lower) && !lower.startsWith('mcp-')
  }, { error: (issue) => `"${String(issue.input)}" cannot carry the identity: it is a header the gateway manages, never forwards or forwards from the client (choose a name of your own, e.g. X-Portcullis-Identity)` })

const forwardHeaderName = z.string().regex(HEADER_NAME_RE, 'expected an HTTP header name')
  .refine((name) => !NEVER_FORWARDED_HEADERS.has(name.toLowerCase()), {
    error: (issue) => `"${String(issue.input)}" is never forwarded: the client's credentials stay at the gateway (configure upstream credentials under headers instead)`,
  })

/**
 * servers[].upstreamAuth (issue 14, README "Upstream credentials"): the upstream gets each
 * caller's own token instead of one static credential for everybody.
 *
 * - oauth: the gateway is each user's OAuth client at the upstream's authorization server,
 *   found like a spec-following MCP client finds it (the upstream's 401 `resource_metadata`,
 *   RFC 9728, RFC 8414 / OIDC discovery). The client is `clientId` when given, else a Client
 *   ID Metadata Document the gateway serves, else dynamic registration. A user links their
 *   account once at `<publicUrl>/connect/<server>`.
 * - tokenExchange: the user's identity-provider token is exchanged (RFC 8693) for a token
 *   whose audience is the upstream.
 */
const upstreamOAuthSchema = z.strictObject({
  type: z.literal('oauth'),
  /** Pre-registered at the upstream's authorization server; absent: CIMD, else DCR. */
  clientId: z.string().min(1, 'expected the client id registered at the upstream\'s authorization server').optional(),
  clientSecret: z.string().min(1, 'expected a client secret').optional(),
  scopes: z.array(z.string().min(1)).default([]),
}).superRefine((auth, ctx) => {
  if (auth.clientSecret !== undefined && auth.clientId === undefined) {
    ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'clientSecret needs clientId (a secret belongs to a pre-registered client)' })
  }
})

const tokenExchangeSchema = z.strictObject({
  type: z.literal('tokenExchange'),
  /** The token endpoint that accepts urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693). */
  tokenEndpoint: httpUrl,
  /** The `audience` asked for: the upstream as that authorization server names it. */
  audience: z.string().min(1, 'expected the audience the exchanged token is for'),
  scopes: z.array(z.string().min(1)).default([]),
  clientId: z.string().min(1, 'expected the gateway\'s client id at that token endpoint'),
  clientSecret: z.string().min(1, 'expected a client secret').optional(),
  /**
   * Whose tokens are exchanged: the `auth.identityProviders[].name` (type oidc) the subject token
   * comes from. Optional when exactly one oidc provider is configured. A user's IdP token is
   * only ever sent to this endpoint when they signed in through this provider.
   */
  identityProvider: z.string().min(1).optional(),
}).superRefine((auth, ctx) => {
  const u = new URL(auth.tokenEndpoint)
  if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
    ctx.addIssue({ code: 'custom', path: ['tokenEndpoint'], message: `must be https (http only on loopback, for local identity providers and tests), got ${auth.tokenEndpoint}` })
  }
})

const upstreamAuthSchema = z.discriminatedUnion('type', [upstreamOAuthSchema, tokenExchangeSchema], {
  error: (issue) => issue.code === 'invalid_union' ? 'expected type: oauth or tokenExchange' : undefined,
})

const httpServerSchema = z.strictObject({
  name: serverName,
  transport: z.literal('http'),
  /** The upstream's Streamable HTTP endpoint, e.g. https://search.internal:9000/mcp */
  url: httpUrl,
  /** Added to every upstream request (e.g. the upstream's own API key). */
  headers: headerMap.default({}),
  /** Extra client request headers to pass on, beyond the MCP ones. */
  forwardHeaders: z.array(forwardHeaderName).default([]),
  timeoutMs: positiveMs('an upstream timeout').default(DEFAULT_UPSTREAM_TIMEOUT_MS),
  /** A session unused this long (no request, no open stream) is forgotten: its client gets 404 and starts again. */
  idleTimeoutMs: positiveMs('an idle timeout').default(DEFAULT_HTTP_SESSION_IDLE_TIMEOUT_MS),
  /** Exchanges in flight to the upstream at most (connections over HTTP/1.1); beyond it 503 at once. Absent: no cap. */
  maxConnections: wholeNumber('expected a number of connections').pipe(z.number().min(1, 'expected at least 1 connection')).optional(),
  /** Event streams open at once (GET streams, streamed answers); a GET beyond it gets 503 at once. Absent: no cap. */
  maxStreams: wholeNumber('expected a number of streams').pipe(z.number().min(1, 'expected at least 1 stream')).optional(),
  /** Upstream sessions one user may hold open; at the cap their oldest idle one is ended, else 429. */
  maxSessionsPerUser: wholeNumber('expected a number of sessions').pipe(z.number().min(1, 'expected at least 1 session')).default(DEFAULT_HTTP_MAX_SESSIONS_PER_USER),
  /** Speak HTTP/2 to the upstream when it offers it (TLS, ALPN): many exchanges over few connections. */
  http2: flag().default(false),
  /** The largest answer (JSON) or event (SSE) held to be edited (masked, filtered); beyond it 502. */
  maxMessageBytes: byteSize.default(DEFAULT_MAX_SSE_EVENT_BYTES),
  /** A short-lived ES256 JWT naming the caller on every request, in this header (README "Upstream identity"). */
  identity: z.strictObject({ header: identityHeaderName }).optional(),
  /** Each caller's own credential at the upstream (README "Upstream credentials"). */
  upstreamAuth: upstreamAuthSchema.optional(),
  /** Scopes a token must carry to reach this server at all. */
  scopes: z.array(scopeName).default([]),
  ...policyFields,
  ...legacyFields,
  ...guardrailFields,
}).superRefine((server, ctx) => {
  if (server.upstreamAuth !== undefined && Object.keys(server.headers).some((name) => name.toLowerCase() === 'authorization')) {
    ctx.addIssue({ code: 'custom', path: ['headers'], message: 'Authorization is set by upstreamAuth (each caller\'s own token): remove it from headers' })
  }
  const header = server.identity?.header.toLowerCase()
  if (header === undefined) return
  if (Object.keys(server.headers).some((name) => name.toLowerCase() === header)) {
    ctx.addIssue({ code: 'custom', path: ['identity', 'header'], message: `"${server.identity?.header ?? ''}" is also under headers: the identity header is the gateway's alone (remove it from headers)` })
  }
  if (server.forwardHeaders.some((name) => name.toLowerCase() === header)) {
    // A client sending the header itself would forge who it is.
    ctx.addIssue({ code: 'custom', path: ['identity', 'header'], message: `"${server.identity?.header ?? ''}" is also under forwardHeaders: a client could send its own identity (remove it from forwardHeaders)` })
  }
})

/**
 * A remote server that speaks only the 2024-11-05 HTTP+SSE transport, bridged to Streamable
 * HTTP for clients (README "Configuration reference", `transport: sse`).
 */
const sseServerSchema = z.strictObject({
  name: serverName,
  transport: z.literal('sse'),
  /** The upstream's event stream endpoint, e.g. https://legacy.internal:9000/sse */
  url: httpUrl,
  /** Added to every upstream request, the event stream and the POSTs (e.g. the upstream's own API key). */
  headers: headerMap.default({}),
  timeoutMs: positiveMs('an upstream timeout').default(DEFAULT_UPSTREAM_TIMEOUT_MS),
  /** A session unused this long is forgotten and its upstream event stream closed. */
  idleTimeoutMs: positiveMs('an idle timeout').default(DEFAULT_HTTP_SESSION_IDLE_TIMEOUT_MS),
  /** Sessions one user may hold open (each is one upstream event stream); beyond it 429. */
  maxSessionsPerUser: wholeNumber('expected a number of sessions').pipe(z.number().min(1, 'expected at least 1 session')).default(DEFAULT_HTTP_MAX_SESSIONS_PER_USER),
  /** Sessions open at once on this server, all callers together (each is one upstream event stream); beyond it 503. */
  maxSessions: wholeNumber('expected a number of sessions').pipe(z.number().min(1, 'expected at least 1 session')).default(DEFAULT_SSE_MAX_SESSIONS),
  /** Largest single event the upstream's stream may send (one message); past it the session ends. */
  maxMessageBytes: byteSize.default(DEFAULT_MAX_SSE_EVENT_BYTES),
  /** A short-lived ES256 JWT naming the caller on every upstream request, in this header. */
  identity: z.strictObject({ header: identityHeaderName }).optional(),
  /** Refused with the reason: a credential the upstream refuses mid-session cannot be renewed on a 2024-11-05 stream. */
  upstreamAuth: z.undefined({ error: 'upstreamAuth is for transport: http only: a 2024-11-05 server\'s event stream is opened once per session, so a per-user credential could not be renewed when it expires; use headers for a credential of the gateway\'s own' }).optional(),
  /** Refused with the reason: nothing of the client's request goes to a 2024-11-05 server but its messages. */
  forwardHeaders: z.undefined({ error: 'forwardHeaders is for transport: http only: a 2024-11-05 server\'s session is one event stream shared by all of its client\'s requests; use headers' }).optional(),
  /** Scopes a token must carry to reach this server at all. */
  scopes: z.array(scopeName).default([]),
  ...policyFields,
  ...legacyFields,
  ...guardrailFields,
}).superRefine((server, ctx) => {
  const header = server.identity?.header.toLowerCase()
  if (header !== undefined && Object.keys(server.headers).some((name) => name.toLowerCase() === header)) {
    ctx.addIssue({ code: 'custom', path: ['identity', 'header'], message: `"${server.identity?.header ?? ''}" is also under headers: the identity header is the gateway's alone (remove it from headers)` })
  }
})

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name (letters, digits, _)')

const stdioServerSchema = z.strictObject({
  name: serverName,
  transport: z.literal('stdio'),
  /** The program to run (looked up on PATH), e.g. npx, uvx, node, /usr/local/bin/server. */
  command: z.string().min(1, 'expected a command'),
  args: z.array(z.string().refine(templateFieldsKnown, { error: templateMessage })
    // Arguments are readable by every local user (ps, /proc/<pid>/cmdline); the environment is not.
    .refine(hasNoCredentials, { error: credentialsMessage('arguments are visible to every local user; use env') })).default([]),
  /** Added to the child's minimal environment (PATH, HOME, LANG, ...); the gateway's own environment is never passed. */
  env: z.record(envName, z.string({ error: 'expected a string value (quote numbers)' }).refine(templateFieldsKnown, { error: templateMessage })).default({}),
  /** The working directory; per-user values (${user.*}) make one per user, created when their process starts. */
  cwd: z.string().min(1).refine(templateFieldsKnown, { error: templateMessage }).refine(hasNoCredentials, { error: credentialsMessage('a directory name is no place for a credential; use env') }).optional(),
  /** Run each child as this Unix account (name or uid); the gateway must run as root. */
  user: z.string().min(1, 'expected a user name or uid').optional(),
  /** ... and this group (name or gid); default: the user's primary group. */
  group: z.string().min(1, 'expected a group name or gid').optional(),
  /** session: a child per MCP session; user: one per user; shared: one for everyone (ids rewritten). */
  isolation: z.enum(['session', 'user', 'shared']).default('session'),
  maxProcesses: wholeNumber('expected a number of processes').pipe(z.number().min(1, 'expected at least 1')).default(DEFAULT_STDIO_MAX_PROCESSES),
  /** Processes and sessions one user may hold (absent: half of maxProcesses, at least 1). */
  maxProcessesPerUser: wholeNumber('expected a number of processes').pipe(z.number().min(1, 'expected at least 1')).optional(),
  /** Warm children kept spawned and waiting, for servers that start slowly. */
  prestart: wholeNumber('expected a number of processes').pipe(z.number().min(0)).default(0),
  idleTimeoutMs: positiveMs('an idle timeout').default(DEFAULT_STDIO_IDLE_TIMEOUT_MS),
  startupTimeoutMs: positiveMs('a start-up timeout').default(DEFAULT_STDIO_STARTUP_TIMEOUT_MS),
  requestTimeoutMs: positiveMs('a request timeout').default(DEFAULT_STDIO_REQUEST_TIMEOUT_MS),
  maxMessageBytes: byteSize.default(DEFAULT_STDIO_MAX_MESSAGE_BYTES),
  /** Refused with a message saying why: the identity header is an HTTP upstream's. */
  identity: z.undefined({ error: 'identity (a signed identity header) is for transport: http and sse only; a stdio server gets its caller through per-user ${user.*} values in args and env' }).optional(),
  /** Scopes a token must carry to reach this server at all. */
  scopes: z.array(scopeName).default([]),
  ...policyFields,
  ...legacyFields,
  ...guardrailFields,
}).superRefine((server, ctx) => {
  const usesUser = stdioTemplateValues(server).some(hasUserTemplate)
  if (usesUser && server.isolation === 'shared') {
    ctx.addIssue({ code: 'custom', path: ['isolation'], message: 'per-user values (${user.*}) need isolation: user or session; a shared process has no single user' })
  }
  if (usesUser && server.prestart > 0) {
    ctx.addIssue({ code: 'custom', path: ['prestart'], message: 'prestart cannot be used with per-user values (${user.*}): a warm process is started before its user is known' })
  }
  if (server.prestart > server.maxProcesses) {
    ctx.addIssue({ code: 'custom', path: ['prestart'], message: `prestart (${server.prestart}) cannot exceed maxProcesses (${server.maxProcesses})` })
  }
})

export const serverSchema = z.discriminatedUnion('transport', [httpServerSchema, stdioServerSchema, sseServerSchema], {
  error: (issue) => issue.code === 'invalid_union' ? 'expected transport: http, stdio or sse' : undefined,
})

const originPattern = z.string().refine((value) => {
  if (value === '*') return true
  try {
    const u = new URL(value.replace(/:\*$/, ''))
    return u.origin === value.replace(/:\*$/, '') || `${u.origin}:*` === value
  } catch {
    return false
  }
}, { error: (issue) => `expected an origin such as https://app.example.com or http://localhost:* (scheme, host and optional port; no path), got ${JSON.stringify(issue.input)}` })

const userSchema = z.strictObject({
  username: z.string().regex(/^[A-Za-z0-9._@+-]{1,64}$/, 'expected 1-64 letters, digits or . _ @ + -'),
  passwordHash: z.string().refine(isPasswordHash, 'expected a hash printed by `portcullis hash-password` (scrypt$N$r$p$salt$hash); never a plain password'),
  groups: z.array(z.string().min(1)).default([]),
  email: z.email('expected an email address').optional(),
  name: z.string().min(1).optional(),
})

/** The last is RFC 7523's JWT-bearer grant, for ID-JAG assertions (README "Enterprise-managed authorization (ID-JAG)"). */
const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials', 'urn:ietf:params:oauth:grant-type:jwt-bearer'] as const

const clientSchema = z.strictObject({
  clientId: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'expected 1-128 letters, digits or . _ : -'),
  /** Present: a confidential client (client_secret_basic or _post). Absent: a public client (PKCE). */
  clientSecret: z.string().min(32, 'expected a client secret of at least 32 characters').optional(),
  name: z.string().min(1).optional(),
  redirectUris: z.array(z.string().refine((uri) => !isForbiddenRedirect(uri), { error: (issue) => `"${String(issue.input)}": redirect URIs ${HTTP_REDIRECT_RULE}` })).default([]),
  grantTypes: z.array(z.enum(GRANT_TYPES)).min(1).default(['authorization_code', 'refresh_token']),
  /** For client_credentials: the scopes this client may obtain (every server's scopes when absent). */
  scopes: z.array(scopeName).optional(),
}).superRefine((client, ctx) => {
  if (client.grantTypes.includes('client_credentials') && client.clientSecret === undefined) {
    ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'client_credentials needs a clientSecret (a machine client authenticates itself)' })
  }
  if (client.grantTypes.includes('authorization_code') && client.redirectUris.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['redirectUris'], message: 'authorization_code needs at least one redirect URI' })
  }
})


const IDP_NAME_RE = /^[a-z0-9][a-z0-9-]{0,31}$/

/** A claim path such as groups, roles or realm_access.roles. */
const claimPath = z.string().regex(/^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/, 'expected a claim name or a dotted path such as realm_access.roles')

/**
 * An organisation's identity provider (README "Identity providers"). Users who
 * sign in through it become `<name>:<subject>` at the gateway.
 */
const identityProviderSchema = z.strictObject({
  /** Lowercase letters, digits and "-": the callback is <publicUrl>/oauth/idp/<name>/callback. */
  name: z.string().regex(IDP_NAME_RE, 'expected 1-32 lowercase letters, digits or "-", starting with a letter or digit (it becomes the path /oauth/idp/<name>/callback)')
    // Its users are <name>:<sub>; a machine client acts as client:<client id> (sessions, rate limits,
    // per-user processes and values): a provider named "client" would make its user "ci-bot" that client.
    .refine((name) => name !== 'client', 'the name "client" is reserved: machine clients act as client:<client id>, and this provider\'s users would be named the same way'),
  type: z.enum(['oidc', 'github'], { error: 'expected type: oidc or github' }),
  /** The button text: "Sign in with <displayName>". */
  displayName: z.string().min(1).max(64).optional(),
  /** oidc: the issuer (discovery at <issuer>/.well-known/openid-configuration); https, or http on loopback only. */
  issuer: httpUrl.optional(),
  clientId: z.string().min(1, 'expected the client id registered at the identity provider'),
  clientSecret: z.string().min(1).optional(),
  /** private_key_jwt client authentication (Entra ID, Okta): a JWKS file holding the private key. */
  privateKeyJwt: z.strictObject({ keysFile: z.string().min(1) }).optional(),
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'expected a scope name')).optional(),
  /** Which claim names the user (default: preferred_username, then email, then sub). */
  usernameClaim: claimPath.optional(),
  /** Where the user's groups are: groups, roles, realm_access.roles … */
  groupsClaim: claimPath.optional(),
  /** IdP group ids or names (or, for Google, emails) -> gateway group names. Unmapped groups pass through as they are. */
  groupMap: z.record(z.string().min(1), z.union([z.string().min(1), z.array(z.string().min(1))])).default({}),
  /** The user's email domain (and Google's hd) must be one of these. */
  allowedDomains: z.array(z.string().regex(/^[a-z0-9.-]+\.[a-z]{2,}$|^[a-z0-9-]+$/i, 'expected a domain such as example.com')).default([]),
  /** The user must be in at least one of these (gateway) groups to sign in. */
  requiredGroups: z.array(z.string().min(1)).default([]),
  /** How often the gateway re-checks a signed-in user with the IdP (at token refresh). */
  revalidateEvery: durationMs('a duration').prefault(DEFAULT_IDP_REVALIDATE_EVERY),
  /** A user with the same verified email locally and here is one identity (the local one). */
  linkByEmail: flag().default(false),
  /** Accept RFC 7523 JWT-bearer grants with identity assertion JWT authorization grants (ID-JAG) signed by this IdP. */
  idJag: flag().default(false),
  /** github: endpoints (defaults are GitHub's; a GitHub Enterprise Server or a test stand-in sets its own). */
  authorizationUrl: httpUrl.optional(),
  tokenUrl: httpUrl.optional(),
  apiUrl: httpUrl.optional(),
}).superRefine((idp, ctx) => {
  if (idp.type === 'oidc' && idp.issuer === undefined) {
    ctx.addIssue({ code: 'custom', path: ['issuer'], message: 'an oidc identity provider needs issuer (discovery is read from <issuer>/.well-known/openid-configuration)' })
  }
  if (idp.type === 'github') {
    if (idp.clientSecret === undefined) ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'a GitHub OAuth app needs clientSecret' })
    for (const key of ['issuer', 'privateKeyJwt'] as const) {
      if (idp[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${key} is for type: oidc; GitHub is configured with authorizationUrl, tokenUrl and apiUrl` })
    }
    if (idp.idJag) ctx.addIssue({ code: 'custom', path: ['idJag'], message: 'idJag needs an OpenID Connect provider (type: oidc)' })
    // GitHub has no claims to point at: the name is the login and the groups are orgs and teams.
    for (const key of ['usernameClaim', 'groupsClaim'] as const) {
      if (idp[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${key} is for type: oidc; a GitHub user's name is their login and their groups are their organisations and teams` })
    }
  } else {
    for (const key of ['authorizationUrl', 'tokenUrl', 'apiUrl'] as const) {
      if (idp[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${key} is for type: github; an oidc provider's endpoints come from discovery` })
    }
  }
  if (idp.clientSecret !== undefined && idp.privateKeyJwt !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['privateKeyJwt'], message: 'choose one client authentication: clientSecret or privateKeyJwt' })
  }
  for (const [key, url] of [['issuer', idp.issuer], ['authorizationUrl', idp.authorizationUrl], ['tokenUrl', idp.tokenUrl], ['apiUrl', idp.apiUrl]] as const) {
    if (url === undefined) continue
    const u = new URL(url)
    if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
      ctx.addIssue({ code: 'custom', path: [key], message: `${key} must be https (http only on loopback, for local identity providers and tests), got ${url}` })
    }
  }
})

/** Personal API keys (`pcs_…`) for agents and CI that cannot run a browser OAuth flow. */
const apiKeysSchema = z.strictObject({
  enabled: flag().default(true),
  /** Lifetime when none is asked for. */
  defaultTtl: durationMs('a duration').prefault(DEFAULT_API_KEY_TTL),
  /** The longest lifetime a key may be given. */
  maxTtl: durationMs('a duration').prefault(DEFAULT_API_KEY_MAX_TTL),
  /** Live keys per user. */
  maxPerUser: wholeNumber('expected a whole number').pipe(z.number().min(1).max(1000)).default(DEFAULT_API_KEYS_PER_USER),
}).superRefine((keys, ctx) => {
  if (keys.defaultTtl > keys.maxTtl) ctx.addIssue({ code: 'custom', path: ['defaultTtl'], message: 'defaultTtl cannot exceed maxTtl' })
})

const authSchema = z.strictObject({
  /** false: every MCP server is reachable without a token (local development only; warned about loudly). */
  enabled: flag().default(true),
  accessTokenTtl: durationMs('a duration').prefault(DEFAULT_ACCESS_TOKEN_TTL),
  refreshTokenTtl: durationMs('a duration').prefault(DEFAULT_REFRESH_TOKEN_TTL),
  refreshTokenReuseGrace: durationMs('a duration').prefault(DEFAULT_REFRESH_TOKEN_REUSE_GRACE),
  users: z.array(userSchema).default([]),
  clients: z.array(clientSchema).default([]),
  /** The organisation's identity providers (OpenID Connect or GitHub): README "Identity providers". */
  identityProviders: z.array(identityProviderSchema).default([]),
  /** A file with a 32-byte key (base64 or hex) that encrypts IdP refresh tokens and linked credentials at rest; otherwise one is generated and kept in the store. */
  encryptionKeyFile: z.string().min(1).optional(),
  apiKeys: apiKeysSchema.prefault({}),
  /** RFC 7591 Dynamic Client Registration (deprecated by MCP 2026-07-28, still what most clients use). */
  dynamicRegistration: flag().default(true),
  /**
   * A dynamically registered client unused this long is deleted (its next sign-in
   * registers again), so abandoned registrations do not pile up in the store.
   */
  registeredClientTtl: durationMs('a duration').prefault(DEFAULT_REGISTERED_CLIENT_TTL),
  /** Until a user has signed in with it, a registered client lives only this long past its last use. */
  unusedClientTtl: durationMs('a duration').prefault(DEFAULT_UNUSED_CLIENT_TTL),
  /** Client ID Metadata Documents: https URL client_ids (MCP 2026-07-28's preferred registration). */
  clientMetadataDocuments: z.strictObject({
    enabled: flag().default(true),
    /** The only hosts any outbound fetch may contact (documents, jwks_uri, sector_identifier_uri); empty = any public https host. */
    allowedHosts: z.array(z.string().min(1)).default([]),
  }).prefault({}),
  /**
   * What a client that sends no `resource` (RFC 8707) gets: the server named
   * here, or "all" for a token valid at every server. Unset: the one server
   * when there is only one, the server its scopes point to, or an error.
   */
  defaultResource: z.string().min(1).optional(),
  /** A JWKS file with the private ES256 signing key(s); otherwise keys are generated once and kept in the store. */
  signingKeysFile: z.string().min(1).optional(),
  login: z.strictObject({
    maxFailures: wholeNumber('expected a number of attempts').pipe(z.number().min(1)).default(DEFAULT_LOGIN_MAX_FAILURES),
    maxFailuresPerIp: wholeNumber('expected a number of attempts').pipe(z.number().min(1)).default(DEFAULT_LOGIN_MAX_FAILURES_PER_IP),
    maxFailuresPerAccount: wholeNumber('expected a number of attempts').pipe(z.number().min(1)).default(DEFAULT_LOGIN_MAX_FAILURES_PER_ACCOUNT),
    window: durationMs('a duration').prefault(DEFAULT_LOGIN_FAILURE_WINDOW),
  }).prefault({}),
}).superRefine((auth, ctx) => {
  const names = new Set<string>()
  auth.users.forEach((user, index) => {
    if (names.has(user.username)) ctx.addIssue({ code: 'custom', path: ['users', index, 'username'], message: `duplicate username "${user.username}"` })
    names.add(user.username)
  })
  // With no users listed and no identity provider, the gateway creates one first-run account of this name.
  if (auth.users.length === 0 && auth.identityProviders.length === 0) names.add(FIRST_RUN_USERNAME)
  const idpNames = new Set<string>()
  auth.identityProviders.forEach((idp, index) => {
    if (idpNames.has(idp.name)) ctx.addIssue({ code: 'custom', path: ['identityProviders', index, 'name'], message: `duplicate identity provider name "${idp.name}"` })
    idpNames.add(idp.name)
  })
  const isIdJagTrusted = auth.identityProviders.some((idp) => idp.idJag)
  const ids = new Set<string>()
  auth.clients.forEach((client, index) => {
    if (client.grantTypes.includes('urn:ietf:params:oauth:grant-type:jwt-bearer') && !isIdJagTrusted) {
      ctx.addIssue({ code: 'custom', path: ['clients', index, 'grantTypes'], message: 'the jwt-bearer grant (ID-JAG) needs an identity provider with idJag: true' })
    }
    if (ids.has(client.clientId)) ctx.addIssue({ code: 'custom', path: ['clients', index, 'clientId'], message: `duplicate clientId "${client.clientId}"` })
    ids.add(client.clientId)
    // A machine client's token says sub = its client id: sharing a username would blur who is who in access lists and audit records.
    if (names.has(client.clientId)) {
      ctx.addIssue({ code: 'custom', path: ['clients', index, 'clientId'], message: `clientId "${client.clientId}" is also a username: a machine client and a user must not share a name (rename one)` })
    }
  })
})

const rateLimitsSchema = z.strictObject({
  /** Requests per user per server (initialize counts sessionCost units). */
  perUser: rate.optional(),
  /** tools/call per user per tool, where a tool has no rateLimit of its own. */
  perUserPerTool: rate.optional(),
  /** Units of the per-user server budget one `initialize` (a new session) takes; 0: free. */
  sessionCost: wholeNumber('expected a whole number').pipe(z.number().min(0).max(1000)).default(DEFAULT_SESSION_COST),
  /** Sign-in attempts per client IP: passwords, and starts of identity-provider sign-ins. */
  login: rate.prefault(DEFAULT_LOGIN_RATE),
  /** Authorization, token and registration requests per client IP. */
  token: rate.prefault(DEFAULT_TOKEN_RATE),
  /** New dynamic client registrations per client IP. */
  registration: rate.prefault(DEFAULT_REGISTRATION_RATE),
  /** When the counter store (Redis) cannot be reached: let requests through (logged, counted) or refuse them. */
  onStoreError: z.enum(['allow', 'deny']).default('allow'),
})

/** What the gateway's HTTP listener tolerates from slow clients (README "Slow clients"). */
const limitsSchema = z.strictObject({
  /** Request headers complete within this of the request's first byte; else 408 and the connection closes. */
  headersTimeoutMs: positiveMs('a headers timeout').default(DEFAULT_HEADERS_TIMEOUT_MS),
  /** The whole request, body included, within this of its first byte; else 408 and the connection closes. */
  bodyTimeoutMs: positiveMs('a body timeout').default(DEFAULT_BODY_TIMEOUT_MS),
  /** An idle keep-alive connection (no request in flight) is closed after this. */
  keepAliveTimeoutMs: positiveMs('a keep-alive timeout').default(DEFAULT_KEEPALIVE_TIMEOUT_MS),
}).refine((limits) => limits.headersTimeoutMs <= limits.bodyTimeoutMs, { path: ['headersTimeoutMs'], message: 'expected headersTimeoutMs no greater than bodyTimeoutMs (the body deadline counts from the same first byte)' })

const auditSchema = z.strictObject({
  enabled: flag().default(true),
  /** stdout, stderr, or a file path (JSON lines, appended). */
  destination: z.string().min(1).default(DEFAULT_AUDIT_DESTINATION),
  /** Record tool arguments (may contain personal data): debugging only. */
  includeArguments: flag().default(false),
  /** Record results (up to 4 KiB each): debugging only. */
  includeResults: flag().default(false),
})

const metricsSchema = z.strictObject({
  /** Serve Prometheus metrics at /metrics. */
  enabled: flag().default(true),
  /** When set, /metrics needs `Authorization: Bearer <this>` (use ${ENV}; at least 16 characters). */
  bearerToken: z.string().min(16, 'expected a bearer token of at least 16 characters').optional(),
  /** Serve /metrics on a port of its own (e.g. 9464 on 0.0.0.0 for the Prometheus scraper) instead of the main port. */
  listen: z.strictObject({
    host: z.string().min(1).default(DEFAULT_LISTEN_HOST),
    port: wholeNumber('expected a TCP port number').pipe(z.number().min(0, 'expected a TCP port number (0-65535)').max(65535, 'expected a TCP port number (0-65535)')),
  }).optional(),
})

/** OpenTelemetry traces (README "Tracing"): off unless telemetry.otlp.endpoint is set. */
const telemetrySchema = z.strictObject({
  otlp: z.strictObject({
    /**
     * The collector's OTLP/HTTP traces URL (http://collector:4318/v1/traces). A bare origin gets
     * /v1/traces appended, as OTEL_EXPORTER_OTLP_ENDPOINT would. No credentials in the URL: they
     * would reach logs with it; put them under headers.
     */
    endpoint: httpUrl.refine((value) => {
      const u = new URL(value)
      return u.username === '' && u.password === '' && u.hash === ''
    }, 'expected a URL with no credentials or fragment (put an API key under telemetry.otlp.headers)'),
    /** Sent with every export (an API key, use ${ENV}); never logged. */
    headers: z.record(
      z.string().regex(HEADER_NAME_RE, 'expected an HTTP header name'),
      z.string({ error: 'expected a header value (a string; quote numbers)' }).regex(HEADER_VALUE_RE, 'header values cannot contain line breaks or control characters'),
    ).default({}),
    /** The resource's service.name. */
    serviceName: z.string().min(1, 'expected a service name').default(DEFAULT_TELEMETRY_SERVICE_NAME),
    /**
     * Share of requests traced (0..1), drawn at random per request. A client's traceparent flag
     * decides nothing: the gateway is a public endpoint, and `-01` must not force spans into the
     * collector (nor `-00` hide a request). An authenticated request still continues the client's
     * trace when it is drawn (README "Tracing"); keep 1 for every client trace to continue.
     */
    sampleRatio: decimal('expected a number from 0 to 1').pipe(z.number().min(0, 'expected a number from 0 to 1').max(1, 'expected a number from 0 to 1')).default(1),
  }).optional(),
})

const clusterSchema = z.strictObject({
  /**
   * This replica's own address as the other replicas reach it (http://<pod-ip>:8080).
   * With it, a request for a stdio session held by another replica is forwarded there.
   */
  advertiseUrl: httpUrl.refine((value) => {
    const u = new URL(value)
    return (u.pathname === '/' || u.pathname === '') && u.search === '' && u.username === '' && u.password === ''
  }, 'expected an origin only (scheme, host, port), with no path, query or credentials').optional(),
})

const adminSchema = z.strictObject({
  /** Users in any of these groups (the token's `groups` claim) may use the admin API with a gateway access token. */
  groups: z.array(z.string().min(1, 'expected a group name')).default([...DEFAULT_ADMIN_GROUPS]),
  /** Automation: `Authorization: Bearer <this>` reaches the admin API as actor admin-token (use ${ENV}). */
  bearerToken: z.string().min(MIN_ADMIN_BEARER_TOKEN_CHARS, `expected a bearer token of at least ${MIN_ADMIN_BEARER_TOKEN_CHARS} characters`).optional(),
})

const storeSchema = z.strictObject({
  /** SQLite database file (default: <dataDir>/portcullis.db). */
  sqlite: z.string().min(1).optional(),
  /** In-process only: nothing survives a restart. For tests; warned about at start. */
  memory: z.literal(true, { error: 'expected memory: true' }).optional(),
  /** Redis (redis://[:password@]host:port[/db]): several replicas share everything. */
  redis: z.string().regex(/^rediss?:\/\/\S+$/, 'expected a redis:// or rediss:// URL')
    // What ioredis, `check` and the logs parse it with: a string no URL parser takes would only fail there.
    .refine((value) => URL.canParse(value), 'expected a redis:// or rediss:// URL (this one cannot be parsed: check brackets, and percent-encode @ : / in the password)').optional(),
  /** Prefix of every Redis key (several gateways, or tenants, on one Redis). */
  prefix: z.string().regex(/^[\w.:-]{1,64}$/, 'expected up to 64 letters, digits or _ . : -').default('portcullis:'),
}).refine((store) => [store.sqlite !== undefined, store.memory === true, store.redis !== undefined].filter(Boolean).length <= 1, 'choose one store: sqlite, redis or memory')

/**
 * virtualServers[] (README "Virtual servers"): one endpoint, `<publicUrl>/<name>/mcp`, whose
 * tools, prompts and resources are those of its member servers, each still judged by that
 * member's own access, scopes, policy, limits and audit.
 */
const virtualServerSchema = z.strictObject({
  name: serverName,
  members: z.array(z.string().min(1, 'expected a server name'), { error: 'expected a list of server names' }).min(1, 'expected at least one member server'),
  /** auto: names listed by more than one member are prefixed with the member's name; always; never (a collision hides the name). */
  prefix: z.enum(['auto', 'always', 'never']).default('auto'),
  /** Between the member's name and the tool's: MCP's tool-name characters only, as it becomes part of a name. */
  separator: z.string().regex(/^[A-Za-z0-9_.-]{1,8}$/, 'expected 1-8 characters of A-Z, a-z, 0-9, "_", "." or "-" (the characters of an MCP tool name)').default('__'),
  /**
   * Allow/deny on the merged names, on top of each member's own policy. Rules with scopes,
   * limits or audiences belong on the member (servers[].tools), which judges every call.
   */
  tools: z.object({
    allow: z.array(glob).optional(),
    deny: z.array(glob).default([]),
  }).catchall(z.unknown()).superRefine((tools, ctx) => {
    for (const key of Object.keys(tools)) {
      if (key !== 'allow' && key !== 'deny') ctx.addIssue({ code: 'custom', path: [key], message: `a virtual server takes only allow and deny lists of (merged) tool names; put rules with scopes or limits on the member server (servers[].tools)` })
    }
  }).transform(({ allow, deny }) => allow === undefined ? { deny } : { allow, deny }).prefault({}),
  /** Above this many tools, list search_tools and call_tool instead of every tool. */
  toolSearch: z.strictObject({
    above: wholeNumber('expected a number of tools').pipe(z.number().min(0, 'expected 0 or more tools')),
  }).optional(),
})

export const configSchema = z.strictObject({
  /**
   * The gateway's public origin: the OAuth issuer and the base of every
   * resource URL (<publicUrl>/<name>/mcp). An origin only: an issuer with a
   * path breaks RFC 8414 discovery for older clients.
   */
  publicUrl: httpUrl.refine((value) => {
    const u = new URL(value)
    return (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '' && u.username === '' && u.password === ''
  }, 'expected an origin only (scheme, host, optional port), with no path, query or credentials').optional(),
  /**
   * Behind a reverse proxy (nginx): which proxies to trust for X-Forwarded-For/-Proto/-Host —
   * true (any), a hop count, or addresses/CIDRs. Client IPs for rate limits and logs, and
   * secure cookies, depend on it. Never true on a port clients can reach directly.
   */
  trustProxy: z.union([flag(), wholeNumber('expected true, false, a hop count or a list of addresses'), z.array(z.string().min(1))]).default(false),
  /** Allow a plain-http publicUrl on a non-loopback host (never in production: tokens would cross the network in clear). */
  allowInsecurePublicUrl: flag().default(false),
  listen: z.strictObject({
    host: z.string().min(1).default(DEFAULT_LISTEN_HOST),
    port: wholeNumber('expected a TCP port number').pipe(z.number().min(0, 'expected a TCP port number (0-65535)').max(65535, 'expected a TCP port number (0-65535)')).default(DEFAULT_LISTEN_PORT),
  }).default({ host: DEFAULT_LISTEN_HOST, port: DEFAULT_LISTEN_PORT }),
  /** Largest request body accepted; larger answers 413. */
  bodyLimit: byteSize.default(DEFAULT_BODY_LIMIT_BYTES),
  /**
   * Browser origins allowed to call MCP endpoints (MCP transport spec:
   * an invalid Origin gets 403). publicUrl's own origin is always allowed;
   * requests with no Origin header (non-browser clients) always are.
   */
  allowedOrigins: z.array(originPattern).default([]),
  shutdownTimeoutMs: positiveMs('a shutdown deadline').default(DEFAULT_SHUTDOWN_TIMEOUT_MS),
  /** A comment line on event streams to clients silent this long, so proxies between do not cut them; 0: never. */
  streamKeepAliveMs: wholeNumber('expected a keep-alive interval in milliseconds (a whole number)').pipe(z.number().min(0, 'expected 0 (off) or more milliseconds')).default(DEFAULT_STREAM_KEEPALIVE_MS),
  /** Where the gateway keeps state (created at start, mode 0700). Relative to the working directory. */
  dataDir: z.string().min(1, 'expected a directory path').default(DEFAULT_DATA_DIR),
  store: storeSchema.prefault({}),
  auth: authSchema.prefault({}),
  rateLimits: rateLimitsSchema.prefault({}),
  limits: limitsSchema.prefault({}),
  audit: auditSchema.prefault({}),
  metrics: metricsSchema.prefault({}),
  cluster: clusterSchema.prefault({}),
  telemetry: telemetrySchema.prefault({}),
  admin: adminSchema.prefault({}),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** One line per HTTP request (method, path, status, time). Off by default: nginx and the audit trail cover it. */
    requests: flag().default(false),
    /** pretty: readable lines (pino-pretty); json: one JSON object a line. Unset: pretty when stdout is a terminal, json otherwise (decided at start). */
    format: z.enum(['pretty', 'json']).optional(),
  }).default({ level: 'info', requests: false }),
  servers: z.array(serverSchema).min(1, 'expected at least one server'),
  virtualServers: z.array(virtualServerSchema).default([]),
}).superRefine((config, ctx) => {
  if (config.publicUrl !== undefined) {
    const url = new URL(config.publicUrl)
    if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname) && !config.allowInsecurePublicUrl && config.auth.enabled) {
      ctx.addIssue({ code: 'custom', path: ['publicUrl'], message: 'must be https:// (TLS terminated by nginx in front): OAuth tokens and passwords would cross the network in clear. For a test network only, set allowInsecurePublicUrl: true' })
    }
  }
  if (config.cluster.advertiseUrl !== undefined && config.store.redis === undefined) {
    ctx.addIssue({ code: 'custom', path: ['cluster', 'advertiseUrl'], message: 'needs store.redis: replicas find each other\'s sessions in the shared store' })
  }
  const metricsPort = config.metrics.listen?.port
  if (metricsPort !== undefined && metricsPort !== 0 && metricsPort === config.listen.port) {
    ctx.addIssue({ code: 'custom', path: ['metrics', 'listen', 'port'], message: `expected a port other than listen.port (${config.listen.port}); leave metrics.listen out to serve /metrics on the main port` })
  }
  if (config.admin.bearerToken !== undefined && !config.auth.enabled) {
    // Fail closed and say so: the admin API exists only with authorization on.
    ctx.addIssue({ code: 'custom', path: ['admin', 'bearerToken'], message: 'needs auth.enabled: true: the admin API exists only with authorization on' })
  }
  const defaultResource = config.auth.defaultResource
  if (defaultResource !== undefined && defaultResource !== 'all' && !config.servers.some((s) => s.name === defaultResource)) {
    ctx.addIssue({ code: 'custom', path: ['auth', 'defaultResource'], message: `expected the name of a configured server or "all", got ${JSON.stringify(defaultResource)}` })
  }
  const seen = new Map<string, number>()
  config.servers.forEach((server, index) => {
    if (server.transport !== 'stdio' && server.identity !== undefined && !config.auth.enabled) {
      // Fail closed: with no verified caller there is nobody to vouch for.
      ctx.addIssue({ code: 'custom', path: ['servers', index, 'identity'], message: 'needs auth.enabled: true: with authorization off no caller is verified, so there is no identity to sign' })
    }
    if (server.transport === 'http' && server.upstreamAuth !== undefined && !config.auth.enabled) {
      // Fail closed: a credential per user needs a verified user.
      ctx.addIssue({ code: 'custom', path: ['servers', index, 'upstreamAuth'], message: 'needs auth.enabled: true: with authorization off no caller is verified, so there is nobody whose credential to use' })
    }
    if (server.transport === 'http' && server.upstreamAuth?.type === 'tokenExchange') {
      const problem = tokenExchangeProviderProblem(server.upstreamAuth.identityProvider, config.auth.identityProviders)
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['servers', index, 'upstreamAuth', 'identityProvider'], message: problem })
    }
    if (server.transport === 'stdio') checkCredentialReferences(config.servers, index, ctx)
    const first = seen.get(server.name)
    if (first !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['servers', index, 'name'], message: `duplicate server name "${server.name}" (also servers[${first}])` })
    } else {
      seen.set(server.name, index)
    }
  })
  checkVirtualServers(config, ctx)
})

/** A virtual server's name is a URL path of its own; its members are servers of this file, each once. */
function checkVirtualServers (config: { servers: ReadonlyArray<{ name: string }>, virtualServers: ReadonlyArray<{ name: string, members: readonly string[] }> }, ctx: z.RefinementCtx): void {
  const servers = new Set(config.servers.map((s) => s.name))
  const seen = new Map<string, number>()
  config.virtualServers.forEach((virtual, index) => {
    if (servers.has(virtual.name)) {
      ctx.addIssue({ code: 'custom', path: ['virtualServers', index, 'name'], message: `"${virtual.name}" is already a server's name (both would be /${virtual.name}/mcp); choose another` })
    }
    const first = seen.get(virtual.name)
    if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['virtualServers', index, 'name'], message: `duplicate virtual server name "${virtual.name}" (also virtualServers[${first}])` })
    else seen.set(virtual.name, index)
    virtual.members.forEach((member, m) => {
      if (!servers.has(member)) {
        ctx.addIssue({ code: 'custom', path: ['virtualServers', index, 'members', m], message: `unknown server ${JSON.stringify(member)}: expected the name of a server under servers (one of: ${[...servers].join(', ')})` })
      } else if (virtual.members.indexOf(member) !== m) {
        ctx.addIssue({ code: 'custom', path: ['virtualServers', index, 'members', m], message: `"${member}" is listed twice` })
      }
    })
  })
}

/**
 * Token exchange sends the user's IdP token to the token endpoint: it must be an OpenID Connect
 * provider's (GitHub issues no token an RFC 8693 endpoint takes), and exactly one provider's,
 * so that no user's token ever goes to another provider's endpoint.
 */
function tokenExchangeProviderProblem (name: string | undefined, providers: ReadonlyArray<{ name: string, type: string }>): string | undefined {
  const oidcNames = providers.filter((p) => p.type === 'oidc').map((p) => p.name)
  if (name === undefined) {
    if (oidcNames.length === 1) return undefined
    return oidcNames.length === 0
      ? 'tokenExchange exchanges the user\'s identity-provider token: configure an oidc provider under auth.identityProviders'
      : `several oidc identity providers are configured: name the one whose tokens are exchanged (one of: ${oidcNames.join(', ')})`
  }
  if (oidcNames.includes(name)) return undefined
  return `expected the name of an oidc provider under auth.identityProviders (one of: ${oidcNames.join(', ') || 'none configured'}), got ${JSON.stringify(name)}`
}

/**
 * `${user.credentials.<server>}` in a stdio server's env names an HTTP server with
 * `upstreamAuth: oauth`, whose linked token the child is started with (README "Upstream
 * credentials"). Isolation shared and prestart are refused for every per-user value already.
 */
function checkCredentialReferences (servers: readonly z.output<typeof serverSchema>[], index: number, ctx: z.RefinementCtx): void {
  const server = servers[index]
  if (server?.transport !== 'stdio') return
  for (const [key, value] of Object.entries(server.env)) {
    for (const name of credentialServers([value])) {
      const target = servers.find((s) => s.name === name)
      if (target?.transport !== 'http' || target.upstreamAuth?.type !== 'oauth') {
        ctx.addIssue({ code: 'custom', path: ['servers', index, 'env', key], message: `\${user.credentials.${name}} needs an http server named "${name}" with upstreamAuth: { type: oauth } (whose linked token it is)` })
      }
    }
  }
}

export type ConfigInput = z.input<typeof configSchema>
type ParsedConfig = z.output<typeof configSchema>
export type ServerConfig = z.output<typeof serverSchema>
export type HttpServerConfig = z.output<typeof httpServerSchema>
export type StdioServerConfig = z.output<typeof stdioServerSchema>
export type SseServerConfig = z.output<typeof sseServerSchema>
export type AuthConfig = z.output<typeof authSchema>
export type UserConfig = z.output<typeof userSchema>
export type ClientConfig = z.output<typeof clientSchema>
export type ToolRule = z.output<typeof toolRuleSchema>
export type IdentityProviderConfig = z.output<typeof identityProviderSchema>
export type UpstreamAuthConfig = z.output<typeof upstreamAuthSchema>
export type ApiKeysConfig = z.output<typeof apiKeysSchema>
export type NamedRule = z.output<typeof namedRuleSchema>
export type AccessConfig = z.output<typeof accessSchema>
export type AdminConfig = z.output<typeof adminSchema>
export type VirtualServerConfig = z.output<typeof virtualServerSchema>

/** The validated config with derived values filled in, frozen once loaded. */
export type Config = Omit<ParsedConfig, 'publicUrl'> & {
  /** Normalised origin without trailing slash, e.g. https://gw.example.com */
  readonly publicUrl: string
  /** Where the config came from (file path, or "<inline>"), for messages. */
  readonly source: string
}
