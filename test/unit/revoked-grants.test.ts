// The revoked-grant list when accessTokenTtl changes under it (a reload, or replicas reloaded one
// by one): tokens minted under the longer lifetime stay refused as long as they live, and every
// replica still learns of every revocation. The real MemoryStore; replicas are RevokedGrants
// instances sharing it, each with its own retention.
import t from 'tap'
import { MemoryStore } from '../../src/store/memory-store.js'
import { RevokedGrants } from '../../src/resource-server/revoked-grants.js'
import { createLogger } from '../../src/observability/logger.js'
import { logSink } from '../helpers.js'

const HOUR_MS = 3_600_000
const FIVE_MINUTES_MS = 5 * 60_000

function replicas (): { clock: { ms: number }, make: (retentionMs: number) => RevokedGrants, close: () => Promise<void> } {
  const clock = { ms: 1_000_000_000 }
  const store = new MemoryStore(() => clock.ms)
  const log = createLogger('warn', logSink().stream)
  return { clock, make: (retentionMs) => new RevokedGrants({ store, retentionMs, now: () => clock.ms, log }), close: async () => { await store.close() } }
}

t.test('after accessTokenTtl is lowered, a grant revoked stays refused while tokens minted under the longer one live', async (t) => {
  const { clock, make, close } = replicas()
  t.teardown(close)
  const before = make(HOUR_MS)
  await before.revoke('earlier') // the longer retention was in force once
  const oldTokenExpiresMs = clock.ms + HOUR_MS
  const after = make(FIVE_MINUTES_MS) // the reload's new build
  await after.poll()
  await after.revoke('grant-of-an-hour-token')
  clock.ms += 10 * 60_000
  t.ok(clock.ms < oldTokenExpiresMs, 'the hour-long token still lives')
  t.ok(after.has('grant-of-an-hour-token'), 'so its grant is still refused')
  const fresh = make(FIVE_MINUTES_MS)
  await fresh.poll()
  t.ok(fresh.has('grant-of-an-hour-token'), 'on a replica started since too')
})

t.test('replicas on different lifetimes: each learns of the others\' revocations within a poll', async (t) => {
  const { clock, make, close } = replicas()
  t.teardown(close)
  const a = make(HOUR_MS)
  const c = make(HOUR_MS)
  const b = make(FIVE_MINUTES_MS) // reloaded first
  await c.poll()
  await a.revoke('grant-1')
  clock.ms += 1_000
  await c.poll()
  t.ok(c.has('grant-1'))
  clock.ms += 60_000
  await b.revoke('grant-2')
  clock.ms += 1_000
  await c.poll()
  t.ok(c.has('grant-2'), 'the revocation by the replica on the shorter lifetime reaches the others')
  await a.poll()
  t.ok(a.has('grant-2'))
})
