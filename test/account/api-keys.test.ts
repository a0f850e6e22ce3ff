// The API key store on every backend: memory, SQLite, and real Redis (127.0.0.1:6379). Redis expires
// keys on its own clock, so for it `advance` really waits (a second).
import t from 'tap'
import { join } from 'node:path'
import { MemoryStore } from '../../src/store/memory-store.js'
import { SqliteStore } from '../../src/store/sqlite-store.js'
import type { Store } from '../../src/store/types.js'
import { ApiKeyLimitError, ApiKeys, API_KEY_RE, generateApiKey, hashApiKey } from '../../src/account/api-keys.js'
import { redisAvailable } from '../helpers.js'
import { scratchRedisStore } from '../store-helpers.js'

/** Long enough that a loaded machine creates and lists the keys inside it (Redis waits it out for real). */
const WINDOW_MS = 1000

interface Backend { readonly store: Store, readonly now: () => number, readonly advance: (ms: number) => Promise<void> }

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
if (await redisAvailable(t)) {
  makers.push(['redis', () => ({ store: scratchRedisStore(t), now: () => Date.now(), advance: async (ms) => await new Promise((resolve) => setTimeout(resolve, ms + 20)) })])
}

t.test('a key is pcs_ + 43 base62 characters, fresh every time; its hash is SHA-256', async (t) => {
  const keys = new Set(Array.from({ length: 200 }, generateApiKey))
  t.equal(keys.size, 200)
  t.ok([...keys].every((k) => API_KEY_RE.test(k)), 'fixed length, base62')
  // FIPS 180-2 test vector for SHA-256("abc").
  t.equal(hashApiKey('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
})

for (const [name, make] of makers) {
  t.test(`${name}: create, look up, list, revoke`, async (t) => {
    const { store, now } = make(t.testdir({}))
    t.teardown(() => store.close())
    const keys = new ApiKeys(store, 5, now)
    const { record, secret } = await keys.create({ userId: 'alice', name: 'ci', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })
    t.same((await keys.lookup(secret))?.keyId, record.keyId, 'the secret finds its key')
    t.equal(await keys.lookup(`pcs_${'0'.repeat(43)}`), undefined, 'another secret finds nothing')
    t.same((await keys.list('alice')).map((k) => k.keyId), [record.keyId])
    t.same(await keys.list('bob'), [])
    t.equal(await keys.revoke(record.keyId, 'bob'), undefined, 'another user cannot revoke it')
    t.ok((await keys.revoke(record.keyId, 'alice'))?.revokedAtMs !== undefined, 'its owner can')
    t.equal(await keys.lookup(secret), undefined, 'revoked: the secret finds nothing')
    t.same(await keys.list('alice'), [], 'and it leaves the list')
    t.equal(await keys.revoke(record.keyId), undefined, 'revoking twice does nothing')
  })

  t.test(`${name}: at most maxPerUser live keys, even when created at once; expired and revoked keys free their slot`, async (t) => {
    const { store, now, advance } = make(t.testdir({}))
    t.teardown(() => store.close())
    const keys = new ApiKeys(store, 3, now)
    const results = await Promise.allSettled(Array.from({ length: 5 }, async (_, i) => keys.create({ userId: 'alice', name: `k${i}`, servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + WINDOW_MS })))
    t.equal(results.filter((r) => r.status === 'fulfilled').length, 3, 'three created')
    t.ok(results.filter((r) => r.status === 'rejected').every((r) => r.reason instanceof ApiKeyLimitError), 'two refused at the cap')
    t.equal((await keys.list('alice')).length, 3, 'none lost from the index')

    await advance(WINDOW_MS)
    t.same(await keys.list('alice'), [], 'expired keys are not listed')
    const again = await keys.create({ userId: 'alice', name: 'after expiry', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })
    const more = await Promise.all([1, 2].map(async (i) => keys.create({ userId: 'alice', name: `m${i}`, servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })))
    t.equal((await keys.list('alice')).length, 3, 'expired slots are taken again')
    await t.rejects(keys.create({ userId: 'alice', name: 'one too many', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 }), ApiKeyLimitError)
    await keys.revoke(again.record.keyId)
    const afterRevoke = await keys.create({ userId: 'alice', name: 'after revoke', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })
    t.same((await keys.list('alice')).map((k) => k.keyId).sort(), [afterRevoke.record.keyId, ...more.map((m) => m.record.keyId)].sort(), 'a revoked key frees its slot')
  })

  t.test(`${name}: a lower maxPerUser (a reload) hides no live key from the list or from revocation`, async (t) => {
    const { store, now } = make(t.testdir({}))
    t.teardown(() => store.close())
    const before = new ApiKeys(store, 8, now)
    const made = await Promise.all(Array.from({ length: 6 }, async (_, i) => before.create({ userId: 'alice', name: `k${i}`, servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })))
    const after = new ApiKeys(store, 2, now)
    t.equal((await after.list('alice')).length, 6, 'all six listed under the lower cap')
    await t.rejects(after.create({ userId: 'alice', name: 'over the new cap', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 }), ApiKeyLimitError)
    for (const { record } of made) t.ok((await after.revoke(record.keyId, 'alice'))?.revokedAtMs !== undefined, `${record.name} revoked`)
    t.same(await after.list('alice'), [])
    t.equal((await Promise.all(made.map(async ({ secret }) => after.lookup(secret)))).filter((r) => r !== undefined).length, 0, 'no key works')
    t.ok(await after.create({ userId: 'alice', name: 'fits again', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 }), 'the lower cap applies to new keys')
  })

  t.test(`${name}: two revocations of one key at once, and a new key in the freed slot: the new key stays indexed`, async (t) => {
    const { store: inner, now } = make(t.testdir({}))
    t.teardown(() => inner.close())
    // The first revocation's slot step waits until the second revocation and a creation are done.
    let release = (): void => {}
    const held = new Promise<void>((resolve) => { release = resolve })
    let isFirst = true
    const store: Store = Object.create(inner) as Store
    // Whichever way the slot is freed (a delete, or a compare-and-swap), its first freeing waits.
    const waitOnce = async (key: string): Promise<void> => {
      if (key.startsWith('apikey-slot:') && isFirst) { isFirst = false; await held }
    }
    store.kvCompareAndSwap = async (key, expected, next, expiresAtMs) => { await waitOnce(key); return await inner.kvCompareAndSwap(key, expected, next, expiresAtMs) }
    store.kvDelete = async (key) => { await waitOnce(key); await inner.kvDelete(key) }
    const keys = new ApiKeys(store, 5, now)
    const first = await keys.create({ userId: 'alice', name: 'k1', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })
    const slow = keys.revoke(first.record.keyId, 'alice')
    await keys.revoke(first.record.keyId, 'alice')
    const second = await keys.create({ userId: 'alice', name: 'k2', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })
    release()
    await slow
    t.same((await keys.list('alice')).map((k) => k.keyId), [second.record.keyId], 'the new key is listed')
    t.ok(await keys.revoke(second.record.keyId, 'alice'), 'and revocable by its owner')
    t.equal(await keys.lookup(second.secret), undefined)
  })

  t.test(`${name}: a creation that fails after claiming its slot does not hold the slot past the key's expiry`, async (t) => {
    const { store: inner, now, advance } = make(t.testdir({}))
    t.teardown(() => inner.close())
    const store: Store = Object.create(inner) as Store
    let isFailing = true
    // The store refusing the record's write: a stand-in for an outage mid-creation.
    store.kvSet = async (key, value, expiresAtMs) => {
      if (isFailing && key.startsWith('apikey:')) throw new Error('the store is unreachable')
      return await inner.kvSet(key, value, expiresAtMs)
    }
    const keys = new ApiKeys(store, 2, now)
    for (let i = 0; i < 2; i++) await t.rejects(keys.create({ userId: 'alice', name: `k${i}`, servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + WINDOW_MS }), /unreachable/)
    isFailing = false
    await advance(WINDOW_MS)
    t.ok(await keys.create({ userId: 'alice', name: 'later', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 }), 'the slots of the failed creations expired')
  })

  t.test(`${name}: last use is kept apart from the record, so a use never undoes a revocation`, async (t) => {
    const { store, now } = make(t.testdir({}))
    t.teardown(() => store.close())
    const keys = new ApiKeys(store, 5, now)
    const { record } = await keys.create({ userId: 'alice', name: 'ci', servers: ['a'], scopes: ['mcp'], expiresAtMs: now() + 60_000 })
    await keys.revoke(record.keyId)
    const usedAt = now()
    await keys.recordUse(record, usedAt)
    const found = await keys.find(record.keyId)
    t.ok(found?.revokedAtMs !== undefined, 'still revoked')
    t.equal(found?.lastUsedAtMs, usedAt, 'with its last use')
  })
}
