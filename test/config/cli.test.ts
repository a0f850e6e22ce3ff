// The built CLI (dist/main.js, built by `pretest`) run as a real child process.
import t from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { VERSION } from '../../src/version.js'
import { hashPassword } from '../../src/auth-server/password.js'

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
const ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** A wait, not a timing check: on a loaded 2-core machine a CLI start took over 20 s. */
const RUN_TIMEOUT_MS = 60_000
/** Runs side by side at most: 24 at once on 2 busy cores outran the wait above. */
const PARALLEL_RUNS = 4

function run (args: string[], cwd = ROOT, env: NodeJS.ProcessEnv = {}): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: RUN_TIMEOUT_MS })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The same, without blocking: many runs side by side. */
async function runAsync (args: string[]): Promise<{ status: number | null, stdout: string, stderr: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { cwd: ROOT, env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: RUN_TIMEOUT_MS }, (err, stdout, stderr) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

/** runAsync for each, PARALLEL_RUNS at a time, answers in the same order. */
async function runAll (runs: string[][]): Promise<Array<{ status: number | null, stdout: string, stderr: string }>> {
  const answers: Array<{ status: number | null, stdout: string, stderr: string }> = []
  for (let i = 0; i < runs.length; i += PARALLEL_RUNS) answers.push(...await Promise.all(runs.slice(i, i + PARALLEL_RUNS).map(runAsync)))
  return answers
}

/** Records every module URL a process resolves (a resolve hook, --import) into PORTCULLIS_LOAD_LOG. */
const RECORD_LOADS = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module'
register('data:text/javascript,' + encodeURIComponent(\`
import { appendFileSync } from 'node:fs'
export async function resolve (specifier, context, next) {
  const resolved = await next(specifier, context)
  appendFileSync(process.env.PORTCULLIS_LOAD_LOG, resolved.url + '\\\\n')
  return resolved
}\`))
`)}`

t.test('help, --version and usage errors answer without loading the configuration schema', async (t) => {
  const dir = t.testdir({})
  const loaded = (args: string[], name: string): { status: number | null, modules: string[] } => {
    const log = `${dir}/${name}.loads`
    writeFileSync(log, '')
    const r = run(args, ROOT, { NODE_OPTIONS: `--import=${RECORD_LOADS}`, PORTCULLIS_LOAD_LOG: log })
    return { status: r.status, modules: readFileSync(log, 'utf8').split('\n').filter((line) => line !== '') }
  }
  const schema = /\/dist\/config\/load\.js$|\/node_modules\/zod\//
  // What only a command that reads a configuration needs: the logger, the banner, the watcher.
  const serverParts = /\/dist\/observability\/(?:logger|start-banner)\.js$|\/dist\/reload\/watch\.js$|\/node_modules\/pino(?:-pretty)?\//
  for (const [name, args, status] of [['help', ['--help'], 0], ['version', ['--version'], 0], ['help-check', ['help', 'check'], 0], ['start-help', ['start', '--help'], 0], ['admin-help', ['admin', '--help'], 0], ['keys-help', ['keys', '--help'], 0], ['unknown', ['frobnicate'], 2], ['bad-option', ['--bogus'], 2]] as const) {
    const { status: exited, modules } = loaded([...args], name)
    t.equal(exited, status, `${args.join(' ')}: exit ${status}`)
    t.ok(modules.some((url) => url.endsWith('/dist/cli/usage.js')), `${args.join(' ')}: the recorder saw the modules it loaded`)
    t.same(modules.filter((url) => schema.test(url)), [], `${args.join(' ')}: no configuration schema (zod) loaded`)
    t.same(modules.filter((url) => serverParts.test(url)), [], `${args.join(' ')}: no logger, banner or file watcher loaded`)
  }
  const check = loaded(['check', '--config', `${dir}/missing.yaml`], 'check')
  t.equal(check.status, 1, 'check of a missing file: exit 1')
  t.ok(check.modules.some((url) => schema.test(url)), 'check loads the schema (the recorder would see it)')
  const start = loaded(['start', '--config', `${dir}/missing.yaml`], 'start')
  t.equal(start.status, 1, 'start with a missing file: exit 1')
  t.ok(start.modules.some((url) => schema.test(url)), 'start loads the schema')
})

t.test('--help and --version', async (t) => {
  const help = run(['--help'])
  t.equal(help.status, 0)
  t.match(help.stdout, /Usage: portcullis <command>/)
  t.match(help.stdout, /check/)
  t.equal(run(['--version']).stdout.trim(), VERSION)
  const none = run([])
  t.equal(none.status, 2)
  t.match(none.stderr, /a command is required/)
  const bad = run(['launch'])
  t.equal(bad.status, 2)
  t.match(bad.stderr, /unknown command "launch"/)
})

t.test('each subcommand answers its own --help (and help <command>), not the global help', async (t) => {
  const own: Record<string, RegExp> = {
    start: /^Usage: portcullis start \[--config FILE\]/,
    check: /^Usage: portcullis check \[--config FILE\]/,
    doctor: /^Usage: portcullis doctor \[--config FILE\] \[--url URL\]/,
    'hash-password': /^Usage: portcullis hash-password\n/,
    'migrate-store': /^Usage: portcullis migrate-store --to STORE/,
    tools: /^Usage: portcullis tools diff <server>/,
    keys: /^Usage: portcullis keys <create\|list\|revoke>/,
    admin: /^Usage: portcullis admin <action> \[arguments\] \[--url URL\]/,
  }
  const cases = Object.entries(own).flatMap(([command, usage]) => [[command, '--help'], [command, '-h'], ['help', command]].map((args) => ({ args, usage })))
  // No config is read for help: a config that does not exist must not matter.
  const answers = await runAll(cases.map(({ args }) => [...args, '--config', 'no-such-file.yaml']))
  cases.forEach(({ args, usage }, i) => {
    const r = answers[i] ?? { status: null, stdout: '', stderr: 'no answer' }
    t.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`)
    t.match(r.stdout, usage, args.join(' '))
    t.notMatch(r.stdout, /^Usage: portcullis <command>/, `${args.join(' ')} is not the global help`)
  })
  t.match(run(['tools', 'approve', 'x', '--help']).stdout, /--tool <name>/, 'the help of a command with an action')
  t.match(run(['help']).stdout, /^Usage: portcullis <command>/, 'help alone is the global help')
  t.match(run(['help', 'nonsense']).stdout, /^Usage: portcullis <command>/, 'an unknown topic gets the global help')
})

