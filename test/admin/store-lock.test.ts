/** The short lock in the store (src/admin/store-lock.ts) around the blocked-user list and page-session indexes. */
import t from 'tap'
import { withStoreLock } from '../../src/admin/store-lock.js'
import { storeBackends } from '../store-helpers.js'

const makers = await storeBackends(t, 'lock.db')
const LOCK_TTL_MS = 5_000
const KEY = 'test-lock'

for (const [name, make] of makers) {
  t.test(`${name}: a holder whose lock ran out does not release the lock another holder took since`, async (t) => {
    const store = make(t.testdir({}))
    t.teardown(() => store.close())
    // Holder A's work outlasts its lock: A's clock is LOCK_TTL_MS - 50 ms behind, so its lock lapses after 50 ms.
    const slowClock = (): number => Date.now() - (LOCK_TTL_MS - 50)
    const inside: string[] = []
    const events: string[] = []
    let letBGo = (): void => {}
    const bMayGo = new Promise<void>((resolve) => { letBGo = resolve })
    let bIsIn = (): void => {}
    const bIn = new Promise<void>((resolve) => { bIsIn = resolve })

    const a = withStoreLock(store, KEY, slowClock, async () => {
      inside.push('a')
      await bIn // B took the lock once A's had run out, and works under it
      inside.splice(inside.indexOf('a'), 1)
    })
    const b = withStoreLock(store, KEY, Date.now, async () => {
      inside.push('b')
      bIsIn()
      await bMayGo
      inside.splice(inside.indexOf('b'), 1)
      events.push('b out')
    })
    await a
    const c = withStoreLock(store, KEY, Date.now, async () => {
      events.push(`c in (${inside.length === 0 ? 'alone' : `beside ${inside.join(', ')}`})`)
    })
    // C waits while B holds the lock: give it ample time to (wrongly) get in.
    await new Promise((resolve) => setTimeout(resolve, 300))
    letBGo()
    await Promise.all([b, c])
    t.same(events, ['b out', 'c in (alone)'], 'C got the lock only once B released it')
    t.equal(await store.kvGet(KEY), undefined, 'and the lock is free at the end')
  })
}
