// The same contract for every store backend: memory, SQLite, and real Redis (127.0.0.1:6379).
// Time: memory and SQLite read an injected clock; Redis expires keys on its own clock, so for it
// `advance` really waits — the windows here are a tenth of a second.
import t from 'tap'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { MemoryStore } from '../../src/store/memory-store.js'
import { SqliteStore } from '../../src/store/sqlite-store.js'
import { RedisStore } from '../../src/store/redis-store.js'
import type { Store, StoredEntry } from '../../src/store/types.js'
import { copyStore } from '../../src/store/migrate.js'
import { redisAvailable, REDIS_URL, uniquePrefix } from '../helpers.js'

const WINDOW_MS = 100

interface Backend {
  readonly store: Store
  readonly now: () => number
  readonly advance: (ms: number) => Promise<void>
}

const makers: Array<[string, (dir: string) => Backend]> = [
  ['memory', () => {
    let clock = 1_000_000
    return { store: new MemoryStore(() => clock), now: () => clock, advance: async (ms) => { clock += ms } }
  }],
  ['sqlite', (dir) => {
    let clock = 1_000_000
    return { store: new SqliteStore(join(dir, 'test.db'), () => clock), now: () => clock, advance: async (ms) => { clock += ms } }
  }],
]

const hasRedis = await redisAvailable(t)
const redisClients: Redis[] = []
t.teardown(async () => {
  for (const client of redisClients) {
    const keys = await client.keys('portcullis-test-*')
    if (keys.length > 0) await client.del(...keys)
    client.disconnect()
  }
})
if (hasRedis) {
  makers.push(['redis', () => {
    const client = new Redis(REDIS_URL)
    redisClients.push(client)
    return { store: new RedisStore(client, REDIS_URL, () => Date.now(), uniquePrefix()), now: () => Date.now(), advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms + 20)) }
  }])
}

