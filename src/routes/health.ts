/**
 * /healthz: the process is up and serving HTTP (liveness).
 * /readyz: can the gateway serve? 200 while it can, 503 only while shutting
 * down. A dependency being down degrades the gateway without stopping it: an
 * upstream down takes one server away, not the others; a store down stops new
 * logins and token refreshes, but access tokens already issued keep working
 * (they are checked by signature) — and every replica shares the store, so
 * taking them all out of rotation would help nobody. A store that answers but
 * refuses writes (SQLite on a full disk) is degraded the same way, with the
 * reason, until a write works again. The body says what is
 * degraded; network probes are cached so scrapes stay cheap. A stdio server
 * whose first process has not answered its handshake yet says
 * `status: starting` (a cold `npx -y` download is not an outage). The detail is for the
 * machine itself and for metrics.bearerToken; anyone else gets the status alone.
 */
import type { FastifyInstance } from 'fastify'
import type { Upstream } from '../upstreams/types.js'
import type { Store } from '../store/types.js'
import type { AuditLog } from '../observability/audit.js'
import { withTimeout } from '../with-timeout.js'
import { bearerCheck } from '../net/bearer-check.js'
import { isLoopbackAddress } from '../net/loopback.js'

export interface HealthRoutesOptions {
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly store: Store
  /** The audit trail, when enabled: one that cannot be written makes the gateway degraded (it refuses MCP requests). */
  readonly audit: Pick<AuditLog, 'lastWriteFailure'> | undefined
  readonly isClosing: () => boolean
  readonly version: string
  /** metrics.bearerToken: a caller presenting it reads /readyz's detail from anywhere. */
  readonly bearerToken: string | undefined
}

/** A store that has not answered by then counts as unreachable. */
const STORE_PING_TIMEOUT_MS = 1000

export async function healthRoutes (app: FastifyInstance, opts: HealthRoutesOptions): Promise<void> {
  // Each upstream decides what a probe costs (HTTP upstreams cache their TCP checks).
  const probeAll = () => Promise.all([...opts.upstreams.values()].map((u) => u.probe()))

  app.get('/healthz', async (_request, reply) => {
    return reply.header('cache-control', 'no-store').send({ status: 'ok' })
  })

  const carriesToken = bearerCheck(opts.bearerToken)
  app.get('/readyz', async (request, reply) => {
    reply.header('cache-control', 'no-store')
    if (opts.isClosing()) return reply.code(503).send({ status: 'shutting_down' })
    const [servers, store] = await Promise.all([probeAll(), pingStore(opts.store)])
    const audit = auditHealth(opts.audit)
    const isDegraded = !store.isReachable || store.isWritable === false || audit?.isWritable === false || servers.some((s) => !s.isReachable)
    const status = isDegraded ? 'degraded' : 'ready'
    // The detail names servers, processes, commands and the store's errors: for the machine
    // itself and metrics.bearerToken; a probe needs the status. The machine itself: the peer
    // and the client (trustProxy applied) both on loopback, so neither a remote client through a
    // local proxy nor a trusted private peer naming 127.0.0.1 in X-Forwarded-For is one.
    const isThisMachine = isLoopbackAddress(request.ip) && isLoopbackAddress(request.socket.remoteAddress ?? '')
    if (!isThisMachine && !carriesToken(request.headers.authorization)) return reply.send({ status })
    return reply.send({ status, version: opts.version, store, ...(audit === undefined ? {} : { audit }), servers })
  })
}

interface AuditHealth {
  /** False while audit records cannot be written: MCP requests answer 503 PORTCULLIS_ERR_AUDIT_UNAVAILABLE. */
  readonly isWritable: boolean
  readonly error?: string
  readonly failingSince?: string
  readonly pendingRecords?: number
}

function auditHealth (audit: HealthRoutesOptions['audit']): AuditHealth | undefined {
  if (audit === undefined) return undefined
  const failure = audit.lastWriteFailure()
  if (failure === undefined) return { isWritable: true }
  return { isWritable: false, error: `writes fail: ${failure.code}`, failingSince: new Date(failure.sinceMs).toISOString(), pendingRecords: failure.pendingRecords }
}

interface StoreHealth {
  readonly kind: string
  readonly isReachable: boolean
  /** False while the store answers but refuses writes (a full disk): sign-in, registration and refresh answer 503. */
  readonly isWritable?: boolean
  readonly latencyMs?: number
  readonly error?: string
  readonly failingSince?: string
}

async function pingStore (store: Store): Promise<StoreHealth> {
  const started = performance.now()
  try {
    await withTimeout(store.ping(), STORE_PING_TIMEOUT_MS, () => new Error(`no answer within ${STORE_PING_TIMEOUT_MS} ms`))
    const latencyMs = Math.round((performance.now() - started) * 10) / 10
    const failure = store.lastWriteFailure?.()
    if (failure === undefined) return { kind: store.kind, isReachable: true, latencyMs }
    return { kind: store.kind, isReachable: true, isWritable: false, latencyMs, error: `writes fail: ${failure.code}: ${failure.message}`, failingSince: new Date(failure.sinceMs).toISOString() }
  } catch (err) {
    return { kind: store.kind, isReachable: false, error: (err as Error).message }
  }
}
