/** Shared test plumbing: configs from objects, gateways on real ports, log sinks, upstream fixtures. */
import { connect, createServer } from 'node:net'
import { execFileSync, spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { ListChangedHandlers } from '@modelcontextprotocol/sdk/types.js'
import { Writable } from 'node:stream'
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import { buildApp, type BuildOptions } from '../src/app.js'
import { parseConfig } from '../src/config/load.js'
import type { Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { startHttpMcpServer } from './fixtures/http-mcp-server.mjs'
import './child-processes.js'

export interface Teardown { teardown: (fn: () => unknown) => void }

/** A port that was free a moment ago (the gateway's publicUrl must be known before it listens). */
export async function freePort (): Promise<number> {
  // A port chosen before its server listens (a gateway whose URL an IdP must know first) stays
  // free only if nothing else takes it meanwhile. Ports from listen(0) are ephemeral ones, which
  // the kernel also hands to outgoing connections: under parallel test files one took such a
  // port in the gap (EADDRINUSE). Below the ephemeral range only another freePort can collide.
  const below = ephemeralLow()
  for (let attempt = 0; below !== undefined && attempt < 50; attempt++) {
    const port = FIXED_PORT_FLOOR + Math.floor(Math.random() * (below - FIXED_PORT_FLOOR))
    if (await canListen(port)) return port
  }
  return listenOnce(0)
}

/** The lowest ephemeral port (Linux), or undefined where it cannot be read. */
function ephemeralLow (): number | undefined {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    return Number.isInteger(low) && low > FIXED_PORT_FLOOR + 1000 ? low : undefined
  } catch {
    return undefined
  }
}

const FIXED_PORT_FLOOR = 20_000

async function canListen (port: number): Promise<boolean> {
  try {
    return await listenOnce(port) === port
  } catch {
    return false
  }
}

function listenOnce (port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(port, '127.0.0.1', () => {
      const address = srv.address()
      const bound = typeof address === 'object' && address !== null ? address.port : 0
      srv.close(() => resolve(bound))
    })
  })
}

/** Goes through the real YAML loader, so tests exercise what operators write. */
export function makeConfig (object: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(stringify(object), '<test>', env)
}

/** Collects pino's JSON lines. */
export function logSink (): { stream: Writable, lines: string[], text: () => string } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(line)
      cb()
    },
  })
  return { stream, lines, text: () => lines.join('\n') }
}

export interface RunningGateway {
  readonly app: FastifyInstance
  readonly config: Config
  readonly baseUrl: string
  readonly logs: ReturnType<typeof logSink>
  /** Audit records, one parsed object per line. */
  readonly audit: ReturnType<typeof logSink>
  mcpUrl: (server: string) => string
}

/** Builds and listens a gateway on 127.0.0.1 with a fresh port; closed at teardown. */
/**
 * Unless a test says otherwise: auth off (most tests exercise the proxy itself; the auth tests
 * turn it on), an in-memory store and a throw-away data directory.
 */
export async function startGateway (t: Teardown, object: Record<string, unknown>, env: NodeJS.ProcessEnv = {}, options: Omit<BuildOptions, 'logger'> = {}): Promise<RunningGateway> {
  // A test that must know the address beforehand (cluster.advertiseUrl) passes listen.port itself.
  const port = (object.listen as { port?: number } | undefined)?.port ?? await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-test-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const config = makeConfig({
    publicUrl: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    log: { level: 'debug' },
    dataDir,
    store: { memory: true },
    auth: { enabled: false },
    ...object,
  }, env)
  const logs = logSink()
  const audit = logSink()
  // log.format: pretty in a test's config gets pino-pretty's lines in the sink (JSON otherwise).
  const app = await buildApp(config, { logger: createLogger(config.log.level, logs.stream, config.log.format ?? 'json'), auditDestination: audit.stream, ...options })
  await app.listen({ host: '127.0.0.1', port })
  t.teardown(() => app.close())
  const baseUrl = `http://127.0.0.1:${port}`
  return { app, config, baseUrl, logs, audit, mcpUrl: (server) => `${baseUrl}/${server}/mcp` }
}

export type HttpFixture = Awaited<ReturnType<typeof startHttpMcpServer>>

export async function startUpstream (t: Teardown, options: Parameters<typeof startHttpMcpServer>[0] = {}): Promise<HttpFixture> {
  const upstream = await startHttpMcpServer(options)
  t.teardown(() => upstream.close())
  return upstream
}

export const INIT_BODY = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw-test', version: '1' } },
}

export const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }

/** POST a JSON-RPC body with fetch; returns status, headers and parsed JSON (or text). */
export async function postJson (url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, headers: Headers, json: unknown, text: string }> {
  const res = await fetch(url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, headers: res.headers, json, text }
}

