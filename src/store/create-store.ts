/** The store a config asks for. */
import { mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import type { Config } from '../config/schema.js'
import { MemoryStore } from './memory-store.js'
import type { RedisClient } from './redis-client.js'
import { RedisStore } from './redis-store.js'
import { lockDataDir, type DataDirLock } from './data-dir-lock.js'
import { SqliteStore } from './sqlite-store.js'
import type { Store, StoreLog } from './types.js'

export const DEFAULT_SQLITE_FILE = 'portcullis.db'

export function createStore (config: Config, now: () => number = () => Date.now(), redis?: RedisClient, log?: StoreLog): Store {
  const store = config.store
  if (store.memory === true) return new MemoryStore(now)
  if (store.redis !== undefined) {
    if (redis === undefined) throw new Error('a Redis store needs a Redis client')
    return new RedisStore(redis, store.redis, now, store.prefix)
  }
  return new SqliteStore(store.sqlite ?? join(config.dataDir, DEFAULT_SQLITE_FILE), now, log)
}

/**
 * `start` on a SQLite store: the lock on the directory holding the database
 * (the data directory unless store.sqlite points elsewhere). Redis and memory
 * stores need none: replicas share Redis by design.
 */
export function lockStoreDir (config: Config): DataDirLock | undefined {
  const store = config.store
  if (store.memory === true || store.redis !== undefined || store.sqlite === ':memory:') return undefined
  const dir = dirname(resolve(store.sqlite ?? join(config.dataDir, DEFAULT_SQLITE_FILE)))
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  return lockDataDir(dir)
}
