// The container image itself, built with podman from the unchanged Dockerfile
// (deploy/ci/build-image.sh) and run as an operator runs it: a mounted config, the /data
// volume, a read-only root filesystem, no capabilities. Not part of `npm test` (it needs
// podman, the built image and port 8080 to itself): CI runs it as its own step through
// `bash deploy/ci/image.sh`, inside a private network namespace. It fails, never skips, when
// podman or the image is missing.
//
// The container shares the test's network (--network host; the namespace is private to this
// run), so the gateway listens on 127.0.0.1:8080 exactly as its HEALTHCHECK expects, and the
// HTTP fixture upstream on the host is at 127.0.0.1:<port> for both.
import t from 'tap'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { canConnect, eventually, isProcessAlive, MCP_HEADERS, startUpstream, textOf } from '../helpers.js'
import { podman, podmanStatus } from './podman.js'

// The first start of a cold container and the OAuth flows take seconds each on these machines.
t.setTimeout(10 * 60_000)

const REPO = new URL('../../', import.meta.url).pathname
const IMAGE = process.env.PORTCULLIS_IMAGE ?? 'localhost/portcullis:ci'
/** The image's port: its HEALTHCHECK command asks 127.0.0.1:8080. */
const PORT = 8080
const BASE = `http://127.0.0.1:${PORT}`
const RUN_ID = randomBytes(4).toString('hex')
const VOLUME = `portcullis-ci-data-${RUN_ID}`
/** Where the stdio fixture and the node_modules it imports are mounted (read-only). */
const FIXTURE_ROOT = '/fixture'

interface ContainerProcess { pid: number, ppid: number, uid: number, state: string, comm: string, cmdline: string }

/** Every process in the container, read from its /proc by a `node` it runs itself. */
async function containerProcesses (name: string): Promise<ContainerProcess[]> {
  const script = `const fs = require('fs'); const out = []
for (const p of fs.readdirSync('/proc').filter((e) => /^\\d+$/.test(e))) {
  try {
    const stat = fs.readFileSync('/proc/' + p + '/stat', 'utf8'); const rest = stat.slice(stat.lastIndexOf(') ') + 2).split(' ')
    const uid = Number(/^Uid:\\s+(\\d+)/m.exec(fs.readFileSync('/proc/' + p + '/status', 'utf8'))[1])
    out.push({ pid: Number(p), ppid: Number(rest[1]), uid, state: rest[0], comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), cmdline: fs.readFileSync('/proc/' + p + '/cmdline', 'utf8').split('\\0').join(' ').trim() })
  } catch {}
}
process.stdout.write(JSON.stringify(out))`
  const all = JSON.parse(await podman('exec', name, 'node', '-e', script)) as ContainerProcess[]
  return all.filter((p) => !p.cmdline.includes("fs.readdirSync('/proc')"))
}

interface Container { name: string, child: ChildProcessWithoutNullStreams, stdout: () => string, exited: Promise<number | null> }

/** `podman run` in the foreground (its exit code is the container's), ready once /healthz answers. */
async function startContainer (t: { teardown: (fn: () => unknown) => void }, configDir: string): Promise<Container> {
  if (await canConnect(PORT)) throw new Error(`port ${PORT} is taken: run this file through deploy/ci/image.sh (a private network namespace)`)
  const name = `portcullis-ci-${RUN_ID}-${randomBytes(2).toString('hex')}`
  const args = [
    'run', '--pull=never', '--name', name, '--network', 'host',
    // As the Kubernetes manifests run it: read-only root, only /data writable, no capabilities.
    '--read-only', '--read-only-tmpfs=false', '--cap-drop', 'all', '--security-opt', 'no-new-privileges',
    '--volume', `${VOLUME}:/data`,
    '--volume', `${join(configDir, 'portcullis.yaml')}:/etc/portcullis/portcullis.yaml:ro`,
    '--volume', `${join(REPO, 'test/fixtures')}:${FIXTURE_ROOT}/test/fixtures:ro`,
    '--volume', `${realpathSync(join(REPO, 'node_modules'))}:${FIXTURE_ROOT}/node_modules:ro`,
    IMAGE,
  ]
  const child = spawn('podman', args, { stdio: 'pipe' })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    await podmanStatus('rm', '--force', '--time', '0', name)
    await exited
  })
  const isReady = await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`the container exited with ${child.exitCode}: ${out}\n${err}`)
    return fetch(`${BASE}/healthz`).then((r) => r.ok, () => false)
  }, 90_000)
  if (!isReady) throw new Error(`the container did not become healthy: ${out}\n${err}`)
  return { name, child, stdout: () => out, exited }
}

