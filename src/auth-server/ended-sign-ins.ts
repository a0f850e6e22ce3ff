/**
 * Ending a user's sign-in at the gateway's own authorization server. oidc-provider keeps a
 * browser's sign-in (its `_session` cookie, a Session record) for up to refreshTokenTtl so that
 * the next authorization there skips the password. Revoking or blocking the user, or their
 * signing out of the account or admin page, must end that too: otherwise the browser that was
 * signed in (a shared machine, a stolen cookie) gets new tokens — the admin API's included —
 * at a consent click. Sessions are not indexed by user, so the moment is recorded instead
 * (`signins-ended:<userId>`, kept as long as a session can live) and the login prompt's policy
 * (provider.ts) asks for the password again of every session that began before it.
 */
import type { Store } from '../store/types.js'

const endedKey = (userId: string): string => `signins-ended:${userId}`

export class EndedSignIns {
  /** `sessionTtlMs`: how long oidc-provider keeps a Session (its `ttl.Session`). */
  constructor (private readonly store: Store, private readonly sessionTtlMs: number, private readonly now: () => number) {}

  /** Every sign-in of `userId` that began before now asks for the password (or the IdP) again. */
  async end (userId: string): Promise<void> {
    const nowMs = this.now()
    await this.store.kvSet(endedKey(userId), String(nowMs), nowMs + this.sessionTtlMs)
  }

  /** Whether a sign-in of `userId` that began at `loginAtMs` was ended since. */
  async isEnded (userId: string, loginAtMs: number): Promise<boolean> {
    const ended = await this.store.kvGet(endedKey(userId))
    return ended !== undefined && loginAtMs <= Number(ended)
  }
}
