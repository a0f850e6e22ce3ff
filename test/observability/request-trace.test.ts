// RequestTrace.exchange around an upstream adapter that throws: the CLIENT span must say so.
// A real fastify app (inject: no socket matters) and the real SDK, exporting to its in-memory
// exporter; only the adapter is a stand-in, as no real adapter throws on purpose.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import fastify from 'fastify'
import * as api from '@opentelemetry/api'
import * as sdk from '@opentelemetry/sdk-trace'
import { parseConfig } from '../../src/config/load.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { RequestTrace } from '../../src/observability/request-trace.js'
import type { McpExchange } from '../../src/upstreams/types.js'

const CONFIG = parseConfig('servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n', 'gw.yaml', {})

t.test('an exception from the adapter fails the client span', async (t) => {
  const exporter = new sdk.InMemorySpanExporter()
  const provider = new sdk.TracerProvider({ spanProcessors: [new sdk.SimpleSpanProcessor({ exporter })] })
  const settings = { api, tracer: provider.getTracer('test'), sessionKey: randomBytes(32), toolLabel: () => 'other' }
  const server = CONFIG.servers[0]
  if (server === undefined) throw new Error('no server')
  const app = fastify()
  t.teardown(() => app.close())
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))
  app.post('/a/mcp', async (request, reply) => {
    const trace = new RequestTrace(settings, request, reply.raw, server)
    const body = request.body as Buffer
    const exchange = { method: 'POST', headers: request.headers, body, inspection: inspectBody(body), req: request.raw, res: reply.raw, log: request.log } as unknown as McpExchange
    const thrown = await trace.exchange(server, exchange, async () => {
      throw Object.assign(new Error('adapter bug'), { code: 'PORTCULLIS_ERR_INTERNAL' })
    }).catch((err: Error) => err)
    t.match(thrown, { message: 'adapter bug' }, 'the exception goes on to the route')
    return reply.code(502).send({})
  })
  const res = await app.inject({ method: 'POST', url: '/a/mcp', headers: { 'content-type': 'application/json' }, payload: '{"jsonrpc":"2.0","id":1,"method":"ping"}' })
  t.equal(res.statusCode, 502)
  await provider.forceFlush()
  const client = exporter.getFinishedSpans().find((s) => s.kind === api.SpanKind.CLIENT)
  t.equal(client?.status.code, api.SpanStatusCode.ERROR, 'the client span is failed')
  t.equal(client?.attributes['error.type'], 'PORTCULLIS_ERR_INTERNAL', 'with the error\'s code')
  t.equal(client?.status.message, 'adapter bug')
})
