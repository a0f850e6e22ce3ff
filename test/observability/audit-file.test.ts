// The audit file writer on a real full disk: a tmpfs of 64 KiB mounted in a private mount
// namespace (it lives exactly as long as the probe process; see test/e2e/store-full.test.ts),
// with test/fixtures/audit-file-probe.mjs driving src/observability/audit-file.ts inside it.
// What the writer says is waiting (/readyz's pendingRecords, the shutdown's "N audit records
// could not be written") must be what is really missing from the file, and what it holds while
// the disk is full must stay within its bound.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { canMountTmpfs } from '../helpers.js'

const PROBE = fileURLToPath(new URL('../fixtures/audit-file-probe.mjs', import.meta.url))
/** src/observability/audit-file.ts's MAX_PENDING_CHARS. */
const MAX_PENDING_CHARS = 16 * 1024 * 1024

async function probe (t: Test, scenario: string): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-file-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { stdout } = await promisify(execFile)('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=64k,mode=0700 portcullis-test "$0" && exec "$@"',
    dir, process.execPath, '--import', 'tsx', PROBE, dir, scenario], { maxBuffer: 1024 * 1024 })
  return JSON.parse(stdout) as Record<string, unknown>
}

t.test('a write cut short by a full disk: the records it completed are not counted as waiting', async (t) => {
  if (!canMountTmpfs(t)) return
  const seen = await probe(t, 'short-write')
  t.equal(seen.code, 'ENOSPC', 'the disk filled up')
  const lines = seen.lines as number
  t.ok(lines > 8 && lines < 60, `a batch was cut short: ${lines} of 60 records are complete in the file (the first batch is 8)`)
  t.equal(seen.inOrder, true, 'the complete records are the first ones, in order, each once')
  t.equal(seen.pendingRecords, 60 - lines, 'waiting: exactly the records not complete in the file')
  t.equal(seen.unwritten, 60 - lines, 'the shutdown reports the same number as not written')
})

t.test('while nothing can be written, the records held stay within the bound, the batch in flight included', async (t) => {
  if (!canMountTmpfs(t)) return
  const seen = await probe(t, 'limit')
  t.equal(seen.code, 'ENOSPC')
  const held = seen.pendingRecords as number
  t.ok(held * 1024 <= MAX_PENDING_CHARS, `${held} records of 1 KiB held, at most ${MAX_PENDING_CHARS / 1024}`)
  t.ok(held >= MAX_PENDING_CHARS / 1024 - 16, 'and up to the bound: nothing dropped early')
  t.equal(seen.dropped, 1, 'the drop is logged once')
  t.equal(seen.unwritten, 20 * 1024, 'every record is accounted for at shutdown: written, held or dropped (none could be written)')
})
