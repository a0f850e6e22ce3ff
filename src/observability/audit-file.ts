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
 *
 * A write may also never come back: a pipe whose reader hangs, a hard NFS mount
 * that is gone. No error arrives then, so waiting for one would serve requests
 * unrecorded until the bound drops their records: records that wait with no
 * write completing for STALL_MS, or that reach the bound, fail it closed too.
 */
import { closeSync, mkdirSync, openSync, write } from 'node:fs'
import { dirname } from 'node:path'

/**
 * A batch is written once this many characters wait (one write instead of one per request)...
 * An asynchronous write costs about 40 µs of CPU (the thread pool's hand-off) whatever its size
 * up to 16 KiB, and 70 µs at 32 KiB (docs/benchmarks.md, 2026-12-01 12:00): 16 KiB is ~45
 * records, under 1 µs each, where 4 KiB batches cost ~4 µs per request.
 */
const BATCH_CHARS = 16 * 1024
/** ...and at least this often, so a quiet gateway's last records still reach the file promptly; also the retry interval. */
const FLUSH_INTERVAL_MS = 1000
/** Characters held while writes fail; past this, new records are counted as lost (requests are refused meanwhile, so few arrive). */
const MAX_PENDING_CHARS = 16 * 1024 * 1024
/** A batch holds at most this much, so what piled up while the disk was full goes in bounded writes. */
const MAX_BATCH_CHARS = 1024 * 1024
/**
 * A batch written this long without finishing: the trail counts as failed (ETIMEDOUT).
 * A local disk writes a 1 MiB batch in milliseconds; at 2,000 requests a second, 10 s of
 * records is under half the bound, so the bound is rarely what notices a hung write first.
 */
