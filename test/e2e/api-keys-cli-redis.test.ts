// `portcullis keys create|list|revoke` (the real CLI) beside a running gateway on a real Redis.
import t from 'tap'
import { redisAvailable, REDIS_URL, scratchRedis } from '../helpers.js'
import { keysAgainstRunningGateway } from '../keys-cli-helpers.js'

t.test('keys create/list/revoke while the gateway runs on Redis', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  await keysAgainstRunningGateway(t, { redis: REDIS_URL, prefix }, false)
})

