/**
 * Every default in one place; this file is the documentation of what an
 * omitted key means (README's configuration reference mirrors it).
 */

export const DEFAULT_CONFIG_PATHS = ['portcullis.yaml', 'config/portcullis.example.yaml'] as const

export const DEFAULT_LISTEN_HOST = '127.0.0.1'
export const DEFAULT_LISTEN_PORT = 8080

/** Largest accepted request body. Tool arguments are small; 4 MiB leaves room for file uploads. */
export const DEFAULT_BODY_LIMIT_BYTES = 4 * 1024 * 1024

/** How long an upstream has to send response headers, and the longest silence within a POST response. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 60_000

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
])
