/**
 * /healthz: the process is up and serving HTTP (liveness).
 * /readyz: can the gateway serve? 200 while it can (an upstream being down
 * degrades one server, not the gateway), 503 while shutting down. The body
 * lists each upstream's state; probes are cached so scrapes stay cheap.
 */
import type { FastifyInstance } from 'fastify'
import { READY_PROBE_CACHE_MS } from '../config/defaults.js'
import type { Upstream, UpstreamHealth } from '../upstreams/types.js'

export interface HealthRoutesOptions {
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly isClosing: () => boolean
  readonly version: string
}

export async function healthRoutes (app: FastifyInstance, opts: HealthRoutesOptions): Promise<void> {
  let cached: { at: number, servers: Promise<UpstreamHealth[]> } | undefined

  const probeAll = (): Promise<UpstreamHealth[]> => {
    const now = Date.now()
    if (cached === undefined || now - cached.at > READY_PROBE_CACHE_MS) {
      cached = { at: now, servers: Promise.all([...opts.upstreams.values()].map((u) => u.probe())) }
    }
    return cached.servers
  }

  app.get('/healthz', async (_request, reply) => {
    return reply.header('cache-control', 'no-store').send({ status: 'ok' })
  })

  app.get('/readyz', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    if (opts.isClosing()) return reply.code(503).send({ status: 'shutting_down' })
    const servers = await probeAll()
    const isDegraded = servers.some((s) => !s.isReachable)
    return reply.send({ status: isDegraded ? 'degraded' : 'ready', version: opts.version, servers })
  })
}
