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
 * therefore take a short lock in the store (kvSetIfAbsent, released after, expiring by itself
 * if its holder dies); one that cannot get it fails the grant's save (fail closed: a sign-in
 * error beats a grant nobody can revoke).
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Store } from '../store/types.js'

const KEY_PREFIX = 'account-grants:'
const LOCK_PREFIX = 'account-grants-lock:'
/** A holder that died releases the lock by expiry after this long. */
const LOCK_TTL_MS = 5_000
/** Waiting outlasts a dead holder's lock. */
const LOCK_WAIT_MS = LOCK_TTL_MS + 2_000
const LOCK_RETRY_MS = 15

/** grantId -> when it expires (ms), or null for a grant without expiry. */
type GrantList = Record<string, number | null>

export class AccountGrants {
  constructor (private readonly store: Store, private readonly now: () => number) {}

  /** Lists a grant under its account (again: a re-saved grant moves its expiry). */
  async add (accountId: string, grantId: string, expiresAtMs: number | undefined): Promise<void> {
    const release = await this.lock(accountId)
    try {
      const list = await this.live(accountId)
      list[grantId] = expiresAtMs ?? null
      const latest = Object.values(list).every((at) => at !== null) ? Math.max(...Object.values(list) as number[]) : undefined
      await this.store.kvSet(KEY_PREFIX + accountId, JSON.stringify(list), latest)
    } finally {
      await release()
    }
  }

  /** Waits for the account's list lock; throws when it stays taken past a dead holder's expiry. */
  private async lock (accountId: string): Promise<() => Promise<void>> {
    const key = LOCK_PREFIX + accountId
    // Wall time for the wait (the injected clock may stand still in tests); the lock's own
    // expiry is the store's, on the injected clock like every other record.
    const deadline = performance.now() + LOCK_WAIT_MS
    for (;;) {
      if (await this.store.kvSetIfAbsent(key, '1', this.now() + LOCK_TTL_MS)) return async () => this.store.kvDelete(key)
      if (performance.now() > deadline) throw new Error(`the grant list of an account stayed locked for ${LOCK_WAIT_MS} ms`)
      await sleep(LOCK_RETRY_MS + Math.random() * LOCK_RETRY_MS)
    }
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