for (const [name, make] of makers) {
  t.test(`${name}: records, expiry, lookups by uid and grant`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    await store.upsert('Session', 's1', { uid: 'u-1', accountId: 'alice' }, now() + WINDOW_MS)
    await store.upsert('AccessToken', 'a1', { grantId: 'g1' }, undefined)
    await store.upsert('RefreshToken', 'r1', { grantId: 'g1' }, now() + 60_000)
    await store.upsert('RefreshToken', 'r2', { grantId: 'g2' }, now() + 60_000)
    t.same(await store.find('Session', 's1'), { uid: 'u-1', accountId: 'alice' })
    t.same(await store.findByUid('Session', 'u-1'), { uid: 'u-1', accountId: 'alice' })
    t.equal(await store.findByUid('Grant', 'u-1'), undefined, 'uid lookups are per model')
    await store.revokeByGrantId('g1', now() + 60_000)
    t.equal(await store.find('AccessToken', 'a1'), undefined, 'revokeByGrantId removes every model of the grant')
    t.equal(await store.find('RefreshToken', 'r1'), undefined)
    t.ok(await store.find('RefreshToken', 'r2'), 'other grants untouched')
    await advance(WINDOW_MS)
    t.equal(await store.find('Session', 's1'), undefined, 'expired records are gone')
    t.equal(await store.findByUid('Session', 'u-1'), undefined, 'and so are their uid lookups')
    await store.upsert('Client', 'c1', { client_id: 'c1' }, undefined)
    t.ok(await store.find('Client', 'c1'), 'records without an expiry stay')
    await store.destroy('Client', 'c1')
    t.equal(await store.find('Client', 'c1'), undefined)
  })

  t.test(`${name}: revoking a grant deletes its records and its Grant, and lists it as revoked until its tokens die`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    await store.upsert('Grant', 'g1', { accountId: 'alice', clientId: 'c' }, now() + 60_000)
    await store.upsert('RefreshToken', 'r1', { grantId: 'g1' }, now() + 60_000)
    await store.upsert('Grant', 'g2', { accountId: 'alice', clientId: 'c' }, now() + 60_000)
    t.same(await store.revokedGrants(now()), [], 'nothing revoked yet')
    const until = now() + WINDOW_MS
    await store.revokeByGrantId('g1', until)
    t.equal(await store.find('Grant', 'g1'), undefined, 'the Grant record goes too (a remembered consent must not bring its id back)')
    t.equal(await store.find('RefreshToken', 'r1'), undefined)
    t.ok(await store.find('Grant', 'g2'), 'other grants untouched')
    t.same(await store.revokedGrants(now()), [{ grantId: 'g1', untilMs: until }], 'listed until its last access token expires')
    t.same(await store.revokedGrants(until), [], 'a reader that has seen it gets nothing new')
    await store.revokeByGrantId('g1', until - 50)
    t.same(await store.revokedGrants(now()), [{ grantId: 'g1', untilMs: until }], 'a second revocation never shortens the listing')
    await advance(WINDOW_MS)
    t.same(await store.revokedGrants(0), [], 'and it leaves the list when its tokens would have expired')
  })

  t.test(`${name}: findByGrantId lists a grant's live records, the Grant itself excluded`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    await store.upsert('Grant', 'g1', { accountId: 'alice' }, now() + 60_000)
    await store.upsert('RefreshToken', 'r1', { grantId: 'g1', rotations: 2 }, now() + 60_000)
    await store.upsert('AuthorizationCode', 'c1', { grantId: 'g1' }, now() + WINDOW_MS)
    await store.upsert('RefreshToken', 'r2', { grantId: 'g2' }, now() + 60_000)
    const found = (await store.findByGrantId('g1')).map((r) => ({ model: r.model, id: r.id, payload: r.payload, hasExpiry: r.expiresAtMs !== undefined })).sort((a, b) => a.id.localeCompare(b.id))
    t.same(found, [{ model: 'AuthorizationCode', id: 'c1', payload: { grantId: 'g1' }, hasExpiry: true }, { model: 'RefreshToken', id: 'r1', payload: { grantId: 'g1', rotations: 2 }, hasExpiry: true }])
    await advance(WINDOW_MS)
    t.same((await store.findByGrantId('g1')).map((r) => r.id), ['r1'], 'an expired record is not listed')
    await store.revokeByGrantId('g1', now() + 60_000)
    t.same(await store.findByGrantId('g1'), [], 'nor anything of a revoked grant')
    t.same(await store.findByGrantId('unknown'), [])
  })

  t.test(`${name}: consume is atomic — the first caller wins, later ones learn when`, async (t) => {
    const { store, now } = make(t.testdir({}))
    t.teardown(() => store.close())
    await store.upsert('AuthorizationCode', 'code', { grantId: 'g' }, now() + 60_000)
    const results = await Promise.all([store.consume('AuthorizationCode', 'code', 100), store.consume('AuthorizationCode', 'code', 101)])
    t.same(results, ['first', 100])
    t.match(await store.find('AuthorizationCode', 'code'), { consumed: 100, grantId: 'g' })
    t.equal(await store.consume('AuthorizationCode', 'missing', 1), 'gone', 'a record that never existed is won by nobody')
    await store.upsert('RefreshToken', 'r', { grantId: 'g' }, now() + 60_000)
    await store.revokeByGrantId('g', now() + 60_000)
    t.equal(await store.consume('RefreshToken', 'r', 102), 'gone', 'nor one a revocation deleted after the caller read it')
  })

  t.test(`${name}: compare-and-swap changes or deletes a value only while it is the expected one`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    t.equal(await store.kvCompareAndSwap('lock', 'owner-a', undefined), false, 'nothing to compare with: no change')
    await store.kvSet('lock', 'owner-a', now() + 60_000)
    t.equal(await store.kvCompareAndSwap('lock', 'owner-b', undefined), false, 'another owner cannot delete it')
    t.equal(await store.kvGet('lock'), 'owner-a')
    t.equal(await store.kvCompareAndSwap('lock', 'owner-a', undefined), true, 'its owner can')
    t.equal(await store.kvGet('lock'), undefined)
    await store.kvSet('row', 'v1')
    t.equal(await store.kvCompareAndSwap('row', 'v0', 'v2'), false, 'a stale expected value writes nothing')
    t.equal(await store.kvGet('row'), 'v1')
    t.equal(await store.kvCompareAndSwap('row', 'v1', 'v2', now() + WINDOW_MS), true)
    t.equal(await store.kvGet('row'), 'v2')
    const racers = await Promise.all(['a', 'b', 'c'].map(async (v) => store.kvCompareAndSwap('row', 'v2', v)))
    t.equal(racers.filter((won) => won).length, 1, 'of callers at once with the same expected value, one wins')
    const winner = await store.kvGet('row') ?? ''
    await store.kvSet('row', winner, now() + WINDOW_MS)
    await advance(WINDOW_MS)
    t.equal(await store.kvCompareAndSwap('row', winner, 'late'), false, 'an expired value is absent')
    t.equal(await store.kvGet('row'), undefined, 'and stays so')
  })

  t.test(`${name}: key-values and counters`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    t.equal(await store.kvSetIfAbsent('keys', 'first'), true)
    t.equal(await store.kvSetIfAbsent('keys', 'second'), false)
    t.equal(await store.kvGet('keys'), 'first')
    await store.kvSet('temp', 'x', now() + WINDOW_MS)
    t.equal(await store.kvGet('temp'), 'x')
    await store.kvDelete('keys')
    t.equal(await store.kvGet('keys'), undefined)
    const first = await store.hit('login:alice', WINDOW_MS)
    t.equal(first.count, 1)
    t.ok(first.resetAtMs > now() && first.resetAtMs <= now() + WINDOW_MS, 'the window ends within its length')
    t.equal((await store.hit('login:alice', WINDOW_MS, 3)).count, 4, 'a cost adds that many')
    t.equal((await store.hit('login:alice', WINDOW_MS, 0)).count, 4, 'a zero cost only reads')
    await advance(WINDOW_MS)
    t.equal(await store.kvGet('temp'), undefined, 'key-values expire')
    t.equal(await store.kvSetIfAbsent('temp', 'y'), true, 'an expired value is absent to set-if-absent too')
    t.equal(await store.kvGet('temp'), 'y')
    const racers = await Promise.all(['a', 'b', 'c'].map(async (v) => store.kvSetIfAbsent('race', v)))
    t.equal(racers.filter((won) => won).length, 1, 'of callers at once, one sets')
    t.equal((await store.hit('login:alice', WINDOW_MS)).count, 1, 'a new window starts')
    t.equal(await store.kvSetIfAbsent('jti', 'seen', now() + WINDOW_MS), true, 'a single-use id is recorded with an expiry')
    t.equal(await store.kvSetIfAbsent('jti', 'again', now() + WINDOW_MS), false, 'and refused while it lives')
    await advance(WINDOW_MS)
    t.equal(await store.kvSetIfAbsent('jti', 'later', now() + WINDOW_MS), true, 'an expired key counts as absent')
    t.equal(await store.kvGet('jti'), 'later')
    await store.resetCounter('login:alice')
    t.equal((await store.hit('login:alice', WINDOW_MS, 0)).count, 0, 'a reset counter reads zero')
    await store.ping()
  })

  t.test(`${name}: touch moves a live record's expiry; entries lists live records and key-values for copying`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    await store.upsert('Client', 'kept', { client_id: 'kept' }, now() + WINDOW_MS)
    await store.upsert('Client', 'dropped', { client_id: 'dropped' }, now() + WINDOW_MS)
    await store.upsert('RefreshToken', 'rt', { grantId: 'g', uid: 'u' }, now() + 60_000)
    await store.upsert('Client', 'forever', { client_id: 'forever' }, undefined)
    await store.kvSet('auth:signing-keys', '{"keys":[]}')
    await store.kvSet('consent:alice', 'x', now() + 60_000)
    await store.hit('login:alice', 60_000)
    await store.touch('Client', 'kept', now() + 60_000)
    await store.touch('Client', 'missing', now() + 60_000)
    t.equal(await store.find('Client', 'missing'), undefined, 'touch does not create')
    await advance(WINDOW_MS)
    t.ok(await store.find('Client', 'kept'), 'a touched record lives on')
    t.equal(await store.find('Client', 'dropped'), undefined, 'an untouched one expired')
    const listed: StoredEntry[] = []
    for await (const entry of store.entries()) listed.push(entry)
    const byName = new Map(listed.map((e) => [e.kind === 'record' ? `${e.model}/${e.id}` : `kv/${e.key}`, e]))
    t.same([...byName.keys()].sort(), ['Client/forever', 'Client/kept', 'RefreshToken/rt', 'kv/auth:signing-keys', 'kv/consent:alice'], 'live records and key-values; no counters, no indexes, nothing expired')
    t.match(byName.get('RefreshToken/rt'), { kind: 'record', payload: { grantId: 'g', uid: 'u' } })
    const rt = byName.get('RefreshToken/rt')?.expiresAtMs ?? 0
    t.ok(Math.abs(rt - (now() + 60_000 - WINDOW_MS)) < 1000, 'with its expiry')
    t.equal(byName.get('Client/forever')?.expiresAtMs, undefined, 'and none for what never expires')
    t.match(byName.get('kv/auth:signing-keys'), { kind: 'kv', value: '{"keys":[]}', expiresAtMs: undefined })
  })

  t.test(`${name} -> memory: migrate-store copies records, key-values and the revoked-grant list`, async (t) => {
    const { store, now } = make(t.testdir({}))
    t.teardown(() => store.close())
    await store.upsert('RefreshToken', 'r1', { grantId: 'live' }, now() + 60_000)
    await store.upsert('RefreshToken', 'r2', { grantId: 'gone' }, now() + 60_000)
    await store.kvSet('auth:signing-keys', '{"keys":[]}')
    const until = now() + 60_000
    await store.revokeByGrantId('gone', until)
    await store.revokeByGrantId('long-over', now() - 1)
    const destination = new MemoryStore(now)
    t.teardown(() => destination.close())
    const report = await copyStore(store, destination, now())
    t.same([...report.records], [['RefreshToken', 1]], 'the revoked grant\'s records were not live, so not copied')
    t.equal(report.revokedGrants, 1, 'one grant still listed')
    t.same(await destination.revokedGrants(now()), [{ grantId: 'gone', untilMs: until }], 'its access tokens stay void in the destination until they would have expired')
    t.same(await destination.find('RefreshToken', 'r1'), { grantId: 'live' })
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

if (hasRedis) {
  t.test('redis: every key expires — records, their grant and uid indexes, key-values, counters (no unbounded growth)', async (t) => {
    const client = new Redis(REDIS_URL)
    redisClients.push(client)
    const prefix = uniquePrefix()
    const store = new RedisStore(client, REDIS_URL, () => Date.now(), prefix)
    const inMs = (ms: number): number => Date.now() + ms
    await store.upsert('Grant', 'g1', { accountId: 'alice' }, inMs(60_000))
    await store.upsert('AccessToken', 'a1', { grantId: 'g1' }, inMs(30_000))
    await store.upsert('RefreshToken', 'r1', { grantId: 'g1' }, inMs(120_000))
    await store.upsert('AccessToken', 'a2', { grantId: 'g1' }, inMs(10_000))
    await store.upsert('Session', 's1', { uid: 'u1' }, inMs(60_000))
    await store.kvSet('consent:alice:c1', 'g1', inMs(60_000))
    await store.hit('ip:127.0.0.1', 60_000, 1)
    const keys = await client.keys(`${prefix}*`)
    t.equal(keys.length, 9, `records, indexes, key-value and counter: ${keys.join(' ')}`)
    for (const key of keys) t.ok(await client.pttl(key) > 0, `${key.slice(prefix.length)} has an expiry`)
    const grantIndex = await client.pttl(`${prefix}oidc:grant:g1`)
    t.ok(grantIndex > 110_000 && grantIndex <= 120_000, `the grant's index lives as long as its longest record (${grantIndex} ms)`)

    await store.upsert('AccessToken', 'a3', { grantId: 'g2' }, undefined)
    await store.upsert('AccessToken', 'a4', { grantId: 'g2' }, inMs(30_000))
    t.equal(await client.pttl(`${prefix}oidc:grant:g2`), -1, 'a grant with a record that never expires keeps its index as long')
  })
}
