#!/usr/bin/env node
// What the garbage collector costs per request, and why: each configuration's gateway (and the
// reference hop) runs under `--trace-gc-nvp` (V8's per-collection figures, written to a file),
// takes the bench's load (tools/call echo of the HTTP fixture, autocannon), and only the
// collections of the measured window are counted. Reported per request: KB allocated, the share
// of it promoted to the old generation (what outlives two scavenges; node:http + undici alone
// promote 0-1%), and the young-generation and full collections' pause time. The 2026-12-01 06:20
// entry of docs/benchmarks.md found two causes of a high share this way.
//
//   npm run build && node bench/gc-per-request.mjs
//
// Environment: GC_CONFIGS (reference, stdio, bare, virtual, token, identity, full; default
// reference,bare,virtual), GC_DURATION (seconds measured, default 8), GC_CONNECTIONS (default 50).
import { spawn } from 'node:child_process'
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GATEWAY_CONFIGS, HTTP_SERVER, REFERENCE_HOP, ROOT, freePort, load, machineToken, openSession, sleep, start, stopTarget, waitForHttp } from './http-fixture.mjs'
import { gcRecord } from './trace-gc.mjs'

const CONFIGS = (process.env.GC_CONFIGS ?? 'reference,bare,virtual').split(',')
const DURATION_S = Number(process.env.GC_DURATION ?? 8)
const CONNECTIONS = Number(process.env.GC_CONNECTIONS ?? 50)
const WARMUP_S = 3

/**
 * The young-generation collections (gc=s, a scavenge; gc=mmc, a minor mark-sweep where V8 uses
 * one) and the full ones (gc=mc) in a --trace-gc-nvp log, from `offset` on. V8 writes the log
 * through stdio buffers: the window's edges are approximate by a block.
 */
function collections (file, offset) {
  const sums = { scavengeMs: 0, fullMs: 0, allocated: 0, promoted: 0 }
  for (const line of readFileSync(file, 'latin1').slice(offset).split('\n')) {
    const gc = gcRecord(line)
    if (gc === undefined) continue
    if (gc.kind === 'young') sums.scavengeMs += gc.pauseMs
    else sums.fullMs += gc.pauseMs
    sums.allocated += gc.allocated
    sums.promoted += gc.promoted
  }
  return sums
}

async function measure (name, upstreamUrl) {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-gc-'))
  const log = join(dir, 'gc.log')
  const port = await freePort()
  let args
  if (name === 'reference') {
    args = [REFERENCE_HOP, upstreamUrl, String(port)]
  } else {
    const config = join(dir, 'gateway.yaml')
    writeFileSync(config, `publicUrl: http://127.0.0.1:${port}\nlisten: { host: 127.0.0.1, port: ${port} }\ndataDir: ${join(dir, 'data')}\nlog: { level: warn }\n${GATEWAY_CONFIGS[name](upstreamUrl)}`)
    args = [join(ROOT, 'dist', 'main.js'), 'start', '--config', config]
  }
  const child = spawn(process.execPath, ['--trace-gc-nvp', ...args], { cwd: ROOT, stdio: ['ignore', openSync(log, 'w'), 'ignore'] })
  try {
    if (name === 'reference') await sleep(1000)
    else await waitForHttp(`http://127.0.0.1:${port}/healthz`)
    const server = name === 'virtual' ? 'v' : 'echo'
    const url = name === 'reference' ? `http://127.0.0.1:${port}/mcp` : `http://127.0.0.1:${port}/${server}/mcp`
    const tool = name === 'virtual' ? 'echo__echo' : 'echo'
    const auth = ['token', 'identity', 'full'].includes(name) ? { authorization: `Bearer ${await machineToken(port, url)}` } : {}
    const headers = await openSession(url, auth)
    await load(url, headers, WARMUP_S, CONNECTIONS, { tool })
    const offset = readFileSync(log, 'latin1').length
    const r = await load(url, headers, DURATION_S, CONNECTIONS, { tool })
    if (r.errors + r.non2xx > 0) throw new Error(`${name}: ${r.errors} errors, ${r.non2xx} non-2xx answers`)
    const n = r.requests.total
    const gc = collections(log, offset)
    return [name, n, (gc.allocated / n / 1024).toFixed(1), `${(100 * gc.promoted / Math.max(1, gc.allocated)).toFixed(0)}%`, (gc.scavengeMs * 1000 / n).toFixed(1), (gc.fullMs * 1000 / n).toFixed(1)]
  } finally {
    await stopTarget(child)
    rmSync(dir, { recursive: true, force: true })
  }
}

const { child: upstream, line } = await start([HTTP_SERVER], { ready: /"port"/ })
const upstreamUrl = JSON.parse(line).url
const rows = []
for (const name of CONFIGS) {
  if (name !== 'reference' && GATEWAY_CONFIGS[name] === undefined) throw new Error(`unknown configuration ${name}: one of reference, ${Object.keys(GATEWAY_CONFIGS).join(', ')}`)
  rows.push(await measure(name, upstreamUrl))
}
upstream.kill('SIGKILL')
process.stdout.write([
  `Garbage collection per request — ${new Date().toISOString()} — Node ${process.version}, ${CONNECTIONS} connections, ${DURATION_S} s measured after ${WARMUP_S} s`,
  '',
  '| configuration | requests | KB allocated / request | promoted | young-generation GC µs / request | full GC µs / request |',
  '| --- | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
  '',
].join('\n'))
process.exit(0)
