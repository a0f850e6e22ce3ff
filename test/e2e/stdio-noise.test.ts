// A stdio server that floods stdout with non-JSON lines (and stderr with its own log) does not
// flood the gateway's log: the first few lines, then one summary line per minute with a count.
// A real child (sh + yes | head) writes the noise before it starts the real MCP fixture; the
// gateway's clock is injected, so "a minute later" needs no waiting.
import t from 'tap'
import { connectClient, eventually, startGateway, STDIO_FIXTURE, textOf } from '../helpers.js'
import { STDERR_LINES_PER_WINDOW, STDOUT_NOISE_LINES_PER_WINDOW } from '../../src/upstreams/stdio/child-process.js'

const STDOUT_NOISE_BYTES = 8 << 20
const STDERR_NOISE_BYTES = 1 << 20
const NOISE_LINE = 'noise: not JSON-RPC at all'
const ERR_LINE = 'stderr chatter'

t.test('8 MB of stdout noise and 1 MB of stderr: a bounded number of log lines, then a summary with the count', async (t) => {
  let clock = 1_000_000
  const script = `yes '${NOISE_LINE}' | head -c ${STDOUT_NOISE_BYTES}; yes '${ERR_LINE}' | head -c ${STDERR_NOISE_BYTES} >&2; exec "$0" "$@"`
  const gw = await startGateway(t, {
    servers: [{ name: 'noisy', transport: 'stdio', command: 'sh', args: ['-c', script, process.execPath, STDIO_FIXTURE, '--noisy'] }],
  }, {}, { now: () => clock })
  const rssBefore = process.memoryUsage().rss
  const { client } = await connectClient(t, gw.mcpUrl('noisy'))
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'through the noise' } })), 'through the noise', 'the server works')
  const noiseLines = Math.floor(STDOUT_NOISE_BYTES / (NOISE_LINE.length + 1))
  const errLines = Math.floor(STDERR_NOISE_BYTES / (ERR_LINE.length + 1))
  const count = (phrase: string): number => gw.logs.lines.filter((line) => line.includes(phrase)).length
  // stderr is its own pipe: let the gateway drain it.
  await eventually(() => count('stdio server stderr') >= STDERR_LINES_PER_WINDOW, 5000)

  t.equal(count('non-JSON-RPC line to stdout; skipped'), STDOUT_NOISE_LINES_PER_WINDOW, `the first ${STDOUT_NOISE_LINES_PER_WINDOW} noise lines are logged, not ${noiseLines}`)
  t.equal(count('stdio server stderr'), STDERR_LINES_PER_WINDOW, `the first ${STDERR_LINES_PER_WINDOW} stderr lines are logged, not ${errLines}`)
  t.ok(gw.logs.lines.length < 300, `the whole log stays small (${gw.logs.lines.length} lines)`)
  t.comment(`gateway+test process RSS grew by ${Math.round((process.memoryUsage().rss - rssBefore) / 1048576)} MB while ${noiseLines} noise lines went by`)

  // A minute later (the injected clock), the next noise line (--noisy prints one per request)
  // closes the window: one summary line with the count of lines not logged.
  clock += 61_000
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'later' } })), 'later')
  t.ok(await eventually(() => count('more non-JSON-RPC lines to stdout') === 1), 'one summary line for stdout')
  const summary = JSON.parse(gw.logs.lines.find((line) => line.includes('more non-JSON-RPC lines to stdout')) ?? '{}') as { skipped?: number, server?: string }
  t.equal(summary.server, 'noisy')
  // Every noise line, the banner, and the --noisy line before each request, less the ones logged.
  t.ok((summary.skipped ?? 0) >= noiseLines - STDOUT_NOISE_LINES_PER_WINDOW, `the count covers every skipped line (${summary.skipped ?? 0})`)
  t.equal(count('non-JSON-RPC line to stdout; skipped'), STDOUT_NOISE_LINES_PER_WINDOW + 1, 'the new window logs its first line again')

  // The stderr count is reported when the child exits, even without a further line.
  await gw.app.close()
  const errSummary = JSON.parse(gw.logs.lines.find((line) => line.includes('more stderr lines; not logged')) ?? '{}') as { skipped?: number }
  t.equal(errSummary.skipped, errLines - STDERR_LINES_PER_WINDOW, 'the stderr lines not logged are counted exactly')
})
