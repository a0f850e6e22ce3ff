// The Dockerfile, replayed without Docker (no engine runs here): its npm commands build the
// app in a temporary directory, its COPY lines assemble the runtime directory with production
// dependencies only, and its ENTRYPOINT + CMD start the gateway as an unprivileged user with
// the image's default config. Then /healthz answers and the image's HEALTHCHECK command passes.
// Only what needs a Docker engine is left out, and said so: apt-get lines (OS packages this
// machine has), tini (PID 1; Node forwards nothing to it here), and the paths /app, /data and
// /etc/portcullis, mapped into the temporary directory.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { eventually, freePort, startUpstream } from '../helpers.js'

// npm ci compiles better-sqlite3 from source when offline: about two minutes on these machines.
t.setTimeout(15 * 60_000)

const run = promisify(execFile)
const REPO = new URL('../../', import.meta.url).pathname
const NOBODY = 65534

interface Instruction { readonly keyword: string, readonly args: string }
interface Stage { readonly name: string | undefined, readonly instructions: Instruction[] }

/** Dockerfile instructions by stage (continuations joined, comments dropped). */
function parseDockerfile (text: string): { args: Map<string, string>, stages: Stage[] } {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  const args = new Map<string, string>()
  const stages: Stage[] = []
  for (const line of lines) {
    const [keyword = '', ...rest] = line.split(/\s+/)
    const instruction = { keyword: keyword.toUpperCase(), args: rest.join(' ') }
    if (instruction.keyword === 'FROM') {
      stages.push({ name: /\bAS\s+(\S+)$/i.exec(instruction.args)?.[1], instructions: [] })
    } else if (stages.length === 0) {
      if (instruction.keyword === 'ARG') {
        const [name = '', value = ''] = instruction.args.split('=')
        args.set(name, value)
      }
    } else {
      stages[stages.length - 1]?.instructions.push(instruction)
    }
  }
  return { args, stages }
}

const jsonArray = (args: string): string[] => JSON.parse(args.replace(/^--\S+\s+/g, '')) as string[]

const dockerfile = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'))

t.test('the Dockerfile: multi-stage, Active LTS Node, non-root, init process, healthcheck, volume, one port', async (t) => {
  t.equal(dockerfile.stages.length, 2, 'a build stage and a runtime stage')
  const nodeMajor = Number(dockerfile.args.get('NODE_VERSION'))
  t.ok(nodeMajor >= 24 && nodeMajor % 2 === 0, `an LTS line (even major), got ${nodeMajor}`)
  const runtime = dockerfile.stages[1]?.instructions ?? []
  const keyword = (k: string): Instruction[] => runtime.filter((i) => i.keyword === k)
  t.equal(keyword('USER')[0]?.args, 'node', 'runs as the image\'s unprivileged node user')
  t.same(keyword('VOLUME').map((i) => i.args), ['/data'])
  t.same(keyword('EXPOSE').map((i) => i.args), ['8080'])
  t.match(jsonArray(keyword('ENTRYPOINT')[0]?.args ?? '[]'), ['/usr/bin/tini', '--', 'node'], 'tini is PID 1')
  t.match(keyword('RUN').map((i) => i.args).join('\n'), /apt-get install -y --no-install-recommends tini/)
  t.ok(keyword('HEALTHCHECK').length === 1)
  t.notOk(runtime.some((i) => i.keyword === 'RUN' && /npm (ci|install)/.test(i.args)), 'no dependency install in the runtime stage: it copies the pruned node_modules')
  const ignored = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n')
  for (const entry of ['node_modules', '.git', 'test', '*.pem', '.env']) t.ok(ignored.includes(entry), `.dockerignore keeps ${entry} out of the build context`)
})

