#!/usr/bin/env node
// Two (or more) builds of the gateway side by side, for a before/after of one change on a
// machine whose speed drifts: each configuration's gateways take the same load at the same
// time (autocannon, tools/call echo, the same fixture upstream), round after round, so what
// the machine does meanwhile hits them alike; the figure is each one's CPU per request
// (/proc/<pid>/stat), its ratio to the first build's in the same round and its difference
// from it (medians over rounds; the difference with its interquartile range).
// The reference hop (bench/reference-hop.mjs) is measured alone, between the rounds.
//
//   git worktree add /tmp/before HEAD~1 && (cd /tmp/before && npm run build)   # or any copy with a dist/
//   npm run build && node bench/compare-http.mjs before=/tmp/before after=.
//
// Or configurations of one build side by side, for what one option costs (the first is the
// baseline; a name given twice starts a second copy of it, which shows the method's noise floor):
//
//   npm run build && node bench/compare-http.mjs --configs token,identity,token [tree]
//
// The two hops can be members too, under load with the gateways (`reference`: bench/reference-hop.mjs;
// `fastify-hop`: the same hop inside a Fastify route, bench/fastify-hop.mjs):
//
//   npm run build && node bench/compare-http.mjs --configs reference,fastify-hop,bare,full
//
// Environment: COMPARE_CONFIGS (bare, token, identity, full, virtual, stdio; default bare,full; builds mode),
// COMPARE_ROUNDS (default 16), COMPARE_WINDOW (seconds per round, default 3), COMPARE_CONNECTIONS
// (per gateway, default 50), COMPARE_RATE (requests per second offered to each gateway; default: as
// many as it answers). A build may carry node options after an @: `semi64=.@--max-semi-space-size=64`.
// On a loaded machine, set COMPARE_RATE below what every gateway sustains: a saturated gateway's CPU
// per request falls as its throughput rises (more requests per event-loop turn and per write), so
// one that the scheduler happens to favour looks cheaper; at a fixed rate all see the same arrivals.
import { resolve } from 'node:path'
import { cpus } from 'node:os'
import { GATEWAY_CONFIGS, HOPS, HTTP_SERVER, cpuSeconds, load, median, start, startTarget, stopTarget } from './http-fixture.mjs'

const ROUNDS = Number(process.env.COMPARE_ROUNDS ?? 16)
const WINDOW_S = Number(process.env.COMPARE_WINDOW ?? 3)
const CONNECTIONS = Number(process.env.COMPARE_CONNECTIONS ?? 50)
const RATE = process.env.COMPARE_RATE === undefined ? undefined : Number(process.env.COMPARE_RATE)

const parseBuild = (arg) => {
  const at = arg.indexOf('=')
  if (at < 1) throw new Error(`expected name=path[@node options], got ${arg}`)
  const [path, options] = arg.slice(at + 1).split('@')
  return { name: arg.slice(0, at), tree: resolve(path ?? '.'), nodeArgs: options === undefined ? [] : options.split(' ') }
}
const checkConfig = (config) => {
  if (GATEWAY_CONFIGS[config] === undefined && HOPS[config] === undefined) throw new Error(`unknown configuration ${config} (${[...Object.keys(GATEWAY_CONFIGS), ...Object.keys(HOPS)].join(', ')})`)
  return config
}

/** Groups of gateways loaded at the same time; each member is compared with its group's first. */
let plan
if (process.argv[2] === '--configs') {
  const configs = (process.argv[3] ?? '').split(',').filter((c) => c !== '').map(checkConfig)
  if (configs.length < 2) throw new Error('usage: node bench/compare-http.mjs --configs <config>,<config>[,…] [tree]')
  const build = { name: 'this', tree: resolve(process.argv[4] ?? '.'), nodeArgs: [] }
  const seen = new Map()
  plan = [{ label: build.tree, members: configs.map((config) => {
    seen.set(config, (seen.get(config) ?? 0) + 1)
    return { label: seen.get(config) === 1 ? config : `${config} (copy ${seen.get(config)})`, config, build }
  }) }]
} else {
  const builds = process.argv.slice(2).map(parseBuild)
  if (builds.length < 2) throw new Error('usage: node bench/compare-http.mjs before=<tree> after=<tree> [more=<tree>…] | --configs <a>,<b>[,…] [tree]')
  plan = (process.env.COMPARE_CONFIGS ?? 'bare,full').split(',').map(checkConfig).map((config) => ({ label: config, members: builds.map((build) => ({ label: build.name, config, build })) }))
}

