// deploy/docker-compose.yml brought up for real with podman-compose: the gateway image, Redis
// as its store, the example MCP server and the nginx TLS front, as a user of the Compose file
// runs them (README "Deploying"). Not part of `npm test` (it needs root, podman and the
// images): CI runs it in the image step, `bash deploy/ci/image.sh`, which builds the gateway
// image and the stand-ins for the registry images redis and nginx (deploy/ci/stand-in-images.sh)
// and passes the podman-compose to use (deploy/ci/podman-compose.sh). It fails, never skips,
// when something is missing.
//
// The stack runs from a scratch directory laid out like deploy/: the Compose file, compose/
// and nginx/ as shipped, a .env made from compose/env.example, and a throw-away certificate in
// tls/ (the Compose file's own instructions). What a CI machine needs changed in the Compose
// file, and nothing else, is changed in that copy (composeForCi): the gateway image is the
// one CI just built, the published ports are free ones on 127.0.0.1 (not 80 and 443 on every
// address), and, behind a TLS-inspecting network, the example server's `npx` trusts the CA
// that the image build trusts.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { connectWithOAuth } from '../oauth-helpers.js'
import { canConnect, eventually, freePort, selfSignedCertificate, textOf } from '../helpers.js'
import { trustingFetch } from '../nginx.js'
import { podman, podmanStatus, run } from './podman.js'

// The example server is fetched by npx when its container starts, and the OAuth flow takes
// seconds on these machines.
t.setTimeout(10 * 60_000)

const DEPLOY = new URL('../../deploy/', import.meta.url).pathname
const IMAGE = process.env.PORTCULLIS_IMAGE ?? 'localhost/portcullis:ci'
const PODMAN_COMPOSE = process.env.PORTCULLIS_PODMAN_COMPOSE ?? 'podman-compose'
/** A directory with the CA bundle and an npmrc naming it (deploy/ci/build-image.sh), if the network needs one. */
const NPM_ETC = process.env.PORTCULLIS_NPM_ETC
const PROJECT = `portcullis-ci-${randomBytes(4).toString('hex')}`
/** podman-compose names containers <project>_<service>_1. */
const container = (service: string): string => `${PROJECT}_${service}_1`

interface ComposeService { image?: string, build?: unknown, ports?: string[], volumes?: string[] }
interface ComposeFile { services: Record<string, ComposeService> }

/** The shipped Compose file with only what a CI machine needs changed (see the top of this file). */
function composeForCi (shipped: ComposeFile, ports: { https: number, http: number }): ComposeFile {
  const ci = structuredClone(shipped)
  const { gateway, everything } = ci.services
  if (gateway === undefined || everything === undefined) throw new Error('deploy/docker-compose.yml no longer has the gateway and everything services: update test/image/compose.test.ts')
  if (JSON.stringify(gateway.ports) !== JSON.stringify(['443:443', '80:80'])) throw new Error(`deploy/docker-compose.yml publishes ${JSON.stringify(gateway.ports)}: update test/image/compose.test.ts`)
  gateway.image = IMAGE
  delete gateway.build
  gateway.ports = [`127.0.0.1:${ports.https}:443`, `127.0.0.1:${ports.http}:80`]
  if (NPM_ETC !== undefined) everything.volumes = [...everything.volumes ?? [], `${NPM_ETC}:/usr/local/etc:ro`]
  return ci
}

/** podman-compose on the scratch project, as a user runs it from deploy/; bounded, since it retries a failed dependency for ever. */
async function compose (dir: string, ...args: string[]): Promise<string> {
  // Its output shows the containers' environments: the Redis password stays out of the test's.
  const redact = (text: string): string => text.replaceAll(redisPassword, '<REDIS_PASSWORD>')
  try {
    const { stdout, stderr } = await run(PODMAN_COMPOSE, ['--project-name', PROJECT, ...args], { cwd: dir, maxBuffer: 16 * 1024 * 1024, timeout: 4 * 60_000 })
    return redact(`${stdout}${stderr}`)
  } catch (err) {
    const failure = err as Error & { stdout?: string, stderr?: string }
    failure.message = redact(`${failure.message}\n${failure.stdout ?? ''}`)
    failure.stdout = redact(failure.stdout ?? '')
    failure.stderr = redact(failure.stderr ?? '')
    throw failure
  }
}

