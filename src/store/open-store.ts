/**
 * Stores opened by the commands that work beside a running gateway
 * (`migrate-store`, `keys`): no data-directory lock (that is for servers, see
 * data-dir-lock.ts). SQLite in WAL mode lets a second process read and write
 * (busy_timeout waits out the gateway's short write locks); Redis is shared by
 * design.
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Config } from '../config/schema.js'
import { DEFAULT_SQLITE_FILE } from './create-store.js'
import { createRedisClient, redactRedisUrl, waitUntilReady, type RedisClient } from './redis-client.js'
import { RedisStore } from './redis-store.js'
import { SqliteStore } from './sqlite-store.js'
import type { Store } from './types.js'
import type { FastifyBaseLogger } from 'fastify'

const REDIS_CONNECT_TIMEOUT_MS = 10_000

export interface Opened { readonly store: Store, readonly describe: string, readonly close: () => Promise<void> }

export async function openRedis (url: string, prefix: string, log: FastifyBaseLogger): Promise<Opened> {
  const client: RedisClient = createRedisClient(url, log)
  try {
    await waitUntilReady(client, url, REDIS_CONNECT_TIMEOUT_MS)
  } catch (err) {
    client.disconnect()
    throw err
  }
  return { store: new RedisStore(client, url, () => Date.now(), prefix), describe: `redis ${redactRedisUrl(url)} (prefix ${prefix})`, close: async () => { await client.quit().catch(() => client.disconnect()) } }
}

/** `missing`: the error to throw when the file must already exist and does not. */
export function openSqlite (path: string, mustExist: boolean, missing: (path: string) => Error = (p) => new Error(`${p} does not exist`)): Opened {
  if (mustExist && !existsSync(path)) throw missing(path)
  const store = new SqliteStore(path)
  return { store, describe: `sqlite ${path}`, close: () => store.close() }
}

/** The configured store itself (not memory: nothing outside the gateway's process could see it). */
export async function openConfiguredStore (config: Config, log: FastifyBaseLogger, missing: (path: string) => Error): Promise<Opened> {
  if (config.store.redis !== undefined) return openRedis(config.store.redis, config.store.prefix, log)
  return openSqlite(resolve(config.store.sqlite ?? join(config.dataDir, DEFAULT_SQLITE_FILE)), true, missing)
}
