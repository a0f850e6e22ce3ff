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
 *   revoked-grants               sorted set: grantId scored by when its access tokens die anyway (ms);
 *                                pruned on each write, the key expires with its last member
 *   kv:<key>                     gateway key-values (signing keys, consent index...)
 *   count:<key>                  fixed-window counters
 */
import { StoreUnavailableError, type Consumption, type CounterHit, type GrantRecord, type Payload, type RevokedGrant, type Store, type StoredEntry } from './types.js'
import { redactRedisUrl, type RedisClient } from './redis-client.js'

const CONSUME = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 'gone' end
local record = cjson.decode(raw)
if record.consumed then return record.consumed end
record.consumed = tonumber(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 'first'
`

// KEYS: the grant's index, its Grant record, the revoked-grant list. ARGV: grantId, void-until (ms), now (ms).
const REVOKE = `
local members = redis.call('SMEMBERS', KEYS[1])
for _, key in ipairs(members) do redis.call('DEL', key) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[3], last[2]) end
return #members
`

// A grant's index lives as long as its longest-lived record (ARGV[2] ms; '' = forever).
// PEXPIRE GT alone would leave a new set without any expiry: Redis treats "no TTL" as infinite.
const INDEX_IN_GRANT = `
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('PERSIST', KEYS[1])
elseif existed == 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
else
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]), 'GT')
end
return existed
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

// ARGV: the expected value, the next value, 'set' or 'delete', the next value's TTL in ms ('' = none).
const COMPARE_AND_SWAP = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == 'delete' then
  redis.call('DEL', KEYS[1])
