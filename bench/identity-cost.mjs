#!/usr/bin/env node
// What servers[].identity costs the gateway per request, apart from everything else (issue 14):
// the upstream request is built and sent as the gateway does it (CallerHeaders.for,
// upstreamRequestHeaders, an undici Pool over a socket) to a responder in another process that
// answers at once, and this process's CPU is counted per request, in alternating blocks, round
// after round. The arms, each paired with the others in the same round:
//   off    no identity header;
//   sized  the same token bytes as a configured static header: what the header's size costs
//          (undici's validation, the bigger write), without the identity code;
//   on     servers[].identity of this tree's dist/ (and of each tree given, `name=<tree>`).
// "on − sized" is the identity code path; "sized − off" the bytes.
//
//   npm run build && node bench/identity-cost.mjs [before=/tmp/before]
//
// Environment: IDENTITY_ROUNDS (default 40), IDENTITY_BLOCK (requests per arm per round, default 5000).
import { spawn } from 'node:child_process'
import { cpus } from 'node:os'
import { resolve, join } from 'node:path'
import { Pool } from 'undici'
import { exportJWK, generateKeyPair } from 'jose'
import { ROOT, median } from './http-fixture.mjs'

const ROUNDS = Number(process.env.IDENTITY_ROUNDS ?? 40)
const BLOCK = Number(process.env.IDENTITY_BLOCK ?? 5000)
const CONNECTIONS = 50
const HEADER = 'X-Portcullis-Identity'
const BODY = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'

const trees = [['on', ROOT], ...process.argv.slice(2).map((arg) => {
  const at = arg.indexOf('=')
  if (at < 1) throw new Error(`expected name=<tree>, got ${arg}`)
  return [`on (${arg.slice(0, at)})`, resolve(arg.slice(at + 1))]
})]
const modules = await Promise.all(trees.map(async ([name, tree]) => ({
  name,
  CallerHeaders: (await import(join(tree, 'dist', 'upstreams', 'caller-headers.js'))).CallerHeaders,
  upstreamRequestHeaders: (await import(join(tree, 'dist', 'upstreams', 'http-upstream.js'))).upstreamRequestHeaders,
})))

// A responder that reads each request to its end and answers a fixed 200: as little upstream as can be.
const responder = spawn(process.execPath, ['-e', `
const res = Buffer.from('HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: 2\\r\\n\\r\\n{}')
require('node:net').createServer((c) => {
  let buf = ''
  c.on('data', (d) => {
    buf += d.toString('latin1')
    for (let end; (end = buf.indexOf('\\r\\n\\r\\n')) >= 0;) {
      const length = Number(/content-length: (\\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0)
      if (buf.length < end + 4 + length) break
      buf = buf.slice(end + 4 + length)
      c.write(res)
    }
  })
}).listen(0, '127.0.0.1', function () { console.log(this.address().port) })`], { stdio: ['ignore', 'pipe', 'inherit'] })
const port = await new Promise((resolve) => responder.stdout.once('data', (d) => resolve(Number(d))))
const url = `http://127.0.0.1:${port}/mcp`

const { privateKey } = await generateKeyPair('ES256', { extractable: true })
const signer = { issuer: 'http://127.0.0.1:1', key: { ...await exportJWK(privateKey), alg: 'ES256', kid: 'bench' }, now: () => Date.now(), onSigned: () => {} }
// As the route hands it over: the client's headers, and a new user object per request (userOf).
const ex = {
  get user () { return { id: 'client:bench', name: 'bench', groups: [], isClient: true } },
  owner: { user: 'client:bench', client: 'bench' },
  headers: { host: '127.0.0.1', 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': '0b7a4d9e-7b8c-4f4e-9d2a-5c1e7f3a2b10', 'mcp-protocol-version': '2025-11-25', authorization: `Bearer ${'x'.repeat(700)}`, 'content-length': String(BODY.length) },
}
const [own] = modules
const token = (await new own.CallerHeaders({ name: 'echo', url, headers: {}, identity: { header: HEADER } }, signer, undefined).for(ex))[HEADER.toLowerCase()]
const arms = {
  off: { ...own, headers: new own.CallerHeaders({ name: 'echo', url, headers: {} }, signer, undefined) },
  sized: { ...own, headers: new own.CallerHeaders({ name: 'echo', url, headers: { [HEADER.toLowerCase()]: token } }, signer, undefined) },
}
for (const m of modules) arms[m.name] = { ...m, headers: new m.CallerHeaders({ name: 'echo', url, headers: {}, identity: { header: HEADER } }, signer, undefined) }

const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS })
const noForwardHeaders = new Set()
const send = (arm) => new Promise((resolve, reject) => {
  let configured = arm.headers.for(ex)
  if (configured instanceof Promise) { configured.then(() => send(arm)).then(resolve, reject); return }
  pool.dispatch({ path: '/mcp', method: 'POST', headers: arm.upstreamRequestHeaders(ex.headers, noForwardHeaders, configured), body: BODY, blocking: true }, {
    onConnect () {}, onHeaders () { return true }, onData () { return true }, onComplete: resolve, onError: reject,
  })
})
const block = async (arm, n) => {
  let sent = 0
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => { while (sent++ < n) await send(arm) }))
}
const cpuUs = () => { const u = process.cpuUsage(); return u.user + u.system }

const names = Object.keys(arms)
for (const name of names) await block(arms[name], 4 * BLOCK)
const perRequest = Object.fromEntries(names.map((n) => [n, []]))
for (let round = 0; round < ROUNDS; round++) {
  for (const name of round % 2 === 0 ? names : [...names].reverse()) {
    const before = cpuUs()
    await block(arms[name], BLOCK)
    perRequest[name].push((cpuUs() - before) / BLOCK)
  }
}
await pool.close()
responder.kill()

const quantile = (values, q) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]
const signed = (x) => `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(2)}`
const lines = [`Identity header cost in process — ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version} — ${ROUNDS} rounds of ${BLOCK} requests per arm, ${CONNECTIONS} connections, token ${token.length} characters`, '',
  '| arm | CPU µs/req (median) |', '| --- | ---: |', ...names.map((n) => `| ${n} | ${median(perRequest[n]).toFixed(2)} |`), '',
  '| paired difference, same round | µs/req (median) | interquartile range | rounds below 0 |', '| --- | ---: | ---: | ---: |']
const pairs = [['sized', 'off'], ...modules.flatMap((m) => [[m.name, 'off'], [m.name, 'sized']]), ...modules.slice(1).map((m) => [own.name, m.name])]
for (const [a, b] of pairs) {
  const d = perRequest[a].map((x, i) => x - perRequest[b][i])
  lines.push(`| ${a} − ${b} | ${signed(median(d))} | ${signed(quantile(d, 0.25))} to ${signed(quantile(d, 0.75))} | ${d.filter((x) => x < 0).length}/${d.length} |`)
}
process.stdout.write(`${lines.join('\n')}\n`)
process.exit(0)
