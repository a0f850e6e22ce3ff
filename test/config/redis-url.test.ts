// store.redis must be a URL the gateway can read: `portcullis check` and `start` print it
// (masked) and ioredis parses it. The schema's pattern let through strings no URL parser takes.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { configError } from '../config-helpers.js'

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
const MINIMAL = 'servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n'
const UNPARSEABLE = 'redis://:${REDIS_PASSWORD}@[::1'
const PASSWORD = 'redis-password-3c9d1e'

t.test('an unparseable store.redis is a config error naming the key, without the password', async (t) => {
  const err = configError(`store:\n  redis: "${UNPARSEABLE}"\n${MINIMAL}`, { REDIS_PASSWORD: PASSWORD })
  t.match(err.message, /^gw\.yaml:2:\d+: store\.redis: expected a redis:\/\/ or rediss:\/\/ URL/)
  t.notMatch(err.message, PASSWORD)
})

t.test('portcullis check on it: exit 1 with the config error, not an unexpected failure', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-redis-url-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'gw.yaml')
  writeFileSync(file, `dataDir: ${dir}\nstore:\n  redis: "${UNPARSEABLE}"\n${MINIMAL}`)
  const r = spawnSync(process.execPath, [MAIN, 'check', '-c', file], { env: { PATH: process.env.PATH, REDIS_PASSWORD: PASSWORD }, encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 1)
  t.match(r.stderr, /^portcullis: invalid configuration\n.*store\.redis: /)
  t.notMatch(r.stderr, /unexpected failure/)
  t.notMatch(r.stderr + r.stdout, PASSWORD)
})
