/** The blocked-user list: concurrent blocks on two replicas are all kept; the other replica learns by polling. */
import t from 'tap'
import { BlockedUsers } from '../../src/admin/blocked-users.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { createLogger } from '../../src/observability/logger.js'
import { logSink } from '../helpers.js'
import { storeBackends } from '../store-helpers.js'

const makers = await storeBackends(t, 'blocked.db')

for (const [name, make] of makers) {
  t.test(`${name}: blocks made at once on two replicas are all kept, and each replica sees them after a poll`, async (t) => {
    const store = make(t.testdir({}))
    t.teardown(() => store.close())
    const log = createLogger('silent', logSink().stream)
    const replicas = [new BlockedUsers({ store, now: Date.now, log }), new BlockedUsers({ store, now: Date.now, log })] as const
    await Promise.all(replicas.map(async (r) => r.start()))
    t.teardown(() => replicas.forEach((r) => r.stop()))
    const users = Array.from({ length: 12 }, (_, i) => `user-${i}`)
    const changed = await Promise.all(users.map(async (id, i) => (i % 2 === 0 ? replicas[0] : replicas[1]).block(id, 'admin-token')))
    t.ok(changed.every(Boolean))
    t.ok(replicas[0].has('user-0') && replicas[1].has('user-1'), 'a replica knows its own blocks at once')
    await replicas[0].poll()
    await replicas[1].poll()
    for (const r of replicas) t.same(r.list().map((b) => b.userId).sort(), [...users].sort(), 'no block lost to a concurrent write')
    t.equal(await replicas[0].block('user-3', 'someone'), false, 'blocking twice changes nothing')
    t.equal(await replicas[1].unblock('user-3'), true)
    t.equal(await replicas[1].unblock('user-3'), false, 'unblocking someone not blocked changes nothing')
    await replicas[0].poll()
    t.notOk(replicas[0].has('user-3'), 'the other replica learns of the unblock')
    t.equal(await store.kvGet('admin:blocked-users-lock'), undefined, 'the lock is released')
  })
}

t.test('a store outage keeps the last known list (fail-safe), logged once', async (t) => {
  const store = new MemoryStore(() => Date.now())
  const sink = logSink()
  const blocked = new BlockedUsers({ store, now: Date.now, log: createLogger('info', sink.stream) })
  await blocked.start()
  t.teardown(() => blocked.stop())
  await blocked.block('mallory', 'admin-token')
  store.kvGet = async () => { throw new Error('store down') }
  await blocked.poll()
  await blocked.poll()
  t.ok(blocked.has('mallory'), 'still blocked while the store is down')
  t.equal(sink.lines.filter((l) => l.includes('blocked-user list cannot be refreshed')).length, 1, 'logged once per outage')
})
