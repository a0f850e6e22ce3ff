// The cache behind token exchange (src/upstream-auth/expiring-cache.ts): each entry until its
// own deadline on the injected clock, one load per key at a time, failed loads not kept, and
// a bound that drops expired entries first, then the oldest.
import t from 'tap'
import { ExpiringCache, reuseUntil } from '../../src/upstream-auth/expiring-cache.js'

t.test('kept until its deadline on the injected clock, then loaded again', async (t) => {
  const clock = { ms: 1_000 }
  const cache = new ExpiringCache<string>(10, () => clock.ms)
  let loads = 0
  const load = async (): Promise<{ value: string, expiresAtMs: number }> => ({ value: `v${++loads}`, expiresAtMs: clock.ms + 100 })
  t.equal(await cache.get('alice', load), 'v1')
  clock.ms += 99
  t.equal(await cache.get('alice', load), 'v1', 'reused before the deadline')
  t.equal(cache.peek('alice'), 'v1')
  clock.ms += 1
  t.equal(cache.peek('alice'), undefined, 'gone at the deadline')
  t.equal(await cache.get('alice', load), 'v2')
  cache.delete('alice')
  t.equal(await cache.get('alice', load), 'v3', 'loaded again after delete')
  t.equal(loads, 3)
})

t.test('one load per key at a time; a failed load is shared, then not kept', async (t) => {
  const cache = new ExpiringCache<string>(10, () => 0)
  let release: (value: { value: string, expiresAtMs: number }) => void = () => {}
  let loads = 0
  const slow = async (): Promise<{ value: string, expiresAtMs: number }> => {
    loads++
    return await new Promise((resolve) => { release = resolve })
  }
  const first = cache.get('bob', slow)
  const second = cache.get('bob', slow)
  const other = cache.get('carol', async () => ({ value: 'c', expiresAtMs: 10 }))
  release({ value: 'b', expiresAtMs: 10 })
  t.same(await Promise.all([first, second, other]), ['b', 'b', 'c'])
  t.equal(loads, 1, 'concurrent requests of one user share one load')

  const failing = async (): Promise<{ value: string, expiresAtMs: number }> => { throw new Error('idp down') }
  const a = cache.get('dave', failing)
  const b = cache.get('dave', failing)
  await t.rejects(a, /idp down/)
  await t.rejects(b, /idp down/)
  t.equal(await cache.get('dave', async () => ({ value: 'd', expiresAtMs: 10 })), 'd', 'the next call loads afresh')
  t.equal(await cache.get('erin', async () => ({ value: 'already expired', expiresAtMs: 0 })), 'already expired', 'an expired value is handed out once')
  t.equal(cache.peek('erin'), undefined, 'but not kept')
})

t.test('bounded: expired entries go first, then the oldest', async (t) => {
  const clock = { ms: 0 }
  const cache = new ExpiringCache<string>(3, () => clock.ms)
  const put = async (key: string, ttl: number): Promise<string> => cache.get(key, async () => ({ value: key, expiresAtMs: clock.ms + ttl }))
  await put('a', 1_000)
  await put('short', 10)
  await put('b', 1_000)
  clock.ms = 20
  await put('c', 1_000)
  t.equal(cache.size, 3)
  t.same(['a', 'short', 'b', 'c'].map((k) => cache.peek(k)), ['a', undefined, 'b', 'c'], 'the expired entry made room')
  await put('d', 1_000)
  t.equal(cache.size, 3)
  t.same(['a', 'b', 'c', 'd'].map((k) => cache.peek(k)), [undefined, 'b', 'c', 'd'], 'then the oldest went')
})

t.test('reuseUntil: shortly before expiry, by at most the margin and half the lifetime', async (t) => {
  t.equal(reuseUntil(1_000, 300_000, 30_000), 271_000)
  t.equal(reuseUntil(0, 20_000, 30_000), 10_000, 'a 20 s token is used for 10 s')
})
