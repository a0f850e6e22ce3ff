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
import type { UpstreamCredentials, UpstreamCredentialsFactory } from '../upstreams/upstream-credentials.js'
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
}

export interface UpstreamAuth {
  /** The credential source of a server with upstreamAuth. */
  readonly credentialsFor: UpstreamCredentialsFactory
  readonly close: () => Promise<void>
}

export function createUpstreamAuth (deps: UpstreamAuthDeps): UpstreamAuth {
  const sources = new Map<string, UpstreamCredentials>()
  // tokenExchange (RFC 8693): src/upstream-auth/token-exchange.ts.
  const tokenExchanges = createTokenExchanges(deps)
  for (const server of deps.config.servers) {
    if (server.transport !== 'http' || server.upstreamAuth === undefined) continue
    // Each type adds its source here; a server whose type has none fails at start (HttpUpstream).
    if (server.upstreamAuth.type === 'tokenExchange') sources.set(server.name, tokenExchanges.credentialsFor(server.name, server.upstreamAuth))
  }
  return {
    credentialsFor: (server) => sources.get(server),
    close: async () => {
      await tokenExchanges.close()
    },
  }
}