/** SIGTERM through podman, as `docker stop` / the kubelet send it; resolves with the exit code. */
async function terminate (container: Container): Promise<number | null> {
  await podman('kill', '--signal', 'TERM', container.name)
  return container.exited
}

const upstream = await startUpstream(t, { name: 'host-upstream' })
const configDir = mkdtempSync(join(tmpdir(), 'portcullis-image-'))
chmodSync(configDir, 0o755)
t.teardown(() => rmSync(configDir, { recursive: true, force: true }))
writeFileSync(join(configDir, 'portcullis.yaml'), stringify({
  publicUrl: BASE,
  listen: { host: '127.0.0.1', port: PORT },
  dataDir: '/data',
  store: { sqlite: '/data/portcullis.db' },
  audit: { destination: 'stdout' },
  servers: [
    { name: 'web', transport: 'http', url: upstream.url },
    // --grandchild: the fixture starts a process of its own, left to PID 1 when the fixture ends.
    { name: 'local', transport: 'stdio', command: 'node', args: [`${FIXTURE_ROOT}/test/fixtures/stdio-server.mjs`, '--grandchild'], prestart: 0 },
  ],
}), { mode: 0o644 })
await podman('volume', 'create', VOLUME)
t.teardown(() => podmanStatus('volume', 'rm', '--force', VOLUME))

/** What the first container leaves for the second: a registered client and its tokens. */
let carried: { oauth: TestOAuthClient, password: string } | undefined

