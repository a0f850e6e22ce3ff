/**
 * servers[].upstreamAuth (issue 14, README "Upstream credentials"): builds, once, what gives each
 * caller their own credential at an upstream — `oauth` (the gateway as each user's OAuth client
 * at the upstream's authorization server) and `tokenExchange` (RFC 8693 at the identity
 * provider) — and hands the HTTP upstreams one UpstreamCredentials per server that has it.
 *
 * Every outbound request here (discovery, registration, token, exchange) goes through one
 * guarded fetch (src/net/guarded-fetch.ts).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config/schema.js'
import type { Store } from '../store/types.js'
import type { SecretBox } from '../auth-server/secret-box.js'
import type { IdpSessions } from '../auth-server/idp-sessions.js'
import type { OutboundTestAllowance } from '../net/guarded-fetch.js'
import { createGuardedFetch, type GuardedFetch } from '../net/guarded-fetch.js'
import type { LinkedTokenSource, UpstreamCredentials, UpstreamCredentialsFactory } from '../upstreams/upstream-credentials.js'
import { linkRequiredError } from './link-required.js'
import type { SessionOwners } from '../upstreams/session-owners.js'
import { UpstreamOAuthClient } from './oauth-client.js'
import { OAuthCredentials } from './oauth-credentials.js'
import { LinkedTokens } from './linked-tokens.js'
import { UpstreamLinks, type LinkedAccounts } from './upstream-links.js'
import { createTokenExchanges } from './token-exchange.js'

export interface UpstreamAuthDeps {
  readonly config: Config
  readonly store: Store
  /** Seals users' upstream tokens at rest. */
  readonly box: SecretBox
  /** The users' identity-provider tokens kept from enterprise sign-in (token exchange). */
  readonly idpSessions: IdpSessions | undefined
  readonly log: FastifyBaseLogger
  readonly now: () => number
  readonly outboundTestAllowance: OutboundTestAllowance | undefined
  /** Where a session's URL-mode elicitation capability is noted (link errors as -32042). */
  readonly sessionOwners: SessionOwners
}

export interface UpstreamAuth {
  /** The credential source of a server with upstreamAuth. */
  readonly credentialsFor: UpstreamCredentialsFactory
  /** `${user.credentials.<server>}` for stdio env: the caller's token at an oauth server. */
  readonly linkedToken: LinkedTokenSource
  /** The oauth servers' linked accounts, for the account pages; undefined when there are none. */
  readonly links: LinkedAccounts | undefined
  readonly close: () => Promise<void>
}

export function createUpstreamAuth (deps: UpstreamAuthDeps): UpstreamAuth {
  const sources = new Map<string, UpstreamCredentials>()
  const oauthSources = new Map<string, OAuthCredentials>()
  const oauthClients = new Map<string, UpstreamOAuthClient>()
  const fetches: GuardedFetch[] = []
  // tokenExchange (RFC 8693): src/upstream-auth/token-exchange.ts.
  const tokenExchanges = createTokenExchanges(deps)
  const tokens = new LinkedTokens(deps.store, deps.box, (server, user, reason) => deps.log.warn({ server, user, reason }, 'linked upstream token unreadable; treated as not linked'))
  for (const server of deps.config.servers) {
    if (server.transport !== 'http' || server.upstreamAuth === undefined) continue
    // Each type adds its source here; a server whose type has none fails at start (HttpUpstream).
    if (server.upstreamAuth.type === 'oauth') {
      const outbound = oauthFetch(deps, server.name, server.url)
      fetches.push(outbound)
      const client = new UpstreamOAuthClient({ server: server.name, url: server.url, auth: server.upstreamAuth, publicUrl: deps.config.publicUrl, store: deps.store, box: deps.box, fetch: outbound.fetch, now: deps.now })
      oauthClients.set(server.name, client)
      const source = new OAuthCredentials({
        server: server.name,
        publicUrl: deps.config.publicUrl,
        client,
        tokens,
        store: deps.store,
        hasUrlElicitation: async (name, sessionId) => await deps.sessionOwners.hasUrlElicitation(name, sessionId),
        log: deps.log,
        now: deps.now,
      })
      sources.set(server.name, source)
      oauthSources.set(server.name, source)
    } else if (server.upstreamAuth.type === 'tokenExchange') {
      sources.set(server.name, tokenExchanges.credentialsFor(server.name, server.upstreamAuth))
    }
  }
  return {
    credentialsFor: (server) => sources.get(server),
    linkedToken: async (server, user, canElicitUrl = false) => {
      // The schema allows only oauth servers here; a stdio child is started only with a token.
      const token = await oauthSources.get(server)?.currentToken(user.id)
      // A client that declared URL-mode elicitation in the initialize starting the process gets -32042.
      if (token === undefined) throw linkRequiredError(deps.config.publicUrl, server, canElicitUrl)
      return token
    },
    links: oauthClients.size === 0 ? undefined : new UpstreamLinks(oauthClients, tokens, deps.store, deps.log, deps.now),
    close: async () => {
      await Promise.all([...fetches.map(async (f) => await f.close()), tokenExchanges.close()])
    },
  }
}

/**
 * One guarded fetch per oauth server. The upstream's URL is the operator's choice, so its host
 * is an operator host (it may be private, and plain http on loopback). Everything else this
 * fetch reaches — the resource metadata URL, the authorization server, its endpoints — is named
 * by the upstream's own metadata, like a URL a registrant supplies: only public https hosts,
 * unless it is that same host (an upstream that is its own authorization server, as a second
 * Portcullis is). An upstream cannot send the gateway into its network beyond the host the
 * operator already pointed it at.
 */
function oauthFetch (deps: UpstreamAuthDeps, server: string, url: string): GuardedFetch {
  return createGuardedFetch({
    allowedHosts: [],
    operatorHosts: [new URL(url).hostname],
    ...(deps.outboundTestAllowance === undefined ? {} : { testAllowance: deps.outboundTestAllowance }),
    onRefused: (host, reason) => deps.log.warn({ server, host: host.slice(0, 253), reason }, 'upstream authorization request refused'),
  })
}
