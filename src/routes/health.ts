/**
 * /healthz: the process is up and serving HTTP (liveness).
 * /readyz: can the gateway serve? 200 while it can (an upstream being down
 * degrades one server, not the gateway), 503 while shutting down. The body
 * lists each upstream's state; network probes are cached so scrapes stay cheap.
 */
import type { FastifyInstance } from 'fastify'
import type { Upstream } from '../upstreams/types.js'

export interface HealthRoutesOptions {
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly isClosing: () => boolean
  readonly version: string
}

export async function healthRoutes (app: FastifyInstance, opts: HealthRoutesOptions): Promise<void> {
  // Each upstream decides what a probe costs (HTTP upstreams cache their TCP checks).
  const probeAll = () => Promise.all([...opts.upstreams.values()].map((u) => u.probe()))

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