t.test('the image: built from the Dockerfile, its size, non-root, tini, healthcheck, nothing of the build left in it', async (t) => {
  const [inspected] = JSON.parse(await podman('image', 'inspect', IMAGE)) as Array<{ Size: number, Healthcheck?: { Test: string[] }, Config: { User: string, Entrypoint: string[], Cmd: string[], Volumes: Record<string, unknown>, ExposedPorts: Record<string, unknown> } }>
  if (inspected === undefined) throw new Error(`no image ${IMAGE}`)
  const nodeLine = /^ARG NODE_VERSION=(\d+)/m.exec(readFileSync(join(REPO, 'Dockerfile'), 'utf8'))?.[1]
  // The base is a stand-in (deploy/ci/base-image.sh), so what this project controls is the rest.
  const base = (/^FROM (\S+)/m.exec(readFileSync(join(REPO, 'Dockerfile'), 'utf8'))?.[1] ?? '').replace('${NODE_VERSION}', nodeLine ?? '')
  const baseSize = Number(await podman('image', 'inspect', '--format', '{{.Size}}', base))
  const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`
  t.comment(`image ${IMAGE}: ${mb(inspected.Size)}, of which the base ${base}: ${mb(baseSize)}`)
  t.ok(inspected.Size - baseSize < 200e6, `the layers over the base stay small (${mb(inspected.Size - baseSize)}: production dependencies, dist, tini)`)
  t.equal(inspected.Config.User, 'node')
  t.same(inspected.Config.Entrypoint, ['/usr/bin/tini', '--', 'node', '/app/dist/main.js'])
  t.same(Object.keys(inspected.Config.Volumes), ['/data'])
  t.same(Object.keys(inspected.Config.ExposedPorts), ['8080/tcp'])
  t.match(inspected.Healthcheck?.Test.join(' ') ?? '', /127\.0\.0\.1:8080\/healthz/, 'the HEALTHCHECK made it into the image (docker format)')

  const inImage = (script: string): Promise<string> => podman('run', '--pull=never', '--rm', '--network', 'none', '--entrypoint', 'node', IMAGE, '-e', script)
  t.match(await inImage('process.stdout.write(process.version)'), new RegExp(`^v${nodeLine ?? 'x'}\\.`), 'the Dockerfile\'s Node line')
  t.equal(await inImage('process.stdout.write(String(process.getuid()))'), '1000', 'the node user (uid 1000)')
  const leftovers = ['/usr/local/etc/npmrc', '/usr/local/etc/ca-certificates.crt', '/etc/ssl/certs/ca-certificates.crt', '/root/.npmrc', '/app/node_modules/typescript', '/app/node_modules/tap', '/app/src', '/app/test']
  t.same(JSON.parse(await inImage(`process.stdout.write(JSON.stringify(${JSON.stringify(leftovers)}.filter((p) => require('fs').existsSync(p))))`)), [],
    'nothing of the build-time CA mount, no dev dependency, no sources in the image')
  t.ok(existsSync(join(REPO, 'Dockerfile')))
})

t.test('a running container: health, the OAuth challenge, sign-in, tools/call to both upstreams, audit on stdout', async (t) => {
  const container = await startContainer(t, configDir)

  t.equal((await fetch(`${BASE}/healthz`)).status, 200)
  t.equal(await podmanStatus('healthcheck', 'run', container.name), 0, 'the image\'s HEALTHCHECK command passes')

  const challenge = await fetch(`${BASE}/web/mcp`, { method: 'POST', headers: MCP_HEADERS, body: '{}' })
  t.equal(challenge.status, 401)
  t.match(challenge.headers.get('www-authenticate') ?? '', `resource_metadata="${BASE}/.well-known/oauth-protected-resource/web/mcp"`)
  const metadata = await (await fetch(`${BASE}/.well-known/oauth-protected-resource/web/mcp`)).json() as { resource: string, authorization_servers: string[] }
  t.equal(metadata.resource, `${BASE}/web/mcp`)
  t.same(metadata.authorization_servers, [BASE])

  // The README's first sign-in: the generated admin password, read from the volume.
  const password = await podman('exec', container.name, 'cat', '/data/initial-admin-password')
  t.match(password, /^[A-Za-z0-9]{20}$/)
  t.notMatch(container.stdout(), password, 'the password is not in the container\'s output')
  // A confidential client: its consent is remembered across the restart below (a public one returning to a loopback port consents every time, RFC 8252 8.6).
  const web = await connectWithOAuth(t, `${BASE}/web/mcp`, { username: 'admin', password, issuer: BASE, oauth: new TestOAuthClient({ authMethod: 'client_secret_basic' }) })
  t.same(web.browser.pages, ['login', 'consent'])
  t.equal(textOf(await web.client.callTool({ name: 'whoami', arguments: {} })), 'host-upstream', 'tools/call reaches the HTTP upstream on the host')
  const local = await connectWithOAuth(t, `${BASE}/local/mcp`, { username: 'admin', password, issuer: BASE })
  t.equal(textOf(await local.client.callTool({ name: 'echo', arguments: { text: 'from inside' } })), 'from inside', 'tools/call reaches the stdio server spawned in the container')
  carried = { oauth: web.oauth, password }

  const audit = (): Array<Record<string, unknown>> => container.stdout().split('\n').filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.method === 'tools/call')
  t.ok(await eventually(() => audit().length >= 2, 10_000), 'an audit line per tools/call on stdout')
  t.same(audit().map((r) => r.server).sort(), ['local', 'web'])
  const token = web.oauth.savedTokens?.access_token ?? 'no token'
  t.notMatch(container.stdout(), token, 'no token in the container\'s output')

  const processes = await containerProcesses(container.name)
  t.equal(processes.find((p) => p.pid === 1)?.comm, 'tini', 'tini is PID 1')
  t.ok(processes.some((p) => p.ppid === 1 && p.cmdline.startsWith('node /app/dist/main.js start')), 'the gateway runs under tini')
  t.ok(processes.some((p) => p.cmdline.includes('stdio-server.mjs')), 'the stdio server runs in the container')
  t.same(processes.filter((p) => p.uid !== 1000).map((p) => p.cmdline), [], 'every process runs as the node user (1000), none as root')

  // Read-only root: only the /data volume takes writes.
  t.not(await podmanStatus('exec', container.name, 'touch', '/app/x'), 0, '/app is read-only')
  t.not(await podmanStatus('exec', container.name, 'touch', '/tmp/x'), 0, '/tmp is read-only')
  t.not(await podmanStatus('exec', container.name, 'touch', '/etc/portcullis/x'), 0, 'the config is read-only')
  t.equal(await podmanStatus('exec', container.name, 'touch', '/data/x'), 0, '/data is writable')
  await podman('exec', container.name, 'rm', '/data/x')

  // Ending the stdio session ends its process; the fixture's own child is left to PID 1, which
  // must reap it (node as PID 1 would leave a zombie).
  await local.transport.terminateSession()
  await local.client.close()
  const isClean = await eventually(async () => {
    const now = await containerProcesses(container.name)
    return !now.some((p) => p.cmdline.includes('stdio-server.mjs') || p.state === 'Z' || p.cmdline.includes('setInterval'))
  }, 15_000)
  t.ok(isClean, 'the ended session\'s processes are gone and reaped: no zombie')
  await web.client.close()
  t.equal(await terminate(container), 0, 'SIGTERM: exit code 0')
})

t.test('restarted on the same /data volume: the client is still registered and its refresh token works', async (t) => {
  if (carried === undefined) throw new Error('the first container did not sign in')
  const { oauth, password } = carried
  const container = await startContainer(t, configDir)
  const accessToken = oauth.savedTokens?.access_token ?? ''
  const stillValid = await fetch(`${BASE}/web/mcp`, { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${accessToken}` }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }) })
  t.equal(stillValid.status, 200, 'the signing keys are on the volume: a token from before still verifies')
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(oauth.info?.client_id ?? '')}:${encodeURIComponent(oauth.info?.client_secret ?? '')}`).toString('base64')}`
  const refreshed = await fetch(`${BASE}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: oauth.savedTokens?.refresh_token ?? '' }).toString() })
  t.equal(refreshed.status, 200, 'the refresh token survived the restart')
  const again = new TestOAuthClient({ authMethod: 'client_secret_basic' })
  again.info = oauth.info
  const reconnected = await connectWithOAuth(t, `${BASE}/web/mcp`, { username: 'admin', password, issuer: BASE, oauth: again })
  t.equal(again.info?.client_id, oauth.info?.client_id, 'no new registration')
  t.same(reconnected.browser.pages, ['login'], 'the first-run account and the remembered consent survived too')
  t.equal(await podman('exec', container.name, 'cat', '/data/initial-admin-password'), password, 'no second first-run account')
  await reconnected.client.close()
  t.equal(await terminate(container), 0)
})

t.test('SIGTERM with streaming calls in flight: both finish, exit code 0, no process survives', async (t) => {
  if (carried === undefined) throw new Error('the first container did not sign in')
  const { password } = carried
  const container = await startContainer(t, configDir)
  const web = await connectWithOAuth(t, `${BASE}/web/mcp`, { username: 'admin', password, issuer: BASE })
  const local = await connectWithOAuth(t, `${BASE}/local/mcp`, { username: 'admin', password, issuer: BASE })
  const progress = { web: 0, local: 0 }
  const calls = (['web', 'local'] as const).map((name) => {
    const { client } = name === 'web' ? web : local
    return client.callTool({ name: 'progress', arguments: { n: 6, delayMs: 300 } }, undefined, { onprogress: () => { progress[name]++ }, timeout: 30_000 })
  })
  t.ok(await eventually(() => progress.web >= 1 && progress.local >= 1, 15_000), 'both calls are streaming progress')
  // Host-side pids of everything in the container, to look for survivors afterwards.
  const hostPids = (await podman('top', container.name, 'hpid')).split('\n').slice(1).map(Number).filter((n) => n > 0)
  t.ok(hostPids.length >= 4, `tini, the gateway, the stdio server and its child (${hostPids.length} processes)`)
  const exitCode = terminate(container)
  const results = await Promise.all(calls)
  t.same(results.map((r) => r.isError === true), [false, false], 'both in-flight calls completed')
  t.same([progress.web, progress.local], [6, 6], 'every progress event arrived')
  t.equal(await exitCode, 0, 'then the container exits with code 0')
  t.same(hostPids.filter(isProcessAlive), [], 'no process of the container survives it')
  t.match(container.stdout(), /"shut down cleanly"/)
})
