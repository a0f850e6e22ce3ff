// The SQLite store's disk fills up under a running gateway (a real `portcullis start` process):
// registration, sign-in and refresh answer 503 temporarily_unavailable, /readyz says degraded
// and why, the log says so once (not once per request), and freeing space recovers it without
// a restart.
//
// Why a real tmpfs in a private mount namespace: the issue asks for a real full disk, and a
// mount made inside `unshare --mount` lives exactly as long as the gateway process — it can
// never leak, even if this test is killed. The test reaches the mount through
// /proc/<pid>/root (the gateway's view of the file system) to fill it with a ballast file and
// to free it again. RLIMIT_FSIZE (ulimit -f) was the alternative; it fails with EFBIG rather
// than ENOSPC, and "free space" would mean raising a limit rather than deleting a file.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, REDIRECT_URL } from '../oauth-helpers.js'
import { canMountTmpfs, eventually, fillUp, freePort, startUpstream, textOf } from '../helpers.js'

const MAIN = new URL('../../dist/main.js', import.meta.url).pathname
const PASSWORD = 'correct horse battery staple'

t.test('a full disk: 503 temporarily_unavailable, /readyz degraded with the reason, one log line; space freed: works again', async (t) => {
  if (!canMountTmpfs(t)) return
  const upstream = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-full-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const dataDir = join(dir, 'data')
  mkdirSync(dataDir)
  const port = await freePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const configPath = join(dir, 'gw.yaml')
  writeFileSync(configPath, stringify({
    publicUrl: baseUrl,
    listen: { host: '127.0.0.1', port },
    dataDir,
    // The audit file would be on the full disk too, and then MCP calls are refused (fail closed,
    // audit-full.test.ts); this test is about the store, so the audit goes to stderr.
    audit: { destination: 'stderr' },
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  }))

  // The mount exists only in the gateway's own mount namespace: gone when it exits.
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=4m,mode=0700 portcullis-test "$0" && exec "$@"', dataDir, process.execPath, MAIN, 'start', '--config', configPath], { stdio: 'pipe' })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  await eventually(() => out.includes('portcullis ready') || child.exitCode !== null, 60_000)
  t.match(out, /portcullis ready/, 'the gateway started')
  if (!out.includes('portcullis ready')) return
  // unshare and sh exec: the pid is the gateway's own.
  const ballast = `/proc/${child.pid ?? 0}/root${dataDir}/ballast`

  const register = (): Promise<Response> => fetch(`${baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  const readyz = async (): Promise<{ status: string, store: { isReachable: boolean, isWritable?: boolean, error?: string } }> => (await fetch(`${baseUrl}/readyz`)).json() as Promise<{ status: string, store: { isReachable: boolean, isWritable?: boolean, error?: string } }>

  // Before: alice signs in (a refresh token to use later) and a client is registered.
  const alice = await connectWithOAuth(t, `${baseUrl}/fx/mcp`, { username: 'alice', password: PASSWORD, issuer: baseUrl })
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'before' } })), 'before')
  const clientId = alice.oauth.info?.client_id ?? ''
  const refreshToken = alice.oauth.savedTokens?.refresh_token ?? ''
  t.ok(refreshToken !== '', 'a refresh token was issued')
  t.match(await readyz(), { status: 'ready' })

  t.ok(fillUp(ballast) > 0, 'the data directory\'s file system is full')

  const registerFull = await register()
  t.equal(registerFull.status, 503, 'registration: 503, not 500')
  t.equal(registerFull.headers.get('retry-after'), '5')
  t.match(await registerFull.json(), { error: 'temporarily_unavailable' })
  const refresh = (): Promise<Response> => fetch(`${baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId, resource: `${baseUrl}/fx/mcp` }).toString(),
  })
  const refreshFull = await refresh()
  t.equal(refreshFull.status, 503, 'refresh: 503')
  t.match(await refreshFull.json(), { error: 'temporarily_unavailable' })
  const query = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: `${baseUrl}/fx/mcp` })
  const signInFull = await fetch(`${baseUrl}/oauth/authorize?${query.toString()}`, { redirect: 'manual' })
  t.equal(signInFull.status, 503, 'sign-in: 503')
  t.match(await signInFull.text(), /Temporarily unavailable/, 'a person gets a page saying to retry')
  for (let i = 0; i < 5; i++) t.equal((await register()).status, 503)

  const degraded = await readyz()
  t.match(degraded, { status: 'degraded', store: { isReachable: true, isWritable: false, error: /SQLITE_FULL/ } }, '/readyz says degraded, and why')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'during' } })), 'during', 'issued access tokens keep working')
  t.equal(out.split('\n').filter((line) => line.includes('store write failed')).length, 1, 'logged once, not once per request')
  t.notMatch(out, /authorization server error/, 'no "server error": a full disk is not a bug')

  rmSync(ballast)
  t.ok(await eventually(async () => (await readyz()).status === 'ready', 10_000), '/readyz is ready again once space is free (its probe write works)')
  t.ok(await eventually(() => out.includes('store writes work again')), 'the recovery is logged')
  t.equal((await register()).status, 201, 'registration works again, without a restart')
  const refreshed = await refresh()
  t.equal(refreshed.status, 200, 'and the refresh token issued before works')
})
