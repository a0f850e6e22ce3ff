// The reference hop (bench/reference-hop.mjs) inside a Fastify route: the same work — body read,
// MCP headers passed on, undici Pool out, the response piped back — with Fastify's routing,
// hooks, body parsing and per-request logger (the gateway's own, at warn) around it. Beside
// the reference hop it shows what the framework costs; beside the gateway, what the gateway's
// own work costs (docs/benchmarks.md, 2026-12-02). Needs the build (dist/).
// Usage: node bench/fastify-hop.mjs <upstream url> <port>
import Fastify, { LogController } from 'fastify'
import { Pool } from 'undici'
import { createLogger } from '../dist/observability/logger.js'

const [upstreamUrl, port] = process.argv.slice(2)
const target = new URL(upstreamUrl)
const pool = new Pool(target.origin, { connections: 128 })
const PASS = ['content-type', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']

const app = Fastify({ loggerInstance: createLogger('warn'), logController: new LogController({ disableRequestLogging: true }) })
// As the gateway: bodies read once, as bytes.
app.removeAllContentTypeParsers()
app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => done(null, body))
app.route({
  method: ['GET', 'POST', 'DELETE'],
  url: '/mcp',
  // An async hook before the body, as the gateway's route has.
  onRequest: async () => {},
  handler: async (request, reply) => {
    const headers = {}
    for (const name of PASS) if (request.headers[name] !== undefined) headers[name] = request.headers[name]
    reply.hijack()
    let up
    try {
      up = await pool.request({ path: target.pathname, method: request.method, headers, body: request.body ?? null })
    } catch {
      reply.raw.writeHead(502).end()
      return
    }
    const out = {}
    for (const name of ['content-type', 'mcp-session-id', 'cache-control']) if (up.headers[name] !== undefined) out[name] = up.headers[name]
    reply.raw.writeHead(up.statusCode, out)
    up.body.pipe(reply.raw)
  },
})
await app.listen({ port: Number(port), host: '127.0.0.1' })
process.stdout.write('ready\n')
