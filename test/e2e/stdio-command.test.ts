// A stdio `command` that cannot be started: `check` and `start` (real CLI processes) fail naming
// it and the PATH searched; /readyz shows the server as not startable, and as startable once
// the program appears.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { startGateway, STDIO_FIXTURE } from '../helpers.js'
import { resolveCommand } from '../../src/upstreams/stdio/resolve-command.js'

const MAIN = new URL('../../dist/main.js', import.meta.url).pathname
const SEARCHED = '/usr/bin:/bin'

function cli (args: string[], cwd: string): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd, env: { PATH: SEARCHED }, encoding: 'utf8', timeout: 20_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const stdioConfig = (command: string, extra: Record<string, unknown> = {}): string => stringify({
  listen: { host: '127.0.0.1', port: 1 },
  store: { memory: true },
  auth: { enabled: false },
  servers: [{ name: 'tool', transport: 'stdio', command, ...extra }],
})

t.test('check and start refuse a command that is not on PATH, or a path that is missing or not executable', async (t) => {
  const dir = t.testdir({
    'missing.yaml': stdioConfig('no-such-mcp-server-x1'),
    'relative.yaml': stdioConfig('./bin/server.sh'),
    'plain.yaml': stdioConfig('./plain.sh'),
    'ok.yaml': stdioConfig('./ok.sh'),
    'plain.sh': '#!/bin/sh\n',
    'ok.sh': '#!/bin/sh\n',
  })
  chmodSync(join(dir, 'ok.sh'), 0o755)
  chmodSync(join(dir, 'plain.sh'), 0o644)

  const missing = cli(['check', '-c', 'missing.yaml'], dir)
  t.equal(missing.status, 1)
  t.match(missing.stderr, `missing.yaml: servers[0].command (tool): command "no-such-mcp-server-x1" is not on PATH (searched ${SEARCHED})`)
  const relative = cli(['check', '-c', 'relative.yaml'], dir)
  t.equal(relative.status, 1)
  t.match(relative.stderr, `command "./bin/server.sh" (${join(dir, 'bin/server.sh')}) does not exist`, 'a path with a slash: that path, relative to the working directory')
  const plain = cli(['check', '-c', 'plain.yaml'], dir)
  t.equal(plain.status, 1)
  t.match(plain.stderr, `command "./plain.sh" (${join(dir, 'plain.sh')}) is not executable`)
  const ok = cli(['check', '-c', 'ok.yaml'], dir)
  t.equal(ok.status, 0, ok.stderr)

  const start = cli(['start', '-c', 'missing.yaml'], dir)
  t.equal(start.status, 1, 'start fails too')
  t.match(start.stderr, `command "no-such-mcp-server-x1" is not on PATH (searched ${SEARCHED})`)
  t.notMatch(start.stdout, /portcullis ready/)
})

t.test('execvp rules: PATH from servers[].env, empty entries, relative to cwd', async (t) => {
  const dir = t.testdir({ bin: { tool: '#!/bin/sh\n' }, work: {} })
  chmodSync(join(dir, 'bin', 'tool'), 0o755)
  t.match(resolveCommand('tool', { cwd: dir, path: `/nowhere:${join(dir, 'bin')}` }), { isStartable: true, path: join(dir, 'bin', 'tool') })
  t.match(resolveCommand('tool', { cwd: join(dir, 'bin'), path: '/nowhere:' }), { isStartable: true }, 'an empty PATH entry is the working directory')
  t.match(resolveCommand('tool', { cwd: dir, path: '/nowhere' }), { isStartable: false, reason: 'command "tool" is not on PATH (searched /nowhere)' })
  t.match(resolveCommand('../bin/tool', { cwd: join(dir, 'work'), path: '/nowhere' }), { isStartable: true }, 'a slash: relative to cwd, PATH not used')
  t.match(resolveCommand('bin', { cwd: dir, path: dir }), { isStartable: false }, 'a directory is not a program')
})

t.test('/readyz: a stdio server whose command is missing is not startable, and says why; startable once it appears', async (t) => {
  const dir = t.testdir({ bin: {} })
  const binDir = join(dir, 'bin')
  const gw = await startGateway(t, { servers: [{ name: 'later', transport: 'stdio', command: 'later-mcp-server', env: { PATH: `${binDir}:/usr/bin:/bin` } }] })
  const ready = async (): Promise<{ status: string, servers: Array<Record<string, unknown>> }> => (await fetch(`${gw.baseUrl}/readyz`)).json() as Promise<{ status: string, servers: Array<Record<string, unknown>> }>
  t.match(await ready(), { status: 'degraded', servers: [{ name: 'later', isReachable: false, isStartable: false, error: `command "later-mcp-server" is not on PATH (searched ${binDir}:/usr/bin:/bin)` }] })
  mkdirSync(binDir, { recursive: true })
  writeFileSync(join(binDir, 'later-mcp-server'), `#!/bin/sh\nexec "${process.execPath}" "${STDIO_FIXTURE}"\n`, { mode: 0o755 })
  t.match(await ready(), { status: 'ready', servers: [{ name: 'later', isReachable: true, isStartable: true }] })
})
