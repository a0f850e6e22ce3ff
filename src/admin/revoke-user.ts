/**
 * Revoking a user (POST /admin/api/v1/users/<id>/revoke): every grant of theirs (its refresh
 * tokens with it; its access tokens refused on every replica within the revoked-grant poll,
 * about a second: resource-server/revoked-grants.ts), every API key, their session at their
 * identity provider, and their MCP sessions on this replica (stdio: with their processes) — the pieces
 * offboarding (auth-server/offboarding.ts) uses, without disabling the account: the user may
 * sign in again (block them for that).
 */
import type { ApiKeys } from '../account/api-keys.js'
import type { AccountGrants } from '../auth-server/account-grants.js'
import type { IdpSessions } from '../auth-server/idp-sessions.js'

export interface RevokeUserDeps {
  readonly grants: AccountGrants
  readonly revokeGrant: (grantId: string) => Promise<void>
  readonly apiKeys: ApiKeys
  readonly idpSessions: IdpSessions
  readonly endUserSessions: (userId: string) => Promise<void>
}

export interface RevokeUserResult {
  readonly grants: number
  readonly apiKeys: number
}

export async function revokeUser (deps: RevokeUserDeps, userId: string): Promise<RevokeUserResult> {
  const grantIds = await deps.grants.of(userId)
  // The index is kept (not forgotten): a grant saved while this runs stays listed for the next revoke.
  for (const grantId of grantIds) await deps.revokeGrant(grantId)
  const keys = await deps.apiKeys.list(userId)
  for (const key of keys) await deps.apiKeys.revoke(key.keyId, userId)
  await deps.idpSessions.forget(userId)
  await deps.endUserSessions(userId)
  return { grants: grantIds.length, apiKeys: keys.length }
}
