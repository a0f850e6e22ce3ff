// Reloading the configuration without a restart (issue 15, README "Reloading"), continued from
// reload.test.ts (split so that neither file nears the per-file time limit on a loaded machine):
// a SIGHUP or an edit while the gateway is still starting, --watch and editors' renames, the
// reload notice between two replicas on a real Redis, the admin API's reload, and 2024-11-05
// clients and sse upstreams across a SIGHUP. Real `portcullis start` processes throughout.
import t, { type Test } from 'tap'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { createHash } from 'node:crypto'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { startSseMcpServer } from '../fixtures/sse-mcp-server.mjs'
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { adminToken, signInForTokens } from '../oauth-helpers.js'
import { eventually, freePort, INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startCliGateway, startUpstream, stdioServer, textOf } from '../helpers.js'
import { call, type Log, logLines, nthReload, openSession, PASSWORD, reloads, resultText } from '../reload-helpers.js'

function spawnStarting (t: Test, configPath: string, flags: readonly string[] = []): { child: ChildProcessWithoutNullStreams, output: () => string } {
  const child = spawn(process.execPath, [new URL('../../dist/main.js', import.meta.url).pathname, 'start', '--config', configPath, ...flags], { stdio: 'pipe' })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  return { child, output: () => out }
}

/**
 * A start held up for 2 s: Redis at a port nothing listens on (with auth off the gateway then
 * starts without it). "redis unreachable" is logged once start() runs, before it is ready.
 */
async function slowStartConfig (t: Test): Promise<{ configPath: string, write: (servers: unknown[]) => void, port: number }> {
  const [port, deadPort] = [await freePort(), await freePort()]
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false }, store: { redis: `redis://127.0.0.1:${deadPort}` } }
  const write = (servers: unknown[]): void => writeFileSync(configPath, stringify({ ...base, servers }))
  return { configPath, write, port }
}

t.test('SIGHUP while the gateway is starting does not end it: the reload runs once it is ready', async (t) => {
  const upstream = await startUpstream(t)
  const { configPath, write } = await slowStartConfig(t)
  write([{ name: 'fx', transport: 'http', url: upstream.url }])
  const { child, output } = spawnStarting(t, configPath)
  t.ok(await eventually(() => output().includes('redis unreachable'), 30_000), 'the gateway is starting')
  t.notOk(output().includes('portcullis ready'), 'and not ready yet')
  write([{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'second', transport: 'http', url: upstream.url }])
  child.kill('SIGHUP')
  const line = await nthReload(t, output, 1)
  t.equal(child.exitCode, null, 'still running')
  t.equal(child.signalCode, null, 'not ended by the signal')
  t.match(line, { msg: 'configuration reloaded', cause: 'signal', changed: ['server added: second'] }, 'the pending reload ran once ready')
})

t.test('--watch: an edit made while the gateway was starting is applied once it watches', async (t) => {
  const upstream = await startUpstream(t)
  const { configPath, write } = await slowStartConfig(t)
  write([{ name: 'fx', transport: 'http', url: upstream.url }])
  const { output } = spawnStarting(t, configPath, ['--watch'])
  t.ok(await eventually(() => output().includes('redis unreachable'), 30_000), 'the gateway is starting')
  write([{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'second', transport: 'http', url: upstream.url }])
  const line = await nthReload(t, output, 1)
  t.match(line, { msg: 'configuration reloaded', cause: 'watch', changed: ['server added: second'] }, 'the file read at start differed from the file now')
})

t.test('a reload notice for a file this replica does not have yet: a warning, and the file is read again until it matches', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const text = (servers: unknown[]): string => stringify({ publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false }, store: { redis: REDIS_URL, prefix }, servers })
  writeFileSync(configPath, text([{ name: 'fx', transport: 'http', url: upstream.url }]))
  const { output } = await startCliGateway(t, configPath)
  // The file another replica applied, which reaches this one later (a ConfigMap's propagation).
  const theirs = text([{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'second', transport: 'http', url: upstream.url }])
  const sha256 = createHash('sha256').update(theirs).digest('hex')
  await redis.publish(`${prefix}notices`, JSON.stringify({ type: 'reload', from: 'another-replica', sha256 }))
  const first = await nthReload(t, output, 1)
  t.match(first, { cause: 'replica', changed: [] }, 'it reads its own file at once')
  t.ok(await eventually(() => output().includes('configuration file differs from the one another replica applied'), 5000), 'and warns that it differs')
  writeFileSync(configPath, theirs)
  const second = await nthReload(t, output, 2)
  t.match(second, { cause: 'replica', changed: ['server added: second'] }, 'the file read again once it matches')
})

