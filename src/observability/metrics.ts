/**
 * Prometheus metrics (prom-client), one registry per gateway instance so
 * tests can run several side by side. Served at /metrics (optionally behind a
 * bearer token, or on a port of its own).
 *
 * A `tool` label never carries text a client chose: it is a name the
 * server's policy names (config keys, allow/deny entries without glob
 * characters) or one the upstream listed in a tools/list answer the gateway
 * relayed; any other name counts as "other". Otherwise every made-up name
 * (`danger\u0000`, a fresh UUID per call) would be a new series: a
 * cardinality attack on Prometheus. Listed names are capped per server too.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { bearerCheck } from '../net/bearer-check.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Set on an MCP server's routes: its name labels the request metrics. */
    mcpServer?: string
  }
}

/** Names learned from an upstream's tools/list answers, per server (an upstream listing thousands stays bounded). */
const MAX_LISTED_TOOL_NAMES = 200
/** MCP 2025-11-25 server/tools "Tool Names": 1 to 128 characters. Longer "names" are not learned. */
const MAX_TOOL_NAME_LENGTH = 128
export const OTHER_TOOL_LABEL = 'other'
const DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

export class Metrics {
  readonly registry = new Registry()
  readonly httpRequests = new Counter({ name: 'portcullis_http_requests_total', help: 'HTTP requests by server (or area), method and status', labelNames: ['server', 'method', 'status'] as const, registers: [this.registry] })
  readonly httpDuration = new Histogram({ name: 'portcullis_http_request_duration_seconds', help: 'HTTP request latency, to the end of the response (streams included)', labelNames: ['server', 'method'] as const, buckets: DURATION_BUCKETS_S, registers: [this.registry] })
  readonly toolCalls = new Counter({ name: 'portcullis_tool_calls_total', help: 'tools/call by server, tool and outcome: answered, failed (the gateway answered for the upstream), cancelled, denied, rate_limited', labelNames: ['server', 'tool', 'outcome'] as const, registers: [this.registry] })
  readonly tokenValidations = new Counter({ name: 'portcullis_token_validations_total', help: 'Access token checks by result: ok, or why the token was refused', labelNames: ['result'] as const, registers: [this.registry] })
  readonly rateLimitRejections = new Counter({ name: 'portcullis_rate_limit_rejections_total', help: 'Requests refused by a rate limit or concurrency cap, by bucket', labelNames: ['bucket'] as const, registers: [this.registry] })
  readonly rateLimitStoreErrors = new Counter({ name: 'portcullis_rate_limit_store_errors_total', help: 'Rate-limit checks that failed because the counter store was unreachable', registers: [this.registry] })
  readonly resultsRedacted = new Counter({ name: 'portcullis_results_redacted_total', help: 'Matches masked in upstream results (servers[].redactResults), by server and detector kind', labelNames: ['server', 'kind'] as const, registers: [this.registry] })
  readonly toolDefinitionChanges = new Counter({ name: 'portcullis_tool_definition_changes_total', help: 'Tool definitions listed differently from the approved set, by server and change (changed, added, removed); each counted once per replica', labelNames: ['server', 'change'] as const, registers: [this.registry] })
  readonly policyDenials = new Counter({ name: 'portcullis_policy_denials_total', help: 'Requests refused by policy, by server and reason (access, rule)', labelNames: ['server', 'reason'] as const, registers: [this.registry] })
  /** Where the stdio process counts come from when scraped (set once the upstreams exist). */
  stdioProcessCounts: () => Iterable<readonly [server: string, count: number]> = () => []
  readonly stdioProcesses: Gauge<'server'>
  /** Where each server's open streams and exchanges in flight come from when scraped. */
  upstreamLoads: () => Iterable<readonly [server: string, load: { readonly streams: number, readonly exchanges: number }]> = () => []
  readonly openStreams: Gauge<'server'>
  readonly exchangesInFlight: Gauge<'server'>
  readonly stdioRestarts = new Counter({ name: 'portcullis_stdio_restarts_total', help: 'stdio server processes that exited without being asked to (crashes), by server', labelNames: ['server'] as const, registers: [this.registry] })
  readonly identityTokensSigned = new Counter({ name: 'portcullis_identity_tokens_signed_total', help: 'Identity tokens (servers[].identity) signed, by server: one per caller per 30 s, reused in between', labelNames: ['server'] as const, registers: [this.registry] })
  readonly tokensIssued = new Counter({ name: 'portcullis_oauth_tokens_issued_total', help: 'Tokens issued by the authorization server, by type', labelNames: ['type'] as const, registers: [this.registry] })
  /** Per server: the tool names policy names, and those its upstream listed. */
  private readonly toolNames = new Map<string, { named: ReadonlySet<string>, listed: Set<string> }>()

