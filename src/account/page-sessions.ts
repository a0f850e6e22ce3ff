/**
 * The sessions of the pages a browser signs in to (the account pages, the admin page), kept in
 * the store (shared by replicas) as well as in the signed cookie: a signed cookie alone stays
 * valid until it expires, so signing out, or revoking the user, could not end it. Each session
 * is one key (`<page>-session:<sid>` → user id) living as long as the cookie; each user's
 * sessions are listed under one index key, at most MAX_SESSIONS_PER_USER of them (a new
 * sign-in beyond that ends the oldest), so revoking a user ends every session of theirs
 * without a scan of the store.
 */
import { randomBytes } from 'node:crypto'
import { ACCOUNT_SESSION_TTL_MS, type AccountSession } from './session.js'
import type { Store } from '../store/types.js'
import { withStoreLock } from '../admin/store-lock.js'

/** Sessions one user keeps at once per page (browsers, devices); the index stays this small. */
export const MAX_SESSIONS_PER_USER = 10

/** Which page's sessions: each has keys of its own (the admin page's are the ones it always had). */
export type SessionPage = 'admin' | 'account'

export class PageSessions {
  private readonly sessionPrefix: string
  private readonly indexPrefix: string
  private readonly lockPrefix: string

  constructor (private readonly store: Store, private readonly now: () => number, page: SessionPage) {
    this.sessionPrefix = `${page}-session:`
    this.indexPrefix = `${page}-sessions-of:`
    this.lockPrefix = `${page}-sessions-lock:`
  }

  /** A new session of `userId` (its id goes into the cookie), live as long as the cookie. */
  async start (userId: string): Promise<string> {
    const sid = randomBytes(16).toString('base64url')
    const expiresAtMs = this.now() + ACCOUNT_SESSION_TTL_MS
    await this.store.kvSet(this.sessionPrefix + sid, userId, expiresAtMs)
    await this.updateIndex(userId, async (sids) => {
      const kept = [...sids, sid]
      const dropped = kept.splice(0, Math.max(0, kept.length - MAX_SESSIONS_PER_USER))
      for (const old of dropped) await this.store.kvDelete(this.sessionPrefix + old)
      return kept
    }, expiresAtMs)
    return sid
  }

  /** The cookie's session is still one the store holds for that user (not signed out, not revoked, not expired). */
  async isLive (session: AccountSession): Promise<boolean> {
    return await this.store.kvGet(this.sessionPrefix + session.sid) === session.userId
  }

  /** Signs one session out. */
  async end (session: AccountSession): Promise<void> {
    await this.store.kvDelete(this.sessionPrefix + session.sid)
    await this.updateIndex(session.userId, async (sids) => sids.filter((sid) => sid !== session.sid))
  }

  /** Ends every session of `userId` on this page; how many were live. */
  async endUser (userId: string): Promise<number> {
    let live = 0
    await this.updateIndex(userId, async (sids) => {
      for (const sid of sids) {
        if (await this.store.kvGet(this.sessionPrefix + sid) === userId) live++
        await this.store.kvDelete(this.sessionPrefix + sid)
      }
      return []
    })
    return live
  }

  /** Read-modify-write of the user's index under a short lock (two sign-ins on two replicas must not lose one). */
  private async updateIndex (userId: string, change: (sids: readonly string[]) => Promise<string[]>, expiresAtMs = this.now() + ACCOUNT_SESSION_TTL_MS): Promise<void> {
    await withStoreLock(this.store, this.lockPrefix + userId, this.now, async () => {
      const key = this.indexPrefix + userId
      const stored = await this.store.kvGet(key)
      const next = await change(stored === undefined ? [] : JSON.parse(stored) as string[])
      if (next.length === 0) await this.store.kvDelete(key)
      else await this.store.kvSet(key, JSON.stringify(next), expiresAtMs)
    })
  }
}
