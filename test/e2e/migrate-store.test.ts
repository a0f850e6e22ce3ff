// `portcullis migrate-store`: a deployment started on SQLite moves to Redis (the real CLI, real
// Redis) without losing its registered clients, refresh tokens or signing keys.
import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, startUpstream, uniquePrefix } from '../helpers.js'

const run = promisify(execFile)
const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
const PASSWORD = 'correct horse battery staple'

async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return run(process.execPath, [MAIN, ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  )
}

t.test('SQLite -> Redis: clients, refresh tokens and signing keys survive the move', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const dir = t.testdir({})
  const upstream = await startUpstream(t)
  const auth = { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] }
  const servers = [{ name: 'fx', transport: 'http', url: upstream.url }]
  const sqlite = { sqlite: join(dir, 'portcullis.db') }

  // Before: the embedded default. A client registers and signs in.
  const before = await startGateway(t, { dataDir: join(dir, 'data'), store: sqlite, auth, servers })
  const publicUrl = before.baseUrl
  const alice = await connectWithOAuth(t, before.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: publicUrl })
  const tokens = alice.oauth.savedTokens
  const clientId = alice.oauth.info?.client_id ?? ''
  await alice.client.close()
  await before.app.close()

  const configPath = join(dir, 'portcullis.yaml')
  writeFileSync(configPath, stringify({ publicUrl, dataDir: join(dir, 'data'), store: sqlite, auth, servers }))
  const migrated = await cli(['migrate-store', '--config', configPath, '--to', REDIS_URL, '--prefix', prefix])
  t.equal(migrated.code, 0, migrated.stderr)
  t.match(migrated.stdout, new RegExp(`^portcullis: copied sqlite ${join(dir, 'portcullis.db').replace(/\//g, '\\/')} -> redis redis://127\\.0\\.0\\.1:6379/? \\(prefix ${prefix}\\)`))
  t.match(migrated.stdout, /^ {2}Client +1$/m, 'the registered client')
  t.match(migrated.stdout, /^ {2}RefreshToken +1$/m, 'the refresh token')
  t.match(migrated.stdout, /^ {2}Grant +1$/m, 'the grant')
  t.match(migrated.stdout, /^ {2}key-values +[2-9]\d* /m, 'signing and cookie keys, consent')
  t.ok(await redis.exists(`${prefix}kv:auth:signing-keys`), 'the signing keys are in Redis')

  const again = await cli(['migrate-store', '--config', configPath, '--to', REDIS_URL, '--prefix', prefix])
  t.equal(again.code, 1, 'a second run refuses')
  t.match(again.stderr, /^portcullis: migrate-store failed: the destination \(redis:\/\/127\.0\.0\.1:6379\/?\) already holds data/)
  t.match((await cli(['migrate-store', '--config', configPath])).stderr, /migrate-store needs --to <store>/)
  const missing = join(dir, 'missing.yaml')
  writeFileSync(missing, stringify({ publicUrl, dataDir: join(dir, 'data'), store: { sqlite: join(dir, 'nope.db') }, auth, servers }))
  t.match((await cli(['migrate-store', '--config', missing, '--to', REDIS_URL, '--prefix', uniquePrefix()])).stderr, /nothing to migrate: .*nope\.db does not exist/)

  // After: the same deployment (same publicUrl, so the same issuer) on Redis.
  const after = await startGateway(t, { publicUrl, store: { redis: REDIS_URL, prefix }, auth, servers })
  const oldToken = await postJson(after.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${tokens?.access_token ?? ''}` })
  t.equal(oldToken.status, 200, 'an access token issued before the move is still valid (same signing keys)')
  const refreshed = await fetch(`${after.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens?.refresh_token ?? '', client_id: clientId, resource: `${publicUrl}/fx/mcp` }).toString(),
  })
  t.equal(refreshed.status, 200, 'the refresh token and its client came along')
  const renewed = await refreshed.json() as { access_token: string }
  t.equal((await postJson(after.mcpUrl('fx'), INIT_BODY, { authorization: `Bearer ${renewed.access_token}` })).status, 200, 'and the new access token works')
})
