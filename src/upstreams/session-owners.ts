/**
 * Who opened each HTTP upstream session. A remote MCP server hands out its
 * own `Mcp-Session-Id` and knows nothing of the gateway's users: without this
 * record, anyone holding a valid token for the server and someone else's
 * session id could post into that session, read its GET stream or DELETE it.
 *
 * The owner is the caller's identity and client, recorded when the upstream
 * answers a session-less request (initialize) with a session id, before the
 * client learns that id. Any other caller is told the session does not exist
 * (404, the same answer as for a made-up id: no hint that it is someone
 * else's). Records live in the store, so every replica enforces them and they
 * survive a restart; each replica keeps the ones it has seen in memory, so a
 * check is a map lookup (a store read only for a session first seen here).
 *
 * A record is forgotten when its session ends: DELETE, the upstream's 404,
 * or `idleTimeoutMs` without a request (an open GET stream counts as use).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'

/** How often records in use are pushed out in the store, as a fraction of the idle timeout. */
const REFRESH_FRACTION = 4
const SWEEP_MAX_INTERVAL_MS = 60_000
/** A cap on records held in memory per replica (the store keeps them all; a miss is one read). */
const MAX_LOCAL_RECORDS = 100_000

/** Caller identity and client: both must match for a session to be theirs. */
export interface SessionOwner {
  readonly user: string
  readonly client: string
}

interface LocalRecord {
  readonly owner: string
  lastUsedAt: number
  storedAt: number
  /** Open GET streams and requests in flight: a session in use is never idle. */
  inUse: number
}

export type OwnerCheck = 'owner' | 'not-found'

export function ownerKey (owner: SessionOwner): string {
  return JSON.stringify([owner.user, owner.client])
}

export class SessionOwners {
  private readonly local = new Map<string, LocalRecord>()
  private readonly sweeper: NodeJS.Timeout

  constructor (
    private readonly store: Store,
    private readonly log: FastifyBaseLogger,
    private readonly idleTimeoutOf: (server: string) => number,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MAX_INTERVAL_MS)
    this.sweeper.unref()
  }

  private key (server: string, sessionId: string): string {
    return `http-session:${server}:${sessionId}`
  }

  /** Records the session's owner (settles once other replicas can see it; a store failure is logged, not thrown). */
  async record (server: string, sessionId: string, owner: SessionOwner): Promise<void> {
    const key = this.key(server, sessionId)
    const value = ownerKey(owner)
    const now = this.now()
    this.remember(key, value, now)
    await this.store.kvSet(key, value, now + this.idleTimeoutOf(server)).catch((err: Error) => {
      this.log.warn({ server, err: { message: err.message } }, 'could not record an upstream session owner in the store (other replicas will answer 404 for it)')
    })
  }

  /**
   * Whether `owner` opened this session. Unknown sessions (ended, expired, made up,
   * or opened before the gateway kept records) are not found. Throws
   * StoreUnavailableError when the store cannot say.
   */
  async check (server: string, sessionId: string, owner: SessionOwner): Promise<OwnerCheck> {
    const key = this.key(server, sessionId)
    let record = this.local.get(key)
    if (record !== undefined && record.inUse === 0 && this.now() - record.lastUsedAt >= this.idleTimeoutOf(server)) {
      // Idle past its timeout here; the store says whether it was used through another replica.
      this.local.delete(key)
      record = undefined
    }
    if (record === undefined) {
      const stored = await this.store.kvGet(key)
      if (stored === undefined) return 'not-found'
      record = this.remember(key, stored, this.now())
    }
    if (record.owner !== ownerKey(owner)) return 'not-found'
    this.touch(server, key, record)
    return 'owner'
  }

  /** A request or stream of the session starts; call `release` when it ends. */
  hold (server: string, sessionId: string): () => void {
    const record = this.local.get(this.key(server, sessionId))
    if (record === undefined) return () => {}
    record.inUse++
    let isReleased = false
    return () => {
      if (isReleased) return
      isReleased = true
      record.inUse--
      record.lastUsedAt = this.now()
    }
  }

  /** The session ended (DELETE answered, or the upstream no longer knows it). */
  forget (server: string, sessionId: string): void {
    const key = this.key(server, sessionId)
    this.local.delete(key)
    this.store.kvDelete(key).catch(() => {})
  }

  close (): void {
    clearInterval(this.sweeper)
  }

  /** Drops idle records from memory and moves the store expiry of those still in use. */
  sweep (): void {
    const now = this.now()
    for (const [key, record] of this.local) {
      const server = key.split(':', 2)[1] ?? ''
      const idleMs = this.idleTimeoutOf(server)
      if (record.inUse > 0) this.touch(server, key, record)
      else if (now - record.lastUsedAt >= idleMs) this.local.delete(key)
    }
  }

  private remember (key: string, owner: string, now: number): LocalRecord {
    if (this.local.size >= MAX_LOCAL_RECORDS) {
      const oldest = this.local.keys().next().value
      if (oldest !== undefined) this.local.delete(oldest)
    }
    const record: LocalRecord = { owner, lastUsedAt: now, storedAt: now, inUse: 0 }
    this.local.set(key, record)
    return record
  }

  /** Used now: the store's copy expires idleTimeoutMs from now, rewritten at most every quarter of it. */
  private touch (server: string, key: string, record: LocalRecord): void {
    const now = this.now()
    record.lastUsedAt = now
    const idleMs = this.idleTimeoutOf(server)
    if (now - record.storedAt < idleMs / REFRESH_FRACTION) return
    record.storedAt = now
    this.store.kvSet(key, record.owner, now + idleMs).catch(() => { record.storedAt = 0 })
  }
}
