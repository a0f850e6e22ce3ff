/**
 * Revoking a registered client (POST /admin/api/v1/clients/<id>/revoke): every grant it holds
 * is revoked (refresh tokens with it; access tokens refused on every replica within the
 * revoked-grant poll), then its registration is deleted — the client must register again, and
 * its users consent again. Clients listed in auth.clients, and the gateway's own account pages,
 * live in the YAML: they are refused here with a message saying so.
 *
 * Finding a client's grants is a scan of the store's Grant records (oidc-provider indexes
 * grants by id only): fine for a rare admin action, never for a request path.
 */
import { PortcullisError } from '../errors.js'
import type { Store } from '../store/types.js'

export interface RevokeClientDeps {
  readonly store: Store
  readonly revokeGrant: (grantId: string) => Promise<void>
  /** auth.clients ids and the account pages' client. */
  readonly fixedClients: ReadonlySet<string>
}

/** The number of grants revoked; undefined when no such registered client exists. */
export async function revokeClient (deps: RevokeClientDeps, clientId: string): Promise<{ grants: number } | undefined> {
  if (deps.fixedClients.has(clientId)) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', 'this client is configured in auth.clients (or is the gateway\'s own); remove it from the YAML instead')
  if (await deps.store.find('Client', clientId) === undefined) return undefined
  const grantIds: string[] = []
  for await (const entry of deps.store.entries()) {
    if (entry.kind === 'record' && entry.model === 'Grant' && entry.payload.clientId === clientId) grantIds.push(entry.id)
  }
  for (const grantId of grantIds) await deps.revokeGrant(grantId)
  await deps.store.destroy('Client', clientId)
  return { grants: grantIds.length }
}
