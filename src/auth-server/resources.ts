/**
 * The protected resources the gateway offers: one per server, at
 * `<publicUrl>/<name>/mcp` (RFC 8707 resource indicators, RFC 9728 metadata),
 * optionally the gateway as a whole (`auth.defaultResource: all`), and the admin
 * API at `<publicUrl>/admin` (scope `portcullis:admin`; README "Administration"). A virtual
 * server (README "Virtual servers") is a resource of its own at `<publicUrl>/<name>/mcp`: one
 * token and one consent for all of its members.
 */

/** What a token check needs to know of the resource a request reaches: its name and the scopes it requires. */
export interface ResourceTarget {
  readonly name: string
  readonly scopes: readonly string[]
}
import { ADMIN_SCOPE, BASE_SCOPE, RESERVED_SCOPES } from '../config/defaults.js'
import type { Config, ServerConfig, VirtualServerConfig } from '../config/schema.js'
import { ruleScopesOf } from '../policy/policy.js'

export class ResourceCatalog {
  readonly publicUrl: string
  /** The admin API's resource: its tokens reach no MCP server, and no MCP server's token reaches it. */
  readonly adminUrl: string
  private readonly byUrl = new Map<string, ServerConfig>()
  private readonly virtualByUrl = new Map<string, VirtualServerConfig>()
  private readonly virtualByName = new Map<string, VirtualServerConfig>()
  private readonly isGatewayWideAllowed: boolean

  constructor (private readonly config: Config) {
    this.publicUrl = config.publicUrl
    this.adminUrl = `${config.publicUrl}/admin`
    for (const server of config.servers) this.byUrl.set(this.urlOf(server.name), server)
    for (const virtual of config.virtualServers) {
      this.virtualByUrl.set(this.urlOf(virtual.name), virtual)
      this.virtualByName.set(virtual.name, virtual)
    }
    this.isGatewayWideAllowed = config.auth.defaultResource === 'all'
  }

  urlOf (serverName: string): string {
    return `${this.publicUrl}/${serverName}/mcp`
  }

  metadataUrlOf (serverName: string): string {
    return `${this.publicUrl}/.well-known/oauth-protected-resource/${serverName}/mcp`
  }

  /**
   * The same server (or virtual server) as 2024-11-05 clients reach it, `<publicUrl>/<name>/sse`. Such a client
   * checks that the resource it is sent to is its URL or a prefix of it (the MCP SDK's
   * checkResourceAllowed), which `/<name>/mcp` is not: this URL names the same protected
   * resource, and canonical() turns it into `/<name>/mcp`, so its tokens are the server's own.
   */
  legacyUrlOf (serverName: string): string {
    return `${this.publicUrl}/${serverName}/sse`
  }

  legacyMetadataUrlOf (serverName: string): string {
    return `${this.publicUrl}/.well-known/oauth-protected-resource/${serverName}/sse`
  }

  /**
   * The canonical form of a resource indicator, or undefined when it names
   * nothing here. A trailing slash, letter case of scheme and host, and a
   * default port do not matter; a query or fragment does (RFC 8707 2).
   */
  canonical (indicator: string): string | undefined {
    let url: URL
    try {
      url = new URL(indicator)
    } catch {
      return undefined
    }
    if (url.origin !== this.publicUrl || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') return undefined
    const path = url.pathname.replace(/\/+$/, '')
    if (path === '') return this.isGatewayWideAllowed ? this.publicUrl : undefined
    if (path === '/admin') return this.adminUrl
    // A server's or virtual server's /sse URL (legacyUrlOf) is that server's resource.
    const candidate = `${this.publicUrl}${path.replace(/^(\/[^/]+)\/sse$/, '$1/mcp')}`
    return this.byUrl.has(candidate) || this.virtualByUrl.has(candidate) ? candidate : undefined
  }

  serverAt (canonicalUrl: string): ServerConfig | undefined {
    return this.byUrl.get(canonicalUrl)
  }

  virtualServerAt (canonicalUrl: string): VirtualServerConfig | undefined {
    return this.virtualByUrl.get(canonicalUrl)
  }

  /** A virtual server's members, in its order. */
  private membersOf (virtual: VirtualServerConfig): ServerConfig[] {
    return virtual.members.map((name) => this.byUrl.get(this.urlOf(name))).filter((s) => s !== undefined)
  }

  /** Scopes that can be granted for a resource: the base scope, its servers' scopes, and those their tool rules need. */
  grantableScopes (canonicalUrl: string): string[] {
    if (canonicalUrl === this.adminUrl) return [ADMIN_SCOPE]
    const virtual = this.virtualByUrl.get(canonicalUrl)
    // A virtual server's token must be able to carry what each member requires of it.
    const servers = canonicalUrl === this.publicUrl ? this.config.servers : virtual !== undefined ? this.membersOf(virtual) : [this.byUrl.get(canonicalUrl)].filter((s) => s !== undefined)
    return [...new Set([BASE_SCOPE, ...servers.flatMap((s) => [...s.scopes, ...ruleScopesOf(s)])])]
  }

  /** Scopes a token must carry to reach a server at all (a virtual server: none of its own; each member checks its own). */
  requiredScopes (server: ResourceTarget): readonly string[] {
    return server.scopes
  }

  /**
   * What a 401 challenge asks for: the required scopes, or the base scope when there are none.
   * A virtual server asks for every scope its members require, so that one sign-in reaches them all.
   */
  challengeScopes (server: ResourceTarget): readonly string[] {
    const virtual = this.virtualByName.get(server.name)
    const scopes = virtual === undefined ? server.scopes : [...new Set(this.membersOf(virtual).flatMap((s) => s.scopes))]
    return scopes.length > 0 ? scopes : [BASE_SCOPE]
  }

  /** A virtual server's target for the token check: its own name, no scope of its own. */
  virtualTarget (virtual: VirtualServerConfig): ResourceTarget {
    return { name: virtual.name, scopes: [] }
  }

  allScopes (): string[] {
    return [...new Set([BASE_SCOPE, ...this.config.servers.flatMap((s) => [...s.scopes, ...ruleScopesOf(s)])])]
  }

  /**
   * For a client that sends no `resource`: the one server there is; else the
   * one server all of its (non-base) scopes belong to; else the configured
   * `auth.defaultResource`; else undefined (the request is refused with
   * invalid_target, never silently widened).
   */
  defaultFor (requestedScopes: readonly string[]): string | undefined {
    const servers = this.config.servers
    if (servers.length === 1 && servers[0] !== undefined) return this.urlOf(servers[0].name)
    const specific = requestedScopes.filter((s) => s !== BASE_SCOPE && !RESERVED_SCOPES.has(s))
    if (specific.length > 0) {
      const owners = servers.filter((server) => specific.every((scope) => server.scopes.includes(scope)))
      const onlyOwner = owners.length === 1 ? owners[0] : undefined
      if (onlyOwner !== undefined) return this.urlOf(onlyOwner.name)
    }
    const configured = this.config.auth.defaultResource
    if (configured === 'all') return this.publicUrl
    if (configured !== undefined) return this.urlOf(configured)
    return undefined
  }
}
