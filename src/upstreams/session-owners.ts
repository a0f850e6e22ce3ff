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
 * A session that never sent a request after `initialize` is ended sooner, after
 * `idleTimeoutMs / 10` (issue 12): the gateway forgets it and tells the upstream
 * (a DELETE, through the reclaimer its upstream registers).
 *
 * Per-user counts (servers[].maxSessionsPerUser) are over the records this
 * replica holds: the sessions opened or used through it.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'
import type { UpstreamSession } from './types.js'
import { UNUSED_SESSION_IDLE_DIVISOR } from '../config/defaults.js'
import { PortcullisError } from '../errors.js'
import { ANONYMOUS } from '../identity.js'

/** How often records in use are pushed out in the store, as a fraction of the idle timeout. */
const REFRESH_FRACTION = 4
const SWEEP_MAX_INTERVAL_MS = 60_000
/** A cap on records held in memory per replica (the store keeps them all; a miss is one read). */
const MAX_LOCAL_RECORDS = 100_000
const URL_ELICITATION_PREFIX = 'http-session-url-elicitation:'
const URL_ELICITATION_TTL_MS = 24 * 60 * 60_000
/** A user at their session cap: a session of theirs may finish (or be closed) any moment. */
const SESSION_CAP_RETRY_AFTER_S = '2'

/** Caller identity and client: both must match for a session to be theirs. */
export interface SessionOwner {
  readonly user: string
  readonly client: string
}

interface LocalRecord {
  readonly owner: string
  readonly server: string
  readonly sessionId: string
  /** The owner's user (sessions are counted per user, whichever client opened them). */
  readonly user: string
  readonly createdAt: number
  /** A request (or GET stream) came after initialize; until then the record is reclaimed early. */
  isUsed: boolean
  lastUsedAt: number
  /** When the store's copy was written to expire idleTimeoutMs later (0: unknown, write it at the next use). */
  storedAt: number
  /** Open GET streams and requests in flight: a session in use is never idle. */
  inUse: number
}

export type OwnerCheck = 'owner' | 'not-found'

/** One of a user's sessions, as the per-user cap sees it. */
export interface OpenSession {
  readonly sessionId: string
  readonly lastUsedAt: number
  /** No request in flight and no open GET stream. */
  readonly isIdle: boolean
}

/** Ends an upstream session the gateway reclaims (HTTP: a DELETE to the upstream). */
export type Reclaimer = (sessionId: string) => Promise<void>

export function ownerKey (owner: SessionOwner): string {
  return JSON.stringify([owner.user, owner.client])
}

/** The user and client of an ownerKey (a stored value from an older format counts as its own user, client unknown). */
export function ownerOf (key: string): SessionOwner {
  try {
    const parsed: unknown = JSON.parse(key)
    if (Array.isArray(parsed) && typeof parsed[0] === 'string') return { user: parsed[0], client: typeof parsed[1] === 'string' ? parsed[1] : '' }
  } catch {
    // Not JSON: the whole value is the owner.
  }
  return { user: key, client: '' }
}

function userOf (key: string): string {
  return ownerOf(key).user
}

export class SessionOwners {
  private readonly local = new Map<string, LocalRecord>()
  /** Record keys by server and user, for per-user counts. */
  private readonly byUser = new Map<string, Set<string>>()
  private readonly reclaimers = new Map<string, Reclaimer>()
  /** By server and user: sessions being opened (initialize on its way), not yet recorded. */
  private readonly opening = new Map<string, number>()
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

  /** How this server's reclaimed sessions are ended upstream. */
  onReclaim (server: string, reclaimer: Reclaimer): void {
    this.reclaimers.set(server, reclaimer)
  }

  /** Records the session's owner (settles once other replicas can see it; a store failure is logged, not thrown). */
  async record (server: string, sessionId: string, owner: SessionOwner): Promise<void> {
    const key = this.key(server, sessionId)
    const value = ownerKey(owner)
    const now = this.now()
    this.remember(key, value, now, false, now)
    await this.store.kvSet(key, value, now + this.idleTimeoutOf(server)).catch((err: Error) => {
      this.log.warn({ server, err: { message: err.message } }, 'could not record an upstream session owner in the store (other replicas will answer 404 for it)')
    })
  }

  /**
   * Whether `owner` opened this session. Unknown sessions (ended, expired, made up,
   * or opened before the gateway kept records) are not found. Throws
   * StoreUnavailableError when the store cannot say.
   */
  check (server: string, sessionId: string, owner: SessionOwner): OwnerCheck | Promise<OwnerCheck> {
    const key = this.key(server, sessionId)
    const record = this.local.get(key)
    if (record !== undefined && this.isUnused(record)) {
      this.reclaim(record, 'no request after initialize')
      return 'not-found'
    }
    if (record !== undefined && record.inUse === 0 && this.now() - record.lastUsedAt >= this.idleTimeoutOf(server)) {
      // Idle past its timeout here; the store says whether it was used through another replica.
      this.drop(key)
    } else if (record !== undefined) {
      // Known here (every request of a session after its first on this replica): no store read, no promise.
      return this.ownedBy(server, key, record, owner)
    }
    return this.checkStored(server, key, owner)
  }

