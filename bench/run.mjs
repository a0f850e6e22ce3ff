#!/usr/bin/env node
// `npm run bench`: Portcullis against the same MCP upstream reached directly (HTTP), and against
// the peer stdio bridges (supergateway, mcp-proxy) bridging the same stdio server, in one run.
// Reports req/s, p50/p99 latency, ratios, and each bridge process's own CPU time per request
// (from /proc/<pid>/stat), the figure that survives a noisy shared machine.
//
// Environment: BENCH_DURATION (seconds per measurement, default 10), BENCH_CONNECTIONS (HTTP
// scenario, default 50), BENCH_VIRTUAL_ROUNDS (virtual scenario, default 12), BENCH_ONLY (comma-separated: http, identity, stdio, open, replicas, streams, redact, virtual), BENCH_REDIS_URL
// (replicas scenario, default redis://127.0.0.1:6379), BENCH_STREAMS (streams scenario, default 5000).
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdtempSync, mkdirSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createServer, createConnection } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import autocannon from 'autocannon'
import { Agent, request } from 'undici'
import { Redis } from 'ioredis'
import { redactScenario } from './redact-results.mjs'
import { openSession } from './http-fixture.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const BENCH = join(ROOT, 'bench')
const DURATION_S = Number(process.env.BENCH_DURATION ?? 10)
const WARMUP_S = Math.max(2, Math.round(DURATION_S / 4))
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const ONLY = process.env.BENCH_ONLY?.split(',')
const CLK_TCK = 100 // Linux USER_HZ; /proc/<pid>/stat counts in these ticks
const PAGE_KB = 4
const STDIO_SERVER = join(ROOT, 'test', 'fixtures', 'stdio-server.mjs')
const HTTP_SERVER = join(ROOT, 'test', 'fixtures', 'http-mcp-server.mjs')

const children = new Set()
process.on('exit', () => { for (const c of children) killTree(c) })
process.on('SIGINT', () => process.exit(130))

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function killTree (child) {
  for (const pid of [...descendants(child.pid), child.pid]) {
    try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
  }
}

async function freePort () {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)) })
  })
}

/** Spawns a process (its stdout ignored unless `ready` is given, then resolves on the first matching line). */
function startProcess (command, args, { ready, cwd = ROOT, env = {} } = {}) {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  children.add(child)
  let out = ''
  child.stderr.on('data', (d) => { out += d.toString() })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} ${args.join(' ')} did not start: ${out.slice(-500)}`)), 30_000)
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${command} exited with ${code}: ${out.slice(-500)}`)) })
    if (ready === undefined) { clearTimeout(timer); resolve({ child }); return }
    child.stdout.on('data', (d) => {
      out += d.toString()
      const line = out.split('\n').find((l) => ready.test(l))
      if (line !== undefined) { clearTimeout(timer); resolve({ child, line }) }
    })
  })
}

async function waitForHttp (url) {
  for (let i = 0; i < 400; i++) {
    const ok = await fetch(url, { method: 'GET' }).then(() => true, () => false)
    if (ok) return
    await sleep(50)
  }
  throw new Error(`${url} never answered`)
}

function statOf (pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return { ppid: Number(fields[1]), cpuS: (Number(fields[11]) + Number(fields[12])) / CLK_TCK, rssKb: Number(fields[21]) * PAGE_KB }
}

function descendants (pid) {
  const byParent = new Map()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const { ppid } = statOf(Number(entry))
      if (!byParent.has(ppid)) byParent.set(ppid, [])
      byParent.get(ppid).push(Number(entry))
    } catch { /* the process ended while we looked */ }
  }
  const out = []
  const walk = (p) => { for (const c of byParent.get(p) ?? []) { out.push(c); walk(c) } }
  walk(pid)
  return out
}

function safeStat (pid) {
  try { return statOf(pid) } catch { return { cpuS: 0, rssKb: 0, ppid: 0 } }
}

/** CPU of the process itself, and of everything below it (stdio children, shells). */
function treeUsage (pid) {
  const own = safeStat(pid)
  const below = descendants(pid).map(safeStat)
  return { ownCpuS: own.cpuS, childCpuS: below.reduce((a, s) => a + s.cpuS, 0), processes: 1 + below.length, rssKb: own.rssKb + below.reduce((a, s) => a + s.rssKb, 0) }
}

/** tools/call `tool` (echo) over `connections` connections; connection i uses session i % sessions.length. */
function runLoad (url, sessions, connections, seconds, tool = 'echo') {
  let id = 0
  let next = 0
  return autocannon({
    url,
    method: 'POST',
    connections,
    duration: seconds,
    headers: sessions[0],
    requests: [{
      setupRequest: (req, context) => {
        context.headers ??= sessions[next++ % sessions.length]
        // Unique ids: a bridge routes each response to its request by id.
        return { ...req, headers: context.headers, body: `{"jsonrpc":"2.0","id":${++id},"method":"tools/call","params":{"name":"${tool}","arguments":{"text":"hello"}}}` }
      },
    }],
  })
}

async function measure (label, url, sessions, connections, bridgePid) {
  await runLoad(url, sessions, connections, WARMUP_S)
  const before = treeUsage(bridgePid)
  const r = await runLoad(url, sessions, connections, DURATION_S)
  const after = treeUsage(bridgePid)
  const per = (s) => Math.round((s * 1e6) / Math.max(1, r.requests.total))
  return {
    label,
    reqPerSec: Math.round(r.requests.average),
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    total: r.requests.total,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    bridgeCpuUsPerReq: per(after.ownCpuS - before.ownCpuS),
    childCpuUsPerReq: per(after.childCpuS - before.childCpuS),
    processes: after.processes,
    rssMb: Math.round(after.rssKb / 1024),
  }
}