/** A bare node:http server for upstream misbehaviour (never answers, 401s, cuts streams). */
export async function startRawServer (t: Teardown, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string, requests: number }> {
  const state = { url: '', requests: 0 }
  const server = createHttpServer((req, res) => {
    state.requests++
    handler(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  state.url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/mcp`
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return state
}

/** Connects the official SDK client (2025 era) to a URL. */
/** `listChanged`: the SDK client's own handling of list_changed notifications (it lists again and hands over the new list). */
export async function connectClient (t: Teardown, url: string, options: { headers?: Record<string, string>, capabilities?: Record<string, unknown>, listChanged?: ListChangedHandlers } = {}): Promise<{ client: Client, transport: StreamableHTTPClientTransport }> {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: options.headers ?? {} } })
  const client = new Client({ name: 'portcullis-test', version: '1.0.0' }, { capabilities: options.capabilities ?? {}, ...(options.listChanged === undefined ? {} : { listChanged: options.listChanged }) })
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport }
}

export const STDIO_FIXTURE = new URL('./fixtures/stdio-server.mjs', import.meta.url).pathname
export const STDIO_MODERN_FIXTURE = new URL('./fixtures/stdio-modern-server.mjs', import.meta.url).pathname
export const EVERYTHING_SERVER = new URL('../node_modules/@modelcontextprotocol/server-everything/dist/index.js', import.meta.url).pathname

/** A stdio server entry running one of our fixtures with the machine's node. */
export function stdioServer (name: string, options: Record<string, unknown> & { flags?: string[], script?: string } = {}): Record<string, unknown> {
  const { flags = [], script = STDIO_FIXTURE, ...rest } = options
  return { name, transport: 'stdio', command: process.execPath, args: [script, ...flags], ...rest }
}

/**
 * `promise`'s value, or `fallback` once `ms` have passed. The timer is cleared either way: a bare
 * `Promise.race` with a `setTimeout` keeps the test process alive until it fires, holding one of
 * the suite's job slots idle (docs/benchmarks.md, 2026-12-01).
 */
export async function within<T, F> (promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<F>((resolve) => { timer = setTimeout(() => resolve(fallback), ms) })])
  } finally {
    clearTimeout(timer)
  }
}

/** True while a process exists and is not a zombie (a zombie has exited; only its parent has not reaped it). */
export function isProcessAlive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.split(') ')[1]?.startsWith('Z') !== true
  } catch {
    return false
  }
}

/** Waits (polling) until `predicate` holds or `ms` pass. For process exits, which no event reports here. */
export async function eventually (predicate: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await predicate()) return true
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  return predicate()
}

/** Live (non-zombie) processes whose process group is `pgid`, from /proc. */
export function processGroupMembers (pgid: number): number[] {
  const members: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const fields = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
      // After the command: state, ppid, pgrp.
      if (fields[0] !== 'Z' && Number(fields[2]) === pgid) members.push(Number(entry))
    } catch {
      // The process ended while we looked.
    }
  }
  return members
}

/** Text of the first content item of a tool result. */
export function textOf (result: unknown): string {
  const content = (result as { content?: Array<{ type: string, text?: string }> }).content
  return content?.[0]?.text ?? ''
}

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/**
 * Real Redis (127.0.0.1:6379 on these machines). In CI a missing Redis fails
 * the test loudly; on a laptop without one the test says so and stops.
 */
export async function redisAvailable (t: Teardown & { comment: (message: string) => void }): Promise<boolean> {
  const { Redis } = await import('ioredis')
  const probe = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 1000, retryStrategy: () => null })
  probe.on('error', () => {})
  try {
    await probe.connect()
    await probe.ping()
    return true
  } catch (err) {
    if (process.env.CI !== undefined) throw new Error(`Redis is required in CI but ${REDIS_URL} did not answer: ${(err as Error).message}`, { cause: err })
    t.comment(`no Redis at ${REDIS_URL}: start one (redis-server --port 6379 --save '') to run this test`)
    return false
  } finally {
    probe.disconnect()
  }
}

/** A key prefix no other test (or run) shares. */
export function uniquePrefix (): string {
  return `portcullis-test-${process.pid}-${Math.random().toString(36).slice(2, 10)}:`
}

/** A connection to the shared Redis and a key prefix of the test's own, whose keys go at teardown. */
export async function scratchRedis (t: Teardown): Promise<{ prefix: string, redis: Redis }> {
  const { Redis } = await import('ioredis')
  const prefix = uniquePrefix()
  const redis = new Redis(REDIS_URL)
  t.teardown(async () => {
    const keys = await redis.keys(`${prefix}*`)
    if (keys.length > 0) await redis.del(...keys)
    redis.disconnect()
  })
  return { prefix, redis }
}

export interface OwnRedis {
  readonly url: string
  readonly port: number
  /** Stops the server (SIGTERM: it writes its append-only file and exits). */
  stop: () => Promise<void>
  /** Starts it again on the same port and data directory: what was written comes back. */
  start: () => Promise<void>
}

/**
 * A redis-server of the test's own on a spare port, persistent (append-only
 * file in a temporary directory), so a test can stop and restart it. In CI a
 * missing redis-server fails loudly; on a laptop without one the test stops.
 */
export async function startOwnRedis (t: Teardown & { comment: (message: string) => void }): Promise<OwnRedis | undefined> {
  const binary = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((path) => existsSync(path))
  if (binary === undefined) {
    if (process.env.CI !== undefined) throw new Error('redis-server is required in CI but was not found')
    t.comment('no redis-server binary: install redis-server to run this test')
    return undefined
  }
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-redis-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let child: ChildProcess | undefined
  const start = async (): Promise<void> => {
    const started = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', '', '--daemonize', 'no'], { stdio: 'ignore' })
    child = started
    const deadline = Date.now() + 10_000
    while (!await canConnect(port)) {
      if (started.exitCode !== null) throw new Error(`redis-server exited with ${started.exitCode}`)
      if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}`)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
  const stop = async (): Promise<void> => {
    const running = child
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGTERM')
    await exited
  }
  t.teardown(stop)
  await start()
  return { url: `redis://127.0.0.1:${port}`, port, stop, start }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function canConnect (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

const CLI_READY_TIMEOUT_MS = 45_000

/** A config file for startCliGateway in `dir`: publicUrl and listen on a free port, dataDir in `dir`, then `fields`. */
export async function cliConfigFile (dir: string, fields: Record<string, unknown>): Promise<{ path: string, port: number }> {
  const port = await freePort()
  const path = join(dir, 'gw.yaml')
  writeFileSync(path, stringify({ publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), ...fields }))
  return { path, port }
}

/** `portcullis start` as a real process (dist/main.js), once it has logged that it is ready; `flags` such as --watch follow. */
export async function startCliGateway (t: Teardown, configPath: string, env: NodeJS.ProcessEnv = {}, flags: readonly string[] = []): Promise<{ child: ChildProcessWithoutNullStreams, output: () => string }> {
  const child = spawn(process.execPath, [new URL('../dist/main.js', import.meta.url).pathname, 'start', '--config', configPath, ...flags], { stdio: 'pipe', env: { ...process.env, ...env } })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  await new Promise<void>((resolve, reject) => {
    // A wait, not a timing check: three replicas starting together on a loaded 2-core machine took over 20 s.
    const timer = setTimeout(() => reject(new Error(`not ready: ${out}`)), CLI_READY_TIMEOUT_MS)
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`exited with ${String(code)}: ${out}`)) })
    child.stdout.on('data', () => { if (out.includes('portcullis ready')) { clearTimeout(timer); resolve() } })
  })
  return { child, output: () => out }
}

