/**
 * The doctor's look behind the gateway: each configured upstream reachable and
 * answering `initialize` (MCP basic/lifecycle, "Initialization"), stdio
 * commands found and started within startupTimeoutMs, clocks that agree (token
 * lifetimes and signed identity tokens depend on it), and Redis.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Config, HttpServerConfig, SseServerConfig, StdioServerConfig } from '../config/schema.js'
import { probeTcp } from '../upstreams/tcp-probe.js'
import { hasUserTemplate, stdioTemplateValues } from '../config/user-template.js'
import { ANONYMOUS } from '../identity.js'
import { TOKEN_CLOCK_TOLERANCE_S } from '../resource-server/verify-token.js'
import { Channel } from '../upstreams/stdio/channel.js'
import { McpChild } from '../upstreams/stdio/child-process.js'
import { childEnvironment } from '../upstreams/stdio/environment.js'
import { checkServerCommand } from '../upstreams/stdio/resolve-command.js'
import { describeFetchError, fail, pass, type CheckResult, type DoctorFetch } from './check.js'
import { maskUrl } from '../config/describe.js'

const INITIALIZE = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'portcullis-doctor', version: '1' } } }
const REDIS_PING_TIMEOUT_MS = 3_000

/** The serverInfo name in an initialize answer, JSON or the first SSE `data:` line. */
function serverInfoOf (text: string): string | undefined {
  const json = text.trimStart().startsWith('{') ? text : /^data: ?(.*)$/m.exec(text)?.[1]
  try {
    const message = JSON.parse(json ?? '') as { result?: { serverInfo?: { name?: string } } }
    return message.result === undefined ? undefined : message.result.serverInfo?.name ?? '(unnamed)'
  } catch {
    return undefined
  }
}

export interface HttpUpstreamCheck {
  readonly result: CheckResult
  /** The upstream's Date header, for the clock check. */
  readonly date?: string
}

export async function checkHttpUpstream (server: HttpServerConfig, fetch: DoctorFetch): Promise<HttpUpstreamCheck> {
  const name = `upstream ${server.name}`
  let res: Response
  try {
    res = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...server.headers }, body: JSON.stringify(INITIALIZE) })
  } catch (err) {
    return { result: fail(name, `${maskUrl(server.url)}: ${describeFetchError(err)}`, `start the server, or fix servers[].url of "${server.name}" (the gateway answers 502 for it meanwhile)`) }
  }
  const date = res.headers.get('date') ?? undefined
  const withDate = (result: CheckResult): HttpUpstreamCheck => ({ result, ...(date === undefined ? {} : { date }) })
  const text = await res.text()
  const session = res.headers.get('mcp-session-id')
  // Be a polite client: end the session the handshake opened.
  if (session !== null) await fetch(server.url, { method: 'DELETE', headers: { ...server.headers, 'mcp-session-id': session } }).then((r) => r.body?.cancel(), () => {})
  // These servers expect something made per caller (their credential, or a signed identity token): a refusal is expected here.
  if ((res.status === 401 || res.status === 403) && (server.upstreamAuth !== undefined || server.identity !== undefined)) {
    return withDate(pass(name, `${maskUrl(server.url)} reachable; it wants a per-caller ${server.upstreamAuth === undefined ? 'identity token (identity)' : 'credential (upstreamAuth)'}, which the doctor does not have`))
  }
  if (res.status === 401 || res.status === 403) {
    return withDate(fail(name, `${maskUrl(server.url)} answered ${res.status} to the gateway's credentials`, `check servers[].headers of "${server.name}" (the token or key it sends)`))
  }
  const info = res.status === 200 ? serverInfoOf(text) : undefined
  if (info === undefined) return withDate(fail(name, `${maskUrl(server.url)} answered ${res.status} but no initialize result`, `check that servers[].url of "${server.name}" is its Streamable HTTP MCP endpoint`))
  return withDate(pass(name, `${maskUrl(server.url)} answered initialize (${info})`))
}

/**
 * Starts the command once as the gateway would (allow-listed environment, no
 * user) and waits for its initialize answer within startupTimeoutMs. As the
 * doctor's own account, not servers[].user: the doctor is not root.
 */
/** A 2024-11-05 server: reachable (a TCP connect); its event stream is opened per client session, not by the doctor. */
export async function checkSseUpstream (server: SseServerConfig): Promise<CheckResult> {
  const name = `upstream ${server.name}`
  const health = await probeTcp(server.name, server.transport, server.url)
  if (!health.isReachable) return fail(name, `${maskUrl(server.url)}: ${health.error ?? 'unreachable'}`, `start the server, or fix servers[].url of "${server.name}" (the gateway answers 502 for it meanwhile)`)
  return pass(name, `${maskUrl(server.url)} accepts connections (HTTP+SSE, 2024-11-05)`)
}

