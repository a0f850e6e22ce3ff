// `portcullis start` (dist/main.js) as a real process: log.format and the start banner.
// Its stdout is a pipe here, so "unset" means JSON; a terminal's default (pretty) is decided by
// resolveLogFormat, tested in logger.test.ts (no pseudo-terminal in this harness).
import t, { type Test } from 'tap'
import { cliConfigFile, eventually, startCliGateway, startUpstream } from '../helpers.js'

async function configFile (t: Test, log: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
  const upstream = await startUpstream(t)
  const { path } = await cliConfigFile(t.testdir({}), {
    log,
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }, { name: 'second-server', transport: 'http', url: upstream.url }],
    ...extra,
  })
  return path
}

t.test('log.format: pretty prints readable lines and tells where to point clients and how to sign in', async (t) => {
  const path = await configFile(t, { format: 'pretty' })
  const gw = await startCliGateway(t, path)
  // The banner follows the ready line.
  t.ok(await eventually(() => gw.output().includes('Your account page')), 'the banner came')
  const out = gw.output()
  const publicUrl = /publicUrl: "(http:\/\/127\.0\.0\.1:\d+)"/.exec(out)?.[1] ?? 'missing'
  t.match(out, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: portcullis ready$/m)
  t.notMatch(out, /^\{"level"/m, 'no JSON lines')
  t.match(out, 'Point MCP clients (Streamable HTTP transport) at:')
  t.match(out, `    fx             ${publicUrl}/fx/mcp\n    second-server  ${publicUrl}/second-server/mcp\n`, 'every server\'s MCP URL, aligned')
  t.match(out, new RegExp(`Sign in with the first-run account "admin" \\(password in .*/data/initial-admin-password\\)`), 'how to sign in')
  t.match(out, `Your account page (personal API keys): ${publicUrl}/account`)
  t.notMatch(out, /password: \S{12,}/, 'the password itself is not printed when stdout is not a terminal')
})

t.test('log.format unset with stdout not a terminal: JSON lines, no banner; the ready line has the URLs', async (t) => {
  const path = await configFile(t, {}, { auth: { enabled: false } })
  const gw = await startCliGateway(t, path)
  const lines = gw.output().split('\n').filter((l) => l.startsWith('{'))
  const ready = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'portcullis ready')
  t.ok(ready, 'a JSON ready line')
  t.match(ready?.servers, [/\/fx\/mcp$/, /\/second-server\/mcp$/])
  t.equal(ready?.account, undefined, 'no account page with authorization off')
  t.notMatch(gw.output(), 'Point MCP clients')
})

t.test('with authorization off the banner says so instead of how to sign in', async (t) => {
  const path = await configFile(t, { format: 'pretty' }, { auth: { enabled: false } })
  const gw = await startCliGateway(t, path)
  t.ok(await eventually(() => gw.output().includes('Authorization is OFF')), 'the banner came')
  t.match(gw.output(), 'Authorization is OFF (auth.enabled: false): no sign-in')
  t.notMatch(gw.output(), 'Sign in with')
})
