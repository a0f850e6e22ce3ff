/**
 * In-process store for tests (and explicitly chosen dev runs, with a loud
 * warning): same semantics as SQLite, nothing survives the process.
 */
import type { Consumption, CounterHit, GrantRecord, Payload, RevokedGrant, Store, StoredEntry } from './types.js'

interface Entry { payload: Payload, expiresAtMs: number | undefined }

export class MemoryStore implements Store {
  readonly kind = 'memory'
  readonly location = 'memory'
  private readonly records = new Map<string, Entry>()
  private readonly kv = new Map<string, { value: string, expiresAtMs: number | undefined }>()
  private readonly counters = new Map<string, CounterHit>()
  private readonly revoked = new Map<string, number>()

  constructor (private readonly now: () => number = () => Date.now()) {}

  private key (model: string, id: string): string {
    return `${model}\u0000${id}`
  }

  private live (entry: Entry | undefined): Payload | undefined {
    if (entry === undefined || (entry.expiresAtMs !== undefined && entry.expiresAtMs <= this.now())) return undefined
    return structuredClone(entry.payload)
  }

  private findBy (model: string, field: 'uid' | 'userCode', value: string): Payload | undefined {
    for (const [key, entry] of this.records) {
      if (key.startsWith(`${model}\u0000`) && entry.payload[field] === value) return this.live(entry)
    }
    return undefined
  }

  async touch (model: string, id: string, expiresAtMs: number): Promise<void> {
    const entry = this.records.get(this.key(model, id))
    if (entry !== undefined && this.live(entry) !== undefined) entry.expiresAtMs = expiresAtMs
  }

  async * entries (): AsyncIterable<StoredEntry> {
    for (const [key, entry] of this.records) {
      const payload = this.live(entry)
      const [model = '', id = ''] = key.split('\u0000')
      if (payload !== undefined) yield { kind: 'record', model, id, payload, expiresAtMs: entry.expiresAtMs }
    }
    for (const [key, entry] of this.kv) {
      if (entry.expiresAtMs === undefined || entry.expiresAtMs > this.now()) yield { kind: 'kv', key, value: entry.value, expiresAtMs: entry.expiresAtMs }
    }
  }

  async upsert (model: string, id: string, payload: Payload, expiresAtMs: number | undefined): Promise<void> {
    this.records.set(this.key(model, id), { payload: structuredClone(payload), expiresAtMs })
  }

  async find (model: string, id: string): Promise<Payload | undefined> {
    return this.live(this.records.get(this.key(model, id)))
  }

  async findByUid (model: string, uid: string): Promise<Payload | undefined> {
    return this.findBy(model, 'uid', uid)
  }

  async findByUserCode (model: string, userCode: string): Promise<Payload | undefined> {
    return this.findBy(model, 'userCode', userCode)
  }

  async consume (model: string, id: string, nowS: number): Promise<Consumption> {
    const entry = this.records.get(this.key(model, id))
    if (this.live(entry) === undefined || entry === undefined) return 'gone'
    if (typeof entry.payload.consumed === 'number') return entry.payload.consumed
    entry.payload.consumed = nowS
    return 'first'
  }

  async destroy (model: string, id: string): Promise<void> {
    this.records.delete(this.key(model, id))
  }

  async revokeByGrantId (grantId: string, voidUntilMs: number): Promise<void> {
    for (const [key, entry] of this.records) if (entry.payload.grantId === grantId) this.records.delete(key)
    this.records.delete(this.key('Grant', grantId))
    this.revoked.set(grantId, Math.max(voidUntilMs, this.revoked.get(grantId) ?? 0))
  }

  async findByGrantId (grantId: string): Promise<GrantRecord[]> {
    const records: GrantRecord[] = []
    for (const [key, entry] of this.records) {
      const payload = entry.payload.grantId === grantId ? this.live(entry) : undefined
      const [model = '', id = ''] = key.split('\u0000')
      if (payload !== undefined && model !== 'Grant') records.push({ model, id, payload, expiresAtMs: entry.expiresAtMs })
    }
    return records
  }

  async revokedGrants (afterMs: number): Promise<RevokedGrant[]> {
    const now = this.now()
    for (const [grantId, untilMs] of this.revoked) if (untilMs <= now) this.revoked.delete(grantId)
    return [...this.revoked].filter(([, untilMs]) => untilMs > afterMs).map(([grantId, untilMs]) => ({ grantId, untilMs })).sort((a, b) => a.untilMs - b.untilMs)
  }

  async kvGet (key: string): Promise<string | undefined> {
    return this.liveValue(key)
  }

  private liveValue (key: string): string | undefined {
    const entry = this.kv.get(key)
    if (entry === undefined || (entry.expiresAtMs !== undefined && entry.expiresAtMs <= this.now())) return undefined
    return entry.value
  }

  async kvSet (key: string, value: string, expiresAtMs?: number): Promise<void> {
    this.kv.set(key, { value, expiresAtMs })
  }

  async kvSetIfAbsent (key: string, value: string, expiresAtMs?: number): Promise<boolean> {
    // Checked and set in one synchronous step: an await between them would let two callers both win.
    if (this.liveValue(key) !== undefined) return false
    this.kv.set(key, { value, expiresAtMs })
    return true
  }

  async kvDelete (key: string): Promise<void> {
    this.kv.delete(key)
  }

  async kvCompareAndSwap (key: string, expected: string, next: string | undefined, expiresAtMs?: number): Promise<boolean> {
    // Compared and written in one synchronous step, as in kvSetIfAbsent.
    if (this.liveValue(key) !== expected) return false
    if (next === undefined) this.kv.delete(key)
    else this.kv.set(key, { value: next, expiresAtMs })
    return true
  }

  async hit (key: string, windowMs: number, cost = 1): Promise<CounterHit> {
    const now = this.now()
    const current = this.counters.get(key)
    const next = current === undefined || current.resetAtMs <= now
      ? { count: cost, resetAtMs: now + windowMs }
      : { count: current.count + cost, resetAtMs: current.resetAtMs }
    this.counters.set(key, next)
    return next
  }

  async resetCounter (key: string): Promise<void> {
    this.counters.delete(key)
  }

  async ping (): Promise<void> {}

  async close (): Promise<void> {}
}