elseif ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[4]))
end
return 1
`

/** Namespaces under oidc: that are indexes, not records (model names are PascalCase). */
const INDEX_NAMESPACES = new Set(['grant', 'uid', 'usercode'])

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

  /** Redis failures (down, unreachable, timed out) as StoreUnavailableError; results as they are. */
  private async call<T> (operation: () => Promise<T>): Promise<T> {
    try {
      return await operation()
    } catch (err) {
      if (err instanceof SyntaxError || err instanceof StoreUnavailableError) throw err
      throw new StoreUnavailableError(this.location, { cause: err })
    }
  }

  private key (...parts: string[]): string {
    return `${this.prefix}${parts.join(':')}`
  }

  async upsert (model: string, id: string, payload: Payload, expiresAtMs: number | undefined): Promise<void> {
    return this.call(async () => {
      const now = this.now()
      const key = this.key('oidc', model, id)
      const ttl = ttlArgs(expiresAtMs, now)
      const tx = this.redis.multi().set(key, JSON.stringify(payload), ...(ttl as ['PX', number]))
      if (typeof payload.grantId === 'string') {
        tx.eval(INDEX_IN_GRANT, 1, this.key('oidc', 'grant', payload.grantId), key, expiresAtMs === undefined ? '' : Math.max(1, expiresAtMs - now))
      }
      if (typeof payload.uid === 'string') tx.set(this.key('oidc', 'uid', model, payload.uid), id, ...(ttl as ['PX', number]))
      if (typeof payload.userCode === 'string') tx.set(this.key('oidc', 'usercode', model, payload.userCode), id, ...(ttl as ['PX', number]))
      await tx.exec()
    })
  }

  async find (model: string, id: string): Promise<Payload | undefined> {
    return this.call(async () => {
      const raw = await this.redis.get(this.key('oidc', model, id))
      return raw === null ? undefined : JSON.parse(raw) as Payload
    })
  }

  async findByUid (model: string, uid: string): Promise<Payload | undefined> {
    return this.call(async () => {
      const id = await this.redis.get(this.key('oidc', 'uid', model, uid))
      return id === null ? undefined : this.find(model, id)
    })
  }

  async findByUserCode (model: string, userCode: string): Promise<Payload | undefined> {
    return this.call(async () => {
      const id = await this.redis.get(this.key('oidc', 'usercode', model, userCode))
      return id === null ? undefined : this.find(model, id)
    })
  }

  async consume (model: string, id: string, nowS: number): Promise<Consumption> {
    return this.call(async () => {
      const found = await this.redis.eval(CONSUME, 1, this.key('oidc', model, id), nowS) as number | string
      return found === 'first' || typeof found === 'number' ? found : 'gone'
    })
  }

  async destroy (model: string, id: string): Promise<void> {
    return this.call(async () => {
      await this.redis.del(this.key('oidc', model, id))
    })
  }

  /** The grant's index names its records' keys; a key whose record expired is skipped. */
  async findByGrantId (grantId: string): Promise<GrantRecord[]> {
    return this.call(async () => {
      const keys = await this.redis.smembers(this.key('oidc', 'grant', grantId))
      const prefix = this.key('oidc', '')
      const records: GrantRecord[] = []
      for (const key of keys) {
        const rest = key.startsWith(prefix) ? key.slice(prefix.length) : ''
        const colon = rest.indexOf(':')
        const model = rest.slice(0, colon)
        if (colon <= 0 || model === 'Grant') continue
        const [raw, ttl] = await Promise.all([this.redis.get(key), this.redis.pttl(key)])
        if (raw !== null) records.push({ model, id: rest.slice(colon + 1), payload: JSON.parse(raw) as Payload, expiresAtMs: ttl > 0 ? this.now() + ttl : undefined })
      }
      return records
    })
  }

  async revokeByGrantId (grantId: string, voidUntilMs: number): Promise<void> {
    return this.call(async () => {
      await this.redis.eval(REVOKE, 3, this.key('oidc', 'grant', grantId), this.key('oidc', 'Grant', grantId), this.key('revoked-grants'), grantId, Math.ceil(voidUntilMs), Math.floor(this.now()))
    })
  }

  /** One small read: only the entries listed until after `afterMs` (the poller asks for recent ones). */
  async revokedGrants (afterMs: number): Promise<RevokedGrant[]> {
    return this.call(async () => {
      const flat = await this.redis.zrangebyscore(this.key('revoked-grants'), `(${Math.floor(Math.max(afterMs, this.now()))}`, '+inf', 'WITHSCORES')
      const grants: RevokedGrant[] = []
      for (let i = 0; i + 1 < flat.length; i += 2) grants.push({ grantId: flat[i] as string, untilMs: Number(flat[i + 1]) })
      return grants
    })
  }

  async touch (model: string, id: string, expiresAtMs: number): Promise<void> {
    return this.call(async () => {
      await this.redis.pexpire(this.key('oidc', model, id), Math.max(1, expiresAtMs - this.now()))
    })
  }

  /** Records and key-values under this prefix (SCAN: no blocking of the server). */
  async * entries (): AsyncIterable<StoredEntry> {
    const records = this.key('oidc', '')
    const kv = this.key('kv', '')
    for (const pattern of [`${records}*`, `${kv}*`]) {
      let cursor = '0'
      do {
        const [next, keys] = await this.call(async () => this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500))
        cursor = next
        for (const key of keys) {
          const entry = key.startsWith(kv) ? await this.kvEntry(key, key.slice(kv.length)) : await this.recordEntry(key, key.slice(records.length))
          if (entry !== undefined) yield entry
        }
      } while (cursor !== '0')
    }
  }

  private async recordEntry (key: string, rest: string): Promise<StoredEntry | undefined> {
    const colon = rest.indexOf(':')
    const model = rest.slice(0, colon)
    // Index keys (grant, uid, usercode) are rebuilt by upsert on the other side.
    if (colon <= 0 || INDEX_NAMESPACES.has(model)) return undefined
    const [raw, ttl] = await this.call(async () => Promise.all([this.redis.get(key), this.redis.pttl(key)]))
    if (raw === null) return undefined
    return { kind: 'record', model, id: rest.slice(colon + 1), payload: JSON.parse(raw) as Payload, expiresAtMs: ttl > 0 ? this.now() + ttl : undefined }
  }

  private async kvEntry (key: string, name: string): Promise<StoredEntry | undefined> {
    const [value, ttl] = await this.call(async () => Promise.all([this.redis.get(key), this.redis.pttl(key)]))
    if (value === null) return undefined
    return { kind: 'kv', key: name, value, expiresAtMs: ttl > 0 ? this.now() + ttl : undefined }
  }

  async kvGet (key: string): Promise<string | undefined> {
    return this.call(async () => {
      return await this.redis.get(this.key('kv', key)) ?? undefined
    })
  }

  async kvSet (key: string, value: string, expiresAtMs?: number): Promise<void> {
    return this.call(async () => {
      const ttl = ttlArgs(expiresAtMs, this.now())
      await this.redis.set(this.key('kv', key), value, ...(ttl as ['PX', number]))
    })
  }

  async kvSetIfAbsent (key: string, value: string, expiresAtMs?: number): Promise<boolean> {
    return this.call(async () => {
      const ttl = ttlArgs(expiresAtMs, this.now())
      return await this.redis.set(this.key('kv', key), value, ...(ttl as ['PX', number]), 'NX') === 'OK'
    })
  }

  async kvDelete (key: string): Promise<void> {
    return this.call(async () => {
      await this.redis.del(this.key('kv', key))
    })
  }

  async kvCompareAndSwap (key: string, expected: string, next: string | undefined, expiresAtMs?: number): Promise<boolean> {
    return this.call(async () => {
      const ttl = expiresAtMs === undefined ? '' : Math.max(1, expiresAtMs - this.now())
      return await this.redis.eval(COMPARE_AND_SWAP, 1, this.key('kv', key), expected, next ?? '', next === undefined ? 'delete' : 'set', ttl) === 1
    })
  }

  async hit (key: string, windowMs: number, cost = 1): Promise<CounterHit> {
    return this.call(async () => {
      if (cost === 0) {
        // A read: a window that has not started reports zero.
        const [count, ttl] = await this.redis.multi().get(this.key('count', key)).pttl(this.key('count', key)).exec() ?? []
        const value = Number(count?.[1] ?? 0)
        const remaining = Number(ttl?.[1] ?? -2)
        return { count: value, resetAtMs: this.now() + (remaining > 0 ? remaining : windowMs) }
      }
      const [count, ttl] = await this.redis.eval(HIT, 1, this.key('count', key), windowMs, cost) as [number, number]
      return { count, resetAtMs: this.now() + ttl }
    })
  }

  async resetCounter (key: string): Promise<void> {
    return this.call(async () => {
      await this.redis.del(this.key('count', key))
    })
  }

  async ping (): Promise<void> {
    return this.call(async () => {
      await this.redis.ping()
    })
  }

  /** The client is shared with the rate limits and closed by the app. */
  async close (): Promise<void> {}
}
