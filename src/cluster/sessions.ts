/**
 * Several replicas, one set of sessions. A 2025-era stdio session lives in the
 * process of the replica that created it. Each replica records its sessions
 * in the store (Redis) under its own reachable address (cluster.advertiseUrl);
 * a replica that receives a request for a session it does not hold looks the
 * owner up and forwards the request there, so any load balancer works — round
 * robin included. Entries expire with the session's idle timeout; an owner
 * that no longer answers means the session is gone (404: initialize again).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'
import type { SessionHooks } from '../upstreams/stdio/stdio-upstream.js'

/** How long past its idle timeout an entry may outlive a session that ended without telling us (a crash). */
const EXPIRY_MARGIN_MS = 60_000

export class SessionDirectory implements SessionHooks {
  /** When each entry's expiry was last pushed out, so busy sessions write rarely. */
  private readonly refreshedAt = new Map<string, number>()

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

  private write (server: string, sessionId: string): void {
    const key = this.key(server, sessionId)
    const now = this.now()
    this.refreshedAt.set(key, now)
    this.store.kvSet(key, this.selfUrl, now + this.idleTimeoutOf(server) + EXPIRY_MARGIN_MS).catch((err: Error) => {
      this.refreshedAt.delete(key)
      this.log.warn({ server, err: { message: err.message } }, 'session directory: could not record a session (other replicas will answer 404 for it)')
    })
  }

  opened (server: string, sessionId: string): void {
    this.write(server, sessionId)
  }

  used (server: string, sessionId: string): void {
    const last = this.refreshedAt.get(this.key(server, sessionId)) ?? 0
    if (this.now() - last >= this.idleTimeoutOf(server) / 4) this.write(server, sessionId)
  }

  closed (server: string, sessionId: string): void {
    const key = this.key(server, sessionId)
    this.refreshedAt.delete(key)
    this.store.kvDelete(key).catch(() => {})
  }

  /** The replica holding the session, if it is another one and known (store errors: unknown). */
  async ownerOf (server: string, sessionId: string): Promise<string | undefined> {
    const owner = await this.store.kvGet(this.key(server, sessionId)).catch(() => undefined)
    return owner === this.selfUrl ? undefined : owner
  }

  /** The owner did not answer: the session died with it. */
  async forget (server: string, sessionId: string, owner: string): Promise<void> {
    const key = this.key(server, sessionId)
    if (await this.store.kvGet(key).catch(() => undefined) === owner) await this.store.kvDelete(key).catch(() => {})
  }
}
