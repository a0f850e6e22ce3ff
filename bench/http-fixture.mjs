// The HTTP scenario's parts for the bench's own tools (profile-http.mjs, compare-http.mjs): the
// fixture upstream, a gateway from a given tree's dist/ in one of the bench's configurations,
// a session through it, and the load (tools/call echo, autocannon). bench/run.mjs opens its
// sessions with openSession from here too.
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createServer } from 'node:net'
import autocannon from 'autocannon'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const HTTP_SERVER = join(ROOT, 'test', 'fixtures', 'http-mcp-server.mjs')
export const REFERENCE_HOP = join(ROOT, 'bench', 'reference-hop.mjs')
export const FASTIFY_HOP = join(ROOT, 'bench', 'fastify-hop.mjs')
export const FLOOR_HOP = join(ROOT, 'bench', 'floor-hop.mjs')
/**
 * The yardsticks startTarget runs besides the gateway's configurations: the reference hop, the
 * same hop inside Fastify, and that plus the body inspection, audit record and metrics every
 * configuration does (the floor of a bare gateway).
 */
export const HOPS = { reference: REFERENCE_HOP, 'fastify-hop': FASTIFY_HOP, 'floor-hop': FLOOR_HOP }
const ACCEPT = 'application/json, text/event-stream'
const CLIENT_SECRET = 'bench-client-secret-of-at-least-32-chars'
const AUTH = `auth:\n  clients: [{ clientId: bench, clientSecret: "${CLIENT_SECRET}", grantTypes: [client_credentials] }]\n`

/** The bench's HTTP scenario configurations (bench/run.mjs), by name. */
export const GATEWAY_CONFIGS = {
  bare: (url) => `auth: { enabled: false }\nservers:\n  - { name: echo, transport: http, url: "${url}" }\n`,
  /** bench/compare-virtual.mjs: bare, and a virtual server `v` of the one member (its tool is echo__echo). */
  virtual: (url) => `auth: { enabled: false }\nservers:\n  - { name: echo, transport: http, url: "${url}" }\nvirtualServers:\n  - { name: v, members: [echo], prefix: always }\n`,
  token: (url) => `${AUTH}servers:\n  - { name: echo, transport: http, url: "${url}" }\n`,
  // token + servers[].identity: a signed identity header on every upstream request (cached per caller and server).
  identity: (url) => `${AUTH}servers:\n  - { name: echo, transport: http, url: "${url}", identity: { header: X-Portcullis-Identity } }\n`,
  full: (url) => `${AUTH}rateLimits: { perUser: 100000000/min, perUserPerTool: 100000000/min }
servers:
  - name: echo
    transport: http
    url: "${url}"
    access: { clients: [bench] }
    tools:
      deny: [delete_*, admin_*]
      echo: { rateLimit: 100000000/min, globalRateLimit: 100000000/min }
`,
  /** The same echo tool over the stdio bridge (test/fixtures/stdio-server.mjs, one session); the URL is not used. */
  stdio: () => `auth: { enabled: false }\nservers:\n  - { name: echo, transport: stdio, command: ${JSON.stringify(process.execPath)}, args: [${JSON.stringify(join(ROOT, 'test', 'fixtures', 'stdio-server.mjs'))}] }\n`,
}

export const children = new Set()
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
/** Microseconds on the monotonic clock V8's profiler stamps its samples with. */
export const nowUs = () => Number(process.hrtime.bigint() / 1000n)

export async function freePort () {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)) })
  })
}

export function start (args, { ready, env = {} } = {}) {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  children.add(child)
  let out = ''
  child.stderr.on('data', (d) => { out += d.toString() })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start: ${out.slice(-500)}`)), 30_000)
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${args.join(' ')} exited with ${code}: ${out.slice(-500)}`)) })
    if (ready === undefined) { clearTimeout(timer); resolve({ child }); return }
    child.stdout.on('data', (d) => {
      out += d.toString()
      const line = out.split('\n').find((l) => ready.test(l))
      if (line !== undefined) { clearTimeout(timer); resolve({ child, line }) }
    })
  })
}