/**
 * A throw-away self-signed certificate for 127.0.0.1 and localhost (openssl, P-256, one day),
 * written into `dir` as key.pem and cert.pem; returns their paths.
 */
export function selfSignedCertificate (dir: string): { keyPath: string, certPath: string } {
  const keyPath = join(dir, 'key.pem')
  const certPath = join(dir, 'cert.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', keyPath, '-out', certPath,
  ], { stdio: 'ignore' })
  return { keyPath, certPath }
}

/**
 * Whether this process may mount a tmpfs (it is root) for the full-disk tests. In CI it must be:
 * a test that would silently do nothing throws instead. Elsewhere the test says why it skips its work.
 */
export function canMountTmpfs (t: { comment: (message: string) => void }): boolean {
  if (process.getuid?.() === 0) return true
  if (process.env.CI !== undefined) throw new Error('this test mounts a tmpfs and must run as root in CI')
  t.comment('not root: cannot mount a tmpfs for this test')
  return false
}

/** Writes to `path` until the file system says ENOSPC (a full disk, for the store-full and audit-full tests); returns the bytes written. */
export function fillUp (path: string): number {
  const fd = openSync(path, 'w')
  let written = 0
  try {
    for (const size of [1 << 20, 64 << 10, 4 << 10, 512, 1]) {
      const chunk = Buffer.alloc(size, 0x61)
      for (;;) {
        try {
          written += writeSync(fd, chunk)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
          break
        }
      }
    }
  } finally {
    closeSync(fd)
  }
  return written
}

/**
 * The Chromium the browser tests drive (CHROMIUM_PATH, else Debian's /usr/bin/chromium), or
 * undefined with a comment saying how to get it; missing in CI is an error, not a skip.
 */
export function chromiumPath (t: { comment: (message: string) => void }): string | undefined {
  const path = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
  if (existsSync(path)) return path
  if (process.env.CI !== undefined) throw new Error(`Chromium is required in CI but missing at ${path} (apt-get install chromium)`)
  t.comment(`no Chromium at ${path}: install it (apt-get install chromium) or set CHROMIUM_PATH to run the browser tests`)
  return undefined
}
