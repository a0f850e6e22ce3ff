// SqliteStore when the disk refuses writes, driven without a disk: SQLite's max_page_count
// makes the database "full" (SQLITE_FULL, the same code a full disk gives), and the clock is
// injected, so "once a minute" needs no waiting. test/e2e/store-full.test.ts does it for real.
import t from 'tap'
import { join } from 'node:path'
import type Database from 'better-sqlite3'
import { SqliteStore } from '../../src/store/sqlite-store.js'
import { isStoreUnavailable } from '../../src/store/types.js'

t.test('write failures: StoreUnavailableError, remembered until a write works, logged at most once a minute', async (t) => {
  const path = join(t.testdir({}), 'store.db')
  let clock = 1_000_000
  const logged: Array<{ level: string, details: Record<string, unknown>, message: string }> = []
  const store = new SqliteStore(path, () => clock, {
    error: (details, message) => logged.push({ level: 'error', details, message }),
    info: (details, message) => logged.push({ level: 'info', details, message }),
  })
  t.teardown(() => store.close())
  // Cap the file at its current size (the pragma is per connection: the store's own).
  const db = (store as unknown as { db: Database.Database }).db
  const pages = db.pragma('page_count', { simple: true }) as number
  ;(store as unknown as { db: Database.Database }).db.pragma(`max_page_count = ${pages}`)

  const big = 'x'.repeat(64 * 1024)
  const failed = await store.kvSet('a', big).then(() => undefined, (err: unknown) => err)
  t.ok(isStoreUnavailable(failed), 'a full database is "unavailable", not a bug')
  t.match((failed as Error).message, /cannot write \(SQLITE_FULL/)
  t.match(store.lastWriteFailure?.(), { code: 'SQLITE_FULL', sinceMs: 1_000_000 })
  t.equal(await store.kvGet('missing'), undefined, 'reads still work')

  for (let i = 0; i < 10; i++) {
    clock += 1_000
    await store.kvSet(`b${i}`, big).catch(() => {})
  }
  t.equal(logged.filter((l) => l.level === 'error').length, 1, 'eleven failures in ten seconds: one log line')
  clock += 60_000
  await store.upsert('Client', 'c', { big }, undefined).catch(() => {})
  const errors = logged.filter((l) => l.level === 'error')
  t.equal(errors.length, 2, 'a minute later: the next line')
  t.match(errors[1]?.details, { code: 'SQLITE_FULL', failures: 11, failingForMs: 70_000 }, 'with the count since the last line')

  ;(store as unknown as { db: Database.Database }).db.pragma('max_page_count = 1000000')
  await store.ping()
  t.equal(store.lastWriteFailure?.(), undefined, 'ping\'s probe write clears the state once writes work')
  t.match(logged.at(-1), { level: 'info', message: 'store writes work again', details: { code: 'SQLITE_FULL' } })
  await store.kvSet('a', big)
  t.equal(await store.kvGet('a'), big)
})

t.test('constraint errors and misuse stay bugs (not 503)', async (t) => {
  const store = new SqliteStore(':memory:')
  t.teardown(() => store.close())
  await store.close()
  const err = await store.kvSet('a', 'b').then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof Error && !isStoreUnavailable(err), 'a closed database is a programming error')
})
