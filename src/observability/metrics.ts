/**
 * Prometheus metrics (prom-client), one registry per gateway instance so
 * tests can run several side by side. Served at /metrics.
 */
import { Counter, Registry, collectDefaultMetrics } from 'prom-client'

export class Metrics {
  readonly registry = new Registry()
  readonly rateLimitRejections = new Counter({ name: 'portcullis_rate_limit_rejections_total', help: 'Requests refused by a rate limit or concurrency cap, by bucket', labelNames: ['bucket'] as const, registers: [this.registry] })
  readonly rateLimitStoreErrors = new Counter({ name: 'portcullis_rate_limit_store_errors_total', help: 'Rate-limit checks that failed because the counter store was unreachable', registers: [this.registry] })
  readonly policyDenials = new Counter({ name: 'portcullis_policy_denials_total', help: 'Requests refused by policy, by server and reason', labelNames: ['server', 'reason'] as const, registers: [this.registry] })

  constructor () {
    collectDefaultMetrics({ register: this.registry, prefix: 'portcullis_' })
  }
}
