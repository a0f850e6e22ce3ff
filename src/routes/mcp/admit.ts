import { PortcullisError } from '../../errors.js'
import type { McpCall, McpRoute } from './call.js'

/** What admission reads: the route's switches and the exchange (a virtual server's route passes the same). */
export type AdmitCall = Pick<McpCall, 'request' | 'reply'> & { readonly route: Pick<McpRoute, 'isClosing' | 'audit' | 'isOriginAllowed'> }

/** The audit file is retried every second; a client waits a little longer. */
const AUDIT_RETRY_AFTER_S = 5

/** Headers a browser-based client must be able to read. */
const CORS_EXPOSE_HEADERS = 'mcp-session-id, mcp-protocol-version, www-authenticate, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy'

/**
 * Before anything else is read: the gateway is not shutting down (503), can write the audit
 * record (503, fail closed), and the Origin is allowed (403); an allowed one gets its CORS headers.
 */
export function admit (call: AdmitCall): void {
  const { isClosing, audit, isOriginAllowed } = call.route
  if (isClosing()) {
    throw new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN', undefined, { headers: { connection: 'close', 'retry-after': '1' } })
  }
  // Fail closed: a request whose audit record cannot be written is not served.
  if (audit !== undefined && !audit.isWritable()) {
    throw new PortcullisError('PORTCULLIS_ERR_AUDIT_UNAVAILABLE', undefined, { headers: { 'retry-after': String(AUDIT_RETRY_AFTER_S) } })
  }
  const origin = call.request.headers.origin
  if (!isOriginAllowed(origin)) {
    call.request.log.info({ origin }, 'origin refused')
    throw new PortcullisError('PORTCULLIS_ERR_FORBIDDEN_ORIGIN')
  }
  if (origin !== undefined) {
    // Raw headers survive reply.hijack(); the upstream adapter writes the rest.
    const res = call.reply.raw
    res.setHeader('access-control-allow-origin', origin)
    res.setHeader('access-control-expose-headers', CORS_EXPOSE_HEADERS)
    res.setHeader('vary', 'Origin')
  }
}
