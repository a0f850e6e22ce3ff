#!/usr/bin/env node
// Where a virtual server's extra CPU goes (issue 16: a tools/call through a virtual server costs
// at most 25 µs of gateway CPU more than through the member's own URL; `BENCH_ONLY=virtual npm
// run bench` measures it). One gateway (dist/) under `node --cpu-prof`, the virtual scenario's
// configuration (auth off; the HTTP fixture as the member `echo`, virtual server `v` of it with
// prefix: always); the member URL and the virtual URL loaded in turn, one window each, the
// profile's samples split by window (V8's profile clock is the monotonic clock process.hrtime
// reads), and per request: self time by place (gateway source file, package, node internal),
// inclusive time by function, and each one's virtual − member difference.
//
//   npm run build && node bench/profile-virtual.mjs
//   PROFILE_TOP=100 node bench/profile-virtual.mjs --summarise   # again, from the saved profile
//
// Environment: PROFILE_DURATION (seconds per window, default 10), PROFILE_WARMUP (default 3),
// PROFILE_CONNECTIONS (default 50), PROFILE_INTERVAL_US (default 250), PROFILE_TOP (rows, default 30).
// The profile lands in bench/results/profiles/virtual.cpuprofile, the windows beside it.
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const OUT = join(ROOT, 'bench', 'results', 'profiles')
const DURATION_S = Number(process.env.PROFILE_DURATION ?? 10)
const WARMUP_S = Number(process.env.PROFILE_WARMUP ?? 3)
const CONNECTIONS = Number(process.env.PROFILE_CONNECTIONS ?? 50)
const INTERVAL_US = Number(process.env.PROFILE_INTERVAL_US ?? 250)
const TOP = Number(process.env.PROFILE_TOP ?? 30)
const ACCEPT = 'application/json, text/event-stream'
const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const children = []
process.on('exit', () => { for (const c of children) try { c.kill('SIGKILL') } catch { /* gone */ } })

async function freePort () {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)) })
  })
}

function spawnNode (args, opts = {}) {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  children.push(child)
  let err = ''
  child.stderr.on('data', (d) => { err += d })
  child.on('exit', (code, signal) => { if (code !== 0 && signal === null && code !== null) process.stderr.write(`${args[args.length - 1]} exited ${code}: ${err.slice(-500)}\n`) })
  return child
}

async function startUpstream () {
  const child = spawnNode([join(ROOT, 'test', 'fixtures', 'http-mcp-server.mjs')])
  const line = await new Promise((resolve) => {
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      const l = out.split('\n').find((x) => x.includes('"port"'))
      if (l !== undefined) resolve(l)
    })
  })
  return JSON.parse(line).url
}

async function startGateway (upstreamUrl, profileDir) {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-profile-virtual-'))
  const config = join(dir, 'gw.yaml')
  writeFileSync(config, `publicUrl: http://127.0.0.1:${port}\nlisten: { host: 127.0.0.1, port: ${port} }\ndataDir: ${join(dir, 'data')}\nlog: { level: warn }\nauth: { enabled: false }
servers:\n  - { name: echo, transport: http, url: "${upstreamUrl}" }\nvirtualServers:\n  - { name: v, members: [echo], prefix: always }\n`)
  const child = spawnNode([`--cpu-prof`, `--cpu-prof-dir=${profileDir}`, `--cpu-prof-interval=${INTERVAL_US}`, join(ROOT, 'dist', 'main.js'), 'start', '--config', config])
  for (let i = 0; i < 400; i++) {
    if (await fetch(`http://127.0.0.1:${port}/healthz`).then(() => true, () => false)) return { child, port }
    await sleep(50)
  }
  throw new Error('the gateway never answered')
}

async function openSession (url) {
  const init = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: ACCEPT }, body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'profile', version: '1' } } }) })
  await init.text()
  const headers = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-session-id': init.headers.get('mcp-session-id'), 'mcp-protocol-version': '2025-11-25' }
  await (await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })).text()
  return headers
}

function load (url, headers, tool, seconds) {
  let id = 0
  return autocannon({
    url, method: 'POST', connections: CONNECTIONS, duration: seconds, headers,
    requests: [{ setupRequest: (req) => ({ ...req, body: `{"jsonrpc":"2.0","id":${++id},"method":"tools/call","params":{"name":"${tool}","arguments":{"text":"hello"}}}` }) }],
  })
}

