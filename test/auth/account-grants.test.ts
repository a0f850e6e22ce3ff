/** The account -> grants index that offboarding revokes from: no grant lost to concurrent saves. */
import t from 'tap'
import { AccountGrants } from '../../src/auth-server/account-grants.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { storeBackends } from '../store-helpers.js'

const makers = await storeBackends(t, 'grants.db')

for (const [name, make] of makers) {
  t.test(`${name}: grants saved at once for one account are all listed (two replicas)`, async (t) => {
    const store = make(t.testdir({}))
    t.teardown(() => store.close())
    // Two replicas: two indexes over one store, each saving grants of the same account at once.
    const replicas = [new AccountGrants(store, Date.now), new AccountGrants(store, Date.now)]
    const ids = Array.from({ length: 24 }, (_, i) => `grant-${i}`)
    await Promise.all(ids.map(async (id, i) => replicas[i % 2]?.add('corp:alice', id, Date.now() + 60_000)))
    t.same((await replicas[0]?.of('corp:alice'))?.sort(), [...ids].sort(), 'every grant is listed: none lost to a concurrent write')
    t.same(await replicas[1]?.of('corp:bob'), [], 'another account has none')
    t.equal(await store.kvGet('account-grants-lock:corp:alice'), undefined, 'the lock is released')
  })
}

t.test('a lock left by a holder that died expires: the next save waits it out', async (t) => {
  const store = new MemoryStore(() => Date.now())
  t.teardown(() => store.close())
  await store.kvSetIfAbsent('account-grants-lock:corp:alice', '1', Date.now() + 300)
  const grants = new AccountGrants(store, Date.now)
  await grants.add('corp:alice', 'g1', undefined)
  t.same(await grants.of('corp:alice'), ['g1'])
})

t.test('a save whose lock ran out does not free the lock a later save holds: a third save waits, and no grant is lost', async (t) => {
  const store = new MemoryStore(() => Date.now())
  t.teardown(() => store.close())
  /** The store as one replica sees it, its list reads or writes held until `gate` opens (a slow store). */
  const slowed = (method: 'kvGet' | 'kvSet', gate: Promise<void>): typeof store => {
    const view = Object.create(store) as typeof store
    view[method] = async (key: string, ...rest: unknown[]) => {
      if (key.startsWith('account-grants:')) await gate
      return await (store[method] as (key: string, ...rest: unknown[]) => Promise<never>)(key, ...rest)
    }
    return view
  }
  let openA = (): void => {}
  let openB = (): void => {}
  const gateA = new Promise<void>((resolve) => { openA = resolve })
  const gateB = new Promise<void>((resolve) => { openB = resolve })
  // A's lock runs out 50 ms after it was taken (its clock is behind), while A waits on its read.
  const a = new AccountGrants(slowed('kvGet', gateA), () => Date.now() - 4_950).add('corp:alice', 'gA', undefined)
  await new Promise((resolve) => setTimeout(resolve, 100))
  // B takes the lock A's ran out of, reads, and is slow to write.
  const b = new AccountGrants(slowed('kvSet', gateB), Date.now).add('corp:alice', 'gB', undefined)
  await new Promise((resolve) => setTimeout(resolve, 100))
  openA()
  await a
  // C comes while B still holds the lock: it must wait for B, not get in beside it.
  const c = new AccountGrants(store, Date.now).add('corp:alice', 'gC', undefined)
  await new Promise((resolve) => setTimeout(resolve, 200))
  openB()
  await Promise.all([b, c])
  t.ok((await new AccountGrants(store, Date.now).of('corp:alice')).includes('gC'), 'C\'s grant is listed (it waited for B instead of being overwritten by it)')
})
