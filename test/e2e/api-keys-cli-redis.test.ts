// `portcullis keys create|list|revoke` (the real CLI) beside a running gateway on a real Redis.
import t from 'tap'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { redisAvailable, REDIS_URL, scratchRedis } from '../helpers.js'
import { cli, keysAgainstRunningGateway } from '../keys-cli-helpers.js'

t.test('keys create/list/revoke while the gateway runs on Redis', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  await keysAgainstRunningGateway(t, { redis: REDIS_URL, prefix }, false)
})


t.test('identity providers and no local users: keys create makes no first-run "admin"', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const dir = t.testdir({})
  mkdirSync(join(dir, 'data'))
  const configPath = join(dir, 'portcullis.yaml')
  writeFileSync(configPath, stringify({
    publicUrl: 'http://127.0.0.1:9',
    dataDir: join(dir, 'data'),
    store: { redis: REDIS_URL, prefix },
    auth: { identityProviders: [{ name: 'corp', type: 'oidc', issuer: 'https://idp.example.com', clientId: 'gw', clientSecret: 'a-client-secret-of-some-length' }] },
    servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
  }))
  const phantom = await cli(['keys', 'create', '--config', configPath, '--user', 'admin', '--servers', 'a'])
  t.equal(phantom.code, 1, 'no key for a user the gateway does not have (the gateway makes no first-run account here)')
  t.notOk(existsSync(join(dir, 'data', 'initial-admin-password')), 'no first-run password file')
  t.same(await redis.keys(`${prefix}*first-run*`), [], 'no first-run account stored')
})
