/**
 * Two endpoints `portcullis doctor` reads through whatever stands in front of
 * the gateway (nginx, a load balancer, a CDN):
 *
 * - request-probe: what the gateway makes of the request — the origin it
 *   derives (scheme and host, X-Forwarded-* honoured only from trustProxy) and
 *   which forwarding headers arrived — so a proxy that drops them, or a
 *   trustProxy that ignores them, shows up. Nothing secret: the caller sent it.
 * - sse-probe: an event stream with the MCP streams' own headers sending two
 *   events PROBE_GAP_MS apart; a proxy that buffers event streams delivers them
 *   together. (MCP Streamable HTTP, "Sending Messages to the Server": answers
 *   may be an SSE stream whose events must reach the client as they happen.)
 *
 * Under /.well-known/ because the shipped nginx config already passes that
 * prefix through (OAuth discovery lives there too).
 */
import type { FastifyInstance } from 'fastify'
import { SSE_HEADERS } from '../upstreams/stdio/reply.js'

export const REQUEST_PROBE_PATH = '/.well-known/portcullis/request-probe'
export const SSE_PROBE_PATH = '/.well-known/portcullis/sse-probe'
/** Between the probe's two events: long enough that a network cannot mistake buffering for latency. */
export const PROBE_GAP_MS = 500

export interface RequestProbe {
  /** The origin the gateway derives from this request: what it would build URLs from. */
  readonly origin: string
  /** Which forwarding headers arrived (present or not, whether trusted or not). */
  readonly forwarded: { readonly proto: boolean, readonly host: boolean, readonly for: boolean }
}

export async function doctorProbeRoutes (app: FastifyInstance): Promise<void> {
  app.get(REQUEST_PROBE_PATH, async (request, reply) => {
    const has = (name: string): boolean => request.headers[name] !== undefined
    const probe: RequestProbe = {
      origin: `${request.protocol}://${request.host}`,
      forwarded: { proto: has('x-forwarded-proto'), host: has('x-forwarded-host'), for: has('x-forwarded-for') },
    }
    return reply.header('cache-control', 'no-store').send(probe)
  })

  app.get(SSE_PROBE_PATH, (request, reply) => {
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, SSE_HEADERS)
    res.write('event: probe\ndata: 1\n\n')
    const timer = setTimeout(() => res.end('event: probe\ndata: 2\n\n'), PROBE_GAP_MS)
    request.raw.once('close', () => clearTimeout(timer))
  })
}
