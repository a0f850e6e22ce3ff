#!/usr/bin/env node
// Two (or more) builds of the gateway side by side, for a before/after of one change on a
// machine whose speed drifts: each configuration's gateways take the same load at the same
// time (autocannon, tools/call echo, the same fixture upstream), round after round, so what
// the machine does meanwhile hits them alike; the figure is each one's CPU per request
// (/proc/<pid>/stat) and its ratio to the first build's in the same round (median over rounds).
// The reference hop (bench/reference-hop.mjs) is measured alone, between the rounds.
//
//   git worktree add /tmp/before HEAD~1 && (cd /tmp/before && npm run build)   # or any copy with a dist/
//   npm run build && node bench/compare-http.mjs before=/tmp/before after=.
//
// Environment: COMPARE_CONFIGS (bare, token, full; default bare,full), COMPARE_ROUNDS (default
// 16), COMPARE_WINDOW (seconds per round, default 3), COMPARE_CONNECTIONS (per gateway, default 50).
// A build may carry node options after an @: `semi64=.@--max-semi-space-size=64`.
import { resolve } from 'node:path'
import { cpus } from 'node:os'
import { HTTP_SERVER, cpuSeconds, load, median, start, startTarget, stopTarget } from './http-fixture.mjs'

const CONFIGS = (process.env.COMPARE_CONFIGS ?? 'bare,full').split(',')
const ROUNDS = Number(process.env.COMPARE_ROUNDS ?? 16)
const WINDOW_S = Number(process.env.COMPARE_WINDOW ?? 3)
const CONNECTIONS = Number(process.env.COMPARE_CONNECTIONS ?? 50)

const builds = process.argv.slice(2).map((arg) => {
  const at = arg.indexOf('=')
  if (at < 1) throw new Error(`expected name=path[@node options], got ${arg}`)
  const [path, options] = arg.slice(at + 1).split('@')
  return { name: arg.slice(0, at), tree: resolve(path ?? '.'), nodeArgs: options === undefined ? [] : options.split(' ') }
})
if (builds.length < 2) throw new Error('usage: node bench/compare-http.mjs before=<tree> after=<tree> [more=<tree>…]')

const { child: upstream, line } = await start([HTTP_SERVER], { ready: /"port"/ })
const upstreamUrl = JSON.parse(line).url
const reference = { ...await startTarget('reference', upstreamUrl), cpus: [] }
const groups = []
for (const config of CONFIGS) {
  const members = []
  for (const build of builds) members.push({ build: build.name, ...await startTarget(config, upstreamUrl, build), cpus: [] })
  groups.push({ config, members })
}
const WARMUP_S = Math.max(5, WINDOW_S)
const perRequest = async (targets, seconds = WINDOW_S) => {
  const before = targets.map((t) => cpuSeconds(t.child.pid))
  const results = await Promise.all(targets.map((t) => load(t.url, t.headers, seconds, CONNECTIONS)))
  targets.forEach((t, i) => {
    const r = results[i]
    if (r.errors + r.timeouts + r.non2xx > 0) process.stderr.write(`compare: ${t.build ?? 'reference'}: ${r.errors + r.timeouts + r.non2xx} errors\n`)
    t.cpus.push(((cpuSeconds(t.child.pid) - before[i]) * 1e6) / Math.max(1, r.requests.total))
  })
}
// Warm-up: every gateway's hot paths compiled before the first round counts.
for (const { members } of groups) await perRequest(members, WARMUP_S)
await perRequest([reference], WARMUP_S)
for (const group of groups) for (const m of group.members) m.cpus.length = 0
reference.cpus.length = 0
for (let round = 0; round < ROUNDS; round++) {
  process.stderr.write(`compare: round ${round + 1}/${ROUNDS}\n`)
  for (const { members } of groups) await perRequest(members)
  await perRequest([reference])
}

const lines = [`Gateway builds compared — ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version} — ${ROUNDS} rounds of ${WINDOW_S} s, ${CONNECTIONS} connections each, the builds of a configuration under load at the same time`, '',
  '| configuration | build | CPU µs/req (median) | range | vs the first build, same round (median) | rounds below 1 |', '| --- | --- | ---: | ---: | ---: | ---: |']
const ref = median(reference.cpus)
lines.push(`| reference hop | – | ${ref.toFixed(0)} | ${Math.min(...reference.cpus).toFixed(0)}–${Math.max(...reference.cpus).toFixed(0)} | – | – |`)
for (const { config, members } of groups) {
  const [first] = members
  for (const m of members) {
    const ratios = m.cpus.map((c, i) => c / first.cpus[i])
    lines.push(`| ${config} | ${m.build} | ${median(m.cpus).toFixed(0)} | ${Math.min(...m.cpus).toFixed(0)}–${Math.max(...m.cpus).toFixed(0)} | ${m === first ? '1' : median(ratios).toFixed(3)} | ${m === first ? '–' : `${ratios.filter((r) => r < 1).length}/${ratios.length}`} |`)
  }
}
for (const { members } of groups) for (const m of members) await stopTarget(m.child)
await stopTarget(reference.child)
upstream.kill('SIGKILL')
process.stdout.write(`${lines.join('\n')}\n`)
process.exit(0)
