/**
 * Personal API keys: long-lived bearer secrets for agents, CI jobs and scripts
 * that cannot run a browser OAuth flow. A key is `pcs_` + 32 random bytes in
 * base62 (fixed length), shown once and stored only as its SHA-256.
 *
 * Store layout (key-values only: the store has no prefix scan):
 *
 *   apikey:<keyId>              the record (JSON, with the secret's hash), until it expires
 *   apikey-secret:<sha256>      -> keyId: the lookup a request makes; deleted at revocation
 *   apikey-slot:<userId>:<n>    -> keyId, n < maxPerUser: the per-user index. A slot is
 *                               claimed with set-if-absent, atomic on every backend, so two
 *                               creations at once can neither lose an entry nor pass the cap;
 *                               it expires with its key (also when the creation fails midway)
 *   apikey-slots                the largest maxPerUser ever in force: lists and revocations read
 *                               that many slots, so lowering the setting hides no live key
 *   apikey-used:<keyId>         last use (ms), apart from the record so that a use
 *                               never overwrites a revocation written at the same moment
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Store } from '../store/types.js'
import { raiseHighWater } from '../store/high-water.js'

export const API_KEY_PREFIX = 'pcs_'
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const SECRET_BYTES = 32
/** 62^43 > 2^256 > 62^42: every 32-byte value fits in 43 base62 digits. */
const SECRET_DIGITS = 43
export const API_KEY_RE = /^pcs_[0-9A-Za-z]{43}$/
/** Last use is recorded at most this often per key (coarse: not a store write per request). */
export const LAST_USED_RESOLUTION_MS = 10 * 60_000
/** How long a gateway keeps a key's lookup (resource-server/verify-api-key.ts): a revoked key is refused everywhere within it. */
export const API_KEY_CACHE_MS = 5_000
export const MAX_KEY_NAME_CHARS = 100

export interface ApiKeyRecord {
  /** Public identifier: shown in lists, the audit trail and to `portcullis keys revoke`. */
  readonly keyId: string
  readonly userId: string
  readonly name: string
  readonly servers: readonly string[]
  readonly scopes: readonly string[]
  readonly createdAtMs: number
  readonly expiresAtMs: number
  readonly revokedAtMs?: number
  readonly lastUsedAtMs?: number
  /** SHA-256 of the secret (hex). */
  readonly hash: string
}

export interface NewApiKey {
  readonly userId: string
  readonly name: string
  readonly servers: readonly string[]
  readonly scopes: readonly string[]
  readonly expiresAtMs: number
}

export class ApiKeyLimitError extends Error {
  readonly code = 'PORTCULLIS_ERR_API_KEY_LIMIT'
  constructor (max: number) {
    super(`this user already has ${max} live API keys (auth.apiKeys.maxPerUser); revoke one first`)
    this.name = 'ApiKeyLimitError'
  }
}

/** 32 random bytes as a fixed-length base62 string behind the `pcs_` prefix. */
export function generateApiKey (): string {
  let value = BigInt(`0x${randomBytes(SECRET_BYTES).toString('hex')}`)
  let digits = ''
  for (let i = 0; i < SECRET_DIGITS; i++) {
    digits = BASE62[Number(value % 62n)] + digits
    value /= 62n
  }
  return API_KEY_PREFIX + digits
}

/**
 * A plain SHA-256, not a password hash (scrypt, argon2): a key carries 256 bits of
 * randomness, so no guess list or brute force can reach it and a slow hash would add
 * nothing but cost on every lookup. The hash only keeps a copy of the store (a backup,
 * a Redis dump) from holding usable keys.
 */