  constructor () {
    this.stdioProcesses = perServerGauge(this.registry, 'portcullis_stdio_processes', 'stdio server processes alive, by server', () => this.stdioProcessCounts())
    this.openStreams = perServerGauge(this.registry, 'portcullis_open_streams', 'Event streams open to clients (GET streams and streamed answers), by server',
      () => [...this.upstreamLoads()].map(([server, load]) => [server, load.streams] as const))
    this.exchangesInFlight = perServerGauge(this.registry, 'portcullis_upstream_exchanges_in_flight', 'Requests and streams in flight to each server (HTTP/1.1 upstreams: connections in use)',
      () => [...this.upstreamLoads()].map(([server, load]) => [server, load.exchanges] as const))
    collectDefaultMetrics({ register: this.registry, prefix: 'portcullis_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS })
  }

  /** The names a server's policy gives (set once per server, from the config). */
  nameTools (server: string, names: Iterable<string>): void {
    this.toolNames.set(server, { named: new Set(names), listed: this.toolNames.get(server)?.listed ?? new Set() })
  }

  /** Names from a tools/list answer the upstream gave (only well-formed names, up to MAX_LISTED_TOOL_NAMES per server). */
  learnTools (server: string, names: Iterable<unknown>): void {
    let known = this.toolNames.get(server)
    if (known === undefined) {
      known = { named: new Set(), listed: new Set() }
      this.toolNames.set(server, known)
    }
    for (const name of names) {
      if (known.listed.size >= MAX_LISTED_TOOL_NAMES) return
      if (typeof name === 'string' && name.length > 0 && name.length <= MAX_TOOL_NAME_LENGTH) known.listed.add(name)
    }
  }

  /** A tool name fit for a label: itself when policy names it or the upstream listed it, else "other". */
  toolLabel (server: string, tool: string): string {
    const known = this.toolNames.get(server)
    return known !== undefined && (known.named.has(tool) || known.listed.has(tool)) ? tool : OTHER_TOOL_LABEL
  }
}

/** A gauge by server whose values are read when scraped. */
function perServerGauge (registry: Registry, name: string, help: string, values: () => Iterable<readonly [server: string, value: number]>): Gauge<'server'> {
  return new Gauge({
    name,
    help,
    labelNames: ['server'] as const,
    registers: [registry],
    collect () {
      for (const [server, value] of values()) this.set({ server }, value)
    },
  })
}

/**
 * How often the event-loop lag histogram (portcullis_nodejs_eventloop_lag_*) takes a sample.
 * prom-client's default, 10 ms, is a timer waking the process 100 times a second: an idle
 * gateway spent about 5 ms of CPU a second on it (0.5% of a core), and a gateway under a
 * steady 800 requests a second about 6 µs per request (docs/benchmarks.md, 2026-12-02).
 * A stall still shows: every sample is how late its timer fired.
 */
export const EVENT_LOOP_SAMPLE_MS = 100

/** The label of a request's area: the MCP server's name, or the gateway's own routes. */
function serverLabel (request: FastifyRequest): string {
  // Fastify builds routeOptions anew on every read: read once.
  const { config, url } = request.routeOptions
  if (config.mcpServer !== undefined) return config.mcpServer
  if (url === undefined) return 'unmatched'
  return url.startsWith('/oauth') || url.startsWith('/.well-known') || url.startsWith('/interaction') ? 'oauth' : 'gateway'
}

/** Counts every request and its time to the end of the response (hijacked MCP streams included). */
export function recordHttpMetrics (app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onRequest', (request, reply, done) => {
    const res = reply.raw
    res.once('close', () => {
      const server = serverLabel(request)
      metrics.httpRequests.inc({ server, method: request.method, status: res.statusCode })
      metrics.httpDuration.observe({ server, method: request.method }, reply.elapsedTime / 1000)
    })
    done()
  })
}

export interface MetricsRouteOptions {
  readonly metrics: Metrics
  /** When set, scrapes need `Authorization: Bearer <bearerToken>`. */
  readonly bearerToken: string | undefined
}

/** GET /metrics in the Prometheus text format. */
export async function metricsRoute (app: FastifyInstance, opts: MetricsRouteOptions): Promise<void> {
  const carriesToken = bearerCheck(opts.bearerToken)
  app.get('/metrics', async (request, reply) => {
    reply.header('cache-control', 'no-store')
    if (opts.bearerToken !== undefined && !carriesToken(request.headers.authorization)) {
      return reply.code(401).header('www-authenticate', 'Bearer realm="metrics"').send({ error: 'unauthorized', message: '/metrics needs the bearer token set in metrics.bearerToken' })
    }
    return reply.type(opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics())
  })
}
