/**
 * The operational log (pino). Secrets never reach it: credential headers and
 * token-bearing fields are redacted wherever they appear in a logged object
 * (to three levels deep), and request URLs have credential query parameters
 * masked. Tool arguments and results are never logged here.
 */
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino'

const SENSITIVE_KEYS = [
  'authorization', 'Authorization', 'cookie', 'Cookie', 'set-cookie', 'proxy-authorization',
  'access_token', 'refresh_token', 'id_token', 'client_secret', 'code_verifier', 'password',
  'passwordHash', 'token', 'secret', 'apiKey', 'api_key', 'x-api-key',
]

/** `*.k`, `*.*.k` … : pino's redaction has no "any depth" wildcard, so spell out the depths we log. */
function redactPaths (): string[] {
  const paths: string[] = []
  for (const key of SENSITIVE_KEYS) {
    const seg = /^[A-Za-z_$][\w$]*$/.test(key) ? key : `["${key}"]`
    const join = (prefix: string): string => seg.startsWith('[') ? `${prefix}${seg}` : `${prefix}.${seg}`
    paths.push(seg.startsWith('[') ? seg : key, join('*'), join('*.*'), join('*.*.*'))
  }
  return paths
}

export const REDACTED = '[redacted]'

const SENSITIVE_QUERY_PARAMS = new Set(['access_token', 'refresh_token', 'id_token', 'code', 'code_verifier', 'client_secret', 'token', 'password', 'state'])

/** Masks credential-bearing query parameters in a request URL. */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  const params = new URLSearchParams(url.slice(q + 1))
  let changed = false
  for (const key of [...params.keys()]) {
    if (SENSITIVE_QUERY_PARAMS.has(key.toLowerCase())) {
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
    redact: { paths: redactPaths(), censor: REDACTED },
    serializers: {
      // Fastify's default request serializer logs host and url; keep it to what ops need, URL masked.
      req: (req: RequestLike) => ({ method: req.method, url: req.url === undefined ? undefined : redactUrl(req.url), remoteAddress: req.ip ?? req.socket?.remoteAddress }),
      res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
      err: pino.stdSerializers.err,
    },
  }
}

export function createLogger (level: string, destination?: DestinationStream): Logger {
  return destination === undefined ? pino(loggerOptions(level)) : pino(loggerOptions(level), destination)
}
