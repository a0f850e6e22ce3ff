// The same contract for every store backend (Redis joins with its own issue).
import t from 'tap'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { MemoryStore } from '../../src/store/memory-store.js'
import { SqliteStore } from '../../src/store/sqlite-store.js'
import type { Store } from '../../src/store/types.js'

const backends: Array<[string, (t: { testdir: () => string }, now: () => number) => Store]> = [
  ['memory', (_t, now) => new MemoryStore(now)],
  ['sqlite', (t, now) => new SqliteStore(join(t.testdir(), 'test.db'), now)],
]

for (const [name, make] of backends) {
  t.test(`${name}: records, expiry, lookups by uid and grant`, async (t) => {
    let clock = 1_000_000
    const store = make(t, () => clock)
    t.teardown(() => store.close())
    await store.upsert('Session', 's1', { uid: 'u-1', accountId: 'alice' }, clock + 60_000)
    await store.upsert('AccessToken', 'a1', { grantId: 'g1' }, undefined)
    await store.upsert('RefreshToken', 'r1', { grantId: 'g1' }, clock + 60_000)
    await store.upsert('RefreshToken', 'r2', { grantId: 'g2' }, clock + 60_000)
    t.same(await store.find('Session', 's1'), { uid: 'u-1', accountId: 'alice' })
    t.same(await store.findByUid('Session', 'u-1'), { uid: 'u-1', accountId: 'alice' })
    t.equal(await store.findByUid('Grant', 'u-1'), undefined, 'uid lookups are per model')
    await store.revokeByGrantId('g1')
    t.equal(await store.find('AccessToken', 'a1'), undefined, 'revokeByGrantId removes every model of the grant')
    t.equal(await store.find('RefreshToken', 'r1'), undefined)
    t.ok(await store.find('RefreshToken', 'r2'), 'other grants untouched')
    clock += 60_000
    t.equal(await store.find('Session', 's1'), undefined, 'expired records are gone')
    await store.upsert('Client', 'c1', { client_id: 'c1' }, undefined)
    await store.destroy('Client', 'c1')
    t.equal(await store.find('Client', 'c1'), undefined)
  })

  t.test(`${name}: consume is atomic — the first caller wins, later ones learn when`, async (t) => {
    const store = make(t, Date.now)
    t.teardown(() => store.close())
    await store.upsert('AuthorizationCode', 'code', { grantId: 'g' }, Date.now() + 60_000)
    const results = await Promise.all([store.consume('AuthorizationCode', 'code', 100), store.consume('AuthorizationCode', 'code', 101)])
    t.same(results, [undefined, 100])
    t.match(await store.find('AuthorizationCode', 'code'), { consumed: 100 })
    t.equal(await store.consume('AuthorizationCode', 'missing', 1), undefined)
  })

  t.test(`${name}: key-values and counters`, async (t) => {
    let clock = 5_000
    const store = make(t, () => clock)
    t.teardown(() => store.close())
    t.equal(await store.kvSetIfAbsent('keys', 'first'), true)
    t.equal(await store.kvSetIfAbsent('keys', 'second'), false)
    t.equal(await store.kvGet('keys'), 'first')
    await store.kvSet('temp', 'x', clock + 10)
    clock += 10
    t.equal(await store.kvGet('temp'), undefined)
    await store.kvDelete('keys')
    t.equal(await store.kvGet('keys'), undefined)
    t.same(await store.hit('login:alice', 1000), { count: 1, resetAtMs: 6010 })
    t.same(await store.hit('login:alice', 1000, 3), { count: 4, resetAtMs: 6010 })
    clock = 6010
    t.same(await store.hit('login:alice', 1000), { count: 1, resetAtMs: 7010 }, 'a new window starts')
    await store.resetCounter('login:alice')
    t.same(await store.hit('login:alice', 1000), { count: 1, resetAtMs: 7010 })
    await store.ping()
  })
}

t.test('sqlite: the file is owner-only and data survives reopening', async (t) => {
  const path = join(t.testdir({}), 'state.db')
  const first = new SqliteStore(path)
  await first.upsert('Client', 'c1', { client_id: 'c1' }, undefined)
  await first.kvSet('k', 'v')
  await first.close()
  t.equal(statSync(path).mode & 0o777, 0o600)
  const second = new SqliteStore(path)
  t.teardown(() => second.close())
  t.same(await second.find('Client', 'c1'), { client_id: 'c1' })
  t.equal(await second.kvGet('k'), 'v')
})

t.test('sqlite: sweep deletes what expired', async (t) => {
  let clock = 0
  const store = new SqliteStore(join(t.testdir({}), 's.db'), () => clock)
  t.teardown(() => store.close())
  await store.upsert('Session', 'a', {}, 10)
  await store.upsert('Session', 'b', {}, 100)
  await store.kvSet('k', 'v', 10)
  await store.hit('c', 10)
  clock = 50
  t.equal(store.sweep(), 3)
  t.ok(await store.find('Session', 'b'))
})
