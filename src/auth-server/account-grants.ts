/**
 * Which grants each account holds (account id -> grant ids), so that
 * offboarding a user (the IdP refused them at revalidation, or logged them out)
 * can revoke every grant of theirs — oidc-provider indexes grants by id only.
 * Kept in the store (shared by replicas), filled by the adapter whenever a
 * Grant record is saved, each id listed until its grant expires.
 *
 * The list is one value, so adding is read-modify-write: two grants saved at once for one
 * account (two clients signing in together, on two replicas) would each write the list it read
 * and one id would be lost — a grant that offboarding then never revokes. Adds for one account
 * therefore take a short lock in the store (admin/store-lock.ts: released only by its holder,
 * expiring by itself if its holder dies); one that cannot get it fails the grant's save (fail
 * closed: a sign-in error beats a grant nobody can revoke).
 */
import type { Store } from '../store/types.js'
import { withStoreLock } from '../admin/store-lock.js'

const KEY_PREFIX = 'account-grants:'
const LOCK_PREFIX = 'account-grants-lock:'

/** grantId -> when it expires (ms), or null for a grant without expiry. */
type GrantList = Record<string, number | null>

export class AccountGrants {
  constructor (private readonly store: Store, private readonly now: () => number) {}

  /** Lists a grant under its account (again: a re-saved grant moves its expiry). */
  async add (accountId: string, grantId: string, expiresAtMs: number | undefined): Promise<void> {
    await withStoreLock(this.store, LOCK_PREFIX + accountId, this.now, async () => {
      const list = await this.live(accountId)
      list[grantId] = expiresAtMs ?? null
      const latest = Object.values(list).every((at) => at !== null) ? Math.max(...Object.values(list) as number[]) : undefined
      await this.store.kvSet(KEY_PREFIX + accountId, JSON.stringify(list), latest)
    })
  }

  /** The account's grants that may still be live. */
  async of (accountId: string): Promise<string[]> {
    return Object.keys(await this.live(accountId))
  }

  async forget (accountId: string): Promise<void> {
    await this.store.kvDelete(KEY_PREFIX + accountId)
  }

  private async live (accountId: string): Promise<GrantList> {
    const text = await this.store.kvGet(KEY_PREFIX + accountId)
    const list = text === undefined ? {} : JSON.parse(text) as GrantList
    const now = this.now()
    return Object.fromEntries(Object.entries(list).filter(([, at]) => at === null || at > now))
  }
}
