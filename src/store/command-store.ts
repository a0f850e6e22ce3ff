/**
 * Stores opened by a one-off command (`migrate-store`, `tools`, `keys`) beside a
 * running gateway: SQLite's own locking (WAL, busy timeout) keeps reads and
 * writes safe while `start` holds the data directory's lock, and Redis is
 * shared by design. Neither takes the data-dir lock.
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Config } from '../config/schema.js'
import type { createLogger } from '../observability/logger.js'
import { DEFAULT_SQLITE_FILE } from './create-store.js'
import { createRedisClient, redactRedisUrl, waitUntilReady, type RedisClient } from './redis-client.js'
import { RedisStore } from './redis-store.js'
import { SqliteStore } from './sqlite-store.js'
import type { Store } from './types.js'

const REDIS_CONNECT_TIMEOUT_MS = 10_000

export interface OpenedStore { readonly store: Store, readonly describe: string, readonly close: () => Promise<void> }

/** A store a command cannot use: nothing there, or nothing persistent. */
export class CommandStoreError extends Error {
  override readonly name = 'CommandStoreError'
}

export async function openRedis (url: string, prefix: string, log: ReturnType<typeof createLogger>): Promise<OpenedStore> {
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
export function openSqlite (path: string, mustExist: boolean, missing: (path: string) => Error = defaultMissing): OpenedStore {
  if (mustExist && !existsSync(path)) throw missing(path)
  const store = new SqliteStore(path)
  return { store, describe: `sqlite ${path}`, close: () => store.close() }
}

const defaultMissing = (path: string): Error => new CommandStoreError(`${path} does not exist (has the gateway run with this config?)`)

/** The configured store, as it exists on disk or in Redis (never memory: nothing outside the gateway's process could see it). */
export async function openConfiguredStore (config: Config, log: ReturnType<typeof createLogger>, missing: (path: string) => Error = defaultMissing): Promise<OpenedStore> {
  if (config.store.memory === true) throw new CommandStoreError('the configured store is memory: it lives only inside a running gateway')
  return config.store.redis !== undefined
    ? await openRedis(config.store.redis, config.store.prefix, log)
    : openSqlite(resolve(config.store.sqlite ?? join(config.dataDir, DEFAULT_SQLITE_FILE)), true, missing)
}
