// telemetry.otlp: what the loader accepts and refuses, and the pure parts of the tracing helpers
// (the endpoint's traces URL, the keyed session id, trace context into a body's _meta, the
// sampler, resource URIs and OAuth endpoint names).
import t from 'tap'
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { ROOT_CONTEXT, SpanKind, TraceFlags, trace } from '@opentelemetry/api'
import * as sdk from '@opentelemetry/sdk-trace'
import { parseConfig } from '../../src/config/load.js'
import { publicEndpointSampler, tracesUrl } from '../../src/observability/tracing.js'
import { hashSessionId, oauthEndpoint, redactedUri, withTraceMeta } from '../../src/observability/request-trace.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { configErrorMessage } from '../config-helpers.js'

const MINIMAL = 'servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n'

t.test('telemetry is off unless an endpoint is set; defaults', async (t) => {
  t.equal(parseConfig(MINIMAL, 'gw.yaml', {}).telemetry.otlp, undefined, 'off by default')
  const config = parseConfig(`telemetry:\n  otlp:\n    endpoint: http://collector:4318\n${MINIMAL}`, 'gw.yaml', {})
  t.same(config.telemetry.otlp, { endpoint: 'http://collector:4318', headers: {}, serviceName: 'portcullis', sampleRatio: 1 })
  const keyed = parseConfig(`telemetry:\n  otlp:\n    endpoint: https://otlp.example.com/v1/traces\n    headers:\n      x-api-key: \${OTLP_KEY}\n    sampleRatio: 0.25\n${MINIMAL}`, 'gw.yaml', { OTLP_KEY: 'k' })
  t.same(keyed.telemetry.otlp?.headers, { 'x-api-key': 'k' }, 'headers from the environment')
  t.equal(keyed.telemetry.otlp?.sampleRatio, 0.25)
})

t.test('bad values name the line and key', async (t) => {
  t.equal(configErrorMessage(`telemetry:\n  otlp:\n    endpoint: grpc://collector:4317\n${MINIMAL}`), 'gw.yaml:3:15: telemetry.otlp.endpoint: expected an absolute http(s) URL, got "grpc://collector:4317"')
  t.equal(configErrorMessage(`telemetry:\n  otlp:\n    endpoint: https://user:secret@collector:4318\n${MINIMAL}`), 'gw.yaml:3:15: telemetry.otlp.endpoint: expected a URL with no credentials or fragment (put an API key under telemetry.otlp.headers)')
  t.equal(configErrorMessage(`telemetry:\n  otlp:\n    endpoint: http://c:4318\n    sampleRatio: 2\n${MINIMAL}`), 'gw.yaml:4:18: telemetry.otlp.sampleRatio: expected a number from 0 to 1')
  t.equal(configErrorMessage(`telemetry:\n  otlp:\n    endpoint: http://c:4318\n    headers:\n      "bad header": x\n${MINIMAL}`), 'gw.yaml:5:21: telemetry.otlp.headers.bad header: expected an HTTP header name')
  t.match(configErrorMessage(`telemetry:\n  otlp:\n    endpiont: http://c:4318\n${MINIMAL}`), /telemetry\.otlp\.endpiont: unknown key "endpiont" \(did you mean "endpoint"\?\)/)
})

t.test('the traces URL: a bare origin gets /v1/traces, a path is kept', async (t) => {
  t.equal(tracesUrl('http://collector:4318'), 'http://collector:4318/v1/traces')
  t.equal(tracesUrl('http://collector:4318/'), 'http://collector:4318/v1/traces')
  t.equal(tracesUrl('https://otlp.example.com/custom/traces'), 'https://otlp.example.com/custom/traces')
})

