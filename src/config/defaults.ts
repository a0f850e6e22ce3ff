/**
 * Every default in one place; this file is the documentation of what an
 * omitted key means (README's configuration reference mirrors it).
 */

export const DEFAULT_CONFIG_PATHS = ['portcullis.yaml', 'config/portcullis.example.yaml'] as const

export const DEFAULT_LISTEN_HOST = '127.0.0.1'
/** State directory (SQLite store, keys); relative paths resolve against the working directory. */
export const DEFAULT_DATA_DIR = './data'
export const DEFAULT_LISTEN_PORT = 8080

/** Largest accepted request body. Tool arguments are small; 4 MiB leaves room for file uploads. */
export const DEFAULT_BODY_LIMIT_BYTES = 4 * 1024 * 1024

/** How long an upstream has to send response headers, and the longest silence within a POST response. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 60_000

/**
 * HTTP servers: the gateway forgets who opened an upstream session unused this long (no request,
 * no open stream); its client then gets 404 and starts a new session. The upstream's own session
 * lifetime is its business; this only bounds the gateway's records.
 */
export const DEFAULT_HTTP_SESSION_IDLE_TIMEOUT_MS = 8 * 3600_000

/**
 * Event streams to clients silent this long get an SSE comment line. Below nginx's shipped
 * proxy_read_timeout (1 h) and the common 60 s idle timeout of cloud load balancers.
 */
export const DEFAULT_STREAM_KEEPALIVE_MS = 30_000

/**
 * Slow clients (slowloris): request headers must arrive within this of the first byte, and the
 * whole request, body included, within DEFAULT_BODY_TIMEOUT_MS of it; an idle keep-alive
 * connection is closed after DEFAULT_KEEPALIVE_TIMEOUT_MS (above the 60 s idle timeout of
 * common load balancers, so the gateway is never the side that closes first under them).
 * Responses — MCP event streams, long answers — are not bounded by any of these.
 */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000
export const DEFAULT_BODY_TIMEOUT_MS = 30_000
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 72_000

/** How long graceful shutdown waits for in-flight requests before cutting them. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000

/** /readyz caches upstream probes this long, so probe traffic stays flat however often it is scraped. */
export const READY_PROBE_CACHE_MS = 5_000
export const READY_PROBE_TIMEOUT_MS = 2_000

/**
 * Server names become the first path segment; these would shadow the
 * gateway's own routes (health, metrics, OAuth endpoints, discovery).
 */
export const RESERVED_SERVER_NAMES: ReadonlySet<string> = new Set([
  'healthz', 'readyz', 'metrics', 'auth', 'oauth', 'token', 'register', 'reg', 'jwks', 'login',
  'consent', 'interaction', 'session', 'revoke', 'introspect', 'userinfo', 'me', 'static', 'assets', 'favicon.ico',
  // Labels of the gateway's own areas in portcullis_http_requests_total.
  'gateway', 'unmatched',
  // <publicUrl>/connect/<server>: where a user links their account at an upstream (upstreamAuth).
  'connect',
  // The admin API and page (<publicUrl>/admin is also its resource URL).
  'admin',
])

/** stdio servers: children alive per server at most (warm ones included). */
export const DEFAULT_STDIO_MAX_PROCESSES = 32
/**
 * stdio servers, when maxProcessesPerUser is not set: half of maxProcesses (at least 1), so one
 * user holding sessions open can never take every slot from the others (issue 12).
 */
export function defaultMaxProcessesPerUser (maxProcesses: number): number {
  return Math.max(1, Math.floor(maxProcesses / 2))
}
/** HTTP servers: upstream sessions one user may hold open at once (per replica). */
export const DEFAULT_HTTP_MAX_SESSIONS_PER_USER = 32
/**
 * A session that has sent no request since `initialize` is ended after this fraction of the
 * server's idle timeout (1/10: 90 s of the stdio default 15 min); sessions in use keep the full timeout.
 */
export const UNUSED_SESSION_IDLE_DIVISOR = 10
/**
 * Units of the per-user server budget one `initialize` takes. Opening a session costs the gateway
 * far more than a request (a stdio session spawns a process: ~250 ms cold, FINDINGS.md), yet clients
 * that open a session per conversation (initialize, tools/list, a call or two) must stay well inside
 * a budget sized for their calls: 5 lets 200/min open at most 40 sessions a minute.
 */