/** Names of this project's containers, running or not. */
async function projectContainers (): Promise<string[]> {
  const names = await podman('ps', '--all', '--filter', `label=io.podman.compose.project=${PROJECT}`, '--format', '{{.Names}}')
  return names === '' ? [] : names.split('\n').sort()
}

const dir = mkdtempSync(join(tmpdir(), 'portcullis-compose-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const ports = { https: await freePort(), http: await freePort() }
const publicUrl = `https://127.0.0.1:${ports.https}`
const redisPassword = randomBytes(24).toString('hex')

cpSync(join(DEPLOY, 'compose'), join(dir, 'compose'), { recursive: true })
cpSync(join(DEPLOY, 'nginx'), join(dir, 'nginx'), { recursive: true })
const shipped = parse(readFileSync(join(DEPLOY, 'docker-compose.yml'), 'utf8')) as ComposeFile
// As JSON (which is YAML): every string stays quoted, so podman-compose's YAML 1.1 parser does
// not read the `yes` of `--appendonly yes` as a boolean, as it would from an unquoted rewrite.
writeFileSync(join(dir, 'docker-compose.yml'), JSON.stringify(composeForCi(shipped, ports), null, 2))
// `cp compose/env.example .env`, then set REDIS_PASSWORD and PUBLIC_URL, as the Compose file says.
const env = readFileSync(join(DEPLOY, 'compose/env.example'), 'utf8')
  .replace(/^PUBLIC_URL=.*$/m, `PUBLIC_URL=${publicUrl}`)
  .replace(/^REDIS_PASSWORD=.*$/m, `REDIS_PASSWORD=${redisPassword}`)
if (!env.includes(publicUrl) || !env.includes(redisPassword)) throw new Error('deploy/compose/env.example no longer sets PUBLIC_URL and REDIS_PASSWORD: update test/image/compose.test.ts')
writeFileSync(join(dir, '.env'), env)
mkdirSync(join(dir, 'tls'))
const { keyPath, certPath } = selfSignedCertificate(join(dir, 'tls'))
renameSync(keyPath, join(dir, 'tls/privkey.pem'))
renameSync(certPath, join(dir, 'tls/fullchain.pem'))
const tls = trustingFetch(t, readFileSync(join(dir, 'tls/fullchain.pem'), 'utf8'))

// Whatever a failed run leaves: the containers, the pod, the network and the volumes go.
t.teardown(async () => {
  if ((await projectContainers()).length > 0) await compose(dir, 'down', '--volumes').catch(() => {})
})

t.test('podman-compose up: all four services run, nginx answers over TLS, the published ports are on 127.0.0.1 only', async (t) => {
  const up = await compose(dir, 'up', '--detach', '--no-build')
  t.same(await projectContainers(), ['everything', 'gateway', 'nginx', 'redis'].map(container).sort(), 'a container per service')

  const isHealthy = await eventually(() => tls(`${publicUrl}/healthz`).then((r) => r.ok, () => false), 120_000)
  if (!isHealthy) t.comment(up, await podman('logs', '--tail', '50', container('gateway')).catch(String), await podman('logs', '--tail', '50', container('nginx')).catch(String))
  t.ok(isHealthy, 'GET /healthz through nginx over https answers 200')
  t.equal(await podmanStatus('healthcheck', 'run', container('gateway')), 0, 'the gateway image\'s HEALTHCHECK passes')
  t.equal(await podmanStatus('healthcheck', 'run', container('redis')), 0, 'Redis\'s healthcheck from the Compose file passes (redis-cli ping with the password)')

  const plain = await fetch(`http://127.0.0.1:${ports.http}/everything/mcp`, { redirect: 'manual' })
  t.equal(plain.status, 308, 'plain http only redirects')
  t.match(plain.headers.get('location') ?? '', /^https:\/\/127\.0\.0\.1(:\d+)?\/everything\/mcp$/)

  const published = (await podman('port', container('gateway'))).split('\n').sort()
  t.same(published, [`443/tcp -> 127.0.0.1:${ports.https}`, `80/tcp -> 127.0.0.1:${ports.http}`], 'only nginx\'s ports, on 127.0.0.1')
  t.equal(await podman('port', container('redis')), '', 'Redis is not published')
})

t.test('the MCP OAuth flow through nginx, a tools/call to the example server, Redis is the store', async (t) => {
  // The example server's npx fetches it when its container starts: wait until the gateway reaches it.
  const reachesEverything = 'fetch("http://everything:3001/mcp").then(() => process.exit(0), () => process.exit(1))'
  t.ok(await eventually(async () => await podmanStatus('exec', container('gateway'), 'node', '-e', reachesEverything) === 0, 180_000),
    'the gateway reaches the example server by its service name')

  const resource = await (await tls(`${publicUrl}/.well-known/oauth-protected-resource/everything/mcp`)).json() as { resource: string, authorization_servers: string[] }
  t.same([resource.resource, resource.authorization_servers], [`${publicUrl}/everything/mcp`, [publicUrl]], 'the resource metadata names PUBLIC_URL from .env')

  // The Compose file's first sign-in: the generated admin password, read from the volume.
  const password = await podman('exec', container('gateway'), 'cat', '/data/initial-admin-password')
  t.match(password, /^[A-Za-z0-9]{20}$/)
  const session = await connectWithOAuth(t, `${publicUrl}/everything/mcp`, { username: 'admin', password, issuer: publicUrl, fetch: tls })
  t.same(session.browser.pages, ['login', 'consent'])
  t.equal(textOf(await session.client.callTool({ name: 'echo', arguments: { message: 'through the stack' } })), 'Echo: through the stack', 'tools/call reaches the example server')

  const clientId = session.oauth.info?.client_id ?? 'no client'
  const redis = (...args: string[]): Promise<string> => podman('exec', container('redis'), 'redis-cli', ...args)
  const record = JSON.parse(await redis('GET', `portcullis:oidc:Client:${clientId}`) || '{}') as { client_id?: string }
  t.equal(record.client_id, clientId, 'the registered client is in Redis, under the portcullis: prefix')
  t.ok(Number(await redis('DBSIZE')) > 1, 'with the grant, tokens and the gateway\'s keys')
  t.not(await podmanStatus('exec', container('gateway'), 'test', '-e', '/data/portcullis.db'), 0, 'and no SQLite database on the gateway\'s volume')

  const gatewayOutput = (): Promise<string> => podman('logs', container('gateway'))
  t.ok(await eventually(async () => (await gatewayOutput()).includes('"method":"tools/call"'), 10_000), 'the audit line is in the gateway\'s output')
  const logs = await gatewayOutput()
  t.notMatch(logs, password, 'the password is not')
  t.notMatch(logs, session.oauth.savedTokens?.access_token ?? 'no token', 'nor the token')
  await session.client.close()
})

t.test('podman-compose down leaves nothing running', async (t) => {
  await compose(dir, 'down', '--volumes')
  t.same(await projectContainers(), [], 'no container of the project, running or stopped')
  t.equal(await podman('pod', 'ls', '--filter', `name=${PROJECT}`, '--format', '{{.Name}}'), '', 'no pod')
  t.equal(await podman('volume', 'ls', '--filter', `label=io.podman.compose.project=${PROJECT}`, '--format', '{{.Name}}'), '', 'no volume')
  t.notOk(await canConnect(ports.https), 'nothing listens on the https port')
  t.notOk(await canConnect(ports.http), 'nor on the http port')
})
