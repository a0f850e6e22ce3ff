// Graceful shutdown: stop accepting, end GET streams, finish in-flight requests, fail stragglers at the deadline.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from 'node:net'
import { closeGracefully } from '../../src/app.js'
import { connectClient, eventually, startCliGateway, freePort, INIT_BODY, isProcessAlive, postJson, processGroupMembers, startGateway, startUpstream, STDIO_FIXTURE, stdioServer, textOf } from '../helpers.js'

t.test('in-flight calls finish, GET streams end, new requests are refused', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  // A raw session of our own, whose GET stream we can watch end (one GET stream per session upstream).
  const init = await postJson(gw.mcpUrl('fx'), INIT_BODY)
  const session = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
  await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', method: 'notifications/initialized' }, session)
  const getStream = await fetch(gw.mcpUrl('fx'), { headers: { accept: 'text/event-stream', ...session } })
  t.equal(getStream.status, 200)
  const streamEnded = getStream.text().then(() => 'ended', () => 'ended')

  const call = client.callTool({ name: 'gate', arguments: { key: 'inflight' } })
  await upstream.entered('inflight')
  const closing = closeGracefully(gw.app, 10_000)
  t.equal(await streamEnded, 'ended', 'the GET stream was ended so shutdown can complete')
  const refused = await postJson(gw.mcpUrl('fx'), INIT_BODY).catch((err: Error) => ({ status: 0, json: undefined, error: err.message }))
  t.ok(refused.status === 503 || refused.status === 0, `a new request is refused while closing (${refused.status})`)
  upstream.release('inflight')
  t.same((await call).content, [{ type: 'text', text: 'released inflight' }], 'the in-flight call completed')
  await closing
})

t.test('at the deadline, a call still in flight gets a JSON-RPC error, not a hang', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  const call = client.callTool({ name: 'gate', arguments: { key: 'stuck' } }, undefined, { onprogress: () => {} }).then(
    () => 'completed',
    (err: Error & { code?: number }) => `error ${err.code ?? ''}: ${err.message}`,
  )
  await upstream.entered('stuck')
  await closeGracefully(gw.app, 200)
  t.match(await call, /^error -32603: .*Gateway is shutting down/)
})

t.test('SIGTERM on the real process: graceful exit with code 0', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  writeFileSync(configPath, `publicUrl: http://127.0.0.1:${port}\nlisten: { port: ${port} }\ndataDir: ${join(dir, 'data')}\nauth: { enabled: false }\nservers:
  - { name: fx, transport: http, url: "${upstream.url}" }
  - { name: local, transport: stdio, command: "${process.execPath}", args: ["${STDIO_FIXTURE}", "--grandchild"] }\n`)
  const { child, output } = await startCliGateway(t, configPath)
  const { client } = await connectClient(t, `http://127.0.0.1:${port}/fx/mcp`)
  t.same((await client.callTool({ name: 'echo', arguments: { text: 'before' } })).content, [{ type: 'text', text: 'before' }])
  const local = await connectClient(t, `http://127.0.0.1:${port}/local/mcp`)
  const stdio = JSON.parse(textOf(await local.client.callTool({ name: 'env', arguments: {} }))) as { pid: number, grandchild: number }
  t.ok(isProcessAlive(stdio.pid) && isProcessAlive(stdio.grandchild), 'a stdio child and its grandchild run under the gateway')
  child.kill('SIGTERM')
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
  t.equal(code, 0)
  t.ok(await eventually(() => !isProcessAlive(stdio.pid) && !isProcessAlive(stdio.grandchild)), 'no stdio child or grandchild outlives the gateway process')
  t.same(processGroupMembers(stdio.pid), [])
  t.match(output(), /"msg":"shutting down"/)
  t.match(output(), /"msg":"shut down cleanly"/)
})

t.test('graceful shutdown with stdio sessions: the in-flight call finishes, then every process stops', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('local'), stdioServer('pool', { isolation: 'shared' })] })
  const a = await connectClient(t, gw.mcpUrl('local'))
  const b = await connectClient(t, gw.mcpUrl('pool'))
  const pids = await Promise.all([a, b].map(async ({ client }) => (JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { pid: number }).pid))
  const inFlight = a.client.callTool({ name: 'slow', arguments: { ms: 300 } })
  await new Promise((resolve) => setTimeout(resolve, 50))
  await closeGracefully(gw.app, 5_000)
  t.equal(textOf(await inFlight), 'slept 300', 'the call in flight completed')
  t.same(pids.filter(isProcessAlive), [], 'no process left')
})