t.test('the session id is keyed: an HMAC-SHA-256 with the deployment key, not a plain hash', async (t) => {
  const id = 'f0e6a1f2-51d8-4c4b-9d1a-7c3c1d2e9b10'
  const key = randomBytes(32)
  t.equal(hashSessionId(key, id), createHmac('sha256', key).update(id).digest('hex').slice(0, 32), 'the first 32 hex digits of the HMAC')
  t.equal(hashSessionId(key, id), hashSessionId(Buffer.from(key), id), 'stable for one key (replicas share it)')
  t.not(hashSessionId(key, id), hashSessionId(randomBytes(32), id), 'another key, another value')
  t.not(hashSessionId(key, id), createHash('sha256').update(id).digest('hex').slice(0, 32), 'not checkable without the key')
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

t.test('trace context is spliced into the text: big numbers, 1.0 and spacing go as they came', async (t) => {
  const carrier = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }
  const ours = `"traceparent":"${carrier.traceparent}"`
  const splice = (text: string): string => String(withTraceMeta({ body: Buffer.from(text), inspection: inspectBody(Buffer.from(text)) }, carrier).body)
  t.equal(
    splice('{"jsonrpc":"2.0","id":12345678901234567890,"method":"tools/call","params":{"name":"echo","arguments":{"n":1.0,"big":98765432109876543210}}}'),
    `{"jsonrpc":"2.0","id":12345678901234567890,"method":"tools/call","params":{"_meta":{${ours}},"name":"echo","arguments":{"n":1.0,"big":98765432109876543210}}}`,
    'a 20-digit id and argument, and 1.0, unchanged',
  )
  t.equal(
    splice('{ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": "e", "_meta": { "traceparent": "00-client", "progressToken": 1e400, "tracestate": "c=1" } } }'),
    `{ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": "e", "_meta": {"progressToken": 1e400,${ours}} } }`,
    'the client\'s trace keys replaced, its other _meta members kept byte for byte',
  )
  t.equal(splice('{"jsonrpc":"2.0","method":"notifications/initialized"}'), `{"params":{"_meta":{${ours}}},"jsonrpc":"2.0","method":"notifications/initialized"}`, 'no params: one is added')
  t.equal(splice('{"jsonrpc":"2.0","id":2,"method":"ping","params":{ }}'), `{"jsonrpc":"2.0","id":2,"method":"ping","params":{"_meta":{${ours}} }}`, 'empty params')
  t.equal(
    splice('[{"jsonrpc":"2.0","id":"a\\"]","result":{"x":"]}"}} , {"jsonrpc":"2.0","id":3,"method":"ping","params":{"\\u005fmeta":null}}]'),
    `[{"jsonrpc":"2.0","id":"a\\"]","result":{"x":"]}"}} , {"jsonrpc":"2.0","id":3,"method":"ping","params":{"\\u005fmeta":{${ours}}}}]`,
    'a batch: brackets inside strings skipped, an escaped _meta key found, the response untouched',
  )
})

t.test('the sampler: sampleRatio decides, never the client\'s sampled flag', async (t) => {
  const remote = (flags: TraceFlags) => trace.setSpanContext(ROOT_CONTEXT, { traceId: randomBytes(16).toString('hex'), spanId: randomBytes(8).toString('hex'), traceFlags: flags, isRemote: true })
  const local = (flags: TraceFlags) => trace.setSpanContext(ROOT_CONTEXT, { traceId: randomBytes(16).toString('hex'), spanId: randomBytes(8).toString('hex'), traceFlags: flags, isRemote: false })
  const decide = (ratio: number, context = ROOT_CONTEXT): sdk.SamplingDecision => publicEndpointSampler(sdk, ratio).shouldSample(context, 'ffffffffffffffffffffffffffffffff', 'x', SpanKind.SERVER, {}, []).decision
  t.equal(decide(0, remote(TraceFlags.SAMPLED)), sdk.SamplingDecision.NOT_RECORD, 'ratio 0: a client\'s -01 does not force a trace')
  t.equal(decide(1, remote(TraceFlags.NONE)), sdk.SamplingDecision.RECORD_AND_SAMPLED, 'ratio 1: a client\'s -00 does not hide one')
  t.equal(decide(0), sdk.SamplingDecision.NOT_RECORD, 'ratio 0: no new trace, even for a trace id that TraceIdRatioBased would keep')
  t.equal(decide(1), sdk.SamplingDecision.RECORD_AND_SAMPLED)
  t.equal(decide(0, local(TraceFlags.SAMPLED)), sdk.SamplingDecision.RECORD_AND_SAMPLED, 'the gateway\'s own children follow their parent')
  t.equal(decide(1, local(TraceFlags.NONE)), sdk.SamplingDecision.NOT_RECORD)
})

t.test('mcp.resource.uri: credentials and query values redacted, fragment dropped, unparsable dropped', async (t) => {
  t.equal(redactedUri('https://alice:hunter2@files.example.com/a/b.txt?token=s3cret&v=1#frag'), 'https://REDACTED:REDACTED@files.example.com/a/b.txt?token=REDACTED&v=REDACTED')
  t.equal(redactedUri('file:///etc/hosts'), 'file:///etc/hosts')
  t.equal(redactedUri('db://u@host/table'), 'db://REDACTED:REDACTED@host/table')
  t.equal(redactedUri('not a uri'), undefined)
})

t.test('OAuth endpoint names come from a fixed list', async (t) => {
  t.equal(oauthEndpoint('/oauth/token', '/oauth/*'), 'token')
  t.equal(oauthEndpoint('/oauth/register/client-abc123', '/oauth/*'), 'register', 'a client id is not part of the name')
  t.equal(oauthEndpoint('/oauth/device/auth', '/oauth/*'), 'device/auth', 'the longest endpoint path wins')
  t.equal(oauthEndpoint('/oauth/eyJhbGciOi-secret', '/oauth/*'), '_OTHER', 'an unknown path is _OTHER')
  t.equal(oauthEndpoint('/oauth/tokenXYZ', undefined), '_OTHER', 'a 404 with a known prefix is still _OTHER')
  t.equal(oauthEndpoint('/oauth/idp/corp/callback', '/oauth/idp/:name/callback'), 'idp/:name/callback', 'a route of its own: its pattern')
})