const { child: upstream, line } = await start([HTTP_SERVER], { ready: /"port"/ })
const upstreamUrl = JSON.parse(line).url
const reference = { label: 'reference', ...await startTarget('reference', upstreamUrl), cpus: [], rates: [] }
const groups = []
for (const { label, members } of plan) {
  const started = []
  for (const m of members) started.push({ label: m.label, ...await startTarget(m.config, upstreamUrl, m.build), cpus: [], rates: [] })
  groups.push({ label, members: started })
}
const WARMUP_S = Math.max(5, WINDOW_S)
const perRequest = async (targets, seconds = WINDOW_S) => {
  const before = targets.map((t) => cpuSeconds(t.child.pid))
  const results = await Promise.all(targets.map((t) => load(t.url, t.headers, seconds, CONNECTIONS, { rate: RATE })))
  targets.forEach((t, i) => {
    const r = results[i]
    if (r.errors + r.timeouts + r.non2xx > 0) process.stderr.write(`compare: ${t.label}: ${r.errors + r.timeouts + r.non2xx} errors\n`)
    t.cpus.push(((cpuSeconds(t.child.pid) - before[i]) * 1e6) / Math.max(1, r.requests.total))
    t.rates.push(r.requests.total / seconds)
  })
}
// Warm-up: every gateway's hot paths compiled before the first round counts.
for (const { members } of groups) await perRequest(members, WARMUP_S)
await perRequest([reference], WARMUP_S)
for (const t of [reference, ...groups.flatMap((g) => g.members)]) t.cpus.length = t.rates.length = 0
for (let round = 0; round < ROUNDS; round++) {
  process.stderr.write(`compare: round ${round + 1}/${ROUNDS}\n`)
  // Every other round starts the loads in the opposite order, so no member is always first.
  for (const { members } of groups) await perRequest(round % 2 === 0 ? members : [...members].reverse())
  await perRequest([reference])
}

/** The value at fraction q of sorted values (nearest rank). */
const quantile = (values, q) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]
const signed = (x) => `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(1)}`
const range = (values) => `${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)}`
const what = process.argv[2] === '--configs' ? 'configurations of one build' : 'builds'
const lines = [`Gateway ${what} compared — ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version} — ${ROUNDS} rounds of ${WINDOW_S} s, ${CONNECTIONS} connections each${RATE === undefined ? '' : ` offering ${RATE} req/s`}, the members of a group under load at the same time`, '',
  '| group | member | req/s (median) | CPU µs/req (median) | range | vs the first, same round: ratio (median) | difference µs/req (median, interquartile range) | rounds below the first |', '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
lines.push(`| reference hop | – | ${median(reference.rates).toFixed(0)} | ${median(reference.cpus).toFixed(0)} | ${range(reference.cpus)} | – | – | – |`)
for (const { label, members } of groups) {
  const [first] = members
  for (const m of members) {
    if (m === first) {
      lines.push(`| ${label} | ${m.label} | ${median(m.rates).toFixed(0)} | ${median(m.cpus).toFixed(0)} | ${range(m.cpus)} | 1 | – | – |`)
      continue
    }
    const ratios = m.cpus.map((c, i) => c / first.cpus[i])
    const diffs = m.cpus.map((c, i) => c - first.cpus[i])
    lines.push(`| ${label} | ${m.label} | ${median(m.rates).toFixed(0)} | ${median(m.cpus).toFixed(0)} | ${range(m.cpus)} | ${median(ratios).toFixed(3)} | ${signed(median(diffs))} (${signed(quantile(diffs, 0.25))} to ${signed(quantile(diffs, 0.75))}) | ${diffs.filter((d) => d < 0).length}/${diffs.length} |`)
  }
}
for (const { members } of groups) for (const m of members) await stopTarget(m.child)
await stopTarget(reference.child)
upstream.kill('SIGKILL')
process.stdout.write(`${lines.join('\n')}\n`)
process.exit(0)
