#!/usr/bin/env node
// Where the gateway's time goes on the HTTP path (issue 17, "The cost of the gateway"): starts the
// fixture upstream (test/fixtures/http-mcp-server.mjs) and the built gateway (dist/) under
// `node --cpu-prof`, drives the HTTP scenario's load (tools/call echo, autocannon) for a warm-up
// and a measured window, stops the gateway with SIGTERM so it writes its .cpuprofile, and
// summarises the samples taken inside the measured window: self time by function and by package,
// inclusive time by function, and time by area of the request path (the deepest gateway frame of
// each sample decides its area; samples with no gateway frame go to the library they are in).
//
//   npm run build && node bench/profile-http.mjs            # reference hop, bare, token, full
//   PROFILE_CONFIGS=bare,full PROFILE_DURATION=10 node bench/profile-http.mjs
//   node bench/profile-http.mjs --summarise bench/results/profiles/bare.cpuprofile  # again, from the saved profile
//
// Environment: PROFILE_CONFIGS (reference, fastify-hop, bare, token, identity, full — bench/run.mjs's HTTP
// configurations; reference: bench/reference-hop.mjs, fastify-hop: bench/fastify-hop.mjs; default all four), PROFILE_DURATION (seconds measured,
// default 10), PROFILE_WARMUP (seconds, default 3), PROFILE_CONNECTIONS (default 50),
// PROFILE_INTERVAL_US (sampling interval, default 250), PROFILE_TOP (rows per table, default 25),
// PROFILE_HEAP=1 (allocation instead of CPU: bytes per request by package and function,
// bench/heap-sampler.mjs; the profiles land beside the CPU ones as <config>.heapprofile).
// Profiles land in bench/results/profiles/<config>.cpuprofile; the summary goes to stdout. Gateway
// files are named by their source (src/…ts); line numbers are those of the compiled dist/ file.
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GATEWAY_CONFIGS, HOPS, HTTP_SERVER, ROOT, load, nowUs, start, startTarget, stopTarget } from './http-fixture.mjs'

const OUT = join(ROOT, 'bench', 'results', 'profiles')
const CONFIGS = (process.env.PROFILE_CONFIGS ?? 'reference,bare,token,full').split(',')
const DURATION_S = Number(process.env.PROFILE_DURATION ?? 10)
const WARMUP_S = Number(process.env.PROFILE_WARMUP ?? 3)
const CONNECTIONS = Number(process.env.PROFILE_CONNECTIONS ?? 50)
const INTERVAL_US = Number(process.env.PROFILE_INTERVAL_US ?? 250)
const TOP = Number(process.env.PROFILE_TOP ?? 25)
const HEAP = process.env.PROFILE_HEAP === '1'

/**
 * The same load with V8's sampling heap profiler instead (bench/heap-sampler.mjs): bytes
 * allocated per request in the measured window, by package or file and by allocating function.
 */
async function heapProfileConfig (name, upstreamUrl) {
  mkdirSync(OUT, { recursive: true })
  const path = join(OUT, `${name}.heapprofile`)
  const { child, url, headers, dir } = await startTarget(name, upstreamUrl, { nodeArgs: ['--import', join(ROOT, 'bench', 'heap-sampler.mjs')], env: { HEAP_PROFILE_OUT: path } })
  await load(url, headers, WARMUP_S, CONNECTIONS)
  child.kill('SIGUSR2')
  await new Promise((resolve) => setTimeout(resolve, 100))
  const r = await load(url, headers, DURATION_S, CONNECTIONS)
  await stopTarget(child)
  rmSync(dir, { recursive: true, force: true })
  const profile = JSON.parse(readFileSync(path, 'utf8'))
  const byPlace = new Map()
  const bySite = new Map()
  let total = 0
  const walk = (node, parentName) => {
    const f = node.callFrame
    const name = `${f.functionName || '(anonymous)'} ${placeOf(f.url)}:${f.lineNumber + 1}`
    if (node.selfSize > 0) {
      total += node.selfSize
      byPlace.set(placeOf(f.url), (byPlace.get(placeOf(f.url)) ?? 0) + node.selfSize)
      const site = `${name} ← ${parentName}`
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize)
    }
    for (const c of node.children) walk(c, name)
  }
  walk(profile.head, '')
  const n = r.requests.total
  const rows = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([k, bytes]) => `| ${k.replace(/\|/g, '\\|')} | ${Math.round(bytes / n)} |`).join('\n')
  return [`### ${name}: bytes allocated per request (sampled, collected objects included) — ${n} requests, ${relative(ROOT, path)}`, '',
    `${Math.round(total / n)} bytes per request in all.`, '',
    '| package or file | bytes/req |', '| --- | ---: |', rows(byPlace), '',
    '| allocating function ← its caller | bytes/req |', '| --- | ---: |', rows(bySite), ''].join('\n')
}

