/**
 * The admin page's sessions, kept in the store (shared by replicas) as well as in the signed
 * cookie: a signed cookie alone stays valid until it expires, so signing out, or revoking the
 * user, could not end it. Each session is one key (`admin-session:<sid>` → user id) living as
 * long as the cookie; each user's sessions are listed under one index key, at most
 * MAX_SESSIONS_PER_USER of them (a new sign-in beyond that ends the oldest), so revoking a user
 * ends every admin page session of theirs without a scan of the store.
 */
import { randomBytes } from 'node:crypto'
import { ACCOUNT_SESSION_TTL_MS, type AccountSession } from '../account/session.js'
import type { Store } from '../store/types.js'
import { withStoreLock } from './store-lock.js'

const SESSION_PREFIX = 'admin-session:'
const USER_INDEX_PREFIX = 'admin-sessions-of:'
const USER_LOCK_PREFIX = 'admin-sessions-lock:'
/** Sessions one user keeps at once (browsers, devices); the index stays this small. */
export const MAX_SESSIONS_PER_USER = 10

export class AdminSessions {
  constructor (private readonly store: Store, private readonly now: () => number) {}

  /** A new session of `userId` (its id goes into the cookie), live as long as the cookie. */
  async start (userId: string): Promise<string> {
    const sid = randomBytes(16).toString('base64url')
    const expiresAtMs = this.now() + ACCOUNT_SESSION_TTL_MS
    await this.store.kvSet(SESSION_PREFIX + sid, userId, expiresAtMs)
    await this.updateIndex(userId, async (sids) => {
      const kept = [...sids, sid]
      const dropped = kept.splice(0, Math.max(0, kept.length - MAX_SESSIONS_PER_USER))
      for (const old of dropped) await this.store.kvDelete(SESSION_PREFIX + old)
      return kept
    }, expiresAtMs)
    return sid
  }

  /** The cookie's session is still one the store holds for that user (not signed out, not revoked, not expired). */
  async isLive (session: AccountSession): Promise<boolean> {
    return await this.store.kvGet(SESSION_PREFIX + session.sid) === session.userId
  }

  /** Signs one session out. */
  async end (session: AccountSession): Promise<void> {
    await this.store.kvDelete(SESSION_PREFIX + session.sid)
    await this.updateIndex(session.userId, async (sids) => sids.filter((sid) => sid !== session.sid))
  }

  /** Ends every admin page session of `userId`; how many were live. */
  async endUser (userId: string): Promise<number> {
    let live = 0
    await this.updateIndex(userId, async (sids) => {
      for (const sid of sids) {
        if (await this.store.kvGet(SESSION_PREFIX + sid) === userId) live++
        await this.store.kvDelete(SESSION_PREFIX + sid)
      }
      return []
    })
    return live
  }

  /** Read-modify-write of the user's index under a short lock (two sign-ins on two replicas must not lose one). */
  private async updateIndex (userId: string, change: (sids: readonly string[]) => Promise<string[]>, expiresAtMs = this.now() + ACCOUNT_SESSION_TTL_MS): Promise<void> {
    await withStoreLock(this.store, USER_LOCK_PREFIX + userId, this.now, async () => {
      const key = USER_INDEX_PREFIX + userId
      const stored = await this.store.kvGet(key)
      const next = await change(stored === undefined ? [] : JSON.parse(stored) as string[])
      if (next.length === 0) await this.store.kvDelete(key)
      else await this.store.kvSet(key, JSON.stringify(next), expiresAtMs)
    })
  }
}
