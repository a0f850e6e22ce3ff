// The audit writer when its writes stop returning: a named pipe whose reader never reads (a log
// shipper that hangs, and the kernel's side of a hard NFS mount that is gone, behave alike: the
// write blocks and never comes back). No error ever arrives, so failing closed must not wait for
// one: the gateway would go on serving MCP requests whose records pile up and are then dropped.
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditFile } from '../../src/observability/audit-file.js'

interface Logged { readonly level: string, readonly details: Record<string, unknown>, readonly message: string }

/** A FIFO with a reader that reads nothing until `drain` (its writes block once the pipe's 64 KiB are full). */
function stuckPipe (t: Test): { path: string, drain: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-stall-'))
  const path = join(dir, 'audit.fifo')
  execFileSync('mkfifo', [path])
  // O_NONBLOCK: the read end opens without a writer, so the writer's open does not block either.
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  const buffer = Buffer.alloc(1024 * 1024)
  const drain = (): void => {
    for (;;) {
      try {
        if (readSync(reader, buffer) === 0) return
      } catch {
        return // EAGAIN: empty for now
      }
    }
  }
  t.teardown(() => {
    closeSync(reader)
    rmSync(dir, { recursive: true, force: true })
  })
  return { path, drain }
}

const record = (n: number, size: number): string => {
  const head = `{"n":${n},"pad":"`
  return `${head}${'x'.repeat(size - head.length - 3)}"}\n`
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Reads the pipe until `done` settles (a close that writes the last records). */
async function drainWhile (pipe: { drain: () => void }, done: Promise<void>): Promise<void> {
  let isDone = false
  void done.finally(() => { isDone = true })
  while (!isDone) {
    pipe.drain()
    await sleep(10)
  }
  await done
}

async function until (t: Test, what: string, check: () => boolean, ms = 5000): Promise<void> {
  for (const started = Date.now(); !check(); await sleep(25)) {
    if (Date.now() - started > ms) {
      t.fail(`timed out waiting until ${what}`)
      return
    }
  }
}

/** The writer's log, kept for the test to read. */
function collectingLog (): { logged: Logged[], log: { error: (details: Record<string, unknown>, message: string) => void, info: (details: Record<string, unknown>, message: string) => void } } {
  const logged: Logged[] = []
  const entry = (level: string) => (details: Record<string, unknown>, message: string): void => { logged.push({ level, details, message }) }
  return { logged, log: { error: entry('error'), info: entry('info') } }
}

t.test('a write that never returns makes the trail unwritable: MCP requests are refused, not served unrecorded', async (t) => {
  const pipe = stuckPipe(t)
  const { logged, log } = collectingLog()
  let clock = 1_000_000
  const audit = AuditFile.open(pipe.path, log, () => clock)
  // 128 KiB of records: the pipe takes 64 KiB, then a write blocks in the thread pool for good.
  for (let n = 0; n < 128; n++) audit.write(record(n, 1024))
  await sleep(300)
  t.equal(audit.isWritable(), true, 'a write that is merely in progress is not a failure')

  // A minute passes with the write still blocked (the clock is the writer's; the retry timer is real).
  clock += 60_000
  await until(t, 'the writer notices the stalled write', () => !audit.isWritable(), 8000)
  t.equal(audit.isWritable(), false, 'writes that have not returned for a minute: the trail cannot be written')
  t.equal(audit.lastWriteFailure()?.code, 'ETIMEDOUT', '/readyz says why: writes fail: ETIMEDOUT')
  t.ok(logged.some((l) => l.level === 'error' && /audit log cannot be written/.test(l.message)), 'and the log says so')

  // The reader reads again: the blocked write returns, the rest follows, requests are served again.
  pipe.drain()
  await until(t, 'the writer recovers', () => { pipe.drain(); return audit.isWritable() })
  t.equal(audit.isWritable(), true, 'writable again once writes return')
  t.ok(logged.some((l) => /audit log writes work again/.test(l.message)), 'the recovery is logged')
  await drainWhile(pipe, audit.close(2000))
  t.notOk(logged.some((l) => / could not be written$/.test(l.message)), 'nothing was lost')
})

t.test('records beyond the bound are never dropped while the gateway still serves: reaching it makes the trail unwritable', async (t) => {
  const pipe = stuckPipe(t)
  const { logged, log } = collectingLog()
  const audit = AuditFile.open(pipe.path, log)
  // 17 MiB of records while the pipe is stuck: more than the 16 MiB the writer holds.
  let firstDropWritable: boolean | undefined
  for (let n = 0; n < 17 * 1024; n++) {
    audit.write(record(n, 1024))
    if (firstDropWritable === undefined && logged.some((l) => /audit records dropped/.test(l.message))) firstDropWritable = audit.isWritable()
  }
  t.equal(firstDropWritable, false, 'once a record had to be dropped, no further request is admitted')
  t.equal(audit.lastWriteFailure()?.code, 'ENOBUFS', '/readyz says why')
  // Let the pipe go so the blocked write returns and close() can finish.
  await drainWhile(pipe, audit.close(500))
})

t.test('records that merely wait for the timer are no stall, however far the clock moves meanwhile', async (t) => {
  // A few records wait for the next flush (a write carries a batch). A test clock moved forward
  // meanwhile (session and token expiry tests do), or a wall clock stepped by NTP, is no hung
  // write: failing the trail for it answered MCP requests 503 until the timer's write returned.
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-wait-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const { logged, log } = collectingLog()
  let clock = 1_000_000
  const audit = AuditFile.open(join(dir, 'audit.jsonl'), log, () => clock)
  let wasUnwritable = false
  for (let round = 0; round < 3; round++) {
    audit.write(record(round, 200))
    clock += 60_000
    // Past the next tick of the flush timer (1 s): it must write the record, not declare a stall.
    for (const started = Date.now(); Date.now() - started < 1300; await sleep(5)) wasUnwritable ||= !audit.isWritable()
  }
  t.equal(wasUnwritable, false, 'the trail stayed writable')
  t.notOk(logged.some((l) => l.level === 'error'), 'nothing was reported as failing')
  await audit.close(2000)
})
