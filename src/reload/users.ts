/**
 * Accounts a reload takes away or changes (README "Reloading"). Tokens carry a user's groups
 * and stay valid up to auth.accessTokenTtl: without a revoke, a user removed from the file kept
 * their access (and their stdio processes), and a user moved out of a group kept its rights.
 */
import type { AccountChanges } from '../app.js'
import type { Config } from '../config/schema.js'
import { stableJson } from './upstream-pool.js'

export function accountChanges (before: Config, after: Config): AccountChanges {
  const now = new Map(after.auth.users.map((user) => [user.username, user]))
  const removedUsers: string[] = []
  const regroupedUsers: string[] = []
  for (const user of before.auth.users) {
    const kept = now.get(user.username)
    if (kept === undefined) removedUsers.push(user.username)
    else if (stableJson([...user.groups ?? []].sort()) !== stableJson([...kept.groups ?? []].sort())) regroupedUsers.push(user.username)
  }
  const providers = new Set(after.auth.identityProviders.map((idp) => idp.name))
  const removedProviders = before.auth.identityProviders.map((idp) => idp.name).filter((name) => !providers.has(name))
  return { removedUsers, regroupedUsers, removedProviders }
}

/** Whether the reload takes anything from anyone. */
export function hasAccountChanges (changes: AccountChanges): boolean {
  return changes.removedUsers.length + changes.regroupedUsers.length + changes.removedProviders.length > 0
}