export async function waitForHttp (url) {
  for (let i = 0; i < 400; i++) {
    if (await fetch(url).then(() => true, () => false)) return
    await sleep(50)
  }
  throw new Error(`${url} never answered`)
}

export async function machineToken (port, resource) {
  const res = await fetch(`http://127.0.0.1:${port}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`bench:${CLIENT_SECRET}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource }).toString(),
  })
  const body = await res.json()
  if (res.status !== 200) throw new Error(`token request failed: ${JSON.stringify(body)}`)
  return body.access_token
}

export async function openSession (url, extra) {
  const init = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: ACCEPT, ...extra },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'profile', version: '1' } } }),
  })
  const sessionId = init.headers.get('mcp-session-id')
  await init.text()
  if (init.status !== 200 || sessionId === null) throw new Error(`initialize via ${url} failed: ${init.status}`)
  const headers = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25', ...extra }
  await (await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })).text()
  return headers
}

/**
 * `tool`: the tool called (a virtual server's merged name, say); `rate`: requests per second
 * offered in all (autocannon's overallRate); without it, as many as the gateway answers.
 */
export function load (url, headers, seconds, connections = 50, { tool = 'echo', rate = undefined } = {}) {
  let id = 0
  return autocannon({
    url,
    method: 'POST',
    connections,
    duration: seconds,
    ...(rate === undefined ? {} : { overallRate: rate }),
    headers,
    requests: [{ setupRequest: (req) => ({ ...req, body: `{"jsonrpc":"2.0","id":${++id},"method":"tools/call","params":{"name":"${tool}","arguments":{"text":"hello"}}}` }) }],
  })
}

/** CPU seconds (user + system) of a process so far, from /proc/<pid>/stat. */
export function cpuSeconds (pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/**
 * A gateway from `tree`'s dist/ (default this tree) in one of GATEWAY_CONFIGS, or one of HOPS, with a session open through it. `nodeArgs`: before the script (--cpu-prof, V8 flags); `env`: added to ours.
 */
export async function startTarget (name, upstreamUrl, { tree = ROOT, nodeArgs = [], env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
  const port = await freePort()
  const isHop = HOPS[name] !== undefined
  let child
  if (isHop) {
    // The hops have no signal handler: one that exits lets --cpu-prof write its profile.
    ({ child } = await start([...nodeArgs, '--import', 'data:text/javascript,process.on("SIGTERM",()=>process.exit(0))', HOPS[name], upstreamUrl, String(port)], { ready: /ready/, env }))
  } else {
    const configPath = join(dir, 'gateway.yaml')
    writeFileSync(configPath, `publicUrl: http://127.0.0.1:${port}\nlisten: { host: 127.0.0.1, port: ${port} }\ndataDir: ${join(dir, 'data')}\nlog: { level: warn }\n${GATEWAY_CONFIGS[name](upstreamUrl)}`)
    ;({ child } = await start([...nodeArgs, join(tree, 'dist', 'main.js'), 'start', '--config', configPath], { env }))
    await waitForHttp(`http://127.0.0.1:${port}/healthz`)
  }
  const url = isHop ? `http://127.0.0.1:${port}/mcp` : `http://127.0.0.1:${port}/echo/mcp`
  const extra = name === 'bare' || name === 'virtual' || name === 'stdio' || isHop ? {} : { authorization: `Bearer ${await machineToken(port, url)}` }
  const headers = await openSession(url, extra)
  return { child, url, headers, dir }
}

/** Stops a target: SIGTERM (a clean exit writes --cpu-prof's profile), a second one after 5 s. */
export async function stopTarget (child) {
  child.removeAllListeners('exit')
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const second = setTimeout(() => child.kill('SIGTERM'), 5000)
  await exited
  clearTimeout(second)
  children.delete(child)
}

/** Median of numbers. */
export function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}
