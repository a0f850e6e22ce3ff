/**
 * The store in Redis, for several replicas: OAuth records, key-values and
 * counters shared by all. Every record expires with Redis TTLs (no unbounded
 * growth); the steps that must be atomic across replicas — consuming a code or
 * refresh token, revoking a grant, counting — are Lua scripts.
 *
 * Keys (prefix `portcullis:` by default):
 *   oidc:<model>:<id>            the record (JSON), with its TTL
 *   oidc:grant:<grantId>         set of record keys of a grant (for revocation), TTL = its longest record
 *   oidc:uid:<model>:<uid>       -> id (sessions by uid), same TTL as the record
 *   oidc:usercode:<model>:<code> -> id
 *   kv:<key>                     gateway key-values (signing keys, consent index...)
 *   count:<key>                  fixed-window counters
 */
import type { CounterHit, Payload, Store } from './types.js'
import { redactRedisUrl, type RedisClient } from './redis-client.js'

const CONSUME = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local record = cjson.decode(raw)
if record.consumed then return record.consumed end
record.consumed = tonumber(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return false
`

const REVOKE = `
local members = redis.call('SMEMBERS', KEYS[1])
for _, key in ipairs(members) do redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
return #members
`

const HIT = `
local count = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]))
if count == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1])) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
`

/** Without an expiry of its own (clients), a record lives until deleted. */
function ttlArgs (expiresAtMs: number | undefined, now: number): Array<string | number> {
  return expiresAtMs === undefined ? [] : ['PX', Math.max(1, expiresAtMs - now)]
}

export class RedisStore implements Store {
  readonly kind = 'redis'
  readonly location: string

  constructor (
    private readonly redis: RedisClient,
    url: string,
    private readonly now: () => number = () => Date.now(),
    private readonly prefix = 'portcullis:',
  ) {
    this.location = redactRedisUrl(url)
  }

  private key (...parts: string[]): string {
    return `${this.prefix}${parts.join(':')}`
  }

  async upsert (model: string, id: string, payload: Payload, expiresAtMs: number | undefined): Promise<void> {
    const now = this.now()
    const key = this.key('oidc', model, id)
    const ttl = ttlArgs(expiresAtMs, now)
    const tx = this.redis.multi().set(key, JSON.stringify(payload), ...(ttl as ['PX', number]))
    if (typeof payload.grantId === 'string') {
      const grantKey = this.key('oidc', 'grant', payload.grantId)
      tx.sadd(grantKey, key)
      // The grant's index lives as long as its longest-lived record.
      if (expiresAtMs !== undefined) tx.pexpire(grantKey, Math.max(1, expiresAtMs - now), 'GT')
      else tx.persist(grantKey)
    }
    if (typeof payload.uid === 'string') tx.set(this.key('oidc', 'uid', model, payload.uid), id, ...(ttl as ['PX', number]))
    if (typeof payload.userCode === 'string') tx.set(this.key('oidc', 'usercode', model, payload.userCode), id, ...(ttl as ['PX', number]))
    await tx.exec()
  }

  async find (model: string, id: string): Promise<Payload | undefined> {
    const raw = await this.redis.get(this.key('oidc', model, id))
    return raw === null ? undefined : JSON.parse(raw) as Payload
  }

  async findByUid (model: string, uid: string): Promise<Payload | undefined> {
    const id = await this.redis.get(this.key('oidc', 'uid', model, uid))
    return id === null ? undefined : this.find(model, id)
  }

  async findByUserCode (model: string, userCode: string): Promise<Payload | undefined> {
    const id = await this.redis.get(this.key('oidc', 'usercode', model, userCode))
    return id === null ? undefined : this.find(model, id)
  }

  async consume (model: string, id: string, nowS: number): Promise<number | undefined> {
    const earlier = await this.redis.eval(CONSUME, 1, this.key('oidc', model, id), nowS) as number | null
    return typeof earlier === 'number' ? earlier : undefined
  }

  async destroy (model: string, id: string): Promise<void> {
    await this.redis.del(this.key('oidc', model, id))
  }

  async revokeByGrantId (grantId: string): Promise<void> {
    await this.redis.eval(REVOKE, 1, this.key('oidc', 'grant', grantId))
  }

  async kvGet (key: string): Promise<string | undefined> {
    return await this.redis.get(this.key('kv', key)) ?? undefined
  }

  async kvSet (key: string, value: string, expiresAtMs?: number): Promise<void> {
    const ttl = ttlArgs(expiresAtMs, this.now())
    await this.redis.set(this.key('kv', key), value, ...(ttl as ['PX', number]))
  }

  async kvSetIfAbsent (key: string, value: string): Promise<boolean> {
    return await this.redis.set(this.key('kv', key), value, 'NX') === 'OK'
  }

  async kvDelete (key: string): Promise<void> {
    await this.redis.del(this.key('kv', key))
  }

  async hit (key: string, windowMs: number, cost = 1): Promise<CounterHit> {
    if (cost === 0) {
      // A read: a window that has not started reports zero.
      const [count, ttl] = await this.redis.multi().get(this.key('count', key)).pttl(this.key('count', key)).exec() ?? []
      const value = Number(count?.[1] ?? 0)
      const remaining = Number(ttl?.[1] ?? -2)
      return { count: value, resetAtMs: this.now() + (remaining > 0 ? remaining : windowMs) }
    }
    const [count, ttl] = await this.redis.eval(HIT, 1, this.key('count', key), windowMs, cost) as [number, number]
    return { count, resetAtMs: this.now() + ttl }
  }

  async resetCounter (key: string): Promise<void> {
    await this.redis.del(this.key('count', key))
  }

  async ping (): Promise<void> {
    await this.redis.ping()
  }

  /** The client is shared with the rate limits and closed by the app. */
  async close (): Promise<void> {}
}