  private async checkStored (server: string, key: string, owner: SessionOwner): Promise<OwnerCheck> {
    const stored = await this.store.kvGet(key)
    if (stored === undefined) return 'not-found'
    // Opened through another replica: whether it was used there is unknown, so it is not reclaimed early here.
    // When the store's copy expires is unknown too (storedAt 0): this use writes it again.
    return this.ownedBy(server, key, this.remember(key, stored, this.now(), true, 0), owner)
  }

  private ownedBy (server: string, key: string, record: LocalRecord, owner: SessionOwner): OwnerCheck {
    if (record.owner !== ownerKey(owner)) return 'not-found'
    this.touch(server, key, record)
    return 'owner'
  }

  /**
   * A request or stream of the session starts; call `release` when it ends. `isUse`: it carries a
   * request or opens a GET stream (a notification alone, such as notifications/initialized, is not use).
   */
  hold (server: string, sessionId: string, isUse = true): () => void {
    const record = this.local.get(this.key(server, sessionId))
    if (record === undefined) return () => {}
    if (isUse) record.isUsed = true
    record.inUse++
    let isReleased = false
    return () => {
      if (isReleased) return
      isReleased = true
      record.inUse--
      record.lastUsedAt = this.now()
    }
  }

  /**
   * The session's client declared URL-mode elicitation in its initialize (MCP 2025-11-25
   * client/elicitation "URL Mode"), so a "link your account" error may be sent to it as
   * -32042 (upstreamAuth). Noted only for servers that may need it, read only when such an
   * error is about to be sent; a hint kept for a day at most (its loss means the plain error).
   */
  async noteUrlElicitation (server: string, sessionId: string): Promise<void> {
    await this.store.kvSet(`${URL_ELICITATION_PREFIX}${server}:${sessionId}`, '1', this.now() + URL_ELICITATION_TTL_MS).catch((err: Error) => {
      this.log.warn({ server, err: { message: err.message } }, 'could not note a session\'s elicitation capability (its link errors will be plain ones)')
    })
  }

  async hasUrlElicitation (server: string, sessionId: string): Promise<boolean> {
    return await this.store.kvGet(`${URL_ELICITATION_PREFIX}${server}:${sessionId}`) === '1'
  }

  /** The session ended (DELETE answered, or the upstream no longer knows it). */
  forget (server: string, sessionId: string): void {
    const key = this.key(server, sessionId)
    this.drop(key)
    this.store.kvDelete(key).catch(() => {})
  }

  /**
   * The user's sessions on this server that this replica holds, oldest use first. Sessions
   * never used past idleTimeoutMs / 10 are reclaimed on the way and not counted.
   */
  sessionsOf (server: string, user: string): OpenSession[] {
    const out: Array<OpenSession> = []
    for (const key of this.byUser.get(`${server}\n${user}`) ?? []) {
      const record = this.local.get(key)
      if (record === undefined) continue
      if (this.isUnused(record)) this.reclaim(record, 'no request after initialize')
      else out.push({ sessionId: record.sessionId, lastUsedAt: record.lastUsedAt, isIdle: record.inUse === 0 })
    }
    return out.sort((a, b) => a.lastUsedAt - b.lastUsedAt)
  }

  /**
   * servers[].maxSessionsPerUser (issue 12), before a session opens: a user at the cap first loses
   * their own oldest idle session (no request in flight, no open GET stream; ended as the gateway
   * ends any, through the server's reclaimer); with none idle, 429. Other users' sessions are never
   * touched. Counts are this replica's. Returns the release of the slot being opened.
   */
  admit (server: string, user: string, cap: number): (() => void) | PortcullisError {
    // Authorization off: every caller is the one anonymous user; only the server-wide budgets apply.
    if (user === ANONYMOUS.id) return () => {}
    const key = `${server}\n${user}`
    const open = this.sessionsOf(server, user)
    const opening = this.opening.get(key) ?? 0
    const excess = open.length + opening + 1 - cap
    if (excess > 0) {
      const idle = open.filter((s) => s.isIdle)
      if (idle.length < excess) {
        const count = open.length + opening
        return new PortcullisError('PORTCULLIS_ERR_TOO_MANY_SESSIONS', `you have ${count} session${count === 1 ? '' : 's'} open on server "${server}" (servers[].maxSessionsPerUser is ${cap}); close one (DELETE) or wait for one to finish`, { headers: { 'retry-after': SESSION_CAP_RETRY_AFTER_S } })
      }
      for (const session of idle.slice(0, excess)) this.end(server, session.sessionId, 'the user reached maxSessionsPerUser')
    }
    this.opening.set(key, opening + 1)
    let isReleased = false
    return () => {
      if (isReleased) return
      isReleased = true
      const left = (this.opening.get(key) ?? 1) - 1
      if (left <= 0) this.opening.delete(key)
      else this.opening.set(key, left)
    }
  }