t.test('--watch: replacing the file the way editors do (write elsewhere, rename over) reloads it', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false } }
  writeFileSync(configPath, stringify({ ...base, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }))
  const { output } = await startCliGateway(t, configPath, {}, ['--watch'])
  const next = join(dir, 'gw.yaml.tmp')

  writeFileSync(next, stringify({ ...base, servers: [{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'second', transport: 'http', url: upstream.url }] }))
  renameSync(next, configPath)
  const first = await nthReload(t, output, 1)
  t.same(first.changed, ['server added: second'])
  t.equal(first.cause, 'watch')
  t.equal((await postJson(`http://127.0.0.1:${port}/second/mcp`, INIT_BODY)).status, 200, 'the new server answers')

  // A second edit after the first rename: the watch survived the replaced file.
  writeFileSync(next, stringify({ ...base, servers: [{ name: 'second', transport: 'http', url: upstream.url }] }))
  renameSync(next, configPath)
  const second = await nthReload(t, output, 2)
  t.same(second.changed, ['server removed: fx'])
  t.equal((await postJson(`http://127.0.0.1:${port}/fx/mcp`, INIT_BODY)).status, 404)
  t.equal(reloads(output()).length, 2, 'one reload per edit (events debounced)')
})

t.test('POST /admin/api/v1/reload: the report, audited; an invalid file is a 422; the other replica on Redis reloads too, and a user added there signs in', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const upstream = await startUpstream(t)
  const dir = t.testdir({})
  const passwordHash = await hashPassword(PASSWORD)
  const admin = { username: 'root', passwordHash, groups: ['portcullis-admins'] }
  const replicas = await Promise.all([1, 2].map(async (n) => {
    const port = await freePort()
    const configPath = join(dir, `replica-${n}.yaml`)
    const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, `data-${n}`), store: { redis: REDIS_URL, prefix } }
    const write = (users: unknown[], servers: unknown[], extra = ''): void => { writeFileSync(configPath, `${stringify({ ...base, auth: { users }, servers })}${extra}`) }
    write([admin], [{ name: 'fx', transport: 'http', url: upstream.url }])
    const gw = await startCliGateway(t, configPath)
    return { n, port, base: `http://127.0.0.1:${port}`, configPath, write, ...gw }
  }))
  const [r1, r2] = replicas as [typeof replicas[0], typeof replicas[0]]
  const token = await adminToken(r1.base, 'root', PASSWORD)
  t.type(token.accessToken, 'string', 'an admin token through the real OAuth flow')
  const reload = async (): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await fetch(`${r1.base}/admin/api/v1/reload`, { method: 'POST', headers: { authorization: `Bearer ${token.accessToken ?? ''}` } })
    return { status: res.status, body: await res.json() as Record<string, unknown> }
  }

  await t.rejects(signInForTokens(t, `${r2.base}/fx/mcp`, { username: 'bob', password: PASSWORD, issuer: r2.base }), 'bob cannot sign in before')
  for (const r of replicas) r.write([admin, { username: 'bob', passwordHash }], [{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'extra', transport: 'http', url: upstream.url }])
  const applied = await reload()
  t.equal(applied.status, 200)
  t.same(applied.body, { applied: true, changed: ['server added: extra', 'auth.users changed'], needsRestart: [], errors: [], warnings: [] }, 'the ReloadReport')
  // The audit trail: its default file in replica 1's data directory.
  const audited = (): Log[] => logLines(readFileSync(join(dir, 'data-1', 'audit.log'), 'utf8')).filter((l) => l.event === 'admin_action' && l.action === 'config.reload')
  t.ok(await eventually(() => audited().length === 1), 'one audit record')
  t.match(audited(), [{ actor: 'root', outcome: 'ok', detail: { applied: true, changed: 2 } }], 'audited like every admin action')
  t.equal((await postJson(`${r1.base}/extra/mcp`, INIT_BODY, { authorization: `Bearer ${token.accessToken ?? ''}` })).status, 401, 'the new server exists on replica 1 (a token for it is needed)')

  const heard = await nthReload(t, r2.output, 1)
  t.equal(heard.cause, 'replica', 'replica 2 reloaded on the notice')
  t.same(heard.changed, ['server added: extra', 'auth.users changed'], 'from its own file')
  const bob = await signInForTokens(t, `${r2.base}/extra/mcp`, { username: 'bob', password: PASSWORD, issuer: r2.base })
  t.type(bob.accessToken, 'string', 'the user added by the reload signs in on replica 2, for the server it added')

  r1.write([admin], [{ name: 'fx', transport: 'http', url: upstream.url }], 'bogusKey: 1\n')
  const refused = await reload()
  t.equal(refused.status, 422, 'an invalid file: 422')
  t.match(refused.body, { applied: false, changed: [], needsRestart: [], errors: [/replica-1\.yaml:\d+:1: bogusKey: unknown key/], error: { code: 'PORTCULLIS_ERR_RELOAD_INVALID_CONFIG' } })
  t.ok(await eventually(() => audited().length === 2), 'a second audit record')
  t.match(audited().at(-1), { outcome: 'refused', detail: { applied: false, code: 'PORTCULLIS_ERR_RELOAD_INVALID_CONFIG' } }, 'the refusal is audited')
  const noToken = await fetch(`${r1.base}/admin/api/v1/reload`, { method: 'POST' })
  t.equal(noToken.status, 401, 'no admin token: refused')
  t.equal((await postJson(`${r1.base}/extra/mcp`, INIT_BODY)).status, 401, 'replica 1 kept the last good configuration')
})

