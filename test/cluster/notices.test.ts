// Cluster notices on a real Redis (src/cluster/notices.ts): the `reload` notice reaches the other
// replicas, not the sender, and a message shaped otherwise is dropped with a log line.
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
    const replicas = { a: new ClusterNotices(redis, channel, log), b: new ClusterNotices(redis, channel, log) }
    for (const name of ['a', 'b'] as const) {
      await replicas[name].start(REDIS_URL)
      replicas[name].onReload(async () => { heard[name]++ })
      t.teardown(async () => replicas[name].close())
    }

    await replicas.a.publish({ type: 'reload' })
    t.ok(await eventually(() => heard.b === 1), 'the other replica reloads')
    t.equal(heard.a, 0, 'the sender does not hear itself')

    // A reload notice never carries a file or settings: each replica reads its own.
    await redis.publish(channel, JSON.stringify({ type: 'reload', from: 'elsewhere', file: '/etc/passwd' }))
    await redis.publish(channel, JSON.stringify({ type: 'reload' }))
    t.ok(await eventually(() => logs.lines.filter((l) => l.includes('ignored a malformed cluster notice')).length === 4), 'both dropped, logged by each replica')
    t.same(heard, { a: 0, b: 1 }, 'nobody reloaded on them')

    await redis.publish(channel, JSON.stringify({ type: 'reload', from: 'elsewhere' }))
    t.ok(await eventually(() => heard.a === 1 && heard.b === 2), 'a well-formed notice from a third replica reaches both')
  })
}