async function startGateway (configText, port, env = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
  const configPath = join(dir, 'bench.yaml')
  const auth = configText.includes('auth:') ? '' : 'auth: { enabled: false }\n'
  writeFileSync(configPath, `publicUrl: http://127.0.0.1:${port}\nlisten: { host: 127.0.0.1, port: ${port} }\ndataDir: ${join(dir, 'data')}\nlog: { level: warn }\n${auth}${configText}`)
  const { child } = await startProcess(process.execPath, [join(ROOT, 'dist', 'main.js'), 'start', '--config', configPath], { env })
  await waitForHttp(`http://127.0.0.1:${port}/healthz`)
  return child
}

function stop (child) {
  killTree(child)
  children.delete(child)
}

// --- scenarios ------------------------------------------------------------------

const BENCH_CLIENT_SECRET = 'bench-client-secret-of-at-least-32-chars'

/** An access token for `resource`, from a pre-registered machine client (client_credentials). */
async function machineToken (port, resource) {
  const res = await fetch(`http://127.0.0.1:${port}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`bench:${BENCH_CLIENT_SECRET}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource }).toString(),
  })
  const body = await res.json()
  if (res.status !== 200) throw new Error(`token request failed: ${JSON.stringify(body)}`)
  return body.access_token
}

const HTTP_ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)

/**
 * Stands in for an OpenTelemetry collector: takes the gateway's OTLP/HTTP exports and discards
 * them (the row measures the gateway's side of tracing, not a collector's).
 */