t.test('SIGHUP: a 2024-11-05 client on /sse and a transport: sse session opened before keep working; the old configuration closes', async (t) => {
  const legacyUpstream = await startSseMcpServer()
  t.teardown(() => legacyUpstream.close())
  const httpUpstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false } }
  const write = (deny: string[]): void => {
    writeFileSync(configPath, stringify({ ...base, servers: [stdioServer('local', { tools: { deny } }), { name: 'old', transport: 'sse', url: legacyUpstream.url, tools: { deny } }, { name: 'fx', transport: 'http', url: httpUpstream.url, tools: { deny } }] }))
  }
  write([])
  const { child, output } = await startCliGateway(t, configPath)
  const url = (server: string): string => `http://127.0.0.1:${port}/${server}/mcp`

  // The SDK's 2024-11-05 client, its event stream held by the first configuration's build.
  const legacy = new Client({ name: 'legacy-reload-test', version: '1.0.0' })
  await legacy.connect(new SSEClientTransport(new URL(`http://127.0.0.1:${port}/local/sse`)))
  t.teardown(() => legacy.close())
  t.equal(textOf(await legacy.callTool({ name: 'echo', arguments: { text: 'before' } })), 'before', 'the legacy client calls before the reload')
  // One on an HTTP server too: its upstream is rebuilt by a reload, and closes the server stream with the old build.
  const legacyHttp = new Client({ name: 'legacy-reload-test', version: '1.0.0' })
  await legacyHttp.connect(new SSEClientTransport(new URL(`http://127.0.0.1:${port}/fx/sse`)))
  t.teardown(() => legacyHttp.close())
  t.equal(textOf(await legacyHttp.callTool({ name: 'echo', arguments: { text: 'before' } })), 'before', 'the legacy client on the HTTP server calls before the reload')
  const bridged = await openSession(url('old'))
  t.equal(resultText((await call(url('old'), bridged, 'echo', { text: 'before' })).body), 'before', 'the transport: sse session answers before the reload')

  write(['secret'])
  child.kill('SIGHUP')
  const line = await nthReload(t, output, 1)
  t.equal(line.msg, 'configuration reloaded', 'applied')
  t.same([...line.changed as string[]].sort(), ['server changed: fx', 'server changed: local', 'server changed: old'], 'every server changed (policy only)')

  await t.resolveMatch(legacy.callTool({ name: 'echo', arguments: { text: 'after' } }), { content: [{ text: 'after' }] }, 'the legacy session opened before the reload answers after it')
  const after = await call(url('old'), bridged, 'echo', { text: 'after' })
  t.equal(after.status, 200, 'the transport: sse session opened before the reload answers after it')
  t.equal(resultText(after.body), 'after')
  t.equal(legacyUpstream.sessions.size, 1, 'on the same upstream event stream')
  t.match((await call(url('old'), bridged, 'secret')).body, { error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } }, 'under the new policy')
  t.ok(await eventually(() => output().includes('retired configuration closed'), 10_000), 'the earlier configuration closes although the legacy stream it accepted is still open')
  await t.resolveMatch(legacy.callTool({ name: 'echo', arguments: { text: 'later' } }), { content: [{ text: 'later' }] }, 'and the legacy client still works once it has')
  await t.resolveMatch(legacyHttp.callTool({ name: 'echo', arguments: { text: 'later' } }), { content: [{ text: 'later' }] }, 'so does the one on the HTTP server')
  const changed = new Promise<boolean>((resolve) => {
    legacyHttp.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve(true))
    setTimeout(() => resolve(false), 5_000).unref()
  })
  await legacyHttp.callTool({ name: 'broadcast', arguments: {} }).catch(() => undefined)
  t.ok(await changed, 'and server notifications reach it: its server stream was opened again on the new configuration')
  t.notMatch(output(), /legacy server stream ended; session closed/, 'no legacy session was closed')
})
