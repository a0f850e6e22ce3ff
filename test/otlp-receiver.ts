/**
 * A real OTLP/HTTP traces receiver in the test process: a node:http server on port 0 that parses
 * the JSON export requests @opentelemetry/exporter-trace-otlp-http posts. No collector binary is
 * available on this machine, so this stands in for one; it speaks the same wire format
 * (OTLP/HTTP JSON, opentelemetry-proto's ExportTraceServiceRequest) and answers 200 as a collector does.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { Teardown } from './helpers.js'

export interface ReceivedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly name: string
  /** OTLP SpanKind: 1 internal, 2 server, 3 client. */
  readonly kind: number
  readonly attributes: Record<string, unknown>
  readonly status: { code?: number, message?: string }
  readonly resource: Record<string, unknown>
  /** The spans this one links to (a gateway's own trace names the client's span this way). */
  readonly links: Array<{ traceId: string, spanId: string }>
  /** Start to end, in milliseconds. */
  readonly durationMs: number
}

export const SPAN_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const
export const STATUS_ERROR = 2

export interface OtlpReceiver {
  /** The origin (http://127.0.0.1:port): telemetry.otlp.endpoint appends /v1/traces. */
  readonly url: string
  readonly spans: ReceivedSpan[]
  /** Every export request: path, headers and raw body. */
  readonly requests: Array<{ path: string, headers: IncomingHttpHeaders, body: string }>
}

type AnyValue = { stringValue?: string, intValue?: number | string, boolValue?: boolean, doubleValue?: number, arrayValue?: { values?: AnyValue[] } }
interface KeyValue { key: string, value: AnyValue }

function valueOf (v: AnyValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.boolValue !== undefined) return v.boolValue
  if (v.doubleValue !== undefined) return v.doubleValue
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(valueOf)
  return undefined
}

function attributesOf (list: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, valueOf(kv.value)]))
}

/** OTLP/JSON carries ids as hex (the spec's JSON mapping); base64 is accepted too, as protobuf-JSON would send it. */
function hexId (id: string | undefined): string {
  if (id === undefined || id === '') return ''
  return /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex')
}

export async function startOtlpReceiver (t: Teardown): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const requests: OtlpReceiver['requests'] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      requests.push({ path: req.url ?? '', headers: req.headers, body })
      try {
        const parsed = JSON.parse(body) as { resourceSpans?: Array<{ resource?: { attributes?: KeyValue[] }, scopeSpans?: Array<{ spans?: Array<Record<string, unknown>> }> }> }
        for (const rs of parsed.resourceSpans ?? []) {
          const resource = attributesOf(rs.resource?.attributes)
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                traceId: hexId(s.traceId as string),
                spanId: hexId(s.spanId as string),
                parentSpanId: hexId(s.parentSpanId as string | undefined),
                name: String(s.name),
                kind: Number(s.kind),
                attributes: attributesOf(s.attributes as KeyValue[] | undefined),
                status: (s.status ?? {}) as ReceivedSpan['status'],
                resource,
                links: ((s.links ?? []) as Array<{ traceId?: string, spanId?: string }>).map((l) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
                durationMs: Number(BigInt(String(s.endTimeUnixNano ?? 0)) - BigInt(String(s.startTimeUnixNano ?? 0))) / 1e6,
              })
            }
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      } catch {
        res.writeHead(400).end()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${port}`, spans, requests }
}
