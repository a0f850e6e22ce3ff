// The audit trail's disk fills up under a running gateway (a real `portcullis start` process,
// the audit file on a real tmpfs that exists only in the gateway's mount namespace; see
// store-full.test.ts for why). An audited gateway that cannot write its audit trail stops
// serving MCP requests (503 PORTCULLIS_ERR_AUDIT_UNAVAILABLE, fail closed) rather than serving
// unaudited, /readyz says why, the records of requests already served wait in memory and reach
// the file once space is free (nothing lost), and a shutdown on a still-full disk ends in time,
// saying how many records could not be written, instead of hanging.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { canMountTmpfs, eventually, fillUp, freePort, startUpstream, textOf, within } from '../helpers.js'

const MAIN = new URL('../../dist/main.js', import.meta.url).pathname
const PASSWORD = 'correct horse battery staple'

t.test('a full audit disk: MCP refused with 503, /readyz degraded, records kept and written once space is free, shutdown never hangs', async (t) => {
  if (!canMountTmpfs(t)) return
  const upstream = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-full-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const auditDir = join(dir, 'audit')
  mkdirSync(auditDir)
  const port = await freePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const configPath = join(dir, 'gw.yaml')
  writeFileSync(configPath, stringify({
    publicUrl: baseUrl,
    listen: { host: '127.0.0.1', port },
    dataDir: join(dir, 'data'),
    shutdownTimeoutMs: 3000,
    audit: { destination: join(auditDir, 'audit.log') },
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  }))

  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m,mode=0700 portcullis-test "$0" && exec "$@"', auditDir, process.execPath, MAIN, 'start', '--config', configPath], { stdio: 'pipe' })
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
  const mount = `/proc/${child.pid ?? 0}/root${auditDir}`
  const auditText = (): string => readFileSync(join(mount, 'audit.log'), 'utf8')
  /** tools/call records of calls that were served. */
  const allowedCalls = (): number => auditText().split('\n').filter((line) => line.includes('"method":"tools/call"') && line.includes('"decision":"allowed"')).length
  const readyz = async (): Promise<{ status: string, audit?: { isWritable: boolean, error?: string, pendingRecords?: number } }> => (await fetch(`${baseUrl}/readyz`)).json() as Promise<{ status: string, audit?: { isWritable: boolean, error?: string, pendingRecords?: number } }>

  const alice = await connectWithOAuth(t, `${baseUrl}/fx/mcp`, { username: 'alice', password: PASSWORD, issuer: baseUrl })
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'before' } })), 'before')
  t.ok(await eventually(() => allowedCalls() === 1), 'the call is in the audit file')
  t.match(await readyz(), { status: 'ready', audit: { isWritable: true } })

  t.ok(fillUp(join(mount, 'ballast')) > 0, 'the audit file system is full')
  // The audit file's last page may still hold a few records; calls go on until the writer hits
  // ENOSPC (its next batch, at most a second later) and the gateway starts refusing.
  let served = 1
  let refused: unknown
  for (let i = 0; i < 60 && refused === undefined; i++) {
    refused = await alice.client.callTool({ name: 'echo', arguments: { text: `call ${i}` } }).then(() => { served++ }, (err: unknown) => err)
    if (refused === undefined) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.match(String(refused), /audit/i, 'MCP calls are refused once records cannot be written (fail closed)')
  t.match(await readyz(), { status: 'degraded', audit: { isWritable: false, error: /ENOSPC/ } }, '/readyz is degraded and says why')
  const raw = await fetch(`${baseUrl}/fx/mcp`, { method: 'POST', headers: { authorization: `Bearer ${alice.oauth.savedTokens?.access_token ?? ''}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' }, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/list' }) })
  t.equal(raw.status, 503, '503')
  t.ok(raw.headers.get('retry-after') !== null, 'with Retry-After')
  t.match(await raw.json(), { error: { data: { code: 'PORTCULLIS_ERR_AUDIT_UNAVAILABLE' } } })
  t.equal(out.split('\n').filter((line) => line.includes('audit log cannot be written')).length, 1, 'logged once, not once per request')

  rmSync(join(mount, 'ballast'))
  t.ok(await eventually(async () => (await readyz()).status === 'ready', 10_000), 'ready again once space is free, without a restart')
  t.ok(await eventually(() => out.includes('audit log writes work again')), 'the recovery is logged')
  t.ok(await eventually(() => allowedCalls() === served), 'every served call\'s record reached the file, those held while the disk was full included (nothing lost)')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'after' } })), 'after', 'MCP calls work again')

  // Full again, then SIGTERM: the gateway exits within its shutdown timeout instead of hanging.
  t.ok(fillUp(join(mount, 'ballast')) > 0, 'full again')
  let refusedAgain: unknown
  for (let i = 0; i < 60 && refusedAgain === undefined; i++) {
    refusedAgain = await alice.client.callTool({ name: 'echo', arguments: { text: `again ${i}` } }).then(() => undefined, (err: unknown) => err)
    if (refusedAgain === undefined) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.match(String(refusedAgain), /audit/i, 'refused again: records are waiting')
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  const code = await within(exited, 20_000, 'hung' as const)
  t.not(code, 'hung', 'the gateway exits on SIGTERM with the audit disk full')
  t.match(out, /audit records? could not be written/, 'and says how many audit records were lost')
})