t.test('replaying the Dockerfile builds a production install that starts as an unprivileged user and answers /healthz', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'portcullis-image-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  chmodSync(root, 0o755)
  const buildDir = join(root, 'build')
  const appDir = join(root, 'app')
  const dataDir = join(root, 'data')
  const etcDir = join(root, 'etc-portcullis')
  for (const dir of [buildDir, appDir, dataDir, etcDir]) mkdirSync(dir, { mode: 0o755 })
  const isRoot = process.getuid?.() === 0
  if (isRoot) chownSync(dataDir, NOBODY, NOBODY)
  else t.comment('not root: the gateway runs as this (unprivileged) user instead of nobody')
  const mapPath = (path: string): string => path
    .replace(/^\/etc\/portcullis/, etcDir)
    .replace(/^\/app(?=\/|$)/, appDir)
    .replace(/^\/data(?=\/|$)/, dataDir)
  const skipped: string[] = []

  // Build stage: COPY from the repository, RUN the npm commands.
  const [build, runtime] = dockerfile.stages
  if (build === undefined || runtime === undefined) throw new Error('expected two stages')
  for (const { keyword, args } of build.instructions) {
    if (keyword === 'COPY') {
      const parts = args.split(/\s+/)
      const dest = parts.pop() ?? ''
      for (const src of parts) cpSync(join(REPO, src), join(buildDir, dest, dest.endsWith('/') ? src : ''), { recursive: true })
    } else if (keyword === 'RUN' && args.startsWith('npm ')) {
      // Offline here: npm takes packages from its cache, like a second docker build would.
      await run('/bin/sh', ['-c', args], { cwd: buildDir, env: { ...process.env, npm_config_prefer_offline: 'true', JOBS: '2' }, maxBuffer: 64 * 1024 * 1024 })
    } else if (keyword === 'RUN') {
      skipped.push(args)
    }
  }
  t.ok(existsSync(join(buildDir, 'dist', 'main.js')), 'the build stage compiled dist/')

  // Runtime stage: COPY --from=build and COPY from the repository, into the mapped paths.
  let workdir = '/'
  let entrypoint: string[] = []
  let cmd: string[] = []
  let healthcheck: string[] = []
  const env: Record<string, string> = {}
  for (const { keyword, args } of runtime.instructions) {
    if (keyword === 'WORKDIR') workdir = args
    else if (keyword === 'ENV') { const [name = '', value = ''] = args.split('='); env[name] = value }
    else if (keyword === 'ENTRYPOINT') entrypoint = jsonArray(args)
    else if (keyword === 'CMD') cmd = jsonArray(args)
    else if (keyword === 'HEALTHCHECK') healthcheck = jsonArray(args.replace(/^(--\S+\s+)*CMD\s+/, ''))
    else if (keyword === 'RUN') skipped.push(args)
    else if (keyword === 'COPY') {
      const from = /^--from=(\S+)\s+/.exec(args)
      const [src = '', dest = ''] = args.replace(/^--from=\S+\s+/, '').split(/\s+/)
      const target = mapPath(dest.startsWith('/') ? dest : join(workdir, dest))
      mkdirSync(dirname(target), { recursive: true })
      cpSync(from === null ? join(REPO, src) : join(buildDir, src.replace(/^\/app\/?/, '')), target, { recursive: true })
    }
  }
  t.match(skipped.join('\n'), /apt-get/, 'only OS package lines were skipped')
  t.notOk(skipped.some((line) => /\bnpm\b/.test(line) && !/apt-get/.test(line)), 'every npm command ran')

  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string>, devDependencies: Record<string, string> }
  for (const dep of Object.keys(pkg.dependencies)) t.ok(existsSync(join(appDir, 'node_modules', dep)), `production dependency ${dep} is installed`)
  const devOnly = Object.keys(pkg.devDependencies).filter((dep) => existsSync(join(appDir, 'node_modules', dep)))
  t.same(devOnly, [], 'no dev dependency made it into the runtime directory')
  t.notOk(existsSync(join(appDir, 'node_modules', '.bin', 'tsc')), 'no TypeScript compiler at run time')

  // The image's default config, on a free port (the container's 8080 is its own).
  const port = await freePort()
  const configPath = join(etcDir, 'portcullis.yaml')
  const shipped = readFileSync(configPath, 'utf8')
  t.match(shipped, /port: 8080\n/)
  t.match(shipped, /dataDir: \/data\b/)
  writeFileSync(configPath, shipped.replace('port: 8080\n', `port: ${port}\n`).replace('host: 0.0.0.0', 'host: 127.0.0.1').replace(/\/data\b/g, dataDir))
  const upstream = await startUpstream(t)

  t.equal(entrypoint.slice(0, 2).join(' '), '/usr/bin/tini --')
  const [command = '', ...argv] = [...entrypoint.slice(2), ...cmd].map(mapPath)
  t.equal(command, 'node')
  const child = spawn(process.execPath, argv, {
    cwd: mapPath(workdir),
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dataDir, ...env, PUBLIC_URL: 'https://mcp.example.test', UPSTREAM_URL: upstream.url },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(isRoot ? { uid: NOBODY, gid: NOBODY } : {}),
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const ready = await eventually(async () => {
    if (child.exitCode !== null) return true
    return (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200
  }, 30_000)
  if (!ready || child.exitCode !== null) t.comment(out.slice(-4000))
  t.ok(ready && child.exitCode === null, 'the gateway started from the production install')

  const health = await fetch(`http://127.0.0.1:${port}/healthz`)
  t.same(await health.json(), { status: 'ok' })
  const readiness = await (await fetch(`http://127.0.0.1:${port}/readyz`)).json() as { status: string, store: { kind: string } }
  t.match(readiness, { status: 'ready', store: { kind: 'sqlite', isReachable: true } })
  const unauthorized = await fetch(`http://127.0.0.1:${port}/mcp/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(unauthorized.status, 401, 'auth is on by default in the image')
  t.match(unauthorized.headers.get('www-authenticate'), 'resource_metadata="https://mcp.example.test/.well-known/oauth-protected-resource/mcp/mcp"')

  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
  const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1])
  t.not(uid, 0, 'not running as root')
  t.ok(existsSync(join(dataDir, 'portcullis.db')), 'state lands in the data volume')

  // The HEALTHCHECK command, as Docker would run it inside the container.
  const probe = healthcheck.map((arg) => arg.replace('127.0.0.1:8080', `127.0.0.1:${port}`))
  t.equal(probe[0], 'node')
  await t.resolves(run(process.execPath, probe.slice(1)), 'the image\'s HEALTHCHECK passes')

  child.kill('SIGTERM')
  const code = await new Promise<number | null>((resolve) => { if (child.exitCode !== null) resolve(child.exitCode); else child.once('exit', (c) => resolve(c)) })
  t.equal(code, 0, 'SIGTERM stops it cleanly')
  await t.rejects(run(process.execPath, probe.slice(1)), 'and the HEALTHCHECK fails once it is gone')
})
