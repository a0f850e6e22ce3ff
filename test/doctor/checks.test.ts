// The doctor's checks one by one, on the cases the CLI test does not reach: clocks that
// disagree (a real HTTP server sending a skewed Date), a plain-http publicUrl, an upstream
// refusing the gateway's credentials, a stdio server that never answers or exits.
import t from 'tap'
import { createLogger } from '../../src/observability/logger.js'
import { createDoctorFetch } from '../../src/doctor/check.js'
import { checkPublicUrl } from '../../src/doctor/gateway-checks.js'
import { checkClocks, checkHttpUpstream, checkStdioUpstream } from '../../src/doctor/upstream-checks.js'
import { makeConfig, startRawServer, stdioServer } from '../helpers.js'
import type { HttpServerConfig, StdioServerConfig } from '../../src/config/schema.js'

const SKEW_MS = 90_000

t.test('clock skew: a Date header more than 5 s off fails naming who; within passes', async (t) => {
  const now = Date.parse('2026-11-30T03:00:00Z')
  const ok = checkClocks([{ who: 'gateway', date: new Date(now + 2_000).toUTCString() }], now)
  t.match(ok, { ok: true, detail: /gateway \+2 s/ })
  const off = checkClocks([{ who: 'gateway', date: new Date(now).toUTCString() }, { who: 'search', date: new Date(now - SKEW_MS).toUTCString() }], now)
  t.match(off, { ok: false, detail: /off by more than 5 s against this machine: search -90 s/, fix: /NTP/ })
  t.notMatch(off.detail, /gateway/, 'only the one that is off is named')
  t.match(checkClocks([{ who: 'x', date: undefined }], now), { ok: true, detail: 'no Date header to compare with' })
})

t.test('an upstream whose clock is off, seen through its real Date header', async (t) => {
  const upstream = await startRawServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', date: new Date(Date.now() - SKEW_MS).toUTCString() })
    res.end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { protocolVersion: '2025-11-25', capabilities: {}, serverInfo: { name: 'skewed', version: '1' } } }))
  })
  const config = makeConfig({ servers: [{ name: 'skewed', transport: 'http', url: upstream.url }] })
  const server = config.servers[0] as HttpServerConfig
  const checked = await checkHttpUpstream(server, createDoctorFetch([upstream.url]))
  t.match(checked.result, { ok: true, detail: /answered initialize \(skewed\)/ })
  t.match(checkClocks([{ who: 'skewed', date: checked.date }], Date.now()), { ok: false, detail: /skewed -9\d s/ })
})

t.test('an upstream refusing the gateway\'s credentials is named with the headers to check', async (t) => {
  const upstream = await startRawServer(t, (_req, res) => { res.writeHead(401).end() })
  const config = makeConfig({ servers: [{ name: 'locked', transport: 'http', url: upstream.url, headers: { Authorization: 'Bearer not-the-right-one' } }] })
  const checked = await checkHttpUpstream(config.servers[0] as HttpServerConfig, createDoctorFetch([upstream.url]))
  t.match(checked.result, { ok: false, detail: /answered 401 to the gateway's credentials/, fix: /servers\[\]\.headers of "locked"/ })
  t.notMatch(JSON.stringify(checked.result), 'not-the-right-one', 'the credential is not echoed')
})

t.test('a 401 from an upstream that wants a signed identity per caller is expected, not a failure', async (t) => {
  const upstream = await startRawServer(t, (_req, res) => { res.writeHead(401).end() })
  const config = makeConfig({ servers: [{ name: 'signed', transport: 'http', url: upstream.url, identity: { header: 'X-Portcullis-Identity' } }] })
  const checked = await checkHttpUpstream(config.servers[0] as HttpServerConfig, createDoctorFetch([upstream.url]))
  t.match(checked.result, { ok: true, detail: /reachable; it wants a per-caller identity token \(identity\)/ })
})

t.test('publicUrl: plain http on a non-loopback host fails; clients elsewhere fail', async (t) => {
  const insecure = makeConfig({ publicUrl: 'http://gw.example.com', allowInsecurePublicUrl: true, servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:1/mcp' }] })
  t.match(checkPublicUrl(insecure, 'http://gw.example.com'), { ok: false, detail: /plain http on a non-loopback host/, fix: /https/ })
  const secure = makeConfig({ publicUrl: 'https://gw.example.com', servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:1/mcp' }] })
  t.match(checkPublicUrl(secure, 'https://gw.example.com'), { ok: true })
  t.match(checkPublicUrl(secure, 'https://other.example.com'), { ok: false, fix: 'set publicUrl: https://other.example.com (exactly the origin clients use: scheme, host, port)' })
})

t.test('stdio: a server that never answers initialize, and one that exits on it, each with its fix', async (t) => {
  const log = createLogger('silent')
  const config = makeConfig({ servers: [stdioServer('mute', { flags: ['--never-answers'], startupTimeoutMs: 300 }), stdioServer('crashy', { flags: ['--crash-on-init'] })] })
  const [mute, crashy] = config.servers as StdioServerConfig[]
  if (mute === undefined || crashy === undefined) throw new Error('two servers expected')
  t.match(await checkStdioUpstream(mute, log), { ok: false, detail: /no initialize answer within startupTimeoutMs \(300 ms\)/, fix: /raise servers\[\]\.startupTimeoutMs/ })
  t.match(await checkStdioUpstream(crashy, log), { ok: false, detail: /it exited \(code 3\)/, fix: /by hand and read its stderr/ })
})
