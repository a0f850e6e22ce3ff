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
  if (resources.length === 0) {
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
      const server = known.length === 1 && known[0] !== undefined ? catalog.serverAt(known[0]) : undefined
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
