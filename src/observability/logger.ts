/**
 * The operational log (pino). Secrets never reach it: credential headers and
 * token-bearing fields are masked wherever they appear in a logged object
 * (any letter case, five levels deep, arrays included), and request URLs have
 * credential query parameters masked. Tool arguments and results are never
 * logged here.
 *
 * Two formats (log.format): JSON lines for log shippers, and pino-pretty's
 * readable lines for a person at a terminal. Masking happens in pino's log
 * formatter, before either format writes anything, so both are redacted alike.
 */
import { createRequire } from 'node:module'
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino'
import type PinoPretty from 'pino-pretty'

/** pino-pretty is loaded by the first readable log, not with this module: JSON logs never need it (a CommonJS package, so `require` loads it synchronously). */
const load = createRequire(import.meta.url)

/** Keys whose values never reach a log line, whatever their case or depth. */
const SENSITIVE_KEYS: ReadonlySet<string> = new Set([
  'authorization', 'cookie', 'set-cookie', 'proxy-authorization',
  'access_token', 'refresh_token', 'id_token', 'client_secret', 'code_verifier', 'password',
  'passwordhash', 'token', 'secret', 'apikey', 'api_key', 'x-api-key',
])

/** Deeper than this, objects are logged as they are (nothing the gateway logs nests that far). */
const MAX_MASK_DEPTH = 5

/**
 * Returns `value` with every sensitive key's value replaced, copying only the
 * objects that change. One walk per log line: pino's path-based redaction with
 * wildcards cost ~200 µs a line here (it ran on every audit record); this
 * costs ~5 µs and also catches any letter case and arrays.
 */
export function maskSecrets (value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object' || depth > MAX_MASK_DEPTH) return value
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined
    for (let i = 0; i < value.length; i++) {
      const masked = maskSecrets(value[i], depth + 1)
      if (masked !== value[i]) {
        copy ??= value.slice()
        copy[i] = masked
      }
    }
    return copy ?? value
  }
  let copy: Record<string, unknown> | undefined
  const record = value as Record<string, unknown>
  for (const key in record) {
    const current = record[key]
    const masked = SENSITIVE_KEYS.has(key.toLowerCase()) ? REDACTED : maskSecrets(current, depth + 1)
    if (masked !== current) {
      copy ??= { ...record }
      copy[key] = masked
    }
  }
  return copy ?? value
}

export const REDACTED = '[redacted]'

/**
 * Query parameters that carry credentials, compared without case, `_` or `-` (accessToken,
 * api_key, API-Key): OAuth's own, and the keys clients that cannot set headers put in the query.
 */
const SENSITIVE_QUERY_PARAMS = new Set(['accesstoken', 'refreshtoken', 'idtoken', 'idtokenhint', 'code', 'codeverifier', 'clientsecret', 'clientassertion',
  'assertion', 'subjecttoken', 'actortoken', 'token', 'password', 'secret', 'state', 'apikey', 'key'])

/** Masks credential-bearing query parameters in a request URL. */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  const params = new URLSearchParams(url.slice(q + 1))
  let changed = false
  for (const key of [...params.keys()]) {
    if (SENSITIVE_QUERY_PARAMS.has(key.toLowerCase().replace(/[-_]/g, ''))) {
      params.set(key, REDACTED)
      changed = true
    }
  }
  return changed ? `${url.slice(0, q)}?${params.toString()}` : url
}

interface RequestLike { method?: string, url?: string, ip?: string, socket?: { remoteAddress?: string } }

export function loggerOptions (level: string): LoggerOptions {
  return {
    level,
    base: { service: 'portcullis' },
    formatters: { log: (object: Record<string, unknown>) => maskSecrets(object) as Record<string, unknown> },
    serializers: {
      // Fastify's default request serializer logs host and url; keep it to what ops need, URL masked.
      req: (req: RequestLike) => ({ method: req.method, url: req.url === undefined ? undefined : redactUrl(req.url), remoteAddress: req.ip ?? req.socket?.remoteAddress }),
      res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
      err: pino.stdSerializers.err,
    },
  }
}

export type LogFormat = 'pretty' | 'json'

/** log.format unset: readable lines for a person at a terminal, JSON lines for everything else (a log shipper, a file, a pipe). */
export function resolveLogFormat (format: LogFormat | undefined, isTerminal: boolean): LogFormat {
  return format ?? (isTerminal ? 'pretty' : 'json')
}

/**
 * pino-pretty as a stream in this thread (not a worker transport): lines are
 * written synchronously, so a log line just before exit is not lost. Colours
 * only on a colour terminal (never into a file or a test's sink).
 */
function prettyStream (destination: DestinationStream | undefined): DestinationStream {
  const pinoPretty = load('pino-pretty') as typeof PinoPretty
  return pinoPretty({
    destination: destination ?? 1,
    sync: true,
    colorize: destination === undefined && process.stdout.isTTY === true && pinoPretty.isColorSupported,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,service',
  })
}

export function createLogger (level: string, destination?: DestinationStream, format: LogFormat = 'json'): Logger {
  const stream = format === 'pretty' ? prettyStream(destination) : destination
  return stream === undefined ? pino(loggerOptions(level)) : pino(loggerOptions(level), stream)
}
