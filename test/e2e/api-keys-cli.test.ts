// `portcullis keys create|list|revoke` (the real CLI, dist/main.js) beside a running gateway (the
// real `portcullis start` process) on SQLite — its data directory locked by the gateway. Redis:
// api-keys-cli-redis.test.ts (apart, so that each file's ~10 process starts fit its time limit).
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { cli, keysAgainstRunningGateway, PASSWORD } from '../keys-cli-helpers.js'

t.test('keys create/list/revoke while the gateway runs on SQLite (the data directory is locked by it)', async (t) => {
  await keysAgainstRunningGateway(t, {}, true)
})

t.test('keys --help, usage errors, and auth.apiKeys.enabled: false', async (t) => {
  const help = await cli(['keys', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^Usage: portcullis keys <create\|list\|revoke>/)
  t.match((await cli(['--help'])).stdout, /^ {2}keys {12}Personal API keys/m, 'listed among the commands')
  const dir = t.testdir({})
  const configPath = join(dir, 'portcullis.yaml')
  const config = { publicUrl: 'http://127.0.0.1:9', dataDir: join(dir, 'data'), auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] }, servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:9/mcp' }] }
  writeFileSync(configPath, stringify(config))
  const bare = await cli(['keys', '--config', configPath])
  t.equal(bare.code, 2)
  t.match(bare.stderr, /keys needs create, list or revoke/)
  writeFileSync(configPath, stringify({ ...config, auth: { ...config.auth, apiKeys: { enabled: false } } }))
  const disabled = await cli(['keys', 'create', '--config', configPath, '--user', 'alice', '--servers', 'a'])
  t.equal(disabled.code, 1)
  t.match(disabled.stderr, /API keys are disabled on this gateway \(auth.apiKeys.enabled: false\)/)
})