export async function checkStdioUpstream (server: StdioServerConfig, log: FastifyBaseLogger): Promise<CheckResult> {
  const name = `upstream ${server.name}`
  const command = checkServerCommand(server)
  if (!command.isStartable) return fail(name, `command: ${command.reason ?? server.command}`, 'install the program, put its directory on the gateway\'s PATH (or servers[].env.PATH), or give an absolute path')
  if (stdioTemplateValues(server).some(hasUserTemplate)) {
    return pass(name, `command ${command.path ?? server.command} found; its args/env/cwd use per-user values, so it is only started for a signed-in user`)
  }
  const started = performance.now()
  const child = new McpChild({ server: server.name, command: server.command, args: server.args, env: childEnvironment(server.env, ANONYMOUS), cwd: server.cwd, maxMessageBytes: server.maxMessageBytes }, log)
  const channel = new Channel(child, { server: server.name, isExclusive: false, requestTimeoutMs: server.startupTimeoutMs, log, now: () => Date.now() })
  try {
    if (!await child.whenSpawned()) return fail(name, `${server.command} failed to start: ${child.exitInfo?.error ?? 'unknown error'}`, 'check the command and its permissions')
    const answer = await channel.call(INITIALIZE, server.startupTimeoutMs)
    const ms = Math.round(performance.now() - started)
    const info = (answer.result as { serverInfo?: { name?: string } } | undefined)?.serverInfo?.name
    if (answer.result === undefined) return fail(name, `${server.command} refused initialize`, 'run the command by hand and read its stderr')
    return pass(name, `${server.command} started and answered initialize in ${ms} ms (${info ?? 'unnamed'}; startupTimeoutMs ${server.startupTimeoutMs})`)
  } catch {
    const exit = child.exitInfo
    const why = exit === undefined ? `no initialize answer within startupTimeoutMs (${server.startupTimeoutMs} ms)` : `it exited (code ${String(exit.code)}${exit.signal === null ? '' : `, ${exit.signal}`})`
    return fail(name, `${server.command}: ${why}`, exit === undefined ? 'raise servers[].startupTimeoutMs (a first npx -y download is slow) or install the package beforehand' : `run "${server.command} ${server.args.join(' ')}" by hand and read its stderr`)
  } finally {
    await child.terminate()
  }
}

/** Skew between this machine and each HTTP Date header seen (1 s resolution); tokens allow TOKEN_CLOCK_TOLERANCE_S. */
export function checkClocks (dates: ReadonlyArray<{ readonly who: string, readonly date: string | undefined }>, nowMs: number): CheckResult {
  const name = 'clock skew'
  const seen = dates.flatMap(({ who, date }) => {
    const at = date === undefined ? Number.NaN : Date.parse(date)
    return Number.isNaN(at) ? [] : [{ who, skewS: Math.round((at - nowMs) / 1000) }]
  })
  if (seen.length === 0) return pass(name, 'no Date header to compare with')
  const off = seen.filter((s) => Math.abs(s.skewS) > TOKEN_CLOCK_TOLERANCE_S)
  const list = (items: typeof seen): string => items.map((s) => `${s.who} ${s.skewS >= 0 ? '+' : ''}${s.skewS} s`).join(', ')
  if (off.length > 0) return fail(name, `off by more than ${TOKEN_CLOCK_TOLERANCE_S} s against this machine: ${list(off)}`, 'run NTP (chrony, systemd-timesyncd) on every host: tokens would look expired or not yet valid')
  return pass(name, `within ${TOKEN_CLOCK_TOLERANCE_S} s of this machine: ${list(seen)}`)
}

/** store.redis answers PING (the password, if any, never printed). */
export async function checkRedis (config: Config): Promise<CheckResult | undefined> {
  const url = config.store.redis
  if (url === undefined) return undefined
  const shown = maskUrl(url)
  const { Redis } = await import('ioredis')
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: REDIS_PING_TIMEOUT_MS, retryStrategy: () => null })
  redis.on('error', () => {})
  const started = performance.now()
  try {
    await redis.connect()
    await redis.ping()
    return pass('redis', `${shown} answered PING in ${Math.round(performance.now() - started)} ms`)
  } catch (err) {
    return fail('redis', `${shown}: ${(err as Error).message}`, 'start Redis, or fix store.redis (host, port, password, TLS: rediss://)')
  } finally {
    redis.disconnect()
  }
}
