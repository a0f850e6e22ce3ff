/**
 * One ioredis client per gateway, shared by the store and the rate limits.
 * Tuned to fail fast when Redis is gone (a few seconds, not a queue that
 * grows for minutes) and to reconnect by itself when it comes back.
 */
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

export type RedisClient = Redis

const CONNECT_TIMEOUT_MS = 2_000
const COMMAND_TIMEOUT_MS = 2_000
const MAX_RECONNECT_DELAY_MS = 2_000
const ERROR_LOG_INTERVAL_MS = 10_000

/** The URL without its password, for logs. */
export function redactRedisUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return 'redis://(unparseable)'
  }
}

export function createRedisClient (url: string, log: FastifyBaseLogger): RedisClient {
  const client = new Redis(url, {
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    // A command waits for at most one reconnection attempt, then fails (and the caller decides).
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 200, MAX_RECONNECT_DELAY_MS),
    lazyConnect: false,
  })
  let lastErrorLogAt = 0
  client.on('error', (err: NodeJS.ErrnoException) => {
    const now = Date.now()
    if (now - lastErrorLogAt < ERROR_LOG_INTERVAL_MS) return
    lastErrorLogAt = now
    log.error({ redis: redactRedisUrl(url), code: err.code, err: { message: err.message } }, 'redis unreachable')
  })
  client.on('ready', () => { log.info({ redis: redactRedisUrl(url) }, 'redis connected') })
  return client
}
