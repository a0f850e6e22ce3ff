/** The `portcullis migrate-store` command: the configured store -> another one. */
import { resolve } from 'node:path'
import type { Config } from '../config/schema.js'
import { createLogger } from '../observability/logger.js'
import { copyStore, MigrationError } from './migrate.js'
import { openConfiguredStore, openRedis, openSqlite, type OpenedStore } from './command-store.js'

const PREFIX_RE = /^[\w.:-]{1,64}$/

export async function migrateStoreCommand (config: Config, to: string, prefix: string | undefined): Promise<number> {
  const log = createLogger('warn')
  if (prefix !== undefined && !PREFIX_RE.test(prefix)) {
    process.stderr.write('portcullis: --prefix: expected up to 64 letters, digits or _ . : -\n')
    return 2
  }
  const opened: OpenedStore[] = []
  try {
    if (config.store.memory === true) throw new MigrationError('the configured store is memory: there is nothing persistent to migrate')
    const source = await openConfiguredStore(config, log, (path) => new MigrationError(`nothing to migrate: ${path} does not exist`))
    opened.push(source)
    const destination = /^rediss?:\/\//.test(to)
      ? await openRedis(to, prefix ?? config.store.prefix, log)
      : openSqlite(resolve(to.replace(/^sqlite:/, '')), false)
    opened.push(destination)
    if (source.describe === destination.describe) throw new MigrationError('the destination is the configured store itself')

    const report = await copyStore(source.store, destination.store, Date.now())
    const lines = [
      `portcullis: copied ${source.describe} -> ${destination.describe}`,
      ...[...report.records].sort(([a], [b]) => a.localeCompare(b)).map(([model, count]) => `  ${model.padEnd(28)} ${count}`),
      `  ${'key-values'.padEnd(28)} ${report.keyValues}   (signing keys, consent, first-run account)`,
      `  ${'revoked grants'.padEnd(28)} ${report.revokedGrants}   (their access tokens stay refused)`,
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
