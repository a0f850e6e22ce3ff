/**
 * OpenTelemetry traces (README "Tracing"). The gateway's code speaks only @opentelemetry/api;
 * the api, the SDK, the W3C Trace Context propagator and the OTLP/HTTP exporter are imported
 * here, dynamically, and only when telemetry.otlp.endpoint is set. A gateway without it imports
 * none of them (prom-client requires the api's CommonJS build for itself) and starts no span: its routes hold no tracer at all, so not even the api's no-op
 * tracer is asked (issue 15: the default path pays nothing).
 *
 * One provider per process: the api's tracer provider, propagator and context manager are
 * process-wide, so the first gateway built with telemetry sets them up and every later
 * buildApp (a reload, a second app in a test) reuses them.
 *
 * The exporter's outbound HTTP does not go through the guarded fetch (src/net/guarded-fetch.ts):
 * the exporter posts with its own node:http transport, which takes no fetch function, and its
 * destination is the operator's own collector — typically on loopback or a private network,
 * exactly what the guarded fetch refuses for addresses the gateway learns from clients. What
 * the guard would add is held here instead: the schema accepts only http(s) URLs without
 * credentials, and the exporter bounds every export's time (timeoutMillis).
 */
// Types only: the api's ES module build too is imported with the SDK (51 files).
import type * as OtelApi from '@opentelemetry/api'
import type { Tracer } from '@opentelemetry/api'
import type { FastifyBaseLogger } from 'fastify'
// Types only: the SDK itself is imported dynamically, below, when tracing starts.
import type * as SdkTrace from '@opentelemetry/sdk-trace'
import type { Config } from '../config/schema.js'
import { maskUrl } from '../config/describe.js'
import { VERSION } from '../version.js'

export type OtlpConfig = NonNullable<Config['telemetry']['otlp']>

/** The instrumentation scope every Portcullis span carries. */
export const TRACER_NAME = 'portcullis'
/** One export may take this long before it is abandoned (spans are dropped, never queued forever). */
const EXPORT_TIMEOUT_MS = 10_000
/** A flush (an app closing) waits at most this for the collector: a collector that is down must not hold up a shutdown. */
const FLUSH_TIMEOUT_MS = 2_000
/** The OTLP/HTTP path for traces, appended to a bare origin (OpenTelemetry exporter spec, "Endpoint URLs for OTLP/HTTP"). */
const OTLP_TRACES_PATH = '/v1/traces'
/**
 * Longest attribute value exported. Attribute values come from clients (tool names, resource
 * URIs, protocol versions); the SDK's default is no limit, so one request could put a body-sized
 * string into every span it makes.
 */
export const ATTRIBUTE_VALUE_LENGTH_LIMIT = 256

export interface Tracing {
  /** @opentelemetry/api, loaded with the SDK: request-trace.ts reaches the context and propagation through it. */
  readonly api: typeof OtelApi
  readonly tracer: Tracer
  /** Sends what is buffered now (an app closing, a test reading its receiver); never rejects: a failed export is logged. */
  readonly flush: () => Promise<void>
}

let started: { readonly endpoint: string, readonly tracing: Promise<Tracing> } | undefined

/** The process's tracing, started on first use; a later call with another endpoint keeps the first (restart to change it). */
export async function startTracing (otlp: OtlpConfig, log: FastifyBaseLogger): Promise<Tracing> {
  const endpoint = tracesUrl(otlp.endpoint)
  if (started === undefined) {
    started = { endpoint, tracing: loadSdk(otlp, endpoint, log) }
    // A query string may carry a collector's key (?api-key=…): its values are masked, as `portcullis check` does.
    log.info({ endpoint: maskUrl(endpoint), sampleRatio: otlp.sampleRatio, serviceName: otlp.serviceName }, 'tracing on: spans go to the OTLP endpoint')
  } else if (started.endpoint !== endpoint) {
    log.warn({ endpoint: maskUrl(started.endpoint), ignored: maskUrl(endpoint) }, 'tracing already runs in this process: telemetry.otlp changes apply after a restart')
  }
  return started.tracing
}

/** What is buffered, sent now; nothing when tracing never started. */
export async function flushTracing (): Promise<void> {
  if (started !== undefined) await (await started.tracing).flush()
}

/** A bare origin gets the traces path, as OTEL_EXPORTER_OTLP_ENDPOINT would; a URL with a path is used as written. */
export function tracesUrl (endpoint: string): string {
  const url = new URL(endpoint)
  if (url.pathname === '/' || url.pathname === '') url.pathname = OTLP_TRACES_PATH
  return url.toString()
}

async function loadSdk (otlp: OtlpConfig, endpoint: string, log: FastifyBaseLogger): Promise<Tracing> {
  const [api, sdk, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { resourceFromAttributes }, { OTLPTraceExporter }, { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/semantic-conventions'),
  ])
  // Export failures reach the log as the SDK words them; the headers (API keys) are never part of them.
  const warn = (message: string): void => log.warn({ detail: String(message).slice(0, 500) }, 'trace export problem')
  api.diag.setLogger({ error: warn, warn, info: () => {}, debug: () => {}, verbose: () => {} }, api.DiagLogLevel.WARN)
  const exporter = new OTLPTraceExporter({ url: endpoint, headers: { ...otlp.headers }, timeoutMillis: EXPORT_TIMEOUT_MS })
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: otlp.serviceName, [ATTR_SERVICE_VERSION]: VERSION }),
    sampler: publicEndpointSampler(sdk, otlp.sampleRatio),
    spanLimits: { attributeValueLengthLimit: ATTRIBUTE_VALUE_LENGTH_LIMIT },
    spanProcessors: [new sdk.BatchSpanProcessor({ exporter })],
  })
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  api.trace.setGlobalTracerProvider(provider)
  const flush = (): Promise<void> => provider.forceFlush({ timeoutMillis: FLUSH_TIMEOUT_MS }).catch((err: unknown) => warn(flushFailure(err)))
  return { api, tracer: provider.getTracer(TRACER_NAME, VERSION), flush }
}

/** A failed flush in words: the SDK rejects with an array of its span processors' errors, not with one Error. */
function flushFailure (err: unknown): string {
  const reasons = (Array.isArray(err) ? err : [err]).map((reason) => reason instanceof Error ? reason.message : String(reason))
  return `spans not exported (${reasons.join('; ')})`
}

/**
 * The gateway is a public endpoint: whether a trace is recorded is decided here, at sampleRatio,
 * never by the client. The SDK's default (ParentBasedSampler) would let a client's traceparent
 * flag `-01` force every request into the collector (at any sampleRatio, before its token is
 * checked) and `-00` hide one. So a span whose parent is remote (the client's) or absent is kept
 * with probability sampleRatio, drawn with Math.random rather than read off the trace id (which
 * a client continuing its own trace chooses); the gateway's own child spans follow their parent.
 * Which requests may continue the client's trace at all is request-trace.ts's choice.
 */
export function publicEndpointSampler (sdk: Pick<typeof SdkTrace, 'ParentBasedSampler' | 'SamplingDecision'>, ratio: number): SdkTrace.ParentBasedSampler {
  const byRatio = {
    shouldSample: () => ({ decision: Math.random() < ratio ? sdk.SamplingDecision.RECORD_AND_SAMPLED : sdk.SamplingDecision.NOT_RECORD }),
    toString: () => `PortcullisRatioSampler{${ratio}}`,
  }
  return new sdk.ParentBasedSampler({ root: byRatio, remoteParentSampled: byRatio, remoteParentNotSampled: byRatio })
}
