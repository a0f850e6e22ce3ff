/** The store backends a test runs against: memory, SQLite, and Redis when it answers (redisAvailable fails loudly in CI without it). */
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { MemoryStore } from '../src/store/memory-store.js'
import { SqliteStore } from '../src/store/sqlite-store.js'
import { RedisStore } from '../src/store/redis-store.js'
import type { Store } from '../src/store/types.js'
import { redisAvailable, REDIS_URL, uniquePrefix, type Teardown } from './helpers.js'

/** A Redis store under a key prefix of its own; its keys go, and its connection closes, at teardown. */
export function scratchRedisStore (t: Teardown, now: () => number = Date.now): Store {
  const client = new Redis(REDIS_URL)
  const prefix = uniquePrefix()
  t.teardown(async () => {
    const keys = await client.keys(`${prefix}*`)
    if (keys.length > 0) await client.del(...keys)
    client.disconnect()
  })
  return new RedisStore(client, REDIS_URL, now, prefix)
}

/** [name, make(dir)] for each backend, on the wall clock. */
export async function storeBackends (t: Teardown & { comment: (message: string) => void }, file = 'test.db'): Promise<Array<[string, (dir: string) => Store]>> {
  const backends: Array<[string, (dir: string) => Store]> = [
    ['memory', () => new MemoryStore(() => Date.now())],
    ['sqlite', (dir) => new SqliteStore(join(dir, file), () => Date.now())],
  ]
  if (await redisAvailable(t)) backends.push(['redis', () => scratchRedisStore(t)])
  return backends
}
