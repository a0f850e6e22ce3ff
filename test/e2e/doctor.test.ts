// `portcullis doctor` (dist/main.js) as a real process against real gateways: a healthy one, and
// each broken case — a publicUrl clients do not use, a real nginx that buffers event streams, a
// dead HTTP upstream, a stdio command removed after start. Nothing faked.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { freePort, REDIS_URL, redisAvailable, scratchRedis, startGateway, startUpstream, stdioServer, STDIO_FIXTURE } from '../helpers.js'
import { nginxBinary, startNginx } from '../nginx.js'

const MAIN = new URL('../../dist/main.js', import.meta.url).pathname

interface Doctor { code: number, stdout: string, stderr: string }

/** Runs the doctor without blocking this process (the upstream fixtures live here). */
function doctor (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Doctor> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'doctor', ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

/** The gateway (in this process) and the same config in a file for the doctor. */
async function gatewayWithConfigFile (t: Test, object: Record<string, unknown>): Promise<{ configPath: string, baseUrl: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-doctor-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const port = (object.listen as { port: number } | undefined)?.port ?? await freePort()
  const full = { publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data'), store: { memory: true }, ...object }
  const gw = await startGateway(t, full)
  const configPath = join(dir, 'gw.yaml')
  writeFileSync(configPath, stringify(full))
  return { configPath, baseUrl: gw.baseUrl }
}

const line = (out: string, name: string): string => out.split('\n').find((l) => new RegExp(`^  (ok  |FAIL)  ${name} `).test(l)) ?? `(no line for ${name})`

const users = async (): Promise<Record<string, unknown>> => ({ users: [{ username: 'alice', passwordHash: await hashPassword('a password for the doctor') }] })

t.test('a healthy gateway: every check passes, exit 0', async (t) => {
  const upstream = await startUpstream(t)
  const hasRedis = await redisAvailable(t)
  const scratch = hasRedis ? await scratchRedis(t) : undefined
  const { configPath } = await gatewayWithConfigFile(t, {
    auth: await users(),
    ...(scratch === undefined ? {} : { store: { redis: REDIS_URL, prefix: scratch.prefix } }),
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }, stdioServer('local')],
  })
  const clients = async (): Promise<string[]> => scratch === undefined ? [] : await scratch.redis.keys(`${scratch.prefix}oidc:*Client*`)
  const before = await clients()
  const r = await doctor(['--config', configPath])
  t.equal(r.code, 0, r.stdout + r.stderr)
  if (scratch !== undefined) t.same(await clients(), before, 'the throwaway client and its registration access token are gone from the store')
  t.notMatch(r.stdout, /^ {2}FAIL/m)
  t.match(line(r.stdout, 'publicUrl'), /ok .*plain http on loopback/)
  t.match(line(r.stdout, 'what reaches the gateway'), /ok .*no X-Forwarded-\* headers/)
  t.match(line(r.stdout, '401 challenge'), /ok .*resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/fx\/mcp"/)
  t.match(line(r.stdout, 'RFC 9728 resource metadata'), /ok /)
  t.match(line(r.stdout, 'RFC 8414 server metadata'), /ok .*agrees/)
  t.match(line(r.stdout, 'client registration'), /ok .*registered a throwaway client and deleted it again/)
  t.match(line(r.stdout, 'event streams unbuffered'), /ok .*arrived (4\d\d|5\d\d) ms apart/)
  t.match(line(r.stdout, 'upstream fx'), /ok .*answered initialize/)
  t.match(line(r.stdout, 'upstream local'), /ok .*started and answered initialize in \d+ ms \(stdio-fixture/)
  t.match(line(r.stdout, 'clock skew'), /ok .*gateway [+-]?\d s, fx [+-]?\d s/)
  if (scratch !== undefined) t.match(line(r.stdout, 'redis'), /ok .*answered PING/)
  t.match(r.stdout, /checks: all ok\n$/)
})

t.test('a publicUrl that is not the origin clients use: named, with the fix, exit 1', async (t) => {
  const port = await freePort()
  const upstream = await startUpstream(t)
  // The gateway believes it is http://localhost:<port>; clients come to http://127.0.0.1:<port>.
  const { configPath } = await gatewayWithConfigFile(t, { publicUrl: `http://localhost:${port}`, listen: { host: '127.0.0.1', port }, auth: await users(), servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const r = await doctor(['--config', configPath, '--url', `http://127.0.0.1:${port}/`])
  t.equal(r.code, 1)
  t.match(line(r.stdout, 'publicUrl'), `FAIL  publicUrl`)
  t.match(r.stdout, `but publicUrl is http://localhost:${port}`)
  t.match(r.stdout, `fix: set publicUrl: http://127.0.0.1:${port} (exactly the origin clients use`)
  t.match(line(r.stdout, '401 challenge'), new RegExp(`FAIL .*resource_metadata is http://localhost:${port}/`))
  t.match(r.stdout, /checks: [2-9] failed\n$/)
  t.equal((await doctor(['--config', configPath, '--url', 'ftp://x'])).code, 2, 'a --url that is not an http(s) origin is a usage error')
})

const nginx = nginxBinary(t)
if (nginx !== undefined) {
  t.test('nginx in front buffering event streams: the streamed probe catches it; the rest of the path is fine', async (t) => {
    const tlsPort = await freePort()
    const port = await freePort()
    const upstream = await startUpstream(t)
    const { configPath } = await gatewayWithConfigFile(t, { publicUrl: `https://127.0.0.1:${tlsPort}`, listen: { host: '127.0.0.1', port }, trustProxy: ['127.0.0.1'], auth: await users(), servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
    // A misconfiguration seen in the wild: buffering on, and the gateway's X-Accel-Buffering: no ignored.
    const front = await startNginx(t, nginx, {
      upstreamPorts: [port],
      tlsPort,
      extraLocations: '    location = /.well-known/portcullis/sse-probe {\n        proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;\n        proxy_pass http://portcullis;\n    }',
    })
    const dir = t.testdir({ 'ca.pem': front.certificate })
    const r = await doctor(['--config', configPath], { NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') })
    t.equal(r.code, 1, r.stdout + r.stderr)
    t.match(line(r.stdout, 'event streams unbuffered'), /FAIL .*two events sent 500 ms apart arrived \d{1,3} ms apart: something in front buffers event streams/)
    t.match(r.stdout, /fix: turn response buffering off for the gateway \(nginx: proxy_buffering off/)
    t.match(line(r.stdout, 'publicUrl'), /ok .*https:\/\/127\.0\.0\.1/)
    // nginx's $host carries no port: harmless, the gateway builds every URL from publicUrl.
    t.match(line(r.stdout, 'what reaches the gateway'), /ok .*requests arrive as https:\/\/127\.0\.0\.1 \(X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-For\)/)
    t.match(line(r.stdout, 'client registration'), /ok .*deleted it again/)
    t.match(r.stdout, /checks: 1 failed\n$/)
  })
}

if (nginx !== undefined) {
  t.test('nginx in front, but trustProxy does not name it: the forwarded scheme is lost, and the doctor says to set trustProxy', async (t) => {
    const tlsPort = await freePort()
    const port = await freePort()
    const upstream = await startUpstream(t)
    const { configPath } = await gatewayWithConfigFile(t, { publicUrl: `https://127.0.0.1:${tlsPort}`, listen: { host: '127.0.0.1', port }, auth: await users(), servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
    const front = await startNginx(t, nginx, { upstreamPorts: [port], tlsPort })
    const dir = t.testdir({ 'ca.pem': front.certificate })
    const r = await doctor(['--config', configPath], { NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') })
    t.equal(r.code, 1, r.stdout + r.stderr)
    t.match(line(r.stdout, 'what reaches the gateway'), /FAIL .*the gateway sees requests as http:\/\/127\.0\.0\.1, not https:\/\/127\.0\.0\.1:\d+ \(X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-For arrived\)/)
    t.match(r.stdout, 'fix: set trustProxy to the proxy\'s address as the gateway sees it')
    t.match(line(r.stdout, 'event streams unbuffered'), /ok /, 'the shipped nginx config does not buffer event streams')
    t.match(r.stdout, /checks: 1 failed\n$/)
  })
}

t.test('a dead HTTP upstream and a stdio command removed after start: each named, with the fix', async (t) => {
  const dir = t.testdir({})
  const script = join(dir, 'my-mcp-server')
  writeFileSync(script, `#!/bin/sh\nexec "${process.execPath}" "${STDIO_FIXTURE}"\n`)
  chmodSync(script, 0o755)
  const deadPort = await freePort()
  const { configPath } = await gatewayWithConfigFile(t, {
    auth: { enabled: false },
    servers: [
      { name: 'gone', transport: 'http', url: `http://127.0.0.1:${deadPort}/mcp` },
      { name: 'removed', transport: 'stdio', command: script },
      stdioServer('fine'),
    ],
  })
  rmSync(script)
  const r = await doctor(['--config', configPath])
  t.equal(r.code, 1)
  t.match(line(r.stdout, 'upstream gone'), new RegExp(`FAIL .*http://127\\.0\\.0\\.1:${deadPort}/mcp: ECONNREFUSED`))
  t.match(r.stdout, 'fix: start the server, or fix servers[].url of "gone"')
  t.match(line(r.stdout, 'upstream removed'), /FAIL .*command: .*my-mcp-server/)
  t.match(r.stdout, /fix: install the program, put its directory on the gateway's PATH/)
  t.match(line(r.stdout, 'upstream fine'), /ok .*answered initialize/)
  t.match(line(r.stdout, 'authorization'), /ok .*auth\.enabled: false/)
  t.match(r.stdout, /checks: 2 failed\n$/)
})
