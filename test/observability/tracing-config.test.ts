// telemetry.otlp: what the loader accepts and refuses, and the pure parts of the tracing helpers
// (the endpoint's traces URL, the hashed session id, trace context into a batch's _meta).
import t from 'tap'
import { ConfigError, parseConfig } from '../../src/config/load.js'
import { tracesUrl } from '../../src/observability/tracing.js'
import { hashSessionId, withTraceMeta } from '../../src/observability/request-trace.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'

const MINIMAL = 'servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n'

function errorOf (yaml: string): string {
  try {
    parseConfig(yaml, 'gw.yaml', {})
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('telemetry is off unless an endpoint is set; defaults', async (t) => {
  t.equal(parseConfig(MINIMAL, 'gw.yaml', {}).telemetry.otlp, undefined, 'off by default')
  const config = parseConfig(`telemetry:\n  otlp:\n    endpoint: http://collector:4318\n${MINIMAL}`, 'gw.yaml', {})
  t.same(config.telemetry.otlp, { endpoint: 'http://collector:4318', headers: {}, serviceName: 'portcullis', sampleRatio: 1 })
  const keyed = parseConfig(`telemetry:\n  otlp:\n    endpoint: https://otlp.example.com/v1/traces\n    headers:\n      x-api-key: \${OTLP_KEY}\n    sampleRatio: 0.25\n${MINIMAL}`, 'gw.yaml', { OTLP_KEY: 'k' })
  t.same(keyed.telemetry.otlp?.headers, { 'x-api-key': 'k' }, 'headers from the environment')
  t.equal(keyed.telemetry.otlp?.sampleRatio, 0.25)
})

t.test('bad values name the line and key', async (t) => {
  t.equal(errorOf(`telemetry:\n  otlp:\n    endpoint: grpc://collector:4317\n${MINIMAL}`), 'gw.yaml:3:15: telemetry.otlp.endpoint: expected an absolute http(s) URL, got "grpc://collector:4317"')
  t.equal(errorOf(`telemetry:\n  otlp:\n    endpoint: https://user:secret@collector:4318\n${MINIMAL}`), 'gw.yaml:3:15: telemetry.otlp.endpoint: expected a URL with no credentials or fragment (put an API key under telemetry.otlp.headers)')
  t.equal(errorOf(`telemetry:\n  otlp:\n    endpoint: http://c:4318\n    sampleRatio: 2\n${MINIMAL}`), 'gw.yaml:4:18: telemetry.otlp.sampleRatio: expected a number from 0 to 1')
  t.equal(errorOf(`telemetry:\n  otlp:\n    endpoint: http://c:4318\n    headers:\n      "bad header": x\n${MINIMAL}`), 'gw.yaml:5:21: telemetry.otlp.headers.bad header: expected an HTTP header name')
  t.match(errorOf(`telemetry:\n  otlp:\n    endpiont: http://c:4318\n${MINIMAL}`), /telemetry\.otlp\.endpiont: unknown key "endpiont" \(did you mean "endpoint"\?\)/)
})

t.test('the traces URL: a bare origin gets /v1/traces, a path is kept', async (t) => {
  t.equal(tracesUrl('http://collector:4318'), 'http://collector:4318/v1/traces')
  t.equal(tracesUrl('http://collector:4318/'), 'http://collector:4318/v1/traces')
  t.equal(tracesUrl('https://otlp.example.com/custom/traces'), 'https://otlp.example.com/custom/traces')
})

t.test('the session id is hashed: stable, not the id', async (t) => {
  const id = 'f0e6a1f2-51d8-4c4b-9d1a-7c3c1d2e9b10'
  t.equal(hashSessionId(id), hashSessionId(id))
  t.equal(hashSessionId(id).length, 32)
  t.notMatch(hashSessionId(id), id.replace(/-/g, '').slice(0, 8))
})

t.test('trace context into _meta: every request and notification of a batch, other _meta kept, responses untouched', async (t) => {
  const body = Buffer.from(JSON.stringify([
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' }, _meta: { progressToken: 5, traceparent: '00-client' } } },
    { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1 } },
    { jsonrpc: '2.0', id: 'srv-1', result: {} },
  ]))
  const carrier = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'a=1' }
  const traced = withTraceMeta({ body, inspection: inspectBody(body) }, carrier)
  const sent = JSON.parse(String(traced.body)) as Array<{ params?: { _meta?: Record<string, unknown> } }>
  t.same(sent[0]?.params?._meta, { progressToken: 5, ...carrier }, 'the gateway\'s context replaces the client\'s; the progress token stays')
  t.same(sent[1]?.params?._meta, carrier)
  t.same(sent[2], { jsonrpc: '2.0', id: 'srv-1', result: {} })
  t.same(traced.inspection?.messages.map((m) => m.value), sent, 'the inspection describes the bytes that go')
  const untouched = withTraceMeta({ body, inspection: inspectBody(body) }, {})
  t.equal(untouched.body, body, 'no context (not sampled, no propagator): the bytes pass as they came')
})