async function startDiscardingOtlpReceiver () {
  let exports = 0
  const server = createHttpServer((req, res) => {
    req.resume()
    req.on('end', () => {
      exports++
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}`, exports: () => exports, close: () => new Promise((resolve) => server.close(resolve)) }
}

/** Median of numbers. */
function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

/**
 * The machine's speed drifts (on a shared VM, by 2x from one minute to the next), so the targets
 * are measured in alternating short windows over several rounds and the medians reported; a
 * minimal undici hop measured in the same rounds is the yardstick for the gateway's cost.
 */
async function httpScenario () {
  const { child: upstream, line } = await startProcess(process.execPath, [HTTP_SERVER], { ready: /"port"/ })
  const { url } = JSON.parse(line)
  const hopPort = await freePort()
  const { child: hop } = await startProcess(process.execPath, [join(BENCH, 'reference-hop.mjs'), url, String(hopPort)], { ready: /ready/ })
  // Two more yardsticks: the same hop inside a Fastify route, and that plus the work every
  // configuration does (the body inspected, an audit record, the request metrics): the floor
  // of the bare row with Fastify, prom-client and the audit format kept.
  const fastifyHopPort = await freePort()
  const { child: fastifyHopChild } = await startProcess(process.execPath, [join(BENCH, 'fastify-hop.mjs'), url, String(fastifyHopPort)], { ready: /ready/ })
  const floorHopPort = await freePort()
  const { child: floorHopChild } = await startProcess(process.execPath, [join(BENCH, 'floor-hop.mjs'), url, String(floorHopPort)], { ready: /ready/ })
  const port = await freePort()
  const gateway = await startGateway(`servers:\n  - { name: echo, transport: http, url: "${url}" }\n`, port)
  // The same path with the token check on: every request carries a bearer JWT the gateway verifies.
  const authPort = await freePort()
  const authGateway = await startGateway(`auth:\n  clients: [{ clientId: bench, clientSecret: "${BENCH_CLIENT_SECRET}", grantTypes: [client_credentials] }]\nservers:\n  - { name: echo, transport: http, url: "${url}" }\n`, authPort)
  const authUrl = `http://127.0.0.1:${authPort}/echo/mcp`
  const token = await machineToken(authPort, authUrl)
  // The same again with servers[].identity: a signed identity header on every upstream request (cached per caller).
  const identityPort = await freePort()
  const identityGateway = await startGateway(`auth:\n  clients: [{ clientId: bench, clientSecret: "${BENCH_CLIENT_SECRET}", grantTypes: [client_credentials] }]\nservers:\n  - { name: echo, transport: http, url: "${url}", identity: { header: X-Portcullis-Identity } }\n`, identityPort)
  const identityUrl = `http://127.0.0.1:${identityPort}/echo/mcp`
  const identityToken = await machineToken(identityPort, identityUrl)
  // Everything on: token check, a rule set, limits that never trigger, and the audit trail to its file.
  const fullPort = await freePort()
  const fullGateway = await startGateway(`auth:\n  clients: [{ clientId: bench, clientSecret: "${BENCH_CLIENT_SECRET}", grantTypes: [client_credentials] }]
rateLimits: { perUser: 100000000/min, perUserPerTool: 100000000/min }
servers:
  - name: echo
    transport: http
    url: "${url}"
    access: { clients: [bench] }
    tools:
      deny: [delete_*, admin_*]
      echo: { rateLimit: 100000000/min, globalRateLimit: 100000000/min }
`, fullPort)
  const fullUrl = `http://127.0.0.1:${fullPort}/echo/mcp`
  const fullToken = await machineToken(fullPort, fullUrl)
  // The token-checked path with traces on: every request's spans batched and exported over OTLP/HTTP.
  const receiver = await startDiscardingOtlpReceiver()
  const tracedPort = await freePort()
  const tracedGateway = await startGateway(`auth:\n  clients: [{ clientId: bench, clientSecret: "${BENCH_CLIENT_SECRET}", grantTypes: [client_credentials] }]\ntelemetry: { otlp: { endpoint: "${receiver.url}" } }\nservers:\n  - { name: echo, transport: http, url: "${url}" }\n`, tracedPort)
  const tracedUrl = `http://127.0.0.1:${tracedPort}/echo/mcp`
  const tracedToken = await machineToken(tracedPort, tracedUrl)
  const targets = [
    { key: 'direct', label: 'direct', url, pid: upstream.pid },
    { key: 'reference', label: 'minimal node:http + undici hop (reference)', url: `http://127.0.0.1:${hopPort}/mcp`, pid: hop.pid },
    { key: 'fastifyHop', label: 'the same hop in a Fastify route', url: `http://127.0.0.1:${fastifyHopPort}/mcp`, pid: fastifyHopChild.pid },
    { key: 'floorHop', label: '… + body inspection, audit record, metrics (the floor)', url: `http://127.0.0.1:${floorHopPort}/mcp`, pid: floorHopChild.pid },
    { key: 'through', label: 'via Portcullis', url: `http://127.0.0.1:${port}/echo/mcp`, pid: gateway.pid },
    { key: 'withAuth', label: 'via Portcullis, token checked', url: authUrl, pid: authGateway.pid, headers: { authorization: `Bearer ${token}` } },
    { key: 'withIdentity', label: 'via Portcullis, token checked + identity header', url: identityUrl, pid: identityGateway.pid, headers: { authorization: `Bearer ${identityToken}` } },
    { key: 'full', label: 'via Portcullis, token + policy + 3 limits + audit', url: fullUrl, pid: fullGateway.pid, headers: { authorization: `Bearer ${fullToken}` } },
    { key: 'traced', label: 'via Portcullis, token + tracing on (OTLP to a local receiver)', url: tracedUrl, pid: tracedGateway.pid, headers: { authorization: `Bearer ${tracedToken}` } },
  ]
  for (const target of targets) target.session = await openSession(target.url, target.headers ?? {})
  const windowS = Math.max(2, Math.round(DURATION_S / HTTP_ROUNDS))
  const rounds = Object.fromEntries(targets.map((t) => [t.key, []]))
  for (const target of targets) await runLoad(target.url, [target.session], CONNECTIONS, WARMUP_S)
  for (let round = 0; round < HTTP_ROUNDS; round++) {
    for (const target of targets) {
      const before = treeUsage(target.pid).ownCpuS
      const r = await runLoad(target.url, [target.session], CONNECTIONS, windowS)
      const cpuUs = Math.round(((treeUsage(target.pid).ownCpuS - before) * 1e6) / Math.max(1, r.requests.total))
      rounds[target.key].push({ reqPerSec: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.timeouts + r.non2xx, cpuUs })
    }
  }
  // A floor that built no audit records would measure less than it says.
  const { records } = await (await fetch(`http://127.0.0.1:${floorHopPort}/records`)).json()
  if (!(records > 0)) throw new Error('the floor hop recorded no audit records')
  for (const child of [upstream, hop, fastifyHopChild, floorHopChild, gateway, authGateway, identityGateway, fullGateway, tracedGateway]) stop(child)
  // A tracing row whose spans never left the gateway would measure nothing.
  if (receiver.exports() === 0) throw new Error('the tracing gateway exported no spans')
  await receiver.close()
  const summary = Object.fromEntries(targets.map((t) => {
    const rs = rounds[t.key]
    return [t.key, {
      label: t.label,
      reqPerSec: Math.round(median(rs.map((r) => r.reqPerSec))),
      p50Ms: median(rs.map((r) => r.p50)),
      p99Ms: median(rs.map((r) => r.p99)),
      errors: rs.reduce((a, r) => a + r.errors, 0),
      cpuUsPerReq: median(rs.map((r) => r.cpuUs)),
      cpuRange: `${Math.min(...rs.map((r) => r.cpuUs))}–${Math.max(...rs.map((r) => r.cpuUs))}`,
    }]
  }))
  const { direct, reference, fastifyHop, floorHop, through, withAuth, withIdentity, full, traced } = summary
  return {
    name: 'http',
    title: `Streamable HTTP upstream (MCP SDK 1.32, stateful, SSE responses): tools/call echo, ${CONNECTIONS} connections, one session; medians of ${HTTP_ROUNDS} alternating ${windowS} s windows`,
    columns: ['req/s', 'p50 ms', 'p99 ms', 'errors', 'ratio vs direct', 'process CPU µs/req (range)', 'CPU vs reference hop'],
    rows: [direct, reference, fastifyHop, floorHop, through, withAuth, withIdentity, full, traced].map((r) => [r.label, r.reqPerSec, r.p50Ms, r.p99Ms, r.errors, (r.reqPerSec / direct.reqPerSec).toFixed(2),
      `${r.cpuUsPerReq} (${r.cpuRange})${r === direct ? ' upstream' : ''}`, r === direct ? '–' : (r.cpuUsPerReq / reference.cpuUsPerReq).toFixed(2)]),
    summary: `Gateway CPU per request (median): ${through.cpuUsPerReq} µs bare, ${withAuth.cpuUsPerReq} µs with the token check, ${withIdentity.cpuUsPerReq} µs with the token check and the identity header (servers[].identity), ${full.cpuUsPerReq} µs with token, policy, limits and audit, ${traced.cpuUsPerReq} µs with the token check and tracing on (spans exported over OTLP/HTTP) — ${(through.cpuUsPerReq / reference.cpuUsPerReq).toFixed(2)}×, ${(withAuth.cpuUsPerReq / reference.cpuUsPerReq).toFixed(2)}× and ${(full.cpuUsPerReq / reference.cpuUsPerReq).toFixed(2)}× a minimal undici hop measured in the same rounds (${reference.cpuUsPerReq} µs); the floor of the bare row (that hop in Fastify, with the inspection, audit record and metrics every configuration does) ${(floorHop.cpuUsPerReq / reference.cpuUsPerReq).toFixed(2)}×.`,
    raw: rounds,
  }
}

/** Issue 16's target: a tools/call through a virtual server costs at most this much more gateway CPU than through its member's URL. */
const VIRTUAL_TARGET_US = 25
/** Rounds of the virtual scenario (BENCH_VIRTUAL_ROUNDS): its difference is a few per cent of a request, so more than the http scenario's. */
const VIRTUAL_ROUNDS = Number(process.env.BENCH_VIRTUAL_ROUNDS ?? 12)

/**
 * Pins the measured processes (and their threads) to CPU 0 and the load's to CPU 1 with taskset
 * (util-linux), so that neither takes the other's time; false where that cannot be done.
 */
function pin (measured, load) {
  if (cpus().length < 2) return false
  try {
    for (const pid of measured) execFileSync('taskset', ['-a', '-p', '-c', '0', String(pid)], { stdio: 'ignore' })
    for (const pid of load) execFileSync('taskset', ['-a', '-p', '-c', '1', String(pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** This process may use every CPU again (the later scenarios are measured unpinned). */
function unpin (pinned) {
  if (pinned) execFileSync('taskset', ['-a', '-p', '-c', `0-${cpus().length - 1}`, String(process.pid)], { stdio: 'ignore' })
}

/**
 * One gateway process, one member (the HTTP fixture) reached two ways: its own URL, and a
 * virtual server whose only member it is (prefix: always, so the virtual URL is called with the
 * merged name `echo__echo`). A session on each URL, the same tools/call body, alternating windows
 * as in the http scenario; the difference of the gateway's CPU per request is what the virtual
 * layer costs (its route, the merged-name lookup, the in-process request to the member's route).
 * Twice: with auth off, and with the token check on (a machine client's token for each URL).
 */
async function virtualScenario () {
  const { child: upstream, line } = await startProcess(process.execPath, [HTTP_SERVER], { ready: /"port"/ })
  const { url } = JSON.parse(line)
  const servers = `servers:\n  - { name: echo, transport: http, url: "${url}" }\nvirtualServers:\n  - { name: v, members: [echo], prefix: always }\n`
  const port = await freePort()
  const gateway = await startGateway(servers, port)
  const authPort = await freePort()
  const authGateway = await startGateway(`auth:\n  clients: [{ clientId: bench, clientSecret: "${BENCH_CLIENT_SECRET}", grantTypes: [client_credentials] }]\n${servers}`, authPort)
  const bearer = async (u) => ({ authorization: `Bearer ${await machineToken(authPort, u)}` })
  const at = (p, name) => `http://127.0.0.1:${p}/${name}/mcp`
  const targets = [
    { key: 'member', label: 'member URL (/echo/mcp), tools/call echo', url: at(port, 'echo'), tool: 'echo', pid: gateway.pid },
    { key: 'virtual', label: 'virtual URL (/v/mcp), tools/call echo__echo', url: at(port, 'v'), tool: 'echo__echo', pid: gateway.pid },
    { key: 'memberAuth', label: 'member URL, token checked', url: at(authPort, 'echo'), tool: 'echo', pid: authGateway.pid, headers: await bearer(at(authPort, 'echo')) },
    { key: 'virtualAuth', label: 'virtual URL, token checked', url: at(authPort, 'v'), tool: 'echo__echo', pid: authGateway.pid, headers: await bearer(at(authPort, 'v')) },
  ]
  for (const target of targets) target.session = await openSession(target.url, target.headers ?? {})
  const windowS = 2
  const rounds = Object.fromEntries(targets.map((t) => [t.key, []]))
  // The machine's speed drifts from minute to minute, by more than the layer costs: the gateways
  // get one CPU and the load and the upstream the other (when taskset is there), and each round
  // measures the two URLs of a gateway back to back, in alternating order.
  const pinned = pin([gateway.pid, authGateway.pid], [upstream.pid, process.pid])
  for (const target of targets) {
    const r = await runLoad(target.url, [target.session], CONNECTIONS, WARMUP_S, target.tool)
    if (r.non2xx > 0 || r.errors > 0) throw new Error(`${target.label}: ${r.non2xx} non-2xx answers and ${r.errors} errors in the warm-up`)
  }
  for (let round = 0; round < VIRTUAL_ROUNDS; round++) {
    for (const pair of [targets.slice(0, 2), targets.slice(2)]) {
      for (const target of round % 2 === 0 ? pair : [...pair].reverse()) {
        const before = treeUsage(target.pid).ownCpuS
        const r = await runLoad(target.url, [target.session], CONNECTIONS, windowS, target.tool)
        const cpuUs = Math.round(((treeUsage(target.pid).ownCpuS - before) * 1e6) / Math.max(1, r.requests.total))
        rounds[target.key].push({ reqPerSec: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.timeouts + r.non2xx, cpuUs })
      }
    }
  }
  unpin(pinned)
  // An answer must be the tool's: a JSON-RPC error is a 200 too.
  for (const target of targets) {
    // autocannon wrote its own content-length into the session's headers.
    const headers = Object.fromEntries(Object.entries(target.session).filter(([name]) => name.toLowerCase() !== 'content-length'))
    const res = await fetch(target.url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 'check', method: 'tools/call', params: { name: target.tool, arguments: { text: 'hello' } } }) })
    const text = await res.text()
    if (!text.includes('"text":"hello"') || text.includes('"error"')) throw new Error(`${target.label} did not reach the tool: ${text.slice(0, 300)}`)
  }
  for (const child of [upstream, gateway, authGateway]) stop(child)
  const s = Object.fromEntries(targets.map((t) => {
    const rs = rounds[t.key]
    return [t.key, {
      label: t.label,
      reqPerSec: Math.round(median(rs.map((r) => r.reqPerSec))),
      p50Ms: median(rs.map((r) => r.p50)),
      p99Ms: median(rs.map((r) => r.p99)),
      errors: rs.reduce((a, r) => a + r.errors, 0),
      cpuUsPerReq: median(rs.map((r) => r.cpuUs)),
      cpuRange: `${Math.min(...rs.map((r) => r.cpuUs))}–${Math.max(...rs.map((r) => r.cpuUs))}`,
    }]
  }))
  // The difference per round (the two windows of a round are seconds apart), then its median.
  const extra = (a, b) => median(rounds[b].map((r, i) => r.cpuUs - rounds[a][i].cpuUs))
  const bare = extra('member', 'virtual')
  const checked = extra('memberAuth', 'virtualAuth')
  const ratio = (a, b) => median(rounds[b].map((r, i) => r.cpuUs / rounds[a][i].cpuUs)).toFixed(3)
  const verdict = (us, a, b) => `${us} µs (${us <= VIRTUAL_TARGET_US ? 'within' : 'over'} the ${VIRTUAL_TARGET_US} µs target); ${ratio(a, b)}× the member URL's CPU`
  const row = (r) => [r.label, r.reqPerSec, r.p50Ms, r.p99Ms, r.errors, `${r.cpuUsPerReq} (${r.cpuRange})`, '–']
  return {
    name: 'virtual',
    title: `Virtual server of one member (the HTTP fixture, MCP SDK 1.32, SSE responses) against the member's own URL, one gateway process: tools/call, ${CONNECTIONS} connections, one session per URL; medians of ${VIRTUAL_ROUNDS} rounds of back-to-back ${windowS} s windows${pinned ? ', gateways on CPU 0, load and upstream on CPU 1' : ''}`,
    columns: ['req/s', 'p50 ms', 'p99 ms', 'errors', 'gateway CPU µs/req (range)', 'virtual − member µs/req, and virtual / member (medians of rounds)'],
    rows: [
      row(s.member), row(s.virtual), ['difference, auth off', '', '', '', '', '', verdict(bare, 'member', 'virtual')],
      row(s.memberAuth), row(s.virtualAuth), ['difference, token checked', '', '', '', '', '', verdict(checked, 'memberAuth', 'virtualAuth')],
    ],
    summary: `A tools/call through the virtual server costs ${bare} µs of gateway CPU more than through the member's URL with auth off (${ratio('member', 'virtual')}× its CPU), ${checked} µs with the token check (${ratio('memberAuth', 'virtualAuth')}×); target: at most ${VIRTUAL_TARGET_US} µs.${pinned ? ' Gateways pinned to CPU 0, load and upstream to CPU 1.' : ''}`,
    raw: rounds,
  }
}

const STDIO_COMMAND = [process.execPath, STDIO_SERVER]

async function bridges () {
  const list = []
  const gwPort = await freePort()
  list.push({
    label: 'Portcullis (isolation: session)',
    url: `http://127.0.0.1:${gwPort}/echo/mcp`,
    start: () => startGateway(`servers:\n  - { name: echo, transport: stdio, command: "${STDIO_COMMAND[0]}", args: ["${STDIO_COMMAND[1]}"], maxProcesses: 64 }\n`, gwPort),
  })
  const sharedPort = await freePort()
  list.push({
    label: 'Portcullis (isolation: shared)',
    url: `http://127.0.0.1:${sharedPort}/echo/mcp`,
    start: () => startGateway(`servers:\n  - { name: echo, transport: stdio, command: "${STDIO_COMMAND[0]}", args: ["${STDIO_COMMAND[1]}"], isolation: shared }\n`, sharedPort),
  })
  const sgBin = join(BENCH, 'node_modules', 'supergateway', 'dist', 'index.js')
  const mpBin = join(BENCH, 'node_modules', 'mcp-proxy', 'dist', 'bin', 'mcp-proxy.mjs')
  if (existsSync(sgBin)) {
    const port = await freePort()
    list.push({
      label: 'supergateway 4.0.0 --stateful',
      url: `http://127.0.0.1:${port}/mcp`,
      start: async () => {
        const { child } = await startProcess(process.execPath, [sgBin, '--stdio', STDIO_COMMAND.join(' '), '--outputTransport', 'streamableHttp', '--stateful', '--port', String(port), '--logLevel', 'none'])
        await waitForHttp(`http://127.0.0.1:${port}/mcp`)
        return child
      },
    })
  }
  if (existsSync(mpBin)) {
    const port = await freePort()
    list.push({
      label: 'mcp-proxy 6.7.19 --no-eventStore',
      url: `http://127.0.0.1:${port}/mcp`,
      start: async () => {
        const { child } = await startProcess(process.execPath, [mpBin, '--port', String(port), '--host', '127.0.0.1', '--no-eventStore', '--', ...STDIO_COMMAND])
        await waitForHttp(`http://127.0.0.1:${port}/mcp`)
        return child
      },
    })
  }
  return list
}

async function stdioScenario () {
  const STDIO_CONNECTIONS = 20
  const rows = []
  const raw = []
  for (const bridge of await bridges()) {
    for (const sessionCount of [1, 20]) {
      const child = await bridge.start()
      const sessions = []
      for (let i = 0; i < sessionCount; i++) sessions.push(await openSession(bridge.url))
      const r = await measure(bridge.label, bridge.url, sessions, STDIO_CONNECTIONS, child.pid)
      stop(child)
      raw.push({ ...r, sessions: sessionCount })
      rows.push([bridge.label, sessionCount, r.reqPerSec, r.p50Ms, r.p99Ms, r.errors + r.non2xx, r.bridgeCpuUsPerReq, r.childCpuUsPerReq, r.processes, r.rssMb])
      await sleep(300)
    }
  }
  const best = (label) => Math.max(...raw.filter((r) => r.sessions === 20 && r.label.startsWith(label)).map((r) => r.reqPerSec))
  const ours = best('Portcullis (isolation: session)')
  const peer = Math.max(best('supergateway'), best('mcp-proxy'))
  return {
    name: 'stdio',
    title: `stdio echo server (MCP SDK 1.32) behind each bridge: tools/call echo, ${STDIO_CONNECTIONS} connections spread over N sessions`,
    columns: ['sessions', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'bridge CPU µs/req', 'children CPU µs/req', 'processes', 'RSS MB'],
    rows,
    summary: Number.isFinite(peer) ? `At 20 sessions, Portcullis (session isolation) does ${(ours / peer).toFixed(2)}× the better peer's throughput.` : '',
    raw,
  }
}

/** Time to open a session (initialize + initialized) through Portcullis: cold spawn vs a warm process. */
async function openScenario () {
  const rows = []
  const raw = {}
  for (const prestart of [0, 2]) {
    const port = await freePort()
    const gateway = await startGateway(`servers:\n  - { name: echo, transport: stdio, command: "${STDIO_COMMAND[0]}", args: ["${STDIO_COMMAND[1]}"], prestart: ${prestart} }\n`, port)
    const url = `http://127.0.0.1:${port}/echo/mcp`
    await sleep(1500) // let the warm pool start
    const times = []
    for (let i = 0; i < 10; i++) {
      const started = performance.now()
      await openSession(url)
      times.push(performance.now() - started)
      await sleep(prestart > 0 ? 800 : 100) // time for the pool to refill
    }
    stop(gateway)
    times.sort((a, b) => a - b)
    const p = (q) => Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))])
    raw[`prestart${prestart}`] = times
    rows.push([prestart === 0 ? 'cold (prestart: 0)' : 'warm pool (prestart: 2)', p(0.5), p(0.9), Math.round(times[0]), Math.round(times.at(-1))])
  }
  return { name: 'open', title: 'Session open through Portcullis (initialize + notifications/initialized), 10 sessions, stdio echo server', columns: ['median ms', 'p90 ms', 'min ms', 'max ms'], rows, raw }
}

/** Whether something answers on host:port (Redis for the replicas scenario). */
function canConnect (url) {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port || 6379) })
    socket.once('connect', () => { socket.end(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Two replicas on one Redis, stdio sessions opened on replica 1: calls sent to replica 1 (the
 * owner) against calls sent to replica 2, which relays them to the owner (cluster.advertiseUrl).
 * The relay's CPU per request is what a session landing on the wrong replica costs.
 */
async function replicasScenario () {
  const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
  if (!await canConnect(redisUrl)) {
    process.stderr.write(`bench: replicas skipped, no Redis at ${redisUrl} (set BENCH_REDIS_URL)\n`)
    return { name: 'replicas', title: `Replicas: skipped (no Redis at ${redisUrl})`, columns: [], rows: [] }
  }
  const CONNECTIONS = 20
  const prefix = `portcullis-bench-${process.pid}:`
  const ports = [await freePort(), await freePort()]
  const server = `servers:\n  - { name: echo, transport: stdio, command: "${STDIO_COMMAND[0]}", args: ["${STDIO_COMMAND[1]}"] }\n`
  const [owner, relay] = await Promise.all(ports.map((port) => startGateway(`store: { redis: "${redisUrl}", prefix: "${prefix}" }\ncluster: { advertiseUrl: "http://127.0.0.1:${port}" }\n${server}`, port)))
  const urls = ports.map((port) => `http://127.0.0.1:${port}/echo/mcp`)
  const sessions = []
  for (let i = 0; i < 4; i++) sessions.push(await openSession(urls[0]))
  const rows = []
  const raw = []
  for (let round = 0; round < HTTP_ROUNDS; round++) {
    for (const [label, url] of [['to the owner (replica 1)', urls[0]], ['to replica 2, relayed to the owner', urls[1]]]) {
      await runLoad(url, sessions, CONNECTIONS, 1)
      const before = [safeStat(owner.pid).cpuS, safeStat(relay.pid).cpuS]
      const r = await runLoad(url, sessions, CONNECTIONS, 2)
      const after = [safeStat(owner.pid).cpuS, safeStat(relay.pid).cpuS]
      const per = (i) => Math.round(((after[i] - before[i]) * 1e6) / Math.max(1, r.requests.total))
      raw.push({ label, round, reqPerSec: Math.round(r.requests.average), p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.errors + r.timeouts + r.non2xx, ownerCpuUsPerReq: per(0), relayCpuUsPerReq: per(1) })
    }
  }
  stop(owner)
  stop(relay)
  const redis = new Redis(redisUrl)
  const leftovers = await redis.keys(`${prefix}*`)
  if (leftovers.length > 0) await redis.del(...leftovers)
  redis.disconnect()
  for (const label of new Set(raw.map((r) => r.label))) {
    const mine = raw.filter((r) => r.label === label)
    const m = (key) => median(mine.map((r) => r[key]))
    rows.push([label, m('reqPerSec'), m('p50Ms'), m('p99Ms'), mine.reduce((a, r) => a + r.errors, 0), m('ownerCpuUsPerReq'), label.includes('relayed') ? m('relayCpuUsPerReq') : '–'])
  }
  const relayCost = median(raw.filter((r) => r.label.includes('relayed')).map((r) => r.relayCpuUsPerReq))
  return {
    name: 'replicas',
    title: `Two replicas on one Redis, stdio echo server, 4 sessions held by replica 1: tools/call echo, ${CONNECTIONS} connections; medians of ${HTTP_ROUNDS} alternating 2 s windows`,
    columns: ['req/s', 'p50 ms', 'p99 ms', 'errors', 'owner CPU µs/req', 'relaying replica CPU µs/req'],
    rows,
    summary: `A request that reaches a replica other than its session's owner costs that replica ${relayCost} µs of CPU to relay (median); session affinity in front (hash on Mcp-Session-Id) avoids it.`,
    raw,
  }
}

const LIGHT_SERVER = join(BENCH, 'light-mcp-server.mjs')
const STREAM_STEPS = [0, 1000, Number(process.env.BENCH_STREAMS ?? 5000)]
const STREAM_PROBE_RATE = 100
const IDLE_WINDOW_S = 10

/**
 * Thousands of sessions each holding a GET stream through the gateway to one HTTP upstream,
 * while another client calls a tool at a fixed rate: that client's latency at 0, 1,000 and
 * 5,000 open streams, the gateway's memory per open stream, and its CPU while the streams
 * sit idle (keep-alive comments included). HTTP/1.1 and HTTP/2 (TLS) to the upstream.
 */
async function streamsScenario () {
  const rows = []
  const raw = []
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-tls-'))
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' })
  const agent = new Agent({ connections: null, keepAliveTimeout: 600_000 })
  for (const protocol of ['HTTP/1.1', 'HTTP/2']) {
    const isH2 = protocol === 'HTTP/2'
    const { child: upstream, line } = await startProcess(process.execPath, [LIGHT_SERVER, ...(isH2 ? ['--tls', join(dir, 'key.pem'), join(dir, 'cert.pem')] : [])], { ready: /"port"/ })
    const upstreamUrl = `${isH2 ? 'https' : 'http'}://127.0.0.1:${JSON.parse(line).port}/mcp`
    const port = await freePort()
    const gateway = await startGateway(`servers:\n  - { name: fx, transport: http, url: "${upstreamUrl}", http2: ${isH2} }\n`, port, isH2 ? { NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') } : {})
    const url = `http://127.0.0.1:${port}/fx/mcp`
    const probe = [await openSession(url)]
    const streams = []
    const open = async (count) => {
      while (streams.length < count) {
        const batch = Math.min(200, count - streams.length)
        streams.push(...await Promise.all(Array.from({ length: batch }, async () => {
          const headers = await openSession(url)
          const res = await request(url, { dispatcher: agent, method: 'GET', headers: { accept: 'text/event-stream', 'mcp-session-id': headers['mcp-session-id'], 'mcp-protocol-version': '2025-11-25' }, headersTimeout: 30_000, bodyTimeout: 0 })
          if (res.statusCode !== 200) throw new Error(`GET stream ${streams.length} got ${res.statusCode}`)
          res.body.on('data', () => {})
          return res
        })))
      }
    }
    // Warm the gateway's hot paths first, so the first row does not measure the JIT.
    await autocannon({ url, method: 'POST', connections: 10, duration: WARMUP_S, headers: probe[0], body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}' })
    let baseRssKb
    for (const count of STREAM_STEPS) {
      await open(count)
      await sleep(1000)
      const before = safeStat(gateway.pid)
      const r = await autocannon({
        url,
        method: 'POST',
        connections: 10,
        overallRate: STREAM_PROBE_RATE,
        duration: DURATION_S,
        headers: probe[0],
        body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}',
      })
      const after = safeStat(gateway.pid)
      baseRssKb ??= after.rssKb
      const perStreamKb = count === 0 ? '–' : ((after.rssKb - baseRssKb) / count).toFixed(1)
      let idleCpuPct = '–'
      if (count > 0) {
        const idleBefore = safeStat(gateway.pid)
        await sleep(IDLE_WINDOW_S * 1000)
        const idleAfter = safeStat(gateway.pid)
        idleCpuPct = (((idleAfter.cpuS - idleBefore.cpuS) / IDLE_WINDOW_S) * 100).toFixed(2)
      }
      const row = { protocol, streams: count, p50Ms: r.latency.p50, p99Ms: r.latency.p99, reqPerSec: Math.round(r.requests.average), errors: r.errors + r.timeouts + r.non2xx, gatewayCpuUsPerReq: Math.round(((after.cpuS - before.cpuS) * 1e6) / Math.max(1, r.requests.total)), rssMb: Math.round(after.rssKb / 1024), rssKbPerStream: perStreamKb, idleCpuPctOfCore: idleCpuPct }
      raw.push(row)
      rows.push([`${protocol}, ${count} open streams`, row.reqPerSec, row.p50Ms, row.p99Ms, row.errors, row.gatewayCpuUsPerReq, row.rssMb, row.rssKbPerStream, row.idleCpuPctOfCore])
      process.stderr.write(`bench: streams ${protocol} ${count}: p99 ${row.p99Ms} ms, ${row.rssKbPerStream} KB/stream, idle ${row.idleCpuPctOfCore}% of a core\n`)
    }
    for (const s of streams) s.body.destroy()
    stop(gateway)
    stop(upstream)
  }
  await agent.close()
  const p99 = (protocol, count) => raw.find((r) => r.protocol === protocol && r.streams === count)?.p99Ms
  const top = STREAM_STEPS[STREAM_STEPS.length - 1]
  return {
    name: 'streams',
    title: `Open GET streams through one gateway to one HTTP upstream (bench/light-mcp-server.mjs), tools/call echo at ${STREAM_PROBE_RATE} req/s beside them for ${DURATION_S} s; idle CPU over ${IDLE_WINDOW_S} s with the streams open and no calls`,
    columns: ['req/s', 'p50 ms', 'p99 ms', 'errors', 'gateway CPU µs/req', 'gateway RSS MB', 'RSS KB per stream', 'idle CPU % of a core'],
    rows,
    summary: `p99 at ${top} streams vs none: HTTP/1.1 ${p99('HTTP/1.1', top)} vs ${p99('HTTP/1.1', 0)} ms, HTTP/2 ${p99('HTTP/2', top)} vs ${p99('HTTP/2', 0)} ms.`,
    raw,
  }
}

/**
 * servers[].identity in isolation, in this process: what one signature costs (paid once per
 * caller and server per 30 s) and what a request pays when its caller's token is cached. The
 * whole-gateway figure is the http scenario's "identity header" row; on a busy machine its
 * difference to the token-only row drowns in noise, this one does not.
 */
async function identityScenario () {
  const { IdentityTokens } = await import(join(ROOT, 'dist', 'upstreams', 'identity-token.js'))
  const { generateKeyPair, exportJWK } = await import('jose')
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  const key = { ...await exportJWK(privateKey), alg: 'ES256', kid: 'bench' }
  let signed = 0
  const tokens = new IdentityTokens({ issuer: 'https://gw.example.com', key, now: () => Date.now(), onSigned: () => { signed++ } }, 'echo', 'https://search.internal/mcp')
  const user = (i) => ({ id: `user${i}`, name: `user${i}`, email: `user${i}@example.com`, groups: ['eng', 'ops'] })
  const cpuUs = () => { const u = process.cpuUsage(); return u.user + u.system }
  await tokens.tokenFor(user(-1), 'warm-up')
  const SIGNATURES = 2000
  let before = cpuUs()
  for (let i = 0; i < SIGNATURES; i++) await tokens.tokenFor(user(i), 'client')
  const signUs = (cpuUs() - before) / SIGNATURES
  const HITS = 1_000_000
  const alice = user(0)
  before = cpuUs()
  for (let i = 0; i < HITS; i++) {
    const token = tokens.tokenFor(alice, 'client')
    if (typeof token !== 'string') throw new Error('a cached token was expected')
  }
  const hitUs = (cpuUs() - before) / HITS
  if (signed !== SIGNATURES + 1) throw new Error(`expected ${SIGNATURES + 1} signatures, counted ${signed}`)
  return {
    name: 'identity',
    title: 'servers[].identity alone (in process): a signature vs a cached token',
    columns: ['operations', 'CPU µs each'],
    rows: [['sign a new identity token (once per caller and server per 30 s)', SIGNATURES, signUs.toFixed(1)], ['cached token for a request', HITS, hitUs.toFixed(2)]],
    summary: `A request pays ${hitUs.toFixed(2)} µs for its identity header; the ${signUs.toFixed(0)} µs signature is paid once per caller and server per 30 s.`,
  }
}

const SCENARIOS = { http: httpScenario, identity: identityScenario, stdio: stdioScenario, open: openScenario, replicas: replicasScenario, streams: streamsScenario, redact: redactScenario, virtual: virtualScenario }

function table (scenario) {
  const lines = [`### ${scenario.title}`, '', `| target | ${scenario.columns.join(' | ')} |`, `| --- |${scenario.columns.map(() => ' ---: |').join('')}`]
  for (const row of scenario.rows) lines.push(`| ${row.join(' | ')} |`)
  if (scenario.summary) lines.push('', scenario.summary)
  return lines.join('\n')
}

if (!existsSync(join(BENCH, 'node_modules')) && (ONLY === undefined || ONLY.includes('stdio'))) {
  process.stderr.write('bench: installing the peer bridges into bench/node_modules (npm install)\n')
  execFileSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: BENCH, stdio: 'inherit' })
}

const results = []
for (const [name, run] of Object.entries(SCENARIOS)) {
  if (ONLY !== undefined && !ONLY.includes(name)) continue
  process.stderr.write(`bench: ${name} (${DURATION_S}s per measurement)\n`)
  results.push(await run())
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`
const report = [`Portcullis benchmark — ${new Date().toISOString()} — ${machine} — ${DURATION_S}s per measurement`, '', ...results.map(table)].join('\n\n')
process.stdout.write(`${report}\n`)
mkdirSync(join(BENCH, 'results'), { recursive: true })
writeFileSync(join(BENCH, 'results', 'latest.json'), JSON.stringify({ machine, durationS: DURATION_S, results }, null, 2))
process.exit(0)
