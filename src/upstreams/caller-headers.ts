/**
 * The configured headers of a remote upstream (`transport: http` or `sse`) with the caller's
 * values: `${user.*}` rendered (header-safe), the signed identity token added
 * (servers[].identity), the caller's own Authorization at the upstream (servers[].upstreamAuth).
 * A caller lacking a field a header uses is refused (PORTCULLIS_ERR_USER_FIELD_MISSING): an
 * empty or half-rendered header is never sent.
 */
import { hasUserTemplate, renderHeaderTemplate } from '../config/user-template.js'
import { IdentityTokens, type IdentitySigner } from './identity-token.js'
import { requireUserFields } from './stdio/environment.js'
import type { McpExchange } from './types.js'
import type { UpstreamCredentials } from './upstream-credentials.js'

export interface RemoteHeadersConfig {
  readonly name: string
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  readonly identity?: { readonly header: string } | undefined
}

export class CallerHeaders {
  /** Configured headers without `${user.*}`: the same for every caller. */
  readonly staticHeaders: Readonly<Record<string, string>>
  /** Configured headers with `${user.*}`, rendered per request. */
  private readonly userHeaders: ReadonlyArray<readonly [name: string, value: string]>
  /** Their templates, checked against each caller (kept, not rebuilt per request). */
  private readonly userTemplates: readonly string[]
  /** servers[].identity: the header (lower case) and this server's tokens. */
  private readonly identity: { readonly header: string, readonly tokens: IdentityTokens } | undefined

  constructor (private readonly config: RemoteHeadersConfig, signer: IdentitySigner | undefined, private readonly credentials: UpstreamCredentials | undefined) {
    const configured = Object.entries(config.headers)
    this.staticHeaders = Object.fromEntries(configured.filter(([, value]) => !hasUserTemplate(value)))
    this.userHeaders = configured.filter(([, value]) => hasUserTemplate(value))
    this.userTemplates = this.userHeaders.map(([, value]) => value)
    const header = config.identity?.header
    // The schema refuses identity without auth; without a signer (no keys) nothing could be vouched for.
    if (header !== undefined && signer === undefined) throw new Error(`server ${config.name}: identity needs the authorization server's signing keys (auth.enabled)`)
    this.identity = header === undefined || signer === undefined ? undefined : { header: header.toLowerCase(), tokens: new IdentityTokens(signer, config.name, config.url) }
  }

  /** Without per-user headers, identity or credentials this is the configured object itself: no work. */
  for (ex: McpExchange): Readonly<Record<string, string>> | Promise<Readonly<Record<string, string>>> {
    if (this.userHeaders.length === 0 && this.identity === undefined && this.credentials === undefined) return this.config.headers
    // Identity alone (the common case) has no template to check: no per-request work for it.
    if (this.userTemplates.length > 0) requireUserFields(this.config.name, this.userTemplates, ex.user)
    const headers: Record<string, string> = { ...this.staticHeaders }
    for (const [name, value] of this.userHeaders) headers[name] = renderHeaderTemplate(value, ex.user)
    const identity = this.identity
    const token = identity?.tokens.tokenFor(ex.user, ex.owner.client)
    const authorization = this.credentials?.authorizationFor(ex)
    if (typeof token !== 'object' && typeof authorization !== 'object') {
      if (identity !== undefined && token !== undefined) headers[identity.header] = token
      if (authorization !== undefined) headers.authorization = authorization
      return headers
    }
    return Promise.all([token, authorization]).then(([signed, credential]) => {
      if (identity !== undefined && signed !== undefined) headers[identity.header] = signed
      if (credential !== undefined) headers.authorization = credential
      return headers
    })
  }
}