t.test('SIGTERM with 20 streaming calls in flight: each completes or gets a JSON-RPC error; no child process remains', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  // 1.5 s to drain: the short calls finish inside it, the long ones are failed at the deadline.
  writeFileSync(configPath, `publicUrl: http://127.0.0.1:${port}\nlisten: { port: ${port} }\ndataDir: ${join(dir, 'data')}\nshutdownTimeoutMs: 1500\nauth: { enabled: false }\nservers:
  - { name: fx, transport: http, url: "${upstream.url}" }
  - { name: local, transport: stdio, command: "${process.execPath}", args: ["${STDIO_FIXTURE}", "--grandchild"], prestart: 0 }\n`)
  const { child, output } = await startCliGateway(t, configPath)

  // 10 sessions on each server; the stdio ones each own a process (and a grandchild).
  const clients = await Promise.all(Array.from({ length: 20 }, async (_, i) => connectClient(t, `http://127.0.0.1:${port}/${i % 2 === 0 ? 'fx' : 'local'}/mcp`)))
  const stdioPids = (await Promise.all(clients.filter((_, i) => i % 2 === 1).map(async ({ client }) => JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { pid: number, grandchild: number })))
    .flatMap((p) => [p.pid, p.grandchild])
  t.equal(stdioPids.filter(isProcessAlive).length, 20, '10 stdio children, each with a grandchild')

  const progressSeen = new Array<number>(20).fill(0)
  const calls = clients.map(({ client }, i) => {
    const isLong = i % 4 >= 2 // half of each server's calls outlast the shutdown deadline
    const started = Date.now()
    return client.callTool({ name: 'progress', arguments: { n: isLong ? 100 : 8, delayMs: 100 } }, undefined, { onprogress: () => { progressSeen[i] = (progressSeen[i] ?? 0) + 1 }, timeout: 60_000 }).then(
      (result) => ({ i, isLong, outcome: 'completed', detail: textOf(result), ms: Date.now() - started }),
      (err: Error & { code?: number }) => ({ i, isLong, outcome: err.code === undefined ? 'other' : 'json-rpc error', detail: `${err.code ?? ''} ${err.message}`, ms: Date.now() - started }),
    )
  })
  t.ok(await eventually(() => progressSeen.every((n) => n >= 1), 10_000), 'all 20 calls are streaming progress')
  child.kill('SIGTERM')
  const deadline = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000).unref())
  const results = await Promise.race([Promise.all(calls), deadline])
  if (results === 'hung') throw new Error('a call neither completed nor failed within 15 s of SIGTERM')
  for (const r of results) {
    if (r.isLong) t.match(r, { outcome: 'json-rpc error', detail: /^-32603 .*Gateway is shutting down/ }, `long call ${r.i} failed at the deadline with a JSON-RPC error`)
    else t.match(r, { outcome: 'completed', detail: 'done 8' }, `short call ${r.i} completed during the drain`)
  }
  const code = await new Promise<number | null>((resolve) => { if (child.exitCode !== null) resolve(child.exitCode); else child.on('exit', (c) => resolve(c)) })
  t.equal(code, 0, 'the gateway exits cleanly')
  t.ok(await eventually(() => stdioPids.every((pid) => !isProcessAlive(pid))), 'no stdio child or grandchild outlives the gateway')
  t.same(stdioPids.flatMap((pid) => processGroupMembers(pid)), [], 'nothing left in their process groups')
  t.match(output(), /shutdown deadline reached/)
})

t.test('a connection that never sent a request does not hold the shutdown open', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  // A client that connected and then sent nothing (a browser's speculative connection, a
  // client aborted between connecting and writing): Node counts it as neither idle nor busy,
  // and server.close() waited for it until Node's own timeouts, over a minute.
  const socket = connect(Number(new URL(gw.baseUrl).port), '127.0.0.1')
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const started = performance.now()
  await closeGracefully(gw.app, 30_000)
  const tookMs = performance.now() - started
  t.ok(tookMs < 5_000, `closed without waiting for the silent connection (${Math.round(tookMs)} ms)`)
  await closed
  t.pass('the silent connection was closed by the gateway')
})
