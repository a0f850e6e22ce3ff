// An idle gateway sleeps: `portcullis start` as a real process (dist/main.js) with nothing to do
// wakes its main thread only for its own timers. Counted as the main thread's voluntary context
// switches (/proc/<pid>/task/<pid>/status): each time it blocks in the event loop and is woken is
// one. A count of wakeups, not a time: a slow or busy machine does not change it.
//
// Before EVENT_LOOP_SAMPLE_MS, prom-client's default event-loop lag monitor woke the process
// every 10 ms: about 100 switches a second, 0.5% of a core spent doing nothing
// (docs/benchmarks.md, 2026-12-02). Now its samples are 100 ms apart, and the gateway's other
// timers (the audit file's flush, Node's check of slow requests) tick once a second.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { cliConfigFile, startCliGateway, startUpstream } from '../helpers.js'

const SETTLE_MS = 2000
const WINDOW_MS = 4000
/** The event-loop sampler's share (10 a second) and a few more timers, with room to spare; 100 a second fails. */
const MAX_WAKEUPS_PER_S = 40

function voluntarySwitches (pid: number): number {
  const status = readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8')
  const match = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status)
  if (match === null) throw new Error(`no voluntary_ctxt_switches in /proc/${pid}/task/${pid}/status`)
  return Number(match[1])
}

t.test('an idle gateway wakes a few times a second, not a hundred', async (t) => {
  const upstream = await startUpstream(t)
  // Auth on (the usual deployment: the authorization server, its stores and pollers loaded), metrics on.
  const { path, port } = await cliConfigFile(t.testdir({}), { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const gw = await startCliGateway(t, path)
  const pid = gw.child.pid
  if (pid === undefined) throw new Error('the gateway has no pid')
  // One scrape, so the metrics are in use as in production.
  const scrape = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.equal(scrape.status, 200, '/metrics answers')
  t.match(await scrape.text(), /^portcullis_nodejs_eventloop_lag_p99_seconds /m, 'the event-loop lag is still measured')
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))
  const before = voluntarySwitches(pid)
  await new Promise((resolve) => setTimeout(resolve, WINDOW_MS))
  const perSecond = (voluntarySwitches(pid) - before) / (WINDOW_MS / 1000)
  t.ok(perSecond <= MAX_WAKEUPS_PER_S, `${perSecond.toFixed(1)} wakeups a second (at most ${MAX_WAKEUPS_PER_S})`)
})
