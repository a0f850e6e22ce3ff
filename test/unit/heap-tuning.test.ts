import t from 'tap'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const PROBE = fileURLToPath(new URL('../fixtures/pretenure-probe.mjs', import.meta.url))
const TUNING = fileURLToPath(new URL('../../src/heap-tuning.ts', import.meta.url))

/** How many of 1000 fresh objects V8 put in the old generation, in a process of their own. */
async function probe (...args: string[]): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', PROBE, ...args])
  return (JSON.parse(stdout) as { oldOf1000: number }).oldOf1000
}

t.test('with heap-tuning imported, a site whose earlier objects all lived long still makes young objects', async (t) => {
  t.equal(await probe(TUNING), 0, 'none of 1000 fresh objects went to the old generation (pretenuring off)')
  // The control: without the module, the same probe sees V8 pretenure. Node 20's V8 does every
  // time; the image's Node 26 in most runs, so a few tries.
  const untuned: number[] = []
  while (untuned.length < 4 && (untuned.at(-1) ?? 0) === 0) untuned.push(await probe())
  if (untuned.at(-1) === 1000) t.pass(`without it, 1000 of 1000 went to the old generation (try ${untuned.length})`)
  else t.comment(`without it, this V8 (${process.version}) did not pretenure in ${untuned.length} tries: ${untuned.join(', ')}`)
})