/** Runs one configuration under --cpu-prof; returns the profile path and the measured window. */
async function profileConfig (name, upstreamUrl) {
  const profDir = mkdtempSync(join(tmpdir(), 'portcullis-profile-'))
  const { child, url, headers, dir } = await startTarget(name, upstreamUrl, { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-interval=${INTERVAL_US}`] })
  await load(url, headers, WARMUP_S, CONNECTIONS)
  const from = nowUs()
  const r = await load(url, headers, DURATION_S, CONNECTIONS)
  const to = nowUs()
  await stopTarget(child)
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
  if (file === undefined) throw new Error(`${name}: no profile was written`)
  mkdirSync(OUT, { recursive: true })
  const path = join(OUT, `${name}.cpuprofile`)
  renameSync(join(profDir, file), path)
  const window = { from, to, requests: r.requests.total }
  writeFileSync(`${path}.window.json`, JSON.stringify(window))
  rmSync(profDir, { recursive: true, force: true })
  rmSync(dir, { recursive: true, force: true })
  return { path, window, requests: r.requests.total, errors: r.errors + r.timeouts + r.non2xx, reqPerSec: Math.round(r.requests.average) }
}

// --- summary ------------------------------------------------------------------------

/** Where a frame's code lives: a package, the gateway's own file, node core, or V8's pseudo-frames. */
function placeOf (url) {
  if (url === '') return '(native)'
  if (url.startsWith('node:')) return 'node core'
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const nm = path.lastIndexOf(`node_modules${sep}`)
  if (nm >= 0) {
    const parts = path.slice(nm + 13).split(sep)
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]
  }
  const rel = relative(ROOT, path)
  if (rel.startsWith(`dist${sep}`)) return `src/${rel.slice(5).replace(/\.js$/, '.ts')}`
  return rel
}

/** The request path's areas, by the gateway file (and for the HTTP upstream, the function) a sample is in. */
function areaOfGatewayFrame (file, fn) {
  if (file === 'src/upstreams/http-upstream.ts') {
    return /^(onResponse|startResponse|write|finish|responseHeaders|headerValue|onClientClose)/.test(fn) ? 'response relay (Relay callbacks)' : 'upstream request (handle, dispatch, headers)'
  }
  const rules = [
    [/^src\/routes\/mcp\/(inspect|check-mirrored-headers)\.ts$|^src\/mcp\//, 'inspection (JSON-RPC scan, headers)'],
    [/^src\/routes\/mcp\/authenticate\.ts$|^src\/resource-server\//, 'token check'],
    [/^src\/routes\/mcp\/(check-access|judge)\.ts$|^src\/policy\/|^src\/guardrails\//, 'access and policy'],
    [/^src\/routes\/mcp\/charge\.ts$|^src\/rate-limit\/|^src\/store\//, 'rate limits'],
    [/^src\/routes\/mcp\/record\.ts$|^src\/observability\/audit/, 'audit'],
    [/^src\/observability\/metrics\.ts$/, 'metrics'],
    [/^src\/observability\/(request-trace|tracing)\.ts$|^src\/routes\/mcp\/open-trace\.ts$/, 'tracing'],
    [/^src\/routes\/mcp\/plan-response\.ts$|^src\/upstreams\/response-edit\.ts$/, 'plan response'],
    [/^src\/routes\/mcp\/(relay|serving-upstream)\.ts$|^src\/upstreams\/(caller-headers|identity-token|upstream-credentials)\.ts$/, 'upstream request (handle, dispatch, headers)'],
    [/^src\/upstreams\/(respond|sse-events)\.ts$/, 'response relay (Relay callbacks)'],
    [/^src\/routes\/mcp(\.ts|\/)/, 'route steps (call, admit, body parser hook)'],
    [/^src\/app\.ts$/, 'app-wide hooks (app.ts)'],
    [/^src\/reload\/gateway\.ts$/, 'listener dispatch (reload/gateway.ts)'],
  ]
  for (const [re, area] of rules) if (re.test(file)) return area
  return `other gateway code (${file})`
}

/** Outside gateway frames: the library (or runtime part) the sample's stack is in. */
function areaOfLibraryStack (places) {
  if (places.some((p) => p === 'fastify' || p === 'find-my-way' || p === 'avvio' || p.startsWith('@fastify/'))) return 'fastify (routing, hooks, body, reply)'
  if (places.includes('undici')) return 'undici (socket, parser; no gateway frame)'
  if (places.some((p) => p === 'pino' || p === 'sonic-boom' || p === 'thread-stream')) return 'pino / sonic-boom'
  return 'node core (sockets, http parser, timers; no gateway or library frame)'
}

/**
 * Self and inclusive time from a .cpuprofile, over the samples inside `window` (µs on the
 * profiler's clock) or over all of them.
 */
function summarise (profile, window) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const key = (n) => `${n.callFrame.functionName || '(anonymous)'} ${placeOf(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`
  const self = new Map()
  const inclusive = new Map()
  const selfByPlace = new Map()
  const byArea = new Map()
  const areaByPlace = new Map()
  const add = (m, k, v) => m.set(k, (m.get(k) ?? 0) + v)
  let t = profile.startTime
  let busyUs = 0
  let idleUs = 0
  let samples = 0
  const stackCache = new Map()
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    // A sample stands for the time until the next one.
    const dt = profile.timeDeltas[i + 1] ?? 0
    if (window !== undefined && (t < window.from || t > window.to)) continue
    const leaf = byId.get(profile.samples[i])
    const leafName = leaf.callFrame.functionName
    if (leafName === '(idle)') { idleUs += dt; continue }
    samples++
    busyUs += dt
    add(self, key(leaf), dt)
    add(selfByPlace, leafName === '(garbage collector)' ? '(garbage collector)' : leafName === '(program)' ? '(program)' : placeOf(leaf.callFrame.url), dt)
    let info = stackCache.get(leaf.id)
    if (info === undefined) {
      const keys = new Set()
      const places = []
      let gatewayFrame
      for (let id = leaf.id; id !== undefined; id = parent.get(id)) {
        const n = byId.get(id)
        if (n.callFrame.functionName === '(root)') break
        keys.add(key(n))
        const place = placeOf(n.callFrame.url)
        places.push(place)
        // The listener's dispatch to the generation in force (reload/gateway.ts) only passes the request to fastify.
        if (gatewayFrame === undefined && place.startsWith('src/') && (place !== 'src/reload/gateway.ts' || id === leaf.id)) gatewayFrame = { file: place, fn: n.callFrame.functionName }
      }
      let area
      if (leafName === '(garbage collector)') area = 'GC'
      else if (leafName === '(program)') area = '(program: V8/native, unattributed)'
      else if (gatewayFrame !== undefined) area = areaOfGatewayFrame(gatewayFrame.file, gatewayFrame.fn)
      else area = areaOfLibraryStack(places)
      info = { keys, area }
      stackCache.set(leaf.id, info)
    }
    for (const k of info.keys) add(inclusive, k, dt)
    add(byArea, info.area, dt)
    add(areaByPlace, `${info.area} — ${leafName.startsWith('(') ? leafName : placeOf(leaf.callFrame.url)}`, dt)
  }
  const sorted = (m) => [...m.entries()].sort((a, b) => b[1] - a[1])
  return { busyUs, idleUs, samples, self: sorted(self), inclusive: sorted(inclusive), selfByPlace: sorted(selfByPlace), byArea: sorted(byArea), areaByPlace: sorted(areaByPlace) }
}

function render (title, s, requests) {
  const pct = (us) => `${((100 * us) / s.busyUs).toFixed(1)}%`
  const perReq = (us) => requests === undefined ? '' : ` | ${(us / requests).toFixed(1)}`
  const head = requests === undefined ? '| item | ms | share |\n| --- | ---: | ---: |' : '| item | ms | share | µs/req |\n| --- | ---: | ---: | ---: |'
  const rows = (list) => list.map(([k, us]) => `| ${k.replace(/\|/g, '\\|')} | ${(us / 1000).toFixed(0)} | ${pct(us)}${perReq(us)} |`).join('\n')
  const busy = `${(s.busyUs / 1000).toFixed(0)} ms busy (${s.samples} samples), ${(s.idleUs / 1000).toFixed(0)} ms idle${requests === undefined ? '' : `, ${requests} requests: ${(s.busyUs / requests).toFixed(1)} µs busy per request`}`
  return [
    `### ${title}`, '', busy, '',
    '#### By area of the request path (deepest gateway frame; else the library the stack is in)', '', head, rows(s.byArea), '',
    '#### Areas by where the time is spent (self time of the leaf frame\'s package or file)', '', head, rows(s.areaByPlace.slice(0, TOP * 2)), '',
    '#### Self time by package / file', '', head, rows(s.selfByPlace.slice(0, TOP)), '',
    '#### Top self time by function', '', head, rows(s.self.slice(0, TOP)), '',
    '#### Top inclusive time by function (gateway and library frames)', '', head,
    rows(s.inclusive.filter(([k]) => !/^\(|^(processTicksAndRejections|runMicrotasks|emit|onStreamRead|listOnTimeout|processTimers) /.test(k)).slice(0, TOP)), '',
  ].join('\n')
}

/** The configurations side by side: each area's busy µs per request and its share of the busy time. */
function areasTable (list) {
  const areas = []
  for (const { s } of list) for (const [area] of s.byArea) if (!areas.includes(area)) areas.push(area)
  const cell = ({ s, requests }, area) => {
    const us = s.byArea.find(([a]) => a === area)?.[1]
    return us === undefined || us === 0 ? '–' : `${(us / requests).toFixed(1)} (${((100 * us) / s.busyUs).toFixed(1)}%)`
  }
  return [
    '### Areas by configuration: busy µs per request under the profiler (share of busy time)', '',
    `| area | ${list.map((c) => c.name).join(' | ')} |`, `| --- |${list.map(() => ' ---: |').join('')}`,
    `| all (busy µs per request) | ${list.map(({ s, requests }) => (s.busyUs / requests).toFixed(1)).join(' | ')} |`,
    ...areas.map((area) => `| ${area} | ${list.map((c) => cell(c, area)).join(' | ')} |`),
  ].join('\n')
}

if (process.argv[2] === '--summarise') {
  for (const file of process.argv.slice(3)) {
    // The measured window, when this script wrote the profile (else the whole profile: start-up and warm-up included).
    let window
    try { window = JSON.parse(readFileSync(`${file}.window.json`, 'utf8')) } catch { window = undefined }
    process.stdout.write(`${render(file, summarise(JSON.parse(readFileSync(file, 'utf8')), window), window?.requests)}\n`)
  }
  process.exit(0)
}

const { child: upstream, line } = await start([HTTP_SERVER], { ready: /"port"/ })
const upstreamUrl = JSON.parse(line).url
const parts = [`Gateway profile — ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version} — ${CONNECTIONS} connections, ${WARMUP_S} s warm-up, ${DURATION_S} s measured, sampling every ${INTERVAL_US} µs`, '']
const summaries = []
for (const name of CONFIGS) {
  if (HOPS[name] === undefined && GATEWAY_CONFIGS[name] === undefined) throw new Error(`unknown configuration ${name} (${[...Object.keys(HOPS), ...Object.keys(GATEWAY_CONFIGS)].join(', ')})`)
  process.stderr.write(`profile: ${name}\n`)
  if (HEAP) {
    parts.push(await heapProfileConfig(name, upstreamUrl))
    continue
  }
  const run = await profileConfig(name, upstreamUrl)
  const s = summarise(JSON.parse(readFileSync(run.path, 'utf8')), run.window)
  summaries.push({ name, s, requests: run.requests })
  parts.push(render(`${name}: ${run.requests} requests (${run.reqPerSec} req/s, ${run.errors} errors) — ${relative(ROOT, run.path)}`, s, run.requests))
}
upstream.kill('SIGKILL')
process.stdout.write(`${[...(summaries.length > 0 ? [areasTable(summaries), ''] : []), ...parts].join('\n')}\n`)
process.exit(0)
