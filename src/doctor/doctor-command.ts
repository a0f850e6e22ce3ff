/**
 * `portcullis doctor [--config FILE] [--url URL]`: runs every check in the
 * order a client meets them and prints a checklist with a fix under each
 * failure. Exit 0 when all pass, 1 otherwise (2: bad arguments).
 */
import type { Config } from '../config/schema.js'
import { createLogger } from '../observability/logger.js'
import { createDoctorFetch, type CheckResult } from './check.js'
import { checkChallenge, checkEventStream, checkMetadata, checkPublicUrl, checkRegistration, checkRequestPath, type GatewayTarget } from './gateway-checks.js'
import { checkClocks, checkHttpUpstream, checkRedis, checkSseUpstream, checkStdioUpstream } from './upstream-checks.js'

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2

/** Every check, in the order a client meets them. */
export async function runDoctor (config: Config, url: string): Promise<CheckResult[]> {
  const target: GatewayTarget = { config, url, fetch: createDoctorFetch([url, config.publicUrl]) }
  const results: CheckResult[] = [checkPublicUrl(config, url)]
  const path = await checkRequestPath(target)
  results.push(path.result)
  const dates = [{ who: 'gateway', date: path.date }]
  if (path.probe !== undefined) {
    results.push(...await authorizationChecks(target))
    results.push(await checkEventStream(target))
  }
  const upstreamFetch = createDoctorFetch(config.servers.flatMap((s) => s.transport === 'http' ? [s.url] : []))
  // Quiet: a stdio child's stderr would bury the checklist; the check says what went wrong.
  const log = createLogger('silent')
  for (const server of config.servers) {
    if (server.transport === 'http') {
      const checked = await checkHttpUpstream(server, upstreamFetch)
      results.push(checked.result)
      dates.push({ who: server.name, date: checked.date })
    } else if (server.transport === 'sse') {
      results.push(await checkSseUpstream(server))
    } else {
      results.push(await checkStdioUpstream(server, log))
    }
  }
  results.push(checkClocks(dates, Date.now()))
  const redis = await checkRedis(config)
  if (redis !== undefined) results.push(redis)
  return results
}

async function authorizationChecks (target: GatewayTarget): Promise<CheckResult[]> {
  if (!target.config.auth.enabled) return [{ name: 'authorization', ok: true, detail: 'auth.enabled: false: no challenge and no sign-in (anyone who reaches the port is served)' }]
  const server = target.config.servers[0]?.name ?? ''
  const challenge = await checkChallenge(target, server)
  if (challenge.metadataUrl === undefined) return [challenge.result]
  const metadata = await checkMetadata(target, server, challenge.metadataUrl)
  const results = [challenge.result, ...metadata.results]
  if (metadata.results.every((r) => r.ok)) results.push(await checkRegistration(target, metadata.registrationEndpoint))
  return results
}

export function formatReport (url: string, config: Config, results: readonly CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.name.length))
  const lines = [`portcullis doctor: ${url} (publicUrl ${config.publicUrl}, config ${config.source})`, '']
  for (const r of results) {
    lines.push(`  ${r.ok ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(width)}  ${r.detail}`)
    if (!r.ok && r.fix !== undefined) lines.push(`        ${' '.repeat(width)}  fix: ${r.fix}`)
  }
  const failed = results.filter((r) => !r.ok).length
  lines.push('', failed === 0 ? `${results.length} checks: all ok` : `${results.length} checks: ${failed} failed`)
  return `${lines.join('\n')}\n`
}

/** --url: an http(s) origin; a trailing slash is forgiven, a path is not (publicUrl is an origin). */
function parseUrl (value: string): string | undefined {
  try {
    const u = new URL(value)
    if ((u.protocol !== 'https:' && u.protocol !== 'http:') || (u.pathname !== '/' && u.pathname !== '') || u.search !== '') return undefined
    return u.origin
  } catch {
    return undefined
  }
}

export async function doctorCommand (config: Config, urlOption: string | undefined): Promise<number> {
  const url = urlOption === undefined ? config.publicUrl : parseUrl(urlOption)
  if (url === undefined) {
    process.stderr.write(`portcullis: --url: expected an http(s) origin such as https://gw.example.com, got ${JSON.stringify(urlOption)}\n`)
    return EXIT_USAGE
  }
  const results = await runDoctor(config, url)
  process.stdout.write(formatReport(url, config, results))
  return results.every((r) => r.ok) ? EXIT_OK : EXIT_FAILED
}
