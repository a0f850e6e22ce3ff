/**
 * Each user's tokens at each upstream they linked (servers[].upstreamAuth oauth), one row per
 * (server, user) in the store, sealed with the SecretBox: the row's own key is the sealing
 * context (authenticated data), so a row copied into another user's or server's slot does not
 * open. Nothing here is ever logged.
 *
 * Each row also names the authorization server that issued its tokens and the resource they
 * were issued for (LinkBinding, oauth-client.ts): the server name alone does not say where the
 * tokens belong once servers[].url or the upstream's metadata changes. Rows written before
 * links were bound have neither and count as not linked (isBoundTo).
 */
import type { SecretBox } from '../auth-server/secret-box.js'
import type { Store } from '../store/types.js'
import type { LinkBinding, UpstreamTokens } from './oauth-client.js'

const PREFIX = 'upstream-token:'

/** The binding is optional as read: an older row lacks it (and is then used nowhere). */
export interface LinkedToken extends UpstreamTokens, Partial<LinkBinding> {
  readonly linkedAtMs: number
}

/** A row as read, with its sealed form: the version a conditional write compares against. */
export interface LinkedRow {
  readonly token: LinkedToken
  readonly sealed: string
}

export class LinkedTokens {
  /** `onUnreadable`: told (server and user only) of a row that does not open. */
  constructor (private readonly store: Store, private readonly box: SecretBox, private readonly onUnreadable: (server: string, userId: string, reason: string) => void) {}

  /** The store key (server names hold no ':', so the key names one pair only). */
  static keyOf (server: string, userId: string): string {
    return `${PREFIX}${server}:${userId}`
  }

  async get (server: string, userId: string): Promise<LinkedToken | undefined> {
    return (await this.read(server, userId))?.token
  }

  async read (server: string, userId: string): Promise<LinkedRow | undefined> {
    const key = LinkedTokens.keyOf(server, userId)
    const sealed = await this.store.kvGet(key)
    if (sealed === undefined) return undefined
    try {
      return { token: JSON.parse(this.box.open(sealed, key)) as LinkedToken, sealed }
    } catch (err) {
      // Sealed for another slot, altered, or with a key no longer configured: no link (fail
      // closed); linking again overwrites it.
      this.onUnreadable(server, userId, (err as Error).message)
      return undefined
    }
  }

  /**
   * Kept until unlinked while there is a refresh token (its lifetime is the upstream's secret);
   * without one, only as long as the access token lives.
   */
  async save (server: string, userId: string, token: LinkedToken): Promise<void> {
    const key = LinkedTokens.keyOf(server, userId)
    await this.store.kvSet(key, this.box.seal(JSON.stringify(token), key), rowExpiry(token))
  }

  /**
   * Saves only over the row `before` (unchanged since it was read): false when it was unlinked,
   * linked again or refreshed elsewhere meanwhile — a refresh then must not bring it back.
   */
  async replace (server: string, userId: string, before: LinkedRow, token: LinkedToken): Promise<boolean> {
    const key = LinkedTokens.keyOf(server, userId)
    return await this.store.kvCompareAndSwap(key, before.sealed, this.box.seal(JSON.stringify(token), key), rowExpiry(token))
  }

  async delete (server: string, userId: string): Promise<void> {
    await this.store.kvDelete(LinkedTokens.keyOf(server, userId))
  }

  /** Deletes the row only if it is still `before` (a refused refresh must not drop a newer link). */
  async deleteIfUnchanged (server: string, userId: string, before: LinkedRow): Promise<boolean> {
    return await this.store.kvCompareAndSwap(LinkedTokens.keyOf(server, userId), before.sealed, undefined)
  }
}

function rowExpiry (token: LinkedToken): number | undefined {
  return token.refreshToken === undefined ? token.expiresAtMs : undefined
}
