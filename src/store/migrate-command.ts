/** The `portcullis migrate-store` command: the configured store -> another one. */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Config } from '../config/schema.js'
import { createLogger } from '../observability/logger.js'
import { DEFAULT_SQLITE_FILE } from './create-store.js'
import { copyStore, MigrationError } from './migrate.js'
import { createRedisClient, redactRedisUrl, waitUntilReady, type RedisClient } from './redis-client.js'
import { RedisStore } from './redis-store.js'
import { SqliteStore } from './sqlite-store.js'
import type { Store } from './types.js'

const REDIS_CONNECT_TIMEOUT_MS = 10_000
const PREFIX_RE = /^[\w.:-]{1,64}$/

interface Opened { readonly store: Store, readonly describe: string, readonly close: () => Promise<void> }

async function openRedis (url: string, prefix: string, log: ReturnType<typeof createLogger>): Promise<Opened> {
  const client: RedisClient = createRedisClient(url, log)
  try {
    await waitUntilReady(client, url, REDIS_CONNECT_TIMEOUT_MS)
  } catch (err) {
    client.disconnect()
    throw err
  }
  return { store: new RedisStore(client, url, () => Date.now(), prefix), describe: `redis ${redactRedisUrl(url)} (prefix ${prefix})`, close: async () => { await client.quit().catch(() => client.disconnect()) } }
}

function openSqlite (path: string, mustExist: boolean): Opened {
  if (mustExist && !existsSync(path)) throw new MigrationError(`nothing to migrate: ${path} does not exist`)
  const store = new SqliteStore(path)
  return { store, describe: `sqlite ${path}`, close: () => store.close() }
}

export async function migrateStoreCommand (config: Config, to: string, prefix: string | undefined): Promise<number> {
  const log = createLogger('warn')
  if (prefix !== undefined && !PREFIX_RE.test(prefix)) {
    process.stderr.write('portcullis: --prefix: expected up to 64 letters, digits or _ . : -\n')
    return 2
  }
  const opened: Opened[] = []
  try {
    if (config.store.memory === true) throw new MigrationError('the configured store is memory: there is nothing persistent to migrate')
    const source = config.store.redis !== undefined
      ? await openRedis(config.store.redis, config.store.prefix, log)
      : openSqlite(resolve(config.store.sqlite ?? join(config.dataDir, DEFAULT_SQLITE_FILE)), true)
    opened.push(source)
    const destination = /^rediss?:\/\//.test(to)
      ? await openRedis(to, prefix ?? config.store.prefix, log)
      : openSqlite(resolve(to.replace(/^sqlite:/, '')), false)
    opened.push(destination)
    if (source.describe === destination.describe) throw new MigrationError('the destination is the configured store itself')

    const report = await copyStore(source.store, destination.store)
    const lines = [
      `portcullis: copied ${source.describe} -> ${destination.describe}`,
      ...[...report.records].sort(([a], [b]) => a.localeCompare(b)).map(([model, count]) => `  ${model.padEnd(28)} ${count}`),
      `  ${'key-values'.padEnd(28)} ${report.keyValues}   (signing keys, consent, first-run account)`,
      'Rate-limit counters were not copied (they start again).',
      'Next: point store: at the destination in the config, then start the gateway(s).',
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
    return 0
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    process.stderr.write(`portcullis: migrate-store failed: ${message}\n`)
    return 1
  } finally {
    for (const o of opened.reverse()) await o.close()
  }
}
