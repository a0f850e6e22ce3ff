// Reloading the configuration without a restart (issue 15, README "Reloading"): real
// `portcullis start` processes, a real SIGHUP, real stdio children and event streams, the file
// edited the way an editor replaces it (--watch), the admin API with a token from the real
// OAuth flow, and two replicas on a real Redis.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, signInForTokens } from '../oauth-helpers.js'
import { eventually, freePort, INIT_BODY, postJson, startCliGateway, startUpstream, stdioServer, textOf } from '../helpers.js'
import { call, canBind, childrenMarked, nthReload, openSession, openStream, ORIGIN, PASSWORD, resultText, VERSION_HEADER } from '../reload-helpers.js'

t.test('SIGHUP: a server added and one removed, a rate limit and allowedOrigins changed; a stdio session and its GET stream opened before live on', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false } }
  writeFileSync(configPath, stringify({ ...base, servers: [{ name: 'fx', transport: 'http', url: upstream.url }, stdioServer('local')] }))
  const { child, output } = await startCliGateway(t, configPath)
  const url = (server: string): string => `http://127.0.0.1:${port}/${server}/mcp`

  const sessionId = await openSession(url('local'))
  t.equal(resultText((await call(url('local'), sessionId, 'increment')).body), '1', 'the stdio counter starts')
  const pid = JSON.parse(resultText((await call(url('local'), sessionId, 'env')).body)).pid as number
  const stream = await openStream(t, url('local'), sessionId)
  t.equal(stream.status, 200, 'GET stream open before the reload')
  for (let i = 0; i < 3; i++) t.equal((await call(url('local'), sessionId, 'echo', { text: 'x' })).status, 200, `echo ${i + 1} before: no tool limit`)
  t.equal((await postJson(url('fx'), INIT_BODY, { origin: ORIGIN })).status, 403, 'the browser origin is refused before')
  t.equal((await postJson(url('added'), INIT_BODY)).status, 404, 'no server "added" before')

  writeFileSync(configPath, stringify({
    ...base,
    allowedOrigins: [ORIGIN],
    servers: [{ name: 'added', transport: 'http', url: upstream.url }, stdioServer('local', { tools: { echo: { rateLimit: '1/min' } } })],
  }))
  child.kill('SIGHUP')
  const line = await nthReload(t, output, 1)
  t.equal(line.msg, 'configuration reloaded', 'applied')
  t.same([...line.changed as string[]].sort(), ['allowedOrigins changed', 'server added: added', 'server changed: local', 'server removed: fx'], 'the log line says what changed')
  t.same(line.needsRestart, [], 'nothing needs a restart')
  t.equal(child.exitCode, null, 'SIGHUP no longer ends the process')

  const removed = await postJson(url('fx'), INIT_BODY)
  t.equal(removed.status, 404, 'the removed server is gone')
  t.match(removed.json, { error: { data: { code: 'PORTCULLIS_ERR_UNKNOWN_SERVER' } } })
  t.equal((await postJson(url('added'), INIT_BODY)).status, 200, 'the added server answers')
  t.equal((await postJson(url('added'), INIT_BODY, { origin: ORIGIN })).status, 200, 'the newly allowed origin passes')

  t.equal(resultText((await call(url('local'), sessionId, 'increment')).body), '2', 'the session opened before keeps counting: same process')
  t.equal(JSON.parse(resultText((await call(url('local'), sessionId, 'env')).body)).pid, pid, 'the same pid')
  t.equal((await call(url('local'), sessionId, 'echo', { text: 'x' })).status, 200, 'first echo under the new limit')
  const limited = await call(url('local'), sessionId, 'echo', { text: 'x' })
  t.equal(limited.status, 429, 'the new per-tool limit (1/min) applies at once')
  t.match(limited.body, { error: { data: { code: 'PORTCULLIS_ERR_RATE_LIMITED' } } })

  t.equal((await call(url('local'), sessionId, 'broadcast')).status, 200)
  t.ok(await eventually(() => stream.text().includes('notifications/tools/list_changed'), 5000), 'the GET stream opened before the reload delivers after it')
  t.notMatch(stream.text(), /\[stream ended\]/, 'and never ended')
})

t.test('SIGHUP with auth on an in-memory store: tokens, sessions and unchanged rate-limit counts survive; a user added signs in', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const passwordHash = await hashPassword(PASSWORD)
  const issuer = `http://127.0.0.1:${port}`
  const write = (users: unknown[]): void => {
    writeFileSync(configPath, stringify({ publicUrl: issuer, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), store: { memory: true }, auth: { users }, servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '2/min' } } }] }))
  }
  write([{ username: 'alice', passwordHash }])
  const { child, output } = await startCliGateway(t, configPath)
  const alice = await connectWithOAuth(t, `${issuer}/fx/mcp`, { username: 'alice', password: PASSWORD, issuer })
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'one' } })), 'one', 'alice calls before the reload')
  await t.rejects(signInForTokens(t, `${issuer}/fx/mcp`, { username: 'bob', password: PASSWORD, issuer }), 'bob is unknown before')

  write([{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }])
  child.kill('SIGHUP')
  const line = await nthReload(t, output, 1)
  t.same(line.changed, ['auth.users changed'])

  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'two' } })), 'two', 'her token, client registration and session (in the memory store) still work')
  await t.rejects(alice.client.callTool({ name: 'echo', arguments: { text: 'three' } }), /rate limit|Too many/i, 'the unchanged 2/min limit kept its count: the third call is refused')
  const bob = await signInForTokens(t, `${issuer}/fx/mcp`, { username: 'bob', password: PASSWORD, issuer })
  t.type(bob.accessToken, 'string', 'the user added by the reload signs in')
})

