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
import type { AccountChanges } from '../app.js'
import type { RevokedGrants } from '../resource-server/revoked-grants.js'

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

/** What revoking a reload's account changes did: one account's failure does not stop the others'. */
export interface AccountRevocation {
  /** Identity-provider accounts of removed providers whose access was revoked. */
  readonly providerAccounts: number
  /**
   * What could not be revoked (the store failing): the account and why it was to be, or
   * (`providers not listed`) the removed providers whose accounts could not be listed; and the error.
   */
  readonly failures: readonly AccountRevocationFailure[]
}

export interface AccountRevocationFailure {
  readonly account: string
  readonly change: 'removed' | 'regrouped' | 'provider removed' | 'providers not listed'
  readonly error: string
}

export interface AccountChangesDeps extends RevokeUserDeps {
  readonly revokedGrants: Pick<RevokedGrants, 'revoke'>
  /** The identity-provider accounts the gateway has seen, with their provider. */
  readonly listSeenUsers: () => Promise<ReadonlyArray<{ readonly id: string, readonly provider: string }>>
}

/**
 * What a reload takes away (README "Reloading"): users removed and the accounts of identity
 * providers removed lose everything, as the admin API's revoke; users regrouped lose their
 * grants (their tokens carry the old groups: they sign in again for the new ones). Each
 * account on its own: the store failing on one must not leave the next one's access standing
 * unsaid.
 */
export async function revokeAccountChanges (deps: AccountChangesDeps, changes: AccountChanges): Promise<AccountRevocation> {
  const failures: AccountRevocationFailure[] = []
  const attempt = async (account: string, change: AccountRevocationFailure['change'], revoke: () => Promise<unknown>): Promise<boolean> => {
    try {
      await revoke()
      return true
    } catch (err) {
      failures.push({ account, change, error: (err as Error).message })
      return false
    }
  }
  let providerAccounts: string[] = []
  if (changes.removedProviders.length > 0) {
    await attempt(changes.removedProviders.join(', '), 'providers not listed', async () => {
      const seen = await deps.listSeenUsers()
      providerAccounts = seen.filter((user) => changes.removedProviders.includes(user.provider)).map((user) => user.id)
    })
  }
  for (const userId of changes.removedUsers) await attempt(userId, 'removed', async () => revokeUser(deps, userId))
  let providerAccountsRevoked = 0
  for (const userId of providerAccounts) if (await attempt(userId, 'provider removed', async () => revokeUser(deps, userId))) providerAccountsRevoked++
  for (const userId of changes.regroupedUsers) {
    await attempt(userId, 'regrouped', async () => { for (const grantId of await deps.grants.of(userId)) await deps.revokedGrants.revoke(grantId) })
  }
  return { providerAccounts: providerAccountsRevoked, failures }
}
