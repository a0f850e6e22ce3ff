/** The store a config asks for. */
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { MemoryStore } from './memory-store.js'
import { SqliteStore } from './sqlite-store.js'
import type { Store } from './types.js'

export const DEFAULT_SQLITE_FILE = 'portcullis.db'

export function createStore (config: Config, now: () => number = () => Date.now()): Store {
  const store = config.store
  if ('memory' in store) return new MemoryStore(now)
  return new SqliteStore(store.sqlite ?? join(config.dataDir, DEFAULT_SQLITE_FILE), now)
}
