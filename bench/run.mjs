#!/usr/bin/env node
// `npm run bench`: the same MCP upstream reached directly and through Portcullis, in one run.
// Reports req/s, p50/p99 latency, the ratio gateway/direct, and the gateway process's own CPU
// time per proxied request (from /proc/<pid>/stat), which is the figure that survives a noisy
// shared machine. Environment: BENCH_DURATION (seconds per measurement, default 10),
// BENCH_CONNECTIONS (default 50), BENCH_ONLY (comma-separated scenario names).
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync, mkdtempSync, mkdirSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DURATION_S = Number(process.env.BENCH_DURATION ?? 10)
const WARMUP_S = Math.max(2, Math.round(DURATION_S / 4))
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const ONLY = process.env.BENCH_ONLY?.split(',')
const CLK_TCK = 100 // Linux USER_HZ; /proc/<pid>/stat counts in these ticks

const children = new Set()
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })
process.on('SIGINT', () => process.exit(130))

/** Spawns a node process and resolves with the first stdout line matching `ready`. */
function startProcess (args, ready, env = {}) {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } })
  children.add(child)
  return new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start: ${out}`)), 20_000)
    child.stdout.on('data', (d) => {
      out += d.toString()
      const line = out.split('\n').find((l) => ready.test(l))
      if (line !== undefined) {
        clearTimeout(timer)
        resolve({ child, line })
      }
    })
    child.on('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${out}`)))
  })
}

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds (pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}

const ACCEPT = 'application/json, text/event-stream'

async function openSession (url) {
  const init = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: ACCEPT },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'bench', version: '1' } } }),
  })
  const sessionId = init.headers.get('mcp-session-id')
  await init.text()
  if (init.status !== 200 || sessionId === null) throw new Error(`initialize via ${url} failed: ${init.status}`)
  const headers = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  const note = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  await note.text()
  return headers
}

function runAutocannon (url, headers, seconds) {
  let id = 0
  return autocannon({
    url,
    method: 'POST',
    connections: CONNECTIONS,
    duration: seconds,
    headers,
    requests: [{
      // Unique ids: the upstream routes each response to its request by id.
      setupRequest: (req) => ({ ...req, body: `{"jsonrpc":"2.0","id":${++id},"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}` }),
    }],
  })
}

/** Measures one target; CPU of each listed pid over the measured window only. */
async function measure (label, url, headers, pids) {
  await runAutocannon(url, headers, WARMUP_S)
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]))
  const r = await runAutocannon(url, headers, DURATION_S)
  const cpuUs = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, Math.round(((cpuSeconds(pid) - before[k]) * 1e6) / Math.max(1, r.requests.total))]))
  return {
    label,
    reqPerSec: Math.round(r.requests.average),
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    total: r.requests.total,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    cpuUsPerReq: cpuUs,
  }
}

async function startGateway (configText, port) {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
  const configPath = join(dir, 'bench.yaml')
  writeFileSync(configPath, configText)
  const child = spawn(process.execPath, ['dist/main.js', 'start', '--config', configPath], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
  children.add(child)
  for (let i = 0; i < 200; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)
    if (ok) return child
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error('gateway did not become healthy')
}

async function httpScenario () {
  const { child: upstream, line } = await startProcess(['test/fixtures/http-mcp-server.mjs'], /"port"/)
  const { url } = JSON.parse(line)
  const port = 18000 + Math.floor(Math.random() * 2000)
  const gateway = await startGateway(`publicUrl: http://127.0.0.1:${port}
listen: { host: 127.0.0.1, port: ${port} }
log: { level: warn }
servers:
  - { name: echo, transport: http, url: "${url}" }
`, port)
  const direct = await measure('direct', url, await openSession(url), { upstream: upstream.pid })
  const gwUrl = `http://127.0.0.1:${port}/echo/mcp`
  const through = await measure('via portcullis', gwUrl, await openSession(gwUrl), { upstream: upstream.pid, gateway: gateway.pid })
  for (const c of [upstream, gateway]) { c.kill('SIGTERM'); children.delete(c) }
  return { name: 'http', title: 'Streamable HTTP upstream (MCP SDK 1.32, stateful, SSE responses): tools/call echo', rows: [direct, through] }
}

const SCENARIOS = { http: httpScenario }

function table (scenario) {
  const [direct, ...others] = scenario.rows
  const lines = [
    `### ${scenario.title}`,
    '',
    '| target | req/s | p50 ms | p99 ms | errors | non-2xx | ratio vs direct | gateway CPU µs/req | upstream CPU µs/req |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const row of [direct, ...others]) {
    const ratio = row === direct ? '1.00' : (row.reqPerSec / direct.reqPerSec).toFixed(2)
    lines.push(`| ${row.label} | ${row.reqPerSec} | ${row.p50Ms} | ${row.p99Ms} | ${row.errors} | ${row.non2xx} | ${ratio} | ${row.cpuUsPerReq.gateway ?? '–'} | ${row.cpuUsPerReq.upstream ?? '–'} |`)
  }
  return lines.join('\n')
}

const results = []
for (const [name, run] of Object.entries(SCENARIOS)) {
  if (ONLY !== undefined && !ONLY.includes(name)) continue
  process.stderr.write(`bench: ${name} (${DURATION_S}s per target, ${CONNECTIONS} connections)\n`)
  results.push(await run())
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`
const report = [`Portcullis benchmark — ${new Date().toISOString()} — ${machine} — ${DURATION_S}s per target, ${CONNECTIONS} connections`, '', ...results.map(table)].join('\n\n')
process.stdout.write(`${report}\n`)
mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true })
writeFileSync(join(ROOT, 'bench', 'results', 'latest.json'), JSON.stringify({ machine, durationS: DURATION_S, connections: CONNECTIONS, results }, null, 2))
process.exit(0)
