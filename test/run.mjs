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
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { dirname, join } from 'node:path'

const MIN_JOBS = 2
const MAX_JOBS = 16

const manifest = createRequire(import.meta.url).resolve('tap/package.json')
const bin = join(dirname(manifest), JSON.parse(readFileSync(manifest, 'utf8')).bin.tap)
const jobs = Math.max(MIN_JOBS, Math.min(MAX_JOBS, availableParallelism()))
// A --jobs given to npm test comes later and wins.
const run = spawnSync(process.execPath, [bin, `--jobs=${jobs}`, ...process.argv.slice(2)], { stdio: 'inherit' })
if (run.error !== undefined) throw run.error
process.exitCode = run.status ?? 1
