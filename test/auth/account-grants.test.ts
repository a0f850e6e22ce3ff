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
