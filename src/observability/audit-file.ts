/**
 * Where audit records are written: a file (or stdout/stderr), in batches, and
 * never silently lost.
 *
 * pino's own destination (sonic-boom) reports a failed write (ENOSPC, EIO, a
 * revoked NFS mount) as an event nobody acts on, drops the batch and carries
 * on: on a full disk the gateway went on serving MCP calls with no audit trail
 * and said nothing. This writer keeps what it could not write, says so once,
 * retries every second, and tells the gateway (isWritable) so the MCP routes
 * refuse new requests until the trail can be written again (fail closed) and
 * /readyz says why. Records held while failing are bounded; beyond the bound
 * they are counted and reported, never buffered without limit.
 */
import { closeSync, mkdirSync, openSync, write } from 'node:fs'
import { dirname } from 'node:path'

/** Records are written in batches of up to this many bytes (one syscall instead of one per request)... */
const BATCH_BYTES = 4096
/** ...and at least this often, so a quiet gateway's last records still reach the file promptly; also the retry interval. */
const FLUSH_INTERVAL_MS = 1000
/** Records held while writes fail; past this, new ones are counted as lost (requests are refused meanwhile, so few arrive). */
const MAX_PENDING_BYTES = 16 * 1024 * 1024

export interface AuditWriteFailure {
  /** The file system's error code, e.g. ENOSPC. */
  readonly code: string
  readonly sinceMs: number
  /** Records waiting to be written. */
  readonly pendingRecords: number
}

/** The part of a pino logger this writer reports to (the operational log, not the audit trail). */
export interface AuditFileLog {
  error: (details: Record<string, unknown>, message: string) => void
  info: (details: Record<string, unknown>, message: string) => void
}

export class AuditFile {
  /** Whole records not yet written, oldest first; the first may be partly written (`offset`). */
  private readonly pending: Buffer[] = []
  private offset = 0
  private pendingBytes = 0
  private isWriting = false
  private failure: { code: string, sinceMs: number } | undefined
  /** Records dropped because too many were waiting (reported once, and counted at close). */
  private lost = 0
  private readonly timer: NodeJS.Timeout
  private drained: Array<() => void> = []

  private constructor (
    private readonly fd: number,
    private readonly ownsFd: boolean,
    private readonly where: string,
    private readonly log: AuditFileLog,
    private readonly now: () => number,
  ) {
    this.timer = setInterval(() => { this.flush() }, FLUSH_INTERVAL_MS)
    this.timer.unref()
  }

  /** `stdout`, `stderr` or a file path (appended to; its directory is created). */
  static open (destination: string, log: AuditFileLog, now: () => number = Date.now): AuditFile {
    if (destination === 'stdout') return new AuditFile(1, false, 'stdout', log, now)
    if (destination === 'stderr') return new AuditFile(2, false, 'stderr', log, now)
    mkdirSync(dirname(destination), { recursive: true })
    return new AuditFile(openSync(destination, 'a', 0o640), true, destination, log, now)
  }

  /** pino's destination interface: one serialised record, newline included. */
  write (record: string): boolean {
    const bytes = Buffer.from(record)
    if (this.pendingBytes + bytes.length > MAX_PENDING_BYTES) {
      if (this.lost === 0) this.log.error({ audit: this.where }, 'audit records dropped: too many waiting to be written')
      this.lost++
      return true
    }
    this.pending.push(bytes)
    this.pendingBytes += bytes.length
    if (this.failure === undefined && this.pendingBytes >= BATCH_BYTES) this.flush()
    return true
  }

  /** False while records cannot be written: the gateway refuses MCP requests then. */
  isWritable (): boolean {
    return this.failure === undefined
  }

  lastWriteFailure (): AuditWriteFailure | undefined {
    return this.failure === undefined ? undefined : { ...this.failure, pendingRecords: this.pending.length }
  }

  /** Starts writing what is pending (one write in flight at a time). */
  flush (): void {
    if (this.isWriting) return
    const first = this.pending[0]
    if (first === undefined) {
      this.settle()
      return
    }
    this.isWriting = true
    // One write for the whole batch: joining costs less than a syscall per record.
    const batch = Buffer.concat(this.pending).subarray(this.offset)
    write(this.fd, batch, 0, batch.length, null, (err, written) => {
      this.isWriting = false
      if (err !== null) {
        this.onFailure(err)
        return
      }
      this.consume(written)
      if (this.failure !== undefined) {
        this.log.info({ audit: this.where, failedForMs: this.now() - this.failure.sinceMs }, 'audit log writes work again')
        this.failure = undefined
      }
      if (this.pending.length > 0) this.flush()
      else this.settle()
    })
  }

  /**
   * Writes what is pending, waiting at most `deadlineMs`; then closes the
   * file. Whatever could not be written by then is reported as lost (a
   * shutdown must not hang on a full disk).
   */
  async close (deadlineMs: number): Promise<void> {
    clearInterval(this.timer)
    const deadline = this.now() + deadlineMs
    while (this.pending.length > 0 && this.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.drained.push(resolve)
        this.flush()
        // Not unref'd: during shutdown these timers may be all that keeps the process alive until the report.
        setTimeout(resolve, Math.min(FLUSH_INTERVAL_MS / 4, Math.max(1, deadline - this.now())))
      })
      if (this.failure !== undefined && this.pending.length > 0) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const unwritten = this.pending.length + this.lost
    if (unwritten > 0) {
      this.log.error({ audit: this.where, records: unwritten, code: this.failure?.code }, `${unwritten} audit record${unwritten === 1 ? '' : 's'} could not be written`)
    }
    if (this.ownsFd) closeSync(this.fd)
  }

  private consume (written: number): void {
    let left = written + this.offset
    while (left > 0) {
      const head = this.pending[0]
      if (head === undefined) break
      if (left < head.length) break
      left -= head.length
      this.pendingBytes -= head.length
      this.pending.shift()
    }
    this.offset = left
  }

  private onFailure (err: NodeJS.ErrnoException): void {
    const code = err.code ?? 'EIO'
    // EAGAIN: a non-blocking pipe (stdout) is full for a moment; not a failure to report.
    if (code === 'EAGAIN') return
    if (this.failure === undefined) {
      this.failure = { code, sinceMs: this.now() }
      this.log.error({ audit: this.where, code, message: err.message }, 'audit log cannot be written: MCP requests are refused until it can (records are kept meanwhile)')
    }
  }

  private settle (): void {
    const waiting = this.drained
    this.drained = []
    for (const resolve of waiting) resolve()
  }
}
