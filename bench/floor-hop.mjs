// The Fastify hop (bench/fastify-hop.mjs) plus the work no gateway configuration may skip: the
// body inspected (the gateway's own inspectBody: policy, limits and audit read it), one audit
// record written (the gateway's own createAuditLog, to a file, batched as the gateway does), and
// the three request metrics (the gateway's own Metrics: requests, duration, tool calls). No
// sessions, steps, policy or error handling. Beside the reference hop it is the floor of the
// gateway's bare configuration with Fastify, prom-client and this audit format kept: a bare
// gateway cannot cost less than this (docs/benchmarks.md, 2026-12-02 06:40). Needs the build.
// Usage: node bench/floor-hop.mjs <upstream url> <port>
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger } from '../dist/observability/logger.js'
import { createAuditLog } from '../dist/observability/audit.js'
import { Metrics } from '../dist/observability/metrics.js'
import { inspectBody } from '../dist/mcp/jsonrpc.js'
import { hopApp } from './hop-app.mjs'

const [upstreamUrl, port] = process.argv.slice(2)
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

const app = hopApp(logger, upstreamUrl, (request, reply) => {
  const inspection = request.method === 'POST' ? inspectBody(request.body) : undefined
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
})
app.get('/records', async () => ({ records }))
await app.listen({ port: Number(port), host: '127.0.0.1' })
process.stdout.write('ready\n')
