// Cluster notices on a real Redis (src/cluster/notices.ts): the `reload` notice reaches the other
// replicas, not the sender, with the SHA-256 of the file applied; a message shaped otherwise is
// dropped with a log line.
import t from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import { ClusterNotices } from '../../src/cluster/notices.js'
import { createLogger } from '../../src/observability/logger.js'
import { eventually, logSink, redisAvailable, REDIS_URL, scratchRedis } from '../helpers.js'

if (await redisAvailable(t)) {
  t.test('reload: heard by the other replica, not by the sender; extra fields or no sender: dropped', async (t) => {
    const { prefix, redis } = await scratchRedis(t)
    const channel = `${prefix}notices`
    const logs = logSink()
    const log = createLogger('info', logs.stream) as unknown as FastifyBaseLogger
    const heard = { a: 0, b: 0 }
    const digests: string[] = []
    const replicas = { a: new ClusterNotices(redis, channel, log), b: new ClusterNotices(redis, channel, log) }
    for (const name of ['a', 'b'] as const) {
      await replicas[name].start(REDIS_URL)
      replicas[name].onReload(async (sha256) => { heard[name]++; digests.push(sha256) })
      t.teardown(async () => replicas[name].close())
    }
    const SHA_A = 'a'.repeat(64)
    const SHA_B = 'b'.repeat(64)

    await replicas.a.publish({ type: 'reload', sha256: SHA_A })
    t.ok(await eventually(() => heard.b === 1), 'the other replica reloads')
    // A barrier: a hears b's notice only after its own (one channel, in order), so by then its own was filtered.
    await replicas.b.publish({ type: 'reload', sha256: SHA_B })
    t.ok(await eventually(() => heard.a >= 1), 'the barrier notice arrives')
    t.same(heard, { a: 1, b: 1 }, 'the sender does not hear itself: exactly one each')
    t.same(digests, [SHA_A, SHA_B], 'each hears the digest of the file the other applied')

    // A reload notice never carries a file or settings, only a SHA-256: each replica reads its own.
    await redis.publish(channel, JSON.stringify({ type: 'reload', from: 'elsewhere', sha256: SHA_A, file: '/etc/passwd' }))
    await redis.publish(channel, JSON.stringify({ type: 'reload', sha256: SHA_A }))
    await redis.publish(channel, JSON.stringify({ type: 'reload', from: 'elsewhere' }))
    await redis.publish(channel, JSON.stringify({ type: 'reload', from: 'elsewhere', sha256: 'not a digest' }))
    t.ok(await eventually(() => logs.lines.filter((l) => l.includes('ignored a malformed cluster notice')).length === 8), 'all four dropped, logged by each replica')
    t.same(heard, { a: 1, b: 1 }, 'nobody reloaded on them')

    await redis.publish(channel, JSON.stringify({ type: 'reload', from: 'elsewhere', sha256: SHA_A }))
    t.ok(await eventually(() => heard.a === 2 && heard.b === 2), 'a well-formed notice from a third replica reaches both')
  })
}
