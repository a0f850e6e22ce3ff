/**
 * Users the gateway has seen, for GET /admin/api/v1/users: one small record per user
 * (`user-seen:<id>`), written when the authorization server issues them an access token —
 * at most once a minute per user and replica, so a busy client costs no write per token.
 * "Last seen" is therefore the last token issue (a user active on one token for its whole
 * lifetime, accessTokenTtl, shows that much older). Records live as long as refresh tokens do:
 * a user who cannot come back without signing in again drops out of the list.
 */
import type { Store } from '../store/types.js'

const KEY_PREFIX = 'user-seen:'
/** At most one write per user and replica this often. */
export const USER_SEEN_RESOLUTION_MS = 60_000
/** A cap on the users remembered per replica for that (forgetting one costs one extra write). */
const MAX_REMEMBERED_USERS = 100_000

export interface SeenUser {
  readonly id: string
  /** local (YAML / first-run) or an identity provider's name. */
  readonly provider: string
  readonly groups: readonly string[]
  readonly lastSeenMs: number
}

export class UsersSeen {
  private readonly lastWrittenMs = new Map<string, number>()

  constructor (private readonly store: Store, private readonly retentionMs: number, private readonly now: () => number) {}

  /**
   * Records a sighting of `userId`; `describe` (a profile lookup) runs only when this replica
   * has not written one for the user within the last minute. Unknown users are not recorded.
   */
  async seen (userId: string, describe: () => Promise<Omit<SeenUser, 'id' | 'lastSeenMs'> | undefined>): Promise<void> {
    const now = this.now()
    const last = this.lastWrittenMs.get(userId)
    if (last !== undefined && now - last < USER_SEEN_RESOLUTION_MS) return
    if (this.lastWrittenMs.size >= MAX_REMEMBERED_USERS) this.lastWrittenMs.clear()
    this.lastWrittenMs.set(userId, now)
    const user = await describe()
    if (user === undefined) return
    const record: SeenUser = { id: userId, provider: user.provider, groups: [...user.groups], lastSeenMs: now }
    await this.store.kvSet(KEY_PREFIX + userId, JSON.stringify(record), now + this.retentionMs)
  }

  /** Every user seen (a scan of the store: admin lists only, never a request path). */
  async list (): Promise<SeenUser[]> {
    const out: SeenUser[] = []
    for await (const entry of this.store.entries()) {
      if (entry.kind === 'kv' && entry.key.startsWith(KEY_PREFIX)) out.push(JSON.parse(entry.value) as SeenUser)
    }
    return out
  }
}
