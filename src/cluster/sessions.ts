/**
 * Several replicas, one set of sessions. A 2025-era stdio session lives in the
 * process of the replica that created it. Each replica records its sessions
 * in the store (Redis) under its own reachable address (cluster.advertiseUrl);
 * a replica that receives a request for a session it does not hold looks the
 * owner up and forwards the request there, so any load balancer works — round
 * robin included. Entries outlive the session's idle timeout (see write); an owner
 * that no longer answers means the session is gone (404: initialize again).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'
import type { SessionHooks } from '../upstreams/stdio/stdio-upstream.js'

/** How long past its idle timeout an entry may outlive a session that ended without telling us (a crash). */
const EXPIRY_MARGIN_MS = 60_000
/** How long a looked-up owner is trusted before asking the store again. */
const OWNER_CACHE_MS = 30_000
const MAX_CACHED_OWNERS = 10_000

export class SessionDirectory implements SessionHooks {
  /** When each entry's expiry was last pushed out, so busy sessions write rarely. */
  private readonly refreshedAt = new Map<string, number>()
  /** Owners found in the store, by entry key, with when they were looked up. */
  private readonly owners = new Map<string, { owner: string, at: number }>()

  constructor (
    private readonly store: Store,
    /** This replica's address as the others reach it. */
    readonly selfUrl: string,
    private readonly idleTimeoutOf: (server: string) => number,
    private readonly log: FastifyBaseLogger,
    private readonly now: () => number = () => Date.now(),
  ) {}

  private key (server: string, sessionId: string): string {
    return `session:${server}:${sessionId}`
  }

  /**
   * A use pushes the entry's expiry out only once this long after the last push (busy sessions
   * write rarely), so a session may have been used up to this long after its entry was written.
   */
  private refreshEvery (server: string): number {
    return this.idleTimeoutOf(server) / 4
  }

  private async write (server: string, sessionId: string): Promise<void> {
    const key = this.key(server, sessionId)
    const now = this.now()
    this.refreshedAt.set(key, now)
    // The session lives until idleTimeoutMs after its last use, which may be refreshEvery after
    // this write: the entry outlives both, or other replicas answer 404 for a live session.
    await this.store.kvSet(key, this.selfUrl, now + this.refreshEvery(server) + this.idleTimeoutOf(server) + EXPIRY_MARGIN_MS).catch((err: Error) => {
      this.refreshedAt.delete(key)
      this.log.warn({ server, err: { message: err.message } }, 'session directory: could not record a session (other replicas will answer 404 for it)')
    })
  }

  async opened (server: string, sessionId: string): Promise<void> {
    await this.write(server, sessionId)
  }

  used (server: string, sessionId: string): void {
    const last = this.refreshedAt.get(this.key(server, sessionId)) ?? 0
    if (this.now() - last >= this.refreshEvery(server)) void this.write(server, sessionId)
  }

  closed (server: string, sessionId: string): void {
    const key = this.key(server, sessionId)
    this.refreshedAt.delete(key)
    this.store.kvDelete(key).catch(() => {})
  }

  /**
   * The replica holding the session, if it is another one and known (store errors: unknown).
   * A session never changes owner, so a found owner is remembered for a while: relayed
   * requests skip the store round trip. A session that ended there is the owner's 404 to give.
   */
  async ownerOf (server: string, sessionId: string): Promise<string | undefined> {
    const key = this.key(server, sessionId)
    const known = this.owners.get(key)
    if (known !== undefined && this.now() - known.at < OWNER_CACHE_MS) return known.owner
    const owner = await this.store.kvGet(key).catch(() => undefined)
    if (owner === undefined || owner === this.selfUrl) return undefined
    if (this.owners.size >= MAX_CACHED_OWNERS) this.owners.clear()
    this.owners.set(key, { owner, at: this.now() })
    return owner
  }

  /** The owner did not answer: the session died with it. */
  async forget (server: string, sessionId: string, owner: string): Promise<void> {
    const key = this.key(server, sessionId)
    this.owners.delete(key)
    if (await this.store.kvGet(key).catch(() => undefined) === owner) await this.store.kvDelete(key).catch(() => {})
  }
}
