/**
 * Notices between replicas, over Redis pub/sub: what one replica decides about a user must
 * reach the processes the others hold for that user.
 *
 * Today: `end-user` — offboarding (the identity provider refused the user, or logged them out)
 * ends the user's stdio sessions and processes on every replica, not only on the one that
 * offboarded. Their tokens are already refused everywhere (the revoked-grant list); without
 * this notice their processes elsewhere lived on, idle, holding the user's environment, until
 * the idle timeout.
 * `reload` — one replica reloaded its configuration (admin API or SIGHUP): every other replica
 * re-reads its own file (README "Reloading"), so replicas do not drift apart; the notice carries
 * the SHA-256 of the file applied, so a replica whose own file differs can say so.
 *
 * Delivery is at most once (pub/sub keeps nothing for a replica that is down or reconnecting):
 * a notice is a shortcut, not the safeguard. A replica that misses one still refuses the user's
 * tokens, and the processes end at their idle timeout as before.
 *
 * A notice names a replica instance id, so a replica ignores its own. Messages are checked
 * field by field: anything else on the channel is dropped with a log line.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from '../store/redis-client.js'
import { waitUntilReady } from '../store/redis-client.js'

/** `reload` carries the SHA-256 of the file the sender applied: a replica whose own file differs says so. */
export type ClusterNotice = { readonly type: 'end-user', readonly accountId: string } | { readonly type: 'reload', readonly sha256: string }

const SHA256_HEX_RE = /^[0-9a-f]{64}$/

const SUBSCRIBE_TIMEOUT_MS = 5_000
/** Account ids are `<provider>:<sub>` or a local username: bounded like every id the gateway keeps. */
const MAX_ID_CHARS = 512

export class ClusterNotices {
  private readonly instance = randomUUID()
  private subscriber: RedisClient | undefined
  private readonly endUserHandlers: Array<(accountId: string) => Promise<void>> = []
  private readonly reloadHandlers: Array<(sha256: string) => Promise<void>> = []

  constructor (private readonly redis: RedisClient, private readonly channel: string, private readonly log: FastifyBaseLogger) {}

  /** Subscribes on a connection of its own (a subscribed connection can do nothing else). */
  async start (url: string): Promise<void> {
    const subscriber = this.redis.duplicate()
    this.subscriber = subscriber
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.receive(message)
    })
    await waitUntilReady(subscriber, url, SUBSCRIBE_TIMEOUT_MS)
    // ioredis subscribes again by itself after a reconnection.
    await subscriber.subscribe(this.channel)
  }

  /** Called for every `end-user` notice from another replica. */
  onEndUser (handler: (accountId: string) => Promise<void>): void {
    this.endUserHandlers.push(handler)
  }

  /** Called for every `reload` notice from another replica. */
  onReload (handler: (sha256: string) => Promise<void>): void {
    this.reloadHandlers.push(handler)
  }

  /** Tells the other replicas; a failure is logged, never thrown (see the header: a shortcut). */
  async publish (notice: ClusterNotice): Promise<void> {
    try {
      await this.redis.publish(this.channel, JSON.stringify({ ...notice, from: this.instance }))
    } catch (err) {
      this.log.warn({ notice: notice.type, err: { message: (err as Error).message } }, 'could not tell the other replicas')
    }
  }

  private receive (message: string): void {
    const notice = parseNotice(message)
    if (notice === undefined) {
      this.log.warn({ channel: this.channel }, 'ignored a malformed cluster notice')
      return
    }
    if (notice.from === this.instance) return
    const acting = notice.type === 'reload' ? this.reloadHandlers.map((handler) => handler(notice.sha256)) : this.endUserHandlers.map((handler) => handler(notice.accountId))
    for (const done of acting) done.catch((err: Error) => this.log.warn({ notice: notice.type, err: { message: err.message } }, 'could not act on a cluster notice'))
  }

  async close (): Promise<void> {
    const subscriber = this.subscriber
    this.subscriber = undefined
    if (subscriber !== undefined) await subscriber.quit().catch(() => subscriber.disconnect())
  }
}

function parseNotice (message: string): (ClusterNotice & { readonly from: string }) | undefined {
  let value: unknown
  try {
    value = JSON.parse(message)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null) return undefined
  const { type, accountId, from, sha256 } = value as Record<string, unknown>
  if (typeof from !== 'string' || from === '' || from.length > MAX_ID_CHARS) return undefined
  // A reload carries only the digest: each replica reads its own file, never one sent over the channel.
  if (type === 'reload') return Object.keys(value).length === 3 && typeof sha256 === 'string' && SHA256_HEX_RE.test(sha256) ? { type, sha256, from } : undefined
  if (type !== 'end-user') return undefined
  if (typeof accountId !== 'string' || accountId === '' || accountId.length > MAX_ID_CHARS) return undefined
  return { type, accountId, from }
}