export function hashApiKey (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

function newKeyId (): string {
  return randomBytes(8).toString('hex')
}

export function isLive (record: ApiKeyRecord, nowMs: number): boolean {
  return record.revokedAtMs === undefined && record.expiresAtMs > nowMs
}

const recordKey = (keyId: string): string => `apikey:${keyId}`
const secretKey = (hash: string): string => `apikey-secret:${hash}`
const slotKey = (userId: string, slot: number): string => `apikey-slot:${userId}:${slot}`
const usedKey = (keyId: string): string => `apikey-used:${keyId}`
const SLOTS_KEY = 'apikey-slots'

export class ApiKeys {
  constructor (private readonly store: Store, private readonly maxPerUser: number, private readonly now: () => number) {}

  /** Stores a new key and returns its record and its secret (the only time the secret exists). */
  async create (key: NewApiKey): Promise<{ record: ApiKeyRecord, secret: string }> {
    const secret = generateApiKey()
    const record: ApiKeyRecord = { keyId: newKeyId(), userId: key.userId, name: key.name, servers: [...key.servers], scopes: [...key.scopes], createdAtMs: this.now(), expiresAtMs: key.expiresAtMs, hash: hashApiKey(secret) }
    await this.indexSize()
    const slot = await this.claimSlot(record)
    if (slot === undefined) throw new ApiKeyLimitError(this.maxPerUser)
    await this.store.kvSet(recordKey(record.keyId), JSON.stringify(record), record.expiresAtMs)
    await this.store.kvSet(secretKey(record.hash), record.keyId, record.expiresAtMs)
    return { record, secret }
  }

  /**
   * The first free slot of the user's index, claimed for this key (undefined: all taken). The
   * slot lives as long as the key from the start: a creation that fails after claiming it (the
   * store failing, the process ending) does not hold it for good.
   */
  private async claimSlot (record: ApiKeyRecord): Promise<number | undefined> {
    for (let slot = 0; slot < this.maxPerUser; slot++) {
      if (await this.store.kvSetIfAbsent(slotKey(record.userId, slot), record.keyId, record.expiresAtMs)) return slot
    }
    return undefined
  }

  /**
   * How many slots a user's index may use: the largest maxPerUser ever in force (stored, so
   * every replica and a later, lower setting read the same).
   */
  private async indexSize (): Promise<number> {
    return await raiseHighWater(this.store, SLOTS_KEY, this.maxPerUser)
  }

  async find (keyId: string): Promise<ApiKeyRecord | undefined> {
    const stored = await this.store.kvGet(recordKey(keyId))
    if (stored === undefined) return undefined
    const record = JSON.parse(stored) as ApiKeyRecord
    const used = await this.store.kvGet(usedKey(keyId))
    return used === undefined ? record : { ...record, lastUsedAtMs: Number(used) }
  }

  /** The user's live keys, newest first. */
  async list (userId: string): Promise<ApiKeyRecord[]> {
    const records: ApiKeyRecord[] = []
    const slots = await this.indexSize()
    for (let slot = 0; slot < slots; slot++) {
      const keyId = await this.store.kvGet(slotKey(userId, slot))
      if (keyId === undefined) continue
      const record = await this.find(keyId)
      if (record !== undefined && record.userId === userId && isLive(record, this.now())) records.push(record)
    }
    return records.sort((a, b) => b.createdAtMs - a.createdAtMs)
  }

  /**
   * Revokes a key (of `userId` when given: a user revokes only their own). The secret's
   * lookup goes at once; replicas that cached it stop within the verifier's cache bound.
   */
  async revoke (keyId: string, userId?: string): Promise<ApiKeyRecord | undefined> {
    const record = await this.find(keyId)
    if (record === undefined || (userId !== undefined && record.userId !== userId) || !isLive(record, this.now())) return undefined
    await this.store.kvDelete(secretKey(record.hash))
    const revoked: ApiKeyRecord = { ...record, revokedAtMs: this.now() }
    await this.store.kvSet(recordKey(keyId), JSON.stringify(revoked), record.expiresAtMs)
    await this.freeSlot(record)
    return revoked
  }

  private async freeSlot (record: ApiKeyRecord): Promise<void> {
    const slots = await this.indexSize()
    for (let slot = 0; slot < slots; slot++) {
      // Only while the slot still names this key: two revocations at once, and a new key
      // taking the slot the first one freed, must not unindex the new key.
      if (await this.store.kvCompareAndSwap(slotKey(record.userId, slot), record.keyId, undefined)) return
    }
  }

  /** The live key a secret belongs to, or undefined (unknown, revoked, expired alike). */
  async lookup (secret: string): Promise<ApiKeyRecord | undefined> {
    if (!API_KEY_RE.test(secret)) return undefined
    const hash = hashApiKey(secret)
    const keyId = await this.store.kvGet(secretKey(hash))
    if (keyId === undefined) return undefined
    const record = await this.find(keyId)
    if (record === undefined || record.hash !== hash || !isLive(record, this.now())) return undefined
    return record
  }

  /** Records a use (callers keep it coarse: LAST_USED_RESOLUTION_MS). */
  async recordUse (record: ApiKeyRecord, atMs: number): Promise<void> {
    await this.store.kvSet(usedKey(record.keyId), String(atMs), record.expiresAtMs)
  }
}