export const DEFAULT_SESSION_COST = 5
/** A session (or a user's/shared process) unused this long is ended and its process stopped. */
export const DEFAULT_STDIO_IDLE_TIMEOUT_MS = 15 * 60_000
/** From spawn to the answer to `initialize` (or the era probe). npx downloads can be slow. */
export const DEFAULT_STDIO_STARTUP_TIMEOUT_MS = 30_000
/** Longest silence on one request (progress notifications reset it). */
export const DEFAULT_STDIO_REQUEST_TIMEOUT_MS = 60_000
/** Largest single JSON-RPC line accepted from a child. */
export const DEFAULT_STDIO_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
/** Largest single event read from an event stream (transport: sse upstreams, the legacy routes' own answers): a message is one event. */
export const DEFAULT_MAX_SSE_EVENT_BYTES = DEFAULT_STDIO_MAX_MESSAGE_BYTES
/** 2024-11-05 event streams (GET /<name>/sse) open at once on one server, all callers together. */
export const DEFAULT_MAX_LEGACY_SESSIONS = 256
/** transport: sse sessions (upstream event streams) open at once on one server, all callers together. */
export const DEFAULT_SSE_MAX_SESSIONS = 256

/** OAuth: access tokens are short-lived JWTs bound to one server. */
export const DEFAULT_ACCESS_TOKEN_TTL = '15m'
export const DEFAULT_REFRESH_TOKEN_TTL = '14d'
/** A just-rotated refresh token keeps working this long (clients that refresh twice in parallel). */
export const DEFAULT_REFRESH_TOKEN_REUSE_GRACE = '10s'
/** Dynamically registered clients unused this long are deleted. */
export const DEFAULT_REGISTERED_CLIENT_TTL = '90d'
/** A registered client nobody has signed in with yet lives this long past its last use (abandoned and scripted registrations). */
export const DEFAULT_UNUSED_CLIENT_TTL = '24h'
/** How often a user signed in through an identity provider is re-checked with it (at token refresh). */
export const DEFAULT_IDP_REVALIDATE_EVERY = '15m'
/** Personal API keys: lifetime when none is asked for, the longest allowed, live keys per user. */
export const DEFAULT_API_KEY_TTL = '30d'
export const DEFAULT_API_KEY_MAX_TTL = '365d'
export const DEFAULT_API_KEYS_PER_USER = 20
/**
 * Failed sign-ins: per (account, client IP) before each further attempt waits 1 s, 2 s, 4 s …;
 * per client IP, and per account from all addresses, within the window before sign-in is
 * refused. The per-account ceiling is high so that nobody can lock an owner out cheaply.
 */
export const DEFAULT_LOGIN_MAX_FAILURES = 5
export const DEFAULT_LOGIN_MAX_FAILURES_PER_IP = 50
export const DEFAULT_LOGIN_MAX_FAILURES_PER_ACCOUNT = 100
export const DEFAULT_LOGIN_FAILURE_WINDOW = '15m'
/** Scope granted for a server that asks for none: "use this MCP server". */
export const BASE_SCOPE = 'mcp'
/** OAuth scopes the authorization server itself understands (OIDC); never server scopes. */
/** The admin API (README "Administration"): who may use it with a gateway access token, and the scope that token carries. */
export const DEFAULT_ADMIN_GROUPS = ['portcullis-admins'] as const
export const ADMIN_SCOPE = 'portcullis:admin'
/** admin.bearerToken: long enough that guessing is hopeless (a 32-character random string). */
export const MIN_ADMIN_BEARER_TOKEN_CHARS = 32

export const RESERVED_SCOPES: ReadonlySet<string> = new Set(['openid', 'offline_access', 'profile', 'email'])

/** Per client IP: sign-in attempts, and token/registration requests. */
export const DEFAULT_LOGIN_RATE = '30/min'
export const DEFAULT_TOKEN_RATE = '120/min'
/** Per client IP: new dynamic registrations (each is a stored record; real clients register once). */
export const DEFAULT_REGISTRATION_RATE = '20/hour'
/**
 * Dynamic registration caps (RFC 7591 sets none): a real registration is well under 2 KB; these
 * stop one request from storing megabytes. The body, redirect URIs (and every other list),
 * client_name, and every other string field (URIs).
 */
export const MAX_REGISTRATION_BODY_BYTES = 16 * 1024
export const MAX_REGISTRATION_LIST_ITEMS = 10
export const MAX_CLIENT_NAME_CHARS = 200
export const MAX_REGISTRATION_STRING_CHARS = 2000
/** Audit records go to their own stream, apart from the operational log. */
export const DEFAULT_AUDIT_DESTINATION = '${gateway.dataDir}/audit.log'

/** With no auth.users, the gateway creates this one account on first start (its password goes to a file once). */
export const FIRST_RUN_USERNAME = 'admin'

/** telemetry.otlp.serviceName: the resource's service.name on every span. */
export const DEFAULT_TELEMETRY_SERVICE_NAME = 'portcullis'