t.test('an invalid file changes nothing and the log names file:line and key; listen and publicUrl changes wait for a restart', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false } }
  const good = stringify({ ...base, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  writeFileSync(configPath, good)
  const { child, output } = await startCliGateway(t, configPath)
  const url = `http://127.0.0.1:${port}/fx/mcp`

  // The new server would be valid; the unknown key makes the whole file invalid.
  const invalid = stringify({ ...base, servers: [{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'other', transport: 'http', url: upstream.url }] })
  const badLine = invalid.split('\n').length
  writeFileSync(configPath, `${invalid}bogusKey: 1\n`)
  child.kill('SIGHUP')
  const refused = await nthReload(t, output, 1)
  t.equal(refused.msg, 'configuration reload refused: nothing changed')
  t.same(refused.errors, [`${configPath}:${badLine}:1: bogusKey: unknown key "bogusKey"`], 'file:line: key: message, as check prints it')
  t.equal((await postJson(`http://127.0.0.1:${port}/other/mcp`, INIT_BODY)).status, 404, 'the valid part was not applied either')
  t.equal((await postJson(url, INIT_BODY)).status, 200, 'the gateway serves on as before')

  const otherPort = await freePort()
  writeFileSync(configPath, stringify({ ...base, publicUrl: `http://127.0.0.1:${otherPort}`, listen: { host: '127.0.0.1', port: otherPort }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }))
  child.kill('SIGHUP')
  const restart = await nthReload(t, output, 2)
  t.equal(restart.msg, 'configuration reloaded; some settings need a restart')
  t.same(restart.needsRestart, ['listen', 'publicUrl'], 'listen and publicUrl are reported')
  t.same(restart.changed, [], 'and nothing else changed')
  t.equal((await postJson(url, INIT_BODY)).status, 200, 'still on the old port')
  // Binding it ourselves fails if the gateway took the port (a fetch would fail for many reasons).
  t.ok(await canBind(otherPort), 'the gateway did not take the new port: the test can bind it')
})

t.test('a changed stdio definition: the open session keeps its process, a new session gets the new one; the old process ends with its session', async (t) => {
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false } }
  writeFileSync(configPath, stringify({ ...base, servers: [stdioServer('local', { env: { GENERATION: 'one' } })] }))
  const { child, output } = await startCliGateway(t, configPath)
  const url = `http://127.0.0.1:${port}/local/mcp`
  const envOf = async (sessionId: string): Promise<{ pid: number, names: string[], argv: string[] }> => JSON.parse(resultText((await call(url, sessionId, 'env')).body))

  const old = await openSession(url)
  t.equal(resultText((await call(url, old, 'increment')).body), '1')
  const before = await envOf(old)
  writeFileSync(configPath, stringify({ ...base, servers: [stdioServer('local', { env: { GENERATION: 'two' }, flags: ['--second'] })] }))
  child.kill('SIGHUP')
  const line = await nthReload(t, output, 1)
  t.match(line.changed, [/^server changed: local \(new sessions start the new definition/], 'reported as a new definition')

  const after = await envOf(old)
  t.equal(after.pid, before.pid, 'the open session still reaches its old process')
  t.same(after.argv, before.argv, 'with the old arguments')
  t.equal(resultText((await call(url, old, 'increment')).body), '2', 'and its state')
  const fresh = await openSession(url)
  const freshEnv = await envOf(fresh)
  t.not(freshEnv.pid, before.pid, 'a new session gets a new process')
  t.ok(freshEnv.argv.includes('--second'), 'started from the new definition')

  const ended = await fetch(url, { method: 'DELETE', headers: { ...VERSION_HEADER, 'mcp-session-id': old } })
  t.ok(ended.status < 300, 'the old session ends')
  t.ok(await eventually(() => { try { process.kill(before.pid, 0); return false } catch { return true } }, 10_000), 'its process ends once its last session has')
  t.equal(resultText((await call(url, fresh, 'increment')).body), '1', 'the new session is untouched')
})

t.test('SIGTERM right after SIGHUP: the process exits 0 and no stdio child is left', async (t) => {
  const [oldMark, newMark] = [randomUUID(), randomUUID()]
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  const base = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), auth: { enabled: false } }
  writeFileSync(configPath, stringify({ ...base, servers: [stdioServer('local', { flags: [`--mark=${oldMark}`], prestart: 1 })] }))
  const { child } = await startCliGateway(t, configPath)
  t.ok(await eventually(() => childrenMarked(oldMark).length === 1, 5000), 'the warm process of the definition in force runs')

  writeFileSync(configPath, stringify({ ...base, servers: [stdioServer('local', { flags: [`--mark=${newMark}`], prestart: 1 })] }))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  child.kill('SIGHUP')
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'exits 0')
  t.ok(await eventually(() => childrenMarked(oldMark).length === 0 && childrenMarked(newMark).length === 0, 5000), 'no stdio child of either definition is left')
})

/** `portcullis start` spawned, not awaited: these tests act while it is still starting. */
