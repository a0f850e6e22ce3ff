/**
 * The embedded default store: one SQLite file in the data directory
 * (better-sqlite3, WAL mode, file mode 0600). One process; survives restarts.
 * better-sqlite3 is synchronous, so each method is one atomic step on the
 * event loop: `consume` and `hit` cannot interleave with each other.
 *
 * A write the disk refuses (full, I/O error, read-only, locked past the busy
 * timeout) is an outage, not a bug: it becomes StoreUnavailableError (503
 * "retry shortly", as a Redis outage does), /readyz says why until a write
 * succeeds again, and the log says so at most once a minute.
 */
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs'
import Database, { type Database as Db } from 'better-sqlite3'
import { StoreUnavailableError, type Consumption, type CounterHit, type GrantRecord, type Payload, type RevokedGrant, type Store, type StoreLog, type StoredEntry, type StoreWriteFailure } from './types.js'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS oidc (
  model TEXT NOT NULL,
  id TEXT NOT NULL,
  payload TEXT NOT NULL,
  grant_id TEXT,
  uid TEXT,
  user_code TEXT,
  expires_at INTEGER,
  PRIMARY KEY (model, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS oidc_grant_id ON oidc (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_uid ON oidc (model, uid) WHERE uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_user_code ON oidc (model, user_code) WHERE user_code IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_expires_at ON oidc (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  expires_at INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked_grants (
  grant_id TEXT PRIMARY KEY,
  until_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_grants_until ON revoked_grants (until_ms);
CREATE TABLE IF NOT EXISTS counters (
  key TEXT PRIMARY KEY,
  count INTEGER NOT NULL,
  reset_at INTEGER NOT NULL
) WITHOUT ROWID;
`

/** Expired rows are swept this often (lookups ignore them in between). */
const SWEEP_INTERVAL_MS = 10 * 60_000
/** A failing disk is logged at most this often (each request would otherwise log it). */
export const WRITE_FAILURE_LOG_INTERVAL_MS = 60_000
/** The key /readyz writes to learn whether writes work again. */
const WRITE_PROBE_KEY = 'portcullis:store-write-probe'

/**
 * SQLite result codes (https://sqlite.org/rescode.html) that mean the file
 * system or another process refused, not that the gateway asked for something
 * wrong: FULL (disk or quota), IOERR_* (EIO, EFBIG, ...), READONLY_*, BUSY and
 * LOCKED (after busy_timeout), CANTOPEN, NOMEM. Constraint or misuse errors
 * stay bugs (500).
 */
const OUTAGE_CODE_RE = /^SQLITE_(?:FULL|IOERR|READONLY|BUSY|LOCKED|CANTOPEN|NOMEM)/

export function isSqliteOutage (err: unknown): err is Error & { code: string } {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && OUTAGE_CODE_RE.test(code)
}

interface OidcRow { payload: string, expires_at: number | null }

export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly location: string
  private readonly db: Db
  private readonly stmt: ReturnType<typeof prepareStatements>
  private readonly sweeper: NodeJS.Timeout
  private readonly now: () => number
  private writeFailure: StoreWriteFailure | undefined
  private failuresSinceLog = 0
  private lastLoggedAtMs: number | undefined

  constructor (path: string, now: () => number = () => Date.now(), private readonly log?: StoreLog) {
    this.location = path
    this.now = now
    if (path !== ':memory:') {
      // Tokens and keys live here: owner-only, before SQLite creates the file with the umask's mode.
      if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600))
      chmodSync(path, 0o600)
    }
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('busy_timeout = 5000')
    this.db.exec(SCHEMA)
    this.stmt = prepareStatements(this.db)
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweeper.unref()
  }

  private live (row: OidcRow | undefined): Payload | undefined {
    if (row === undefined || (row.expires_at !== null && row.expires_at <= this.now())) return undefined
    return JSON.parse(row.payload) as Payload
  }

  /** Runs a write; a refusal by the disk becomes StoreUnavailableError and is remembered for /readyz. */
  private write<T> (operation: () => T): Promise<T> {
    let result: T
    try {
      result = operation()
    } catch (err) {
      if (!isSqliteOutage(err)) return Promise.reject(err as Error)
      this.recordWriteFailure(err)
      return Promise.reject(new StoreUnavailableError(this.location, { cause: err }, `cannot write (${err.code}: ${err.message})`))
    }
    if (this.writeFailure !== undefined) this.recordWriteRecovery()
    return Promise.resolve(result)
  }

  /** Reads fail for the same reasons (I/O errors, locks); they answer 503 but do not decide /readyz. */
  private read<T> (operation: () => T): Promise<T> {
    try {
      return Promise.resolve(operation())
    } catch (err) {
      if (!isSqliteOutage(err)) return Promise.reject(err as Error)
      return Promise.reject(new StoreUnavailableError(this.location, { cause: err }, `cannot read (${err.code}: ${err.message})`))
    }
  }

  private recordWriteFailure (err: Error & { code: string }): void {
    const now = this.now()
    this.writeFailure = { code: err.code, message: err.message, sinceMs: this.writeFailure?.sinceMs ?? now }
    this.failuresSinceLog++
    if (this.lastLoggedAtMs !== undefined && now - this.lastLoggedAtMs < WRITE_FAILURE_LOG_INTERVAL_MS) return
    this.log?.error({ store: this.location, code: err.code, error: err.message, failures: this.failuresSinceLog, failingForMs: now - this.writeFailure.sinceMs }, 'store write failed: answering 503 until a write succeeds')
    this.lastLoggedAtMs = now
    this.failuresSinceLog = 0
  }

  private recordWriteRecovery (): void {
    const failure = this.writeFailure
    this.writeFailure = undefined
    this.lastLoggedAtMs = undefined
    this.failuresSinceLog = 0
    this.log?.info({ store: this.location, code: failure?.code, failedForMs: failure === undefined ? 0 : this.now() - failure.sinceMs }, 'store writes work again')
  }

  lastWriteFailure (): StoreWriteFailure | undefined {
    return this.writeFailure
  }

  upsert (model: string, id: string, payload: Payload, expiresAtMs: number | undefined): Promise<void> {
    return this.write(() => { this.stmt.upsert.run(model, id, JSON.stringify(payload), stringOrNull(payload.grantId), stringOrNull(payload.uid), stringOrNull(payload.userCode), expiresAtMs ?? null) })
  }

  find (model: string, id: string): Promise<Payload | undefined> {
    return this.read(() => this.live(this.stmt.find.get(model, id) as OidcRow | undefined))
  }

  findByUid (model: string, uid: string): Promise<Payload | undefined> {
    return this.read(() => this.live(this.stmt.findByUid.get(model, uid) as OidcRow | undefined))
  }

  findByUserCode (model: string, userCode: string): Promise<Payload | undefined> {
    return this.read(() => this.live(this.stmt.findByUserCode.get(model, userCode) as OidcRow | undefined))
  }

  consume (model: string, id: string, nowS: number): Promise<Consumption> {
    const run = this.db.transaction((): Consumption => {
      const row = this.stmt.find.get(model, id) as OidcRow | undefined
      const payload = this.live(row)
      if (payload === undefined || row === undefined) return 'gone'
      if (typeof payload.consumed === 'number') return payload.consumed
      payload.consumed = nowS
      this.stmt.upsert.run(model, id, JSON.stringify(payload), stringOrNull(payload.grantId), stringOrNull(payload.uid), stringOrNull(payload.userCode), row.expires_at)
      return 'first'
    })
    return this.write(run)
  }

  destroy (model: string, id: string): Promise<void> {
    return this.write(() => { this.stmt.destroy.run(model, id) })
  }

  findByGrantId (grantId: string): Promise<GrantRecord[]> {
    return this.read(() => (this.stmt.findByGrant.all(grantId) as Array<OidcRow & { model: string, id: string }>).flatMap((row) => {
      const payload = row.model === 'Grant' ? undefined : this.live(row)
      return payload === undefined ? [] : [{ model: row.model, id: row.id, payload, expiresAtMs: row.expires_at ?? undefined }]
    }))
  }

  revokeByGrantId (grantId: string, voidUntilMs: number): Promise<void> {
    return this.write(() => {
      this.db.transaction(() => {
        this.stmt.revoke.run(grantId)
        this.stmt.destroy.run('Grant', grantId)
        this.stmt.listRevoked.run(grantId, voidUntilMs)
      })()
    })
  }

  revokedGrants (afterMs: number): Promise<RevokedGrant[]> {
    return this.read(() => {
      const rows = this.stmt.revokedAfter.all(Math.max(afterMs, this.now())) as Array<{ grant_id: string, until_ms: number }>
      return rows.map((row) => ({ grantId: row.grant_id, untilMs: row.until_ms }))
    })
  }

  touch (model: string, id: string, expiresAtMs: number): Promise<void> {
    return this.write(() => { this.stmt.touch.run(expiresAtMs, model, id, this.now()) })
  }

  async * entries (): AsyncIterable<StoredEntry> {
    const now = this.now()
    for (const row of this.stmt.allOidc.iterate(now) as Iterable<{ model: string, id: string, payload: string, expires_at: number | null }>) {
      yield { kind: 'record', model: row.model, id: row.id, payload: JSON.parse(row.payload) as Payload, expiresAtMs: row.expires_at ?? undefined }
    }
    for (const row of this.stmt.allKv.iterate(now) as Iterable<{ key: string, value: string, expires_at: number | null }>) {
      yield { kind: 'kv', key: row.key, value: row.value, expiresAtMs: row.expires_at ?? undefined }
    }
  }

  kvGet (key: string): Promise<string | undefined> {
    return this.read(() => {
      const row = this.stmt.kvGet.get(key) as { value: string, expires_at: number | null } | undefined
      return row === undefined || (row.expires_at !== null && row.expires_at <= this.now()) ? undefined : row.value
    })
  }

  kvSet (key: string, value: string, expiresAtMs?: number): Promise<void> {
    return this.write(() => { this.stmt.kvSet.run(key, value, expiresAtMs ?? null) })
  }

  kvSetIfAbsent (key: string, value: string, expiresAtMs?: number): Promise<boolean> {
    return this.write(() => this.stmt.kvInsert.run(key, value, expiresAtMs ?? null, this.now()).changes === 1)
  }

  kvDelete (key: string): Promise<void> {
    return this.write(() => { this.stmt.kvDelete.run(key) })
  }

  kvCompareAndSwap (key: string, expected: string, next: string | undefined, expiresAtMs?: number): Promise<boolean> {
    // The WHERE clause is the comparison: one statement, atomic against other connections too (migrate-store, tools).
    return this.write(() => (next === undefined
      ? this.stmt.kvDeleteIf.run(key, expected, this.now())
      : this.stmt.kvUpdateIf.run(next, expiresAtMs ?? null, key, expected, this.now())).changes === 1)
  }

  hit (key: string, windowMs: number, cost = 1): Promise<CounterHit> {
    const run = this.db.transaction((): CounterHit => {
      const now = this.now()
      const row = this.stmt.counterGet.get(key) as { count: number, reset_at: number } | undefined
      const fresh = row === undefined || row.reset_at <= now
      const count = fresh ? cost : row.count + cost
      const resetAtMs = fresh ? now + windowMs : row.reset_at
      this.stmt.counterSet.run(key, count, resetAtMs)
      return { count, resetAtMs }
    })
    return this.write(run)
  }

  resetCounter (key: string): Promise<void> {
    return this.write(() => { this.stmt.counterDelete.run(key) })
  }

  /** Deletes what has expired; returns how many rows went. */
  sweep (): number {
    const now = this.now()
    try {
      return this.stmt.sweepOidc.run(now).changes + this.stmt.sweepKv.run(now).changes + this.stmt.sweepCounters.run(now).changes + this.stmt.sweepRevoked.run(now).changes
    } catch (err) {
      // A full disk may refuse even deletes (they journal first); the next sweep tries again.
      if (!isSqliteOutage(err)) throw err
      this.recordWriteFailure(err)
      return 0
    }
  }

  /**
   * After a failed write, /readyz also tries a tiny write: the state clears
   * as soon as the disk takes writes again, whether or not a client wrote.
   */
  async ping (): Promise<void> {
    await this.read(() => this.db.prepare('SELECT 1').get())
    if (this.writeFailure !== undefined) await this.kvSet(WRITE_PROBE_KEY, String(this.now()), this.now() + SWEEP_INTERVAL_MS).catch(() => {})
  }

  close (): Promise<void> {
    clearInterval(this.sweeper)
    if (this.db.open) this.db.close()
    return Promise.resolve()
  }
}

function stringOrNull (value: unknown): string | null {
  return typeof value === 'string' ? value : null
}

function prepareStatements (db: Db) {
  return {
    upsert: db.prepare('INSERT INTO oidc (model, id, payload, grant_id, uid, user_code, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id, uid = excluded.uid, user_code = excluded.user_code, expires_at = excluded.expires_at'),
    find: db.prepare('SELECT payload, expires_at FROM oidc WHERE model = ? AND id = ?'),
    findByUid: db.prepare('SELECT payload, expires_at FROM oidc WHERE model = ? AND uid = ?'),
    findByUserCode: db.prepare('SELECT payload, expires_at FROM oidc WHERE model = ? AND user_code = ?'),
    destroy: db.prepare('DELETE FROM oidc WHERE model = ? AND id = ?'),
    revoke: db.prepare('DELETE FROM oidc WHERE grant_id = ?'),
    findByGrant: db.prepare('SELECT model, id, payload, expires_at FROM oidc WHERE grant_id = ?'),
    touch: db.prepare('UPDATE oidc SET expires_at = ? WHERE model = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)'),
    allOidc: db.prepare('SELECT model, id, payload, expires_at FROM oidc WHERE expires_at IS NULL OR expires_at > ?'),
    allKv: db.prepare('SELECT key, value, expires_at FROM kv WHERE expires_at IS NULL OR expires_at > ?'),
    sweepOidc: db.prepare('DELETE FROM oidc WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    kvGet: db.prepare('SELECT value, expires_at FROM kv WHERE key = ?'),
    kvSet: db.prepare('INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at'),
    // An expired row the sweep has not removed yet counts as absent.
    kvInsert: db.prepare('INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?'),
    kvDelete: db.prepare('DELETE FROM kv WHERE key = ?'),
    kvDeleteIf: db.prepare('DELETE FROM kv WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)'),
    kvUpdateIf: db.prepare('UPDATE kv SET value = ?, expires_at = ? WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)'),
    sweepKv: db.prepare('DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    counterGet: db.prepare('SELECT count, reset_at FROM counters WHERE key = ?'),
    counterSet: db.prepare('INSERT INTO counters (key, count, reset_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET count = excluded.count, reset_at = excluded.reset_at'),
    counterDelete: db.prepare('DELETE FROM counters WHERE key = ?'),
    sweepCounters: db.prepare('DELETE FROM counters WHERE reset_at <= ?'),
    listRevoked: db.prepare('INSERT INTO revoked_grants (grant_id, until_ms) VALUES (?, ?) ON CONFLICT (grant_id) DO UPDATE SET until_ms = MAX(until_ms, excluded.until_ms)'),
    revokedAfter: db.prepare('SELECT grant_id, until_ms FROM revoked_grants WHERE until_ms > ? ORDER BY until_ms'),
    sweepRevoked: db.prepare('DELETE FROM revoked_grants WHERE until_ms <= ?'),
  }
}
