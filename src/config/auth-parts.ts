/**
 * Sets read off the auth section in several places (the token verifier, the authorization
 * server, the API-key owners, the CLI): one home for each, so they cannot drift apart.
 */
import type { Config } from './schema.js'

/** The clients that may use client_credentials: those auth.clients lists with that grant. */
export function machineClientIds (auth: Config['auth']): ReadonlySet<string> {
  return new Set(auth.clients.filter((c) => c.grantTypes.includes('client_credentials')).map((c) => c.clientId))
}

/** The names of the identity providers configured (auth.identityProviders). */
export function identityProviderNames (auth: Config['auth']): ReadonlySet<string> {
  return new Set(auth.identityProviders.map((idp) => idp.name))
}
