/** The real `portcullis` CLI (dist/main.js) and a gateway started with it: shared by the keys CLI tests. */
import type { Test } from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { hashPassword } from '../src/auth-server/password.js'
import { API_KEY_CACHE_MS } from '../src/account/api-keys.js'
import { eventually, freePort, INIT_BODY, postJson, startCliGateway, startUpstream } from './helpers.js'

export const PASSWORD = 'correct horse battery staple'
const run = promisify(execFile)
const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url))

export async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return run(process.execPath, [MAIN, ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  )
}

/** create, list, the refusals (when `checkErrors`), revoke: the CLI beside a running `portcullis start`. */
export async function keysAgainstRunningGateway (t: Test, store: Record<string, unknown>, checkErrors: boolean): Promise<void> {
  const dir = t.testdir({})
  const upstream = await startUpstream(t)
  const port = await freePort()
  const configPath = join(dir, 'portcullis.yaml')
  writeFileSync(configPath, stringify({
    publicUrl: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    dataDir: join(dir, 'data'),
    store,
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }, { username: 'bob', passwordHash: await hashPassword(PASSWORD) }], apiKeys: { maxTtl: '90d', defaultTtl: '30d' } },
    servers: [
      { name: 'a', transport: 'http', url: upstream.url, scopes: ['a:read'], tools: { whoami: { scopes: ['a:admin'] } } },
      { name: 'b', transport: 'http', url: upstream.url, access: { users: ['alice'] } },
    ],
  }))
  await startCliGateway(t, configPath)
  const mcpA = `http://127.0.0.1:${port}/a/mcp`

  const created = await cli(['keys', 'create', '--config', configPath, '--user', 'alice', '--servers', 'a', '--scopes', 'mcp,a:read', '--expires', '7d', '--name', 'deploy job'])
  t.equal(created.code, 0, created.stderr)
  const secret = created.stdout.trim()
  t.match(secret, /^pcs_[0-9A-Za-z]{43}$/, 'the key alone on stdout')
  const keyId = /^created ([0-9a-f]{16}) {2}"deploy job" {2}servers=a {2}scopes=mcp,a:read /m.exec(created.stderr)?.[1] ?? ''
  t.not(keyId, '', 'details on stderr')
  t.equal((await postJson(mcpA, INIT_BODY, { authorization: `Bearer ${secret}` })).status, 200, 'the running gateway accepts the key')

  const listed = await cli(['keys', 'list', '--config', configPath, '--user', 'alice'])
  t.equal(listed.code, 0, listed.stderr)
  t.match(listed.stdout, new RegExp(`^${keyId} {2}"deploy job" {2}servers=a {2}scopes=mcp,a:read {2}created=`, 'm'))
  t.notMatch(listed.stdout, /pcs_/, 'a list never shows a key')

  const errors: Array<[string[], RegExp]> = [
    [['--user', 'alice', '--servers', 'nope'], /unknown server "nope"/],
    [['--user', 'bob', '--servers', 'b'], /the user may not reach server "b"/],
    [['--user', 'alice', '--servers', 'a', '--scopes', 'b:write'], /scope "b:write" cannot be granted for a \(grantable: mcp, a:read, a:admin\)/],
    [['--user', 'alice', '--servers', 'a', '--expires', '120d'], /expiry 120d is longer than auth.apiKeys.maxTtl allows \(90d\)/],
    [['--user', 'mallory', '--servers', 'a'], /no such user "mallory"/],
    [['--servers', 'a'], /--user <id> is required/],
  ]
  const answers = checkErrors ? await Promise.all(errors.map(async ([args]) => cli(['keys', 'create', '--config', configPath, ...args]))) : []
  answers.forEach((refused, i) => {
    const [args, message] = errors[i] ?? [[], /./]
    t.not(refused.code, 0, args.join(' '))
    t.match(refused.stderr, message)
    t.equal(refused.stdout, '', 'no key printed')
  })

  const revoked = await cli(['keys', 'revoke', '--config', configPath, keyId])
  t.equal(revoked.code, 0, revoked.stderr)
  t.match(revoked.stdout, new RegExp(`revoked ${keyId} of alice; running gateways refuse it within ${API_KEY_CACHE_MS / 1000} seconds`))
  t.ok(await eventually(async () => (await postJson(mcpA, INIT_BODY, { authorization: `Bearer ${secret}` })).status === 401, API_KEY_CACHE_MS * 4), 'the running gateway refuses it after the cache bound')
  t.match((await cli(['keys', 'revoke', '--config', configPath, keyId])).stderr, /no live key/, 'revoking twice says so')
}