/** gateway source file, package, or node internal */
function placeOf (url) {
  if (url === '') return '(native/V8)'
  if (url.startsWith('node:')) return url
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const nm = path.lastIndexOf(`${sep}node_modules${sep}`)
  if (nm >= 0) {
    const rest = path.slice(nm + 14).split(sep)
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  const rel = relative(ROOT, path)
  return rel.startsWith('dist') ? rel.replace(/^dist/, 'src').replace(/\.js$/, '.ts') : rel
}

/** Self time by place and inclusive time by function, in µs, for the samples inside [fromUs, toUs). */
function summarise (profile, fromUs, toUs) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map()
  const inclusive = new Map()
  const add = (m, k, v) => m.set(k, (m.get(k) ?? 0) + v)
  let t = profile.startTime
  let total = 0
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    const dt = profile.timeDeltas[i + 1] ?? 0
    if (t < fromUs || t >= toUs || dt <= 0) continue
    const leaf = byId.get(profile.samples[i])
    const name = leaf.callFrame.functionName
    if (name === '(idle)') continue
    total += dt
    add(self, name === '(garbage collector)' || name === '(program)' ? name : placeOf(leaf.callFrame.url), dt)
    const seen = new Set()
    for (let id = leaf.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id).callFrame
      if (f.url === '' || f.url.startsWith('node:')) continue
      const key = `${f.functionName || '(anonymous)'} ${placeOf(f.url)}:${f.lineNumber + 1}`
      if (!seen.has(key)) { seen.add(key); add(inclusive, key, dt) }
    }
  }
  return { total, self, inclusive }
}

function diffTable (title, a, b, requestsA, requestsB) {
  const keys = new Set([...a.keys(), ...b.keys()])
  const rows = [...keys].map((k) => {
    const m = (a.get(k) ?? 0) / requestsA
    const v = (b.get(k) ?? 0) / requestsB
    return { k, m, v, d: v - m }
  }).sort((x, y) => y.d - x.d).slice(0, TOP)
  return [`#### ${title}`, '', '| | member µs/req | virtual µs/req | virtual − member |', '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.k.replaceAll('|', '\\|')} | ${r.m.toFixed(1)} | ${r.v.toFixed(1)} | ${r.d.toFixed(1)} |`), ''].join('\n')
}

mkdirSync(OUT, { recursive: true })
const path = join(OUT, 'virtual.cpuprofile')
const windowsPath = join(OUT, 'virtual.windows.json')
if (process.argv[2] !== '--summarise') await run()
report(JSON.parse(readFileSync(path, 'utf8')), JSON.parse(readFileSync(windowsPath, 'utf8')))
process.exit(0)

/** The load under the profiler; the profile and each window's times and request count are saved. */
async function run () {
const profileDir = mkdtempSync(join(tmpdir(), 'portcullis-cpuprof-'))
const upstreamUrl = await startUpstream()
const { child: gateway, port } = await startGateway(upstreamUrl, profileDir)
const targets = [
  { key: 'member', url: `http://127.0.0.1:${port}/echo/mcp`, tool: 'echo' },
  { key: 'virtual', url: `http://127.0.0.1:${port}/v/mcp`, tool: 'echo__echo' },
]
for (const target of targets) {
  target.headers = await openSession(target.url)
  const r = await load(target.url, target.headers, target.tool, WARMUP_S)
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${target.key}: ${r.non2xx} non-2xx, ${r.errors} errors`)
}
for (const target of targets) {
  await sleep(200)
  target.from = nowUs()
  const r = await load(target.url, target.headers, target.tool, DURATION_S)
  target.to = nowUs()
  target.requests = r.requests.total
  target.reqPerSec = Math.round(r.requests.average)
}
const exited = new Promise((resolve) => gateway.once('exit', resolve))
gateway.kill('SIGTERM')
await exited
const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'))
if (file === undefined) throw new Error('the gateway wrote no profile')
renameSync(join(profileDir, file), path)
writeFileSync(windowsPath, JSON.stringify(targets.map(({ key, from, to, requests, reqPerSec }) => ({ key, from, to, requests, reqPerSec }))))
}

function report (profile, windows) {
const [member, virtual] = windows.map((t) => ({ ...t, ...summarise(profile, t.from, t.to) }))
process.stdout.write([
  `### Gateway CPU profile, member URL vs virtual URL (${new Date().toISOString()}, ${DURATION_S} s each, ${CONNECTIONS} connections, sampled every ${INTERVAL_US} µs)`, '',
  `member: ${member.requests} requests (${member.reqPerSec} req/s), ${(member.total / member.requests).toFixed(1)} µs of samples per request; ` +
  `virtual: ${virtual.requests} requests (${virtual.reqPerSec} req/s), ${(virtual.total / virtual.requests).toFixed(1)} µs per request; ` +
  `difference ${(virtual.total / virtual.requests - member.total / member.requests).toFixed(1)} µs (the profiler's own overhead included in both).`, '',
  diffTable('Self time by place (gateway file, package, node internal)', member.self, virtual.self, member.requests, virtual.requests),
  diffTable('Inclusive time by function (JavaScript frames)', member.inclusive, virtual.inclusive, member.requests, virtual.requests),
].join('\n') + '\n')
}
