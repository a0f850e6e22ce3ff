/**
 * Revoking a user (POST /admin/api/v1/users/<id>/revoke): every grant of theirs (its refresh
 * tokens with it; its access tokens refused on every replica within the revoked-grant poll,
 * about a second: resource-server/revoked-grants.ts), every API key, their session at their
 * identity provider, and their MCP sessions on this replica (stdio: with their processes) — the pieces
 * offboarding (auth-server/offboarding.ts) uses, without disabling the account: the user may
 * sign in again (block them for that) — with their password or identity provider: their sign-in
 * at the gateway's authorization server ends (auth-server/ended-sign-ins.ts), and so do their
 * account and admin page sessions (account/page-sessions.ts).
 *
 * An id that names no user the gateway knows, and had nothing to revoke, is reported as such
 * (undefined): a typo must not read as "revoked".
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
  /** Ends the user's admin page sessions; how many were live. */
  readonly endAdminSessions: (userId: string) => Promise<number>
  /** Ends the user's account page sessions; how many were live. */
  readonly endAccountSessions: (userId: string) => Promise<number>
  /** Ends the user's sign-ins at the authorization server: the next authorization asks again. */
  readonly endSignIns: (userId: string) => Promise<void>
  /** A local user, or an identity-provider account the gateway has seen. */
  readonly isKnownUser: (userId: string) => Promise<boolean>
}

export interface RevokeUserResult {
  readonly grants: number
  readonly apiKeys: number
  readonly adminSessions: number
  readonly accountSessions: number
}

export async function revokeUser (deps: RevokeUserDeps, userId: string): Promise<RevokeUserResult | undefined> {
  const grantIds = await deps.grants.of(userId)
  // The index is kept (not forgotten): a grant saved while this runs stays listed for the next revoke.
  for (const grantId of grantIds) await deps.revokeGrant(grantId)
  const keys = await deps.apiKeys.list(userId)
  for (const key of keys) await deps.apiKeys.revoke(key.keyId, userId)
  await deps.idpSessions.forget(userId)
  await deps.endUserSessions(userId)
  await deps.endSignIns(userId)
  const adminSessions = await deps.endAdminSessions(userId)
  const accountSessions = await deps.endAccountSessions(userId)
  const isNothing = grantIds.length === 0 && keys.length === 0 && adminSessions === 0 && accountSessions === 0
  if (isNothing && !await deps.isKnownUser(userId)) return undefined
  return { grants: grantIds.length, apiKeys: keys.length, adminSessions, accountSessions }
}
