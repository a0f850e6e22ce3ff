#!/usr/bin/env node
// `npm test`: tap with one test file per CPU, at least 2 and at most 16 at once; arguments go
// to tap (`npm test -- test/e2e/oauth-flow.test.ts --disable-coverage`).
//
// tap's own default keeps one CPU free, which on a 2-core machine is one file at a time: on the
// CI rehearsal machine the suite took 19 min 18 s so (docs/benchmarks.md, 2026-11-30 21:15). The
// files do not depend on running at most two at a time (the whole suite passed with --jobs=4
// on 2 cores); the ceiling spares a large runner's memory (each end-to-end file starts
// gateways, stdio servers, and some a browser). Other `npx tap` runs take `jobs: 2` from
// package.json. A script rather than `$(…)` in package.json: npm runs scripts with cmd.exe on Windows.
//
// tap's plugins first. `npm ci` installs tap built with its default plugins, and package.json
// removes two: @tapjs/typescript (ts-node; tsx loads the TypeScript here) and @tapjs/mock (no
// test mocks modules). Both add an import hook to every test process. tap rebuilds itself when
// its plugins differ from the configuration, but only after it has chosen the test processes'
// import hooks: the first run after an install would still start every test with ts-node and
// tsx both compiling each file (docs/benchmarks.md, 2026-12-01). So the rebuild happens here,
// before tap starts, and only when needed (it takes about 10 s).
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { dirname, join } from 'node:path'

const MIN_JOBS = 2
const MAX_JOBS = 16

const manifest = createRequire(import.meta.url).resolve('tap/package.json')
const bin = join(dirname(manifest), JSON.parse(readFileSync(manifest, 'utf8')).bin.tap)

/** Starts tap's bin with `args`; its exit status. */
function tap (args) {
  const run = spawnSync(process.execPath, [bin, ...args], { stdio: 'inherit' })
  if (run.error !== undefined) throw run.error
  return run.status ?? 1
}

/** Whether tap is built with the plugins package.json asks for (an unreadable build counts as not). */
async function isTapBuiltAsConfigured () {
  const fromTap = createRequire(manifest)
  const { TapConfig } = fromTap('@tapjs/config')
  const wanted = (await TapConfig.load()).pluginSignature
  const test = dirname(fromTap.resolve('@tapjs/test/package.json'))
  let built
  try {
    built = readFileSync(join(test, 'test-built', 'dist', 'esm', 'index.js'), 'utf8')
  } catch {
    return false
  }
  return /^export const signature = `([^`]*)`/m.exec(built)?.[1] === wanted
}

if (!(await isTapBuiltAsConfigured())) {
  const status = tap(['build'])
  if (status !== 0) {
    console.error(`tap build failed (exit ${status})`)
    process.exit(status)
  }
}

const jobs = Math.max(MIN_JOBS, Math.min(MAX_JOBS, availableParallelism()))
// A --jobs given to npm test comes later and wins.
process.exitCode = tap([`--jobs=${jobs}`, ...process.argv.slice(2)])