t.test('check validates the shipped example config', async (t) => {
  const r = run(['check'])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /config\/portcullis\.example\.yaml \(valid\)/)
  t.match(r.stdout, /route: http:\/\/127\.0\.0\.1:8080\/everything\/mcp/)
})

t.test('check fails with exit 1 naming the line and key: typo, wrong type, missing env var', async (t) => {
  const dir = t.testdir({
    'typo.yaml': 'servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n    timout: 5\n',
    'type.yaml': 'listen:\n  port: [80]\nservers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n',
    'env.yaml': 'servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n    headers:\n      X-Api-Key: ${MISSING_KEY}\n',
  })
  const typo = run(['check', '--config', 'typo.yaml'], dir)
  t.equal(typo.status, 1)
  t.match(typo.stderr, /typo\.yaml:5:5: servers\[0\]\.timout: unknown key "timout" \(did you mean "timeoutMs"\?\)/)
  const type = run(['check', '-c', 'type.yaml'], dir)
  t.equal(type.status, 1)
  t.match(type.stderr, /type\.yaml:2:9: listen\.port: expected a TCP port number/)
  const env = run(['check', '-c', 'env.yaml'], dir)
  t.equal(env.status, 1)
  t.match(env.stderr, /env\.yaml:6:18: servers\[0\]\.headers\.X-Api-Key: environment variable MISSING_KEY is not set/)
  const ok = run(['check', '-c', 'env.yaml'], dir, { MISSING_KEY: 'hunter2' })
  t.equal(ok.status, 0)
  t.notMatch(ok.stdout, /hunter2/, 'secrets are masked in check output')
  t.match(ok.stdout, /X-Api-Key: \*\*\*/)
  t.match(run(['check', '-c', 'nope.yaml'], dir).stderr, /nope\.yaml: config file not found/)
})

t.test('check warns (and still succeeds) when a per-user value is one some local users lack', async (t) => {
  const hash = await hashPassword('a-password-for-this-test')
  const dir = t.testdir({
    'gw.yaml': `auth:\n  users:\n    - { username: alice, passwordHash: "${hash}", email: alice@example.com }\n    - { username: bob, passwordHash: "${hash}" }\n` +
      'servers:\n  - name: mem\n    transport: stdio\n    command: node\n    env: { DATA_FILE: "/data/memory-${user.email}.jsonl" }\n',
  })
  const r = run(['check', '-c', 'gw.yaml'], dir)
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /gw\.yaml \(valid\)/)
  t.match(r.stderr, /portcullis: warning: servers\[0\] \(mem\): args\/env use \$\{user\.email\}, which local user\(s\) bob lack: their requests to this server will be refused \(PORTCULLIS_ERR_USER_FIELD_MISSING\)/)
  t.notMatch(r.stderr, /alice/, 'users who have the value are not named')
})
