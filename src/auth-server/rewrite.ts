/**
 * Normalising authorization and token requests before oidc-provider sees
 * them. oidc-provider compares `resource` values as raw strings between
 * /authorize and /token, so `.../a/mcp/` at one and `.../a/mcp` at the other
 * would fail; here every known resource is put in its canonical form first.
 * A request that names a resource but no usable scope gets the resource's
 * default scope (without one, oidc-provider grants nothing).
 */
import { BASE_SCOPE } from '../config/defaults.js'
import type { ResourceCatalog } from './resources.js'
import { ACCOUNT_CLIENT_ID } from '../account/sign-in.js'

function canonicalizeResources (params: URLSearchParams, catalog: ResourceCatalog): string[] {
  const resources = params.getAll('resource')
  if (resources.length === 0) return []
  const canonical = resources.map((r) => catalog.canonical(r) ?? r)
  params.delete('resource')
  for (const r of canonical) params.append('resource', r)
  return canonical
}

/** Rewrites authorization request parameters in place; true when anything changed. */
export function rewriteAuthorizationParams (params: URLSearchParams, catalog: ResourceCatalog): boolean {
  const before = params.toString()
  const requested = (params.get('scope') ?? '').split(' ').filter((s) => s !== '')
  let resources = canonicalizeResources(params, catalog)
  // The account pages sign in for an ID token only (account/sign-in.ts): given a default
  // resource (the one server of a one-server gateway) their sign-in would ask for consent to
  // an MCP server, and their access token would reach it.
  if (resources.length === 0 && params.get('client_id') !== ACCOUNT_CLIENT_ID) {
    const chosen = catalog.defaultFor(requested)
    if (chosen !== undefined) {
      params.set('resource', chosen)
      resources = [chosen]
    }
  }
  const known = resources.filter((r) => catalog.canonical(r) === r)
  if (known.length > 0) {
    const grantable = new Set(known.flatMap((r) => catalog.grantableScopes(r)))
    if (!requested.some((s) => grantable.has(s))) {
      const only = known.length === 1 ? known[0] : undefined
      const virtual = only === undefined ? undefined : catalog.virtualServerAt(only)
      const server = only === undefined ? undefined : catalog.serverAt(only) ?? (virtual === undefined ? undefined : catalog.virtualTarget(virtual))
      const defaults = server === undefined ? [BASE_SCOPE] : catalog.challengeScopes(server)
      params.set('scope', [...requested, ...defaults].join(' '))
    }
  }
  return params.toString() !== before
}

/** Rewrites token request parameters in place; true when anything changed. */
export function rewriteTokenParams (params: URLSearchParams, catalog: ResourceCatalog): boolean {
  const before = params.getAll('resource')
  const after = canonicalizeResources(params, catalog)
  return before.some((r, i) => r !== after[i])
}
