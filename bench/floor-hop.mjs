// The Fastify hop (bench/fastify-hop.mjs) plus the work no gateway configuration may skip: the
// body inspected (the gateway's own inspectBody: policy, limits and audit read it), one audit
// record written (the gateway's own createAuditLog, to a file, batched as the gateway does), and
// the three request metrics (the gateway's own Metrics: requests, duration, tool calls). No
// sessions, steps, policy or error handling. Beside the reference hop it is the floor of the
// gateway's bare configuration with Fastify, prom-client and this audit format kept: a bare
// gateway cannot cost less than this (docs/benchmarks.md, 2026-12-02 07:10). Needs the build.
// Usage: node bench/floor-hop.mjs <upstream url> <port>
import Fastify, { LogController } from 'fastify'
import { Pool } from 'undici'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger } from '../dist/observability/logger.js'
import { createAuditLog } from '../dist/observability/audit.js'
import { Metrics } from '../dist/observability/metrics.js'
import { inspectBody } from '../dist/mcp/jsonrpc.js'

const [upstreamUrl, port] = process.argv.slice(2)
const target = new URL(upstreamUrl)
const pool = new Pool(target.origin, { connections: 128 })
const PASS = ['content-type', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']
const SERVER = 'echo'

const logger = createLogger('warn')
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-floor-'))
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }) })
for (const signal of ['SIGTERM', 'SIGINT']) process.once(signal, () => process.exit(0))
const audit = createAuditLog({ enabled: true, destination: join(dir, 'audit.log'), includeArguments: false, includeResults: false }, logger)
const metrics = new Metrics()
metrics.nameTools(SERVER, ['echo'])

/** Audit records built and handed to the writer: GET /records, so the bench can tell a floor that recorded nothing. */
let records = 0

const app = Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }) })
app.removeAllContentTypeParsers()
app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => done(null, body))
app.route({
  method: ['GET', 'POST', 'DELETE'],
  url: '/mcp',
  onRequest: async () => {},
  handler: async (request, reply) => {
    const inspection = request.method === 'POST' ? inspectBody(request.body) : undefined
    const headers = {}
    for (const name of PASS) if (request.headers[name] !== undefined) headers[name] = request.headers[name]
    reply.hijack()
    const res = reply.raw
    res.once('close', () => {
      metrics.httpRequests.inc({ server: SERVER, method: request.method, status: res.statusCode })
      metrics.httpDuration.observe({ server: SERVER, method: request.method }, reply.elapsedTime / 1000)
      for (const message of inspection?.messages ?? []) {
        if (message.method === 'tools/call') metrics.toolCalls.inc({ server: SERVER, tool: metrics.toolLabel(SERVER, message.target ?? ''), outcome: 'answered' })
        if (message.id === undefined) continue
        records++
        audit.record({
          requestId: request.id,
          server: SERVER,
          transport: 'http',
          method: message.method ?? '',
          jsonrpcId: message.id,
          ...(message.target === undefined ? {} : { target: { kind: 'tool', name: message.target } }),
          user: null,
          clientId: null,
          ip: request.ip,
          decision: 'allowed',
          status: res.statusCode,
          latencyMs: Math.round(reply.elapsedTime * 10) / 10,
        })
      }
    })
    let up
    try {
      up = await pool.request({ path: target.pathname, method: request.method, headers, body: request.body ?? null })
    } catch {
      res.writeHead(502).end()
      return
    }
    const out = {}
    for (const name of ['content-type', 'mcp-session-id', 'cache-control']) if (up.headers[name] !== undefined) out[name] = up.headers[name]
    res.writeHead(up.statusCode, out)
    up.body.pipe(res)
  },
})
app.get('/records', async () => ({ records }))
await app.listen({ port: Number(port), host: '127.0.0.1' })
process.stdout.write('ready\n')
