/** The store a config asks for. */
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { MemoryStore } from './memory-store.js'
import type { RedisClient } from './redis-client.js'
import { RedisStore } from './redis-store.js'
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