const STALL_MS = 10_000
/** Failures the writer declares itself (no error came back); a real error that arrives replaces them. */
const STALLED = 'ETIMEDOUT'
const OVER_BOUND = 'ENOBUFS'
const NEWLINE = 0x0a

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
  /** Records not yet in a batch, oldest first: encoded once per batch, not once per record. */
  private pending: string[] = []
  private pendingChars = 0
  /** The batch being written (records before `pending`'s), its records, and how much of it is written. */
  private batch: Buffer | undefined
  private batchRecords = 0
  private offset = 0
  private isWriting = false
  private failure: { code: string, sinceMs: number } | undefined
  /** Records dropped because too many were waiting (reported once, and counted at close). */
  private lost = 0
  /**
   * Since when the batch has been written without finishing: it was started, or last made
   * progress. Records merely pending are no stall (the timer starts their write within a
   * second), so a test clock moved forward while records wait does not fail the trail.
   */
  private writeSinceMs = 0
  private readonly timer: NodeJS.Timeout
  private drained: Array<() => void> = []

  private constructor (
    private readonly fd: number,
    private readonly ownsFd: boolean,
    private readonly where: string,
    private readonly log: AuditFileLog,
    private readonly now: () => number,
  ) {
    this.timer = setInterval(() => {
      this.checkStall()
      this.flush()
    }, FLUSH_INTERVAL_MS)
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
    if (this.held() + record.length > MAX_PENDING_CHARS) {
      if (this.lost === 0) this.log.error({ audit: this.where }, 'audit records dropped: too many waiting to be written')
      this.lost++
      // Fail closed: the requests after this one would be served with no record at all.
      this.fail(OVER_BOUND, 'too many records waiting to be written')
      return true
    }
    this.pending.push(record)
    this.pendingChars += record.length
    if (this.failure === undefined && this.pendingChars >= BATCH_CHARS) this.flush()
    return true
  }

  /** False while records cannot be written: the gateway refuses MCP requests then. */
  isWritable (): boolean {
    return this.failure === undefined
  }

  lastWriteFailure (): AuditWriteFailure | undefined {
    return this.failure === undefined ? undefined : { ...this.failure, pendingRecords: this.waiting() }
  }

  /** Starts writing what is pending (one write in flight at a time). */
  flush (): void {
    if (this.isWriting) return
    if (this.batch === undefined) {
      if (this.pending.length === 0) {
        this.settle()
        return
      }
      // One write for the whole batch: joining costs less than a syscall per record.
      let records = this.pending
      let chars = this.pendingChars
      if (chars > MAX_BATCH_CHARS) {
        let count = 0
        chars = 0
        while (count < records.length && chars < MAX_BATCH_CHARS) chars += (records[count++] ?? '').length
        records = this.pending.splice(0, count)
      } else {
        this.pending = []
      }
      this.pendingChars -= chars
      this.batch = Buffer.from(records.join(''))
      this.batchRecords = records.length
      this.offset = 0
      this.writeSinceMs = this.now()
    }
    this.isWriting = true
    const batch = this.batch
    write(this.fd, batch, this.offset, batch.length - this.offset, null, (err, written) => {
      this.isWriting = false
      if (err !== null) {
        this.onFailure(err)
        return
      }
      // A short write leaves the rest of the batch for the next one; the records it completed
      // (each ends with the batch's only newlines: JSON escapes its own) are written.
      this.writeSinceMs = this.now()
      if (this.offset + written >= batch.length) {
        this.batch = undefined
        this.batchRecords = 0
      } else {
        this.batchRecords -= newlines(batch, this.offset, this.offset + written)
        this.offset += written
      }
      if (this.failure !== undefined) {
        this.log.info({ audit: this.where, failedForMs: this.now() - this.failure.sinceMs }, 'audit log writes work again')
        this.failure = undefined
      }
      // The rest of a batch, a full batch that came meanwhile, or what close() waits for goes at
      // once; a few records wait for more (or for the timer), so a write carries a batch.
      if (this.batch !== undefined || this.pendingChars >= BATCH_CHARS || (this.drained.length > 0 && this.pending.length > 0)) this.flush()
      else this.settle()
    })
  }

  /** Characters (of the batch: bytes) held and not yet written. */
  private held (): number {
    return this.pendingChars + (this.batch === undefined ? 0 : this.batch.length - this.offset)
  }

  /** Records not yet written. */
  private waiting (): number {
    return this.batchRecords + this.pending.length
  }

  /**
   * Writes what is pending, waiting at most `deadlineMs`; then closes the
   * file. Whatever could not be written by then is reported as lost (a
   * shutdown must not hang on a full disk).
   */
  async close (deadlineMs: number): Promise<void> {
    clearInterval(this.timer)
    const deadline = this.now() + deadlineMs
    while (this.waiting() > 0 && this.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.drained.push(resolve)
        this.flush()
        // Not unref'd: during shutdown these timers may be all that keeps the process alive until the report.
        setTimeout(resolve, Math.min(FLUSH_INTERVAL_MS / 4, Math.max(1, deadline - this.now())))
      })
      if (this.failure !== undefined && this.waiting() > 0) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const unwritten = this.waiting() + this.lost
    if (unwritten > 0) {
      this.log.error({ audit: this.where, records: unwritten, code: this.failure?.code }, `${unwritten} audit record${unwritten === 1 ? '' : 's'} could not be written`)
    }
    if (this.ownsFd) closeSync(this.fd)
  }

  private onFailure (err: NodeJS.ErrnoException): void {
    const code = err.code ?? 'EIO'
    // EAGAIN: a non-blocking pipe (stdout) is full for a moment; not a failure to report
    // (one that stays full is a stall: checkStall).
    if (code === 'EAGAIN') return
    this.fail(code, err.message)
  }

  /** A batch has been written for STALL_MS without finishing: a write that hangs, or a pipe that stays full. */
  private checkStall (): void {
    if (this.failure === undefined && this.batch !== undefined && this.now() - this.writeSinceMs >= STALL_MS) {
      this.fail(STALLED, `no write has completed for ${Math.round((this.now() - this.writeSinceMs) / 1000)} s`)
    }
  }

  private fail (code: string, message: string): void {
    if (this.failure === undefined) {
      this.failure = { code, sinceMs: this.now() }
      this.log.error({ audit: this.where, code, message }, 'audit log cannot be written: MCP requests are refused until it can (records are kept meanwhile)')
    } else if (code !== this.failure.code && (this.failure.code === STALLED || this.failure.code === OVER_BOUND)) {
      // The file system's own error says more than the writer's guess.
      this.failure = { code, sinceMs: this.failure.sinceMs }
    }
  }

  private settle (): void {
    const waiting = this.drained
    this.drained = []
    for (const resolve of waiting) resolve()
  }
}

function newlines (buffer: Buffer, from: number, to: number): number {
  let count = 0
  for (let at = buffer.indexOf(NEWLINE, from); at !== -1 && at < to; at = buffer.indexOf(NEWLINE, at + 1)) count++
  return count
}
