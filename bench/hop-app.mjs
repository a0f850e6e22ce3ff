// The Fastify hop's app, shared by bench/fastify-hop.mjs (the hop alone) and bench/floor-hop.mjs
// (the hop plus the work every gateway request does): the reference hop's work — body read as
// bytes, MCP headers passed on, an undici Pool out, the response piped back — in a Fastify route
// with an async onRequest hook, as the gateway's MCP route has.
import Fastify, { LogController } from 'fastify'
import { Pool } from 'undici'

const PASS = ['content-type', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']
const ANSWER = ['content-type', 'mcp-session-id', 'cache-control']

/** The app with the hop at /mcp; `before(request, reply)` runs first in each request's handler. */
export function hopApp (logger, upstreamUrl, before = () => {}) {
  const target = new URL(upstreamUrl)
  const pool = new Pool(target.origin, { connections: 128 })
  const app = Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }) })
  // As the gateway: bodies read once, as bytes.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => done(null, body))
  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    onRequest: async () => {},
    handler: async (request, reply) => {
      before(request, reply)
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
      for (const name of ANSWER) if (up.headers[name] !== undefined) out[name] = up.headers[name]
      reply.raw.writeHead(up.statusCode, out)
      up.body.pipe(reply.raw)
    },
  })
  return app
}
