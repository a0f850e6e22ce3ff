// The suite's own plumbing (test/child-processes.ts): children that do not run Portcullis start
// without tap's coverage hook, children that do keep it. Real spawns from this tap process.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { withoutHook } from '../child-processes.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const HOOK = '--import=file:///x/node_modules/@tapjs/processinfo/dist/esm/import.mjs'
const REPORT = 'console.log(JSON.stringify({ options: process.env.NODE_OPTIONS ?? null, tap: Object.keys(process.env).filter((n) => n.startsWith("_TAPJS_PROCESSINFO_")).length }))'

function childSees (extraArgs: string[], env: NodeJS.ProcessEnv): { options: string | null, tap: number } {
  const run = spawnSync(process.execPath, ['-e', REPORT, ...extraArgs], { env, encoding: 'utf8' })
  return JSON.parse(run.stdout) as { options: string | null, tap: number }
}

t.test('withoutHook drops processinfo\'s --import in every form and keeps the rest', async (t) => {
  t.equal(withoutHook(`"${HOOK}"`), '')
  t.equal(withoutHook(HOOK), '')
  t.equal(withoutHook(`--max-old-space-size=512 "${HOOK}" --trace-warnings`), '--max-old-space-size=512 --trace-warnings')
  t.equal(withoutHook('--import "file:///x/node_modules/@tapjs/processinfo/dist/esm/import.mjs" --inspect'), '--inspect')
  t.equal(withoutHook('--import=tsx --enable-source-maps'), '--import=tsx --enable-source-maps', 'other loaders stay')
})

t.test('under tap, a child that does not run Portcullis starts without the hook', async (t) => {
  t.match(process.env.NODE_OPTIONS, /@tapjs[\\/]processinfo/, 'precondition: tap gives this process the hook to hand on')
  // processinfo writes every option back in double quotes, which Node's NODE_OPTIONS parser takes
  // off; and it hands a child with no NODE_OPTIONS this process's own (which, outside a bare
  // `npm test`, may hold options of whoever runs the suite: those stay).
  const unquoted = (seen: { options: string | null, tap: number }) => ({ ...seen, options: seen.options?.replaceAll('"', '') ?? null })
  const handedOn = withoutHook(process.env.NODE_OPTIONS ?? '').replaceAll('"', '')
  const plain = childSees([], { PATH: process.env.PATH })
  t.same(unquoted(plain), { options: handedOn === '' ? null : handedOn, tap: 0 }, 'no hook in NODE_OPTIONS, no processinfo variables')
  t.notMatch(plain.options ?? '', /processinfo/)
  const own = childSees([], { PATH: process.env.PATH, NODE_OPTIONS: '--max-old-space-size=256' })
  t.same(unquoted(own), { options: '--max-old-space-size=256', tap: 0 }, 'options of its own are kept')
})

t.test('a child that runs this checkout\'s dist/ or src/ keeps the hook, so coverage follows the gateway', async (t) => {
  for (const dir of ['dist', 'src']) {
    const seen = childSees([`${ROOT}${dir}/main.js`], { PATH: process.env.PATH })
    t.match(seen.options, /@tapjs[\\/]processinfo/, `${dir}/: hook kept`)
    t.ok(seen.tap > 0, `${dir}/: processinfo variables kept`)
  }
})
