/**
 * Origin validation (MCP basic/transports, Streamable HTTP "Security Warning"):
 * servers MUST validate Origin to stop DNS rebinding; a present but invalid
 * Origin gets 403. Requests without Origin (every non-browser client) pass.
 */

export type OriginPolicy = (origin: string | undefined) => boolean

/**
 * Allowed: publicUrl's own origin, each configured origin exactly,
 * `scheme://host:*` for any port of a host, and `*` for any origin.
 */
export function createOriginPolicy (publicUrl: string, allowed: readonly string[]): OriginPolicy {
  const exact = new Set<string>([new URL(publicUrl).origin])
  const anyPort: string[] = []
  let isAny = false
  for (const entry of allowed) {
    if (entry === '*') isAny = true
    else if (entry.endsWith(':*')) anyPort.push(entry.slice(0, -2).toLowerCase())
    else exact.add(new URL(entry).origin)
  }
  return (origin) => {
    if (origin === undefined || isAny) return true
    if (exact.has(origin)) return true
    if (anyPort.length === 0) return false
    let url: URL
    try {
      url = new URL(origin)
    } catch {
      return false
    }
    if (url.origin !== origin) return false
    const withoutPort = `${url.protocol}//${url.hostname}`
    return anyPort.includes(withoutPort)
  }
}
