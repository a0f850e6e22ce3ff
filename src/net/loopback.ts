/**
 * Which URL hostnames (as `URL.hostname` writes them, `[::1]` bracketed) name this machine:
 * where plain http cannot cross a network. One home for a test written three times before.
 */

/** The loopback names themselves: the OAuth redirect rule (RFC 8252) and the public URL check. */
export const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', 'localhost', '[::1]'])

/** A loopback name or a `*.localhost` one (RFC 6761: always resolved to loopback): upstream and outbound URLs. */
export function isLoopbackHost (hostname: string): boolean {
  return LOOPBACK_HOSTS.has(hostname) || hostname.endsWith('.localhost')
}

/** A peer address (as `request.ip` gives it) on this machine: 127.0.0.0/8, ::1, or either mapped into IPv6. */
export function isLoopbackAddress (ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.')
}
