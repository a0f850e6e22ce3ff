/**
 * One gateway per SQLite data directory. Two `portcullis start` on one
 * directory would each keep their own limits, sessions and caps in memory
 * while sharing the database: they diverge silently. So `start` takes an
 * exclusive lock first and a second start exits naming the directory and the
 * other process.
 *
 * The lock is SQLite's own (better-sqlite3 is already here; flock would need
 * a native module): a small database, `portcullis.lock`, held in EXCLUSIVE
 * locking mode (https://sqlite.org/pragma.html#pragma_locking_mode) after one
 * write, so its POSIX lock lasts exactly as long as the process. The kernel
 * drops it when the process dies, however it dies (SIGKILL, OOM, a crashed
 * container): there is no stale lock to guess about, unlike an O_EXCL pid file
 * whose pid may belong to another process, or another container's pid
 * namespace, after a crash. The holder's pid and host go in `portcullis.pid`
 * beside it, for the message only (a locked database cannot be read).
 *
 * Commands that work on the store itself (`migrate-store`, ...) do not take
 * it: SQLite's own locking keeps their reads and writes safe beside a running
 * gateway.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'

export const LOCK_FILE = 'portcullis.lock'
export const PID_FILE = 'portcullis.pid'

export class DataDirInUseError extends Error {
  readonly code = 'PORTCULLIS_ERR_DATA_DIR_IN_USE'
  constructor (readonly dir: string, readonly holder: string) {
    super(`the data directory ${dir} is in use by another gateway (${holder}); stop it, or give this one its own dataDir (several replicas share a Redis store, not a SQLite directory)`)
    this.name = 'DataDirInUseError'
  }
}

export interface DataDirLock {
  readonly dir: string
  /** Lets go (at shutdown); the process exiting does the same. */
  release: () => void
}

/** Takes the data directory's lock, or throws DataDirInUseError naming the holder. */
export function lockDataDir (dir: string): DataDirLock {
  // timeout 0: never wait for another gateway; its lock lasts as long as it runs.
  const db = new Database(join(dir, LOCK_FILE), { timeout: 0 })
  try {
    db.pragma('locking_mode = EXCLUSIVE')
    // The first write takes the EXCLUSIVE lock; in this mode it is kept until the connection closes.
    db.exec(`BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS holder (started_at TEXT); DELETE FROM holder; INSERT INTO holder VALUES ('${new Date().toISOString()}'); COMMIT`)
  } catch (err) {
    db.close()
    const code = (err as { code?: unknown }).code
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw new DataDirInUseError(dir, describeHolder(dir))
    throw err
  }
  const pidFile = join(dir, PID_FILE)
  writeFileSync(pidFile, `${process.pid} ${hostname()}\n`, { mode: 0o600 })
  return {
    dir,
    release: () => {
      if (!db.open) return
      rmSync(pidFile, { force: true })
      db.close()
    },
  }
}

function describeHolder (dir: string): string {
  let text: string
  try {
    text = readFileSync(join(dir, PID_FILE), 'utf8').trim()
  } catch {
    return 'its pid is not recorded yet'
  }
  const [pid, host] = text.split(' ')
  return `pid ${pid ?? '?'}${host === undefined || host === hostname() ? '' : ` on host ${host}`}`
}
