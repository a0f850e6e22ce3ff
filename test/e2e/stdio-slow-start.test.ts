// A stdio server whose first process is slow to answer initialize (a first `npx -y` download):
// "still starting" in the log with the time waited, and `starting` in /readyz until it answers.
// A real child process that sleeps before reading stdin; the log interval is shortened
// (stdioStartingLogIntervalMs) because fake timers cannot reach across processes.
import t from 'tap'
import { eventually, INIT_BODY, postJson, startGateway, stdioServer } from '../helpers.js'

interface ServerHealth { name: string, isReachable: boolean, status?: string, startingForMs?: number }
const servers = async (baseUrl: string): Promise<ServerHealth[]> => ((await (await fetch(`${baseUrl}/readyz`)).json()) as { servers: ServerHealth[] }).servers

const SLOW_START_MS = 1_500
const LOG_INTERVAL_MS = 250

t.test('a slow first start logs "still starting" with the elapsed time and /readyz shows it starting', async (t) => {
  const gw = await startGateway(t, {
    servers: [stdioServer('slow', { flags: ['--slow-start', String(SLOW_START_MS)] }), stdioServer('quick')],
  }, {}, { stdioStartingLogIntervalMs: LOG_INTERVAL_MS })
  const before = await servers(gw.baseUrl)
  t.equal(before.find((s) => s.name === 'slow')?.status, undefined, 'nothing is starting before the first request')

  const answer = postJson(gw.mcpUrl('slow'), INIT_BODY)
  t.ok(await eventually(async () => (await servers(gw.baseUrl)).find((s) => s.name === 'slow')?.status === 'starting', SLOW_START_MS), '/readyz shows the server starting')
  const during = await servers(gw.baseUrl)
  t.match(during.find((s) => s.name === 'slow'), { status: 'starting', isReachable: true, startingForMs: Number })
  t.equal(during.find((s) => s.name === 'quick')?.status, undefined, 'the other server is not starting')

  const res = await answer
  t.equal(res.status, 200, 'the slow start still completes')
  const lines = gw.logs.lines.map((l) => JSON.parse(l) as { msg: string, server?: string, elapsedMs?: number, pid?: number })
  const waiting = lines.filter((l) => l.msg === 'stdio server still starting')
  t.ok(waiting.length >= 3, `logged repeatedly while waiting (${waiting.length} lines)`)
  t.ok(waiting.every((l) => l.server === 'slow' && typeof l.pid === 'number'), 'bound to the server and its process')
  const elapsed = waiting.map((l) => l.elapsedMs ?? -1)
  t.ok(elapsed.every((ms, i) => ms >= LOG_INTERVAL_MS * (i + 1) - 50), `the elapsed time grows with each line (${elapsed.join(', ')})`)

  const linesAfter = waiting.length
  t.equal((await servers(gw.baseUrl)).find((s) => s.name === 'slow')?.status, undefined, 'no longer starting once it answered')
  await new Promise((resolve) => setTimeout(resolve, LOG_INTERVAL_MS * 3))
  t.equal(gw.logs.lines.filter((l) => l.includes('still starting')).length, linesAfter, 'and no more "still starting" lines')
})
