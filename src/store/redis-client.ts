/**
 * One ioredis client per gateway, shared by the store and the rate limits.
 * Tuned to fail fast when Redis is gone (a few seconds, not a queue that
 * grows for minutes) and to reconnect by itself when it comes back.
 */
import { createRequire } from 'node:module'
import type * as IoRedis from 'ioredis'
import type { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

export type RedisClient = Redis

/**
 * ioredis is loaded by the first client, not with this module: most gateways run without Redis,
 * and importing it alone takes about 0.17 s of CPU (docs/benchmarks.md, 2026-12-01). A CommonJS
 * package, so `require` loads it synchronously.
 */
const load = createRequire(import.meta.url)

const CONNECT_TIMEOUT_MS = 2_000
const COMMAND_TIMEOUT_MS = 2_000
const MAX_RECONNECT_DELAY_MS = 2_000
const ERROR_LOG_INTERVAL_MS = 10_000

/**
 * The URL without its credentials, for logs: the password, and every query value
 * (ioredis reads `?password=…` as the password, as it does any option given in the query).
 */
export function redactRedisUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    for (const key of [...u.searchParams.keys()]) u.searchParams.set(key, '***')
    return u.toString()
  } catch {
    return 'redis://(unparseable)'
  }
}

export function createRedisClient (url: string, log: FastifyBaseLogger): RedisClient {
  const { Redis: Client } = load('ioredis') as typeof IoRedis
  const client = new Client(url, {
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    // While disconnected, commands fail at once (and the caller answers 503 or applies
    // onStoreError) instead of queueing behind reconnection attempts.
    enableOfflineQueue: false,
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

/** Resolves once the client is connected; rejects with a clear message after timeoutMs. */
export async function waitUntilReady (client: RedisClient, url: string, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return
  let lastError = ''
  const onError = (err: Error): void => { lastError = err.message }
  client.on('error', onError)
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.off('ready', onReady)
        reject(new Error(`Redis at ${redactRedisUrl(url)} did not answer within ${timeoutMs / 1000} s${lastError === '' ? '' : ` (${lastError})`}`))
      }, timeoutMs)
      const onReady = (): void => {
        clearTimeout(timer)
        resolve()
      }
      client.once('ready', onReady)
    })
  } finally {
    client.off('error', onError)
  }
}
