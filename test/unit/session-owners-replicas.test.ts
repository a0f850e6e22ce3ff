// HTTP upstream session owners (src/upstreams/session-owners.ts) as two replicas keep them over one
// real Redis, on a driven clock: any replica carries a session for as long as it lives, and
// no longer. Redis's expiry is moved with the clock (the records' TTLs are shortened alike).
import t from 'tap'
import { Redis } from 'ioredis'
import { SessionOwners } from '../../src/upstreams/session-owners.js'
import { RedisStore } from '../../src/store/redis-store.js'
import { createLogger } from '../../src/observability/logger.js'
import { logSink, redisAvailable, REDIS_URL, scratchRedis } from '../helpers.js'

const MINUTE_MS = 60_000
const IDLE_MS = 60 * MINUTE_MS
const ALICE = { user: 'alice', client: 'cli' }

t.test('a session used between two writes of its record is carried by another replica until idle, and not after', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const client = new Redis(REDIS_URL)
  t.teardown(() => client.disconnect())
  let clock = 5_000_000
  const store = new RedisStore(client, REDIS_URL, () => clock, prefix)
  const log = createLogger('silent', logSink().stream)
  const [a, b] = [new SessionOwners(store, log, () => IDLE_MS, () => clock), new SessionOwners(store, log, () => IDLE_MS, () => clock)]
  t.teardown(() => { a.close(); b.close() })
  /** A minute passes for the clock and for Redis, and each replica sweeps (as its timer does every minute). */
  const minutes = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      clock += MINUTE_MS
      for (const key of await redis.keys(`${prefix}kv:http-session:*`)) {
        const left = await redis.pttl(key)
        if (left > MINUTE_MS) await redis.pexpire(key, left - MINUTE_MS)
        else if (left > 0) await redis.del(key)
      }
      a.sweep()
      b.sweep()
      await new Promise((resolve) => setTimeout(resolve, 5)) // the sweeps' store writes land
    }
  }

  /** A request of the session through a replica, as the route makes it: the owner check, then the request held and done. */
  const use = async (replica: SessionOwners, sessionId: string): Promise<string> => {
    const found = await replica.check('fx', sessionId, ALICE)
    if (found === 'owner') replica.hold('fx', sessionId)()
    return found
  }
  await a.record('fx', 'busy', ALICE)
  await a.record('fx', 'left', ALICE)
  t.equal(await use(a, 'busy'), 'owner', 'both used at once through replica A')
  t.equal(await use(a, 'left'), 'owner')
  await minutes(14)
  t.equal(await use(a, 'busy'), 'owner', 'one used again through A, 14 min after it opened')
  await minutes(50)
  t.equal(await use(b, 'busy'), 'owner', '50 min later replica B carries it: it is not idle (last used 50 min ago, idleTimeoutMs 60)')
  t.equal(await use(b, 'left'), 'not-found', 'the other, unused for 64 min, is idle on B')
  t.equal(await use(a, 'left'), 'not-found', 'and on A')
  await minutes(59)
  t.equal(await use(a, 'busy'), 'owner', 'A carries the first 59 min after its use through B')
  await minutes(61)
  t.equal(await use(a, 'busy'), 'not-found', 'and forgets it, on A ...')
  t.equal(await use(b, 'busy'), 'not-found', '... and on B, once idle for the idle timeout')
})
