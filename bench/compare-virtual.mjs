#!/usr/bin/env node
// Issue 16's figure (a tools/call through a virtual server costs at most 25 µs of gateway CPU
// more than through the member's own URL) for two or more builds side by side, on a machine
// whose load drifts: each build runs one gateway (auth off, the HTTP fixture as member `echo`,
// virtual server `v` of it, prefix: always); in each round the builds' virtual URLs take the
// same load at the same time, then their member URLs. Per build: CPU per request
// (/proc/<pid>/stat) at each URL, and the median over rounds of the per-round difference.
//
//   (a copy of the earlier tree with a dist/, e.g. git archive <commit> | tar -x -C /tmp/before, then npm run build there)
//   npm run build && node bench/compare-virtual.mjs before=/tmp/before after=.
//
// Environment: COMPARE_ROUNDS (default 10), COMPARE_WINDOW (seconds per window, default 3),
// COMPARE_CONNECTIONS (per gateway, default 50), COMPARE_DEBUG=1 (each window's request count:
// CPU is read in 10 ms ticks, so a window of a few hundred requests says little).
import { resolve } from 'node:path'
import { cpus } from 'node:os'
import { HTTP_SERVER, cpuSeconds, load, median, openSession, start, startTarget, stopTarget } from './http-fixture.mjs'

const ROUNDS = Number(process.env.COMPARE_ROUNDS ?? 10)
const WINDOW_S = Number(process.env.COMPARE_WINDOW ?? 3)
const CONNECTIONS = Number(process.env.COMPARE_CONNECTIONS ?? 50)
const TARGET_US = 25

const builds = process.argv.slice(2).map((arg) => {
  const at = arg.indexOf('=')
  if (at < 1) throw new Error(`expected name=path, got ${arg}`)
  return { name: arg.slice(0, at), tree: resolve(arg.slice(at + 1)) }
})
if (builds.length < 2) throw new Error('usage: node bench/compare-virtual.mjs before=<tree> after=<tree> [more=<tree>…]')

const { child: upstream, line } = await start([HTTP_SERVER], { ready: /"port"/ })
const upstreamUrl = JSON.parse(line).url
const gateways = []
for (const build of builds) {
  const target = await startTarget('virtual', upstreamUrl, build)
  const virtualUrl = target.url.replace(/\/echo\/mcp$/, '/v/mcp')
  gateways.push({ ...build, target, member: { url: target.url, headers: target.headers, tool: 'echo', cpus: [] }, virtual: { url: virtualUrl, headers: await openSession(virtualUrl, {}), tool: 'echo__echo', cpus: [] } })
}

/** One window: the same URL kind of every build under load at the same time. */
const window = async (kind, seconds = WINDOW_S) => {
  const before = gateways.map((g) => cpuSeconds(g.target.child.pid))
  const results = await Promise.all(gateways.map((g) => load(g[kind].url, g[kind].headers, seconds, CONNECTIONS, { tool: g[kind].tool })))
  gateways.forEach((g, i) => {
    const r = results[i]
    if (r.errors + r.timeouts + r.non2xx > 0) process.stderr.write(`compare: ${g.name} ${kind}: ${r.errors + r.timeouts + r.non2xx} errors\n`)
    if (process.env.COMPARE_DEBUG) process.stderr.write(`${g.name} ${kind}: ${r.requests.total} requests\n`)
    g[kind].cpus.push(((cpuSeconds(g.target.child.pid) - before[i]) * 1e6) / Math.max(1, r.requests.total))
  })
}
// Warm-up: every hot path compiled before the first round counts.
for (const kind of ['member', 'virtual']) await window(kind, Math.max(5, WINDOW_S))
for (const g of gateways) { g.member.cpus.length = 0; g.virtual.cpus.length = 0 }
for (let round = 0; round < ROUNDS; round++) {
  process.stderr.write(`compare: round ${round + 1}/${ROUNDS}\n`)
  // Alternating which goes first, so that a drift in the machine's speed does not favour one.
  for (const kind of round % 2 === 0 ? ['member', 'virtual'] : ['virtual', 'member']) await window(kind)
}

const range = (values) => `${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)}`
const lines = [`Virtual server overhead, builds compared — ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version} — ${ROUNDS} rounds of ${WINDOW_S} s windows, ${CONNECTIONS} connections per gateway, the builds under load at the same time`, '',
  '| build | member URL CPU µs/req (range) | virtual URL CPU µs/req (range) | virtual − member µs/req (median of rounds) |', '| --- | ---: | ---: | ---: |']
for (const g of gateways) {
  const differences = g.virtual.cpus.map((c, i) => c - g.member.cpus[i])
  const difference = median(differences)
  lines.push(`| ${g.name} | ${median(g.member.cpus).toFixed(0)} (${range(g.member.cpus)}) | ${median(g.virtual.cpus).toFixed(0)} (${range(g.virtual.cpus)}) | ${difference.toFixed(0)} (${range(differences)}; ${difference <= TARGET_US ? 'within' : 'over'} the ${TARGET_US} µs target) |`)
}
for (const g of gateways) await stopTarget(g.target.child)
upstream.kill('SIGKILL')
process.stdout.write(`${lines.join('\n')}\n`)
process.exit(0)