  /** The sessions of a server this replica holds (the admin API's list). */
  sessionsOn (server: string): UpstreamSession[] {
    const out: UpstreamSession[] = []
    for (const record of this.local.values()) {
      if (record.server !== server) continue
      const { user, client } = ownerOf(record.owner)
      out.push({ sessionId: record.sessionId, user, client, openedAtMs: record.createdAt, lastUsedAtMs: record.lastUsedAt })
    }
    return out
  }

  /** Ends a session the gateway chose to end: forgotten here and in the store, and ended upstream. False when not held here. */
  end (server: string, sessionId: string, reason: string): boolean {
    const record = this.local.get(this.key(server, sessionId))
    if (record !== undefined) this.reclaim(record, reason)
    return record !== undefined
  }

  close (): void {
    clearInterval(this.sweeper)
  }

  /** Drops idle records from memory and moves the store expiry of those still in use. */
  sweep (): void {
    const now = this.now()
    for (const [key, record] of this.local) {
      const server = record.server
      const idleMs = this.idleTimeoutOf(server)
      if (record.inUse > 0) this.touch(server, key, record)
      else if (this.isUnused(record)) this.reclaim(record, 'no request after initialize')
      else if (now - record.lastUsedAt >= idleMs) this.drop(key)
      else if (record.lastUsedAt > record.storedAt && record.storedAt + idleMs - now <= 2 * SWEEP_MAX_INTERVAL_MS) this.restore(key, record, idleMs)
    }
  }

  /**
   * The store's copy is about to expire, but the session was used here since it was written
   * (touch writes at most every quarter of the idle timeout): written again to expire
   * idleTimeoutMs after that use, as the session does. Otherwise every other replica answered
   * 404 for a session still in use, for up to a quarter of the idle timeout.
   */
  private restore (key: string, record: LocalRecord, idleMs: number): void {
    const usedAt = record.lastUsedAt
    record.storedAt = usedAt
    this.store.kvSet(key, record.owner, usedAt + idleMs).catch(() => { record.storedAt = 0 })
  }

  /** Opened, then left without a request or stream for idleTimeoutMs / 10. */
  private isUnused (record: LocalRecord): boolean {
    return !record.isUsed && record.inUse === 0 && this.now() - record.createdAt >= this.idleTimeoutOf(record.server) / UNUSED_SESSION_IDLE_DIVISOR
  }

  private reclaim (record: LocalRecord, reason: string): void {
    const { server, sessionId } = record
    this.forget(server, sessionId)
    this.log.info({ server, session: sessionId.slice(0, 8), reason }, 'upstream session ended by the gateway')
    const reclaimer = this.reclaimers.get(server)
    reclaimer?.(sessionId).catch((err: Error) => {
      this.log.warn({ server, err: { message: err.message } }, 'could not end an upstream session (DELETE failed); the upstream keeps it until its own timeout')
    })
  }

  private remember (key: string, owner: string, now: number, isUsed: boolean, storedAt: number): LocalRecord {
    if (this.local.size >= MAX_LOCAL_RECORDS) {
      const oldest = this.local.keys().next().value
      if (oldest !== undefined) this.drop(oldest)
    }
    // key is http-session:<server>:<sessionId>; server names have no colon.
    const [, server = '', ...rest] = key.split(':')
    const record: LocalRecord = { owner, server, sessionId: rest.join(':'), user: userOf(owner), createdAt: now, isUsed, lastUsedAt: now, storedAt, inUse: 0 }
    this.drop(key)
    this.local.set(key, record)
    const byUserKey = `${server}\n${record.user}`
    let keys = this.byUser.get(byUserKey)
    if (keys === undefined) {
      keys = new Set()
      this.byUser.set(byUserKey, keys)
    }
    keys.add(key)
    return record
  }

  private drop (key: string): void {
    const record = this.local.get(key)
    if (record === undefined) return
    this.local.delete(key)
    const byUserKey = `${record.server}\n${record.user}`
    const keys = this.byUser.get(byUserKey)
    keys?.delete(key)
    if (keys?.size === 0) this.byUser.delete(byUserKey)
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
