/**
 * Users an administrator blocked (POST /admin/api/v1/users/<id>/block): refused at sign-in
 * (the login pages, and every token oidc-provider would issue them: code exchange and refresh)
 * and at every MCP request, on every replica, until unblocked. Their grants are kept, so
 * unblocking restores what they had; revoking is a separate action.
 *
 * The per-request cost must stay a Map lookup, as for the revoked-grant list
 * (resource-server/revoked-grants.ts), and the same way: each replica keeps the list in
 * memory; its own changes enter at once, other replicas' arrive by polling the store about
 * once a second (one small read of one value). A store outage keeps the last known list
 * (logged once per outage): fail-safe for who was blocked.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'
import { withStoreLock } from './store-lock.js'

export const BLOCKED_USERS_POLL_MS = 1_000
const KEY = 'admin:blocked-users'
const LOCK_KEY = 'admin:blocked-users-lock'

export interface BlockedUser {
  readonly userId: string
  readonly atMs: number
  /** The actor who blocked them (admin-token, or an administrator's user id). */
  readonly by: string
}

export interface BlockedUsersOptions {
  readonly store: Store
  readonly now: () => number
  readonly log: FastifyBaseLogger
  readonly pollMs?: number
}

export class BlockedUsers {
  private blocked = new Map<string, BlockedUser>()
  private isPolling = false
  private isStoreFailing = false
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly options: BlockedUsersOptions) {}

  /** The per-request check. */
  has (userId: string): boolean {
    return this.blocked.has(userId)
  }

  list (): BlockedUser[] {
    return [...this.blocked.values()]
  }

  /** Blocks a user on this replica at once, then in the store for the others. False when already blocked. */
  async block (userId: string, by: string): Promise<boolean> {
    return await this.change((list) => {
      if (list.has(userId)) return false
      list.set(userId, { userId, atMs: this.options.now(), by })
      return true
    })
  }

  /** False when the user was not blocked. */
  async unblock (userId: string): Promise<boolean> {
    return await this.change((list) => list.delete(userId))
  }

  /** Reads the list other replicas may have changed. Never throws. */
  async poll (): Promise<void> {
    if (this.isPolling) return
    this.isPolling = true
    try {
      this.blocked = await this.read()
      if (this.isStoreFailing) this.options.log.info({ blockedUsers: this.blocked.size }, 'blocked-user list refreshed from the store again')
      this.isStoreFailing = false
    } catch (err) {
      if (!this.isStoreFailing) this.options.log.warn({ err: { message: (err as Error).message }, blockedUsers: this.blocked.size }, 'blocked-user list cannot be refreshed from the store; keeping the last known list')
      this.isStoreFailing = true
    } finally {
      this.isPolling = false
    }
  }

  /** Loads the list (a start fails if the store cannot say who is blocked), then polls until stop(). */
  async start (): Promise<void> {
    this.blocked = await this.read()
    this.timer = setInterval(() => { void this.poll() }, this.options.pollMs ?? BLOCKED_USERS_POLL_MS)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  private async change (edit: (list: Map<string, BlockedUser>) => boolean): Promise<boolean> {
    const { store, now } = this.options
    return await withStoreLock(store, LOCK_KEY, now, async () => {
      const list = await this.read()
      const isChanged = edit(list)
      if (isChanged) await store.kvSet(KEY, JSON.stringify([...list.values()]))
      this.blocked = list
      return isChanged
    })
  }

  /** The stored list: an array of BlockedUser. */
  private async read (): Promise<Map<string, BlockedUser>> {
    const text = await this.options.store.kvGet(KEY)
    const list = text === undefined ? [] : JSON.parse(text) as BlockedUser[]
    return new Map(list.map((b) => [b.userId, b]))
  }
}
