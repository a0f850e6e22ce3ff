// servers[].user / group: a stdio child runs as another Unix account, and then cannot read the
// gateway's environment through /proc — which a child under the gateway's own account can.
// Needs root (this machine's tests run as root); it creates the system account
// portcullis-test-child when missing (idempotent: an existing account, or one created by a
// parallel run, is used as it is).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { connectClient, eventually, startGateway, STDIO_FIXTURE, textOf } from '../helpers.js'
import { resolveRunAs } from '../../src/upstreams/stdio/run-as.js'

const ACCOUNT = 'portcullis-test-child'
const MAIN = new URL('../../dist/main.js', import.meta.url).pathname

function idOf (flag: '-u' | '-g'): number | undefined {
  const r = spawnSync('id', [flag, ACCOUNT], { encoding: 'utf8' })
  return r.status === 0 ? Number(r.stdout.trim()) : undefined
}

/** The test account's uid and gid, creating it if needed (exit 9: created meanwhile by another run). */
function ensureAccount (): { uid: number, gid: number } {
  if (idOf('-u') === undefined) {
    const r = spawnSync('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', ACCOUNT], { encoding: 'utf8' })
    if (r.status !== 0 && r.status !== 9) throw new Error(`useradd ${ACCOUNT} failed: ${r.stderr}`)
  }
  const uid = idOf('-u')
  const gid = idOf('-g')
  if (uid === undefined || gid === undefined) throw new Error(`no account ${ACCOUNT}`)
  return { uid, gid }
}

// Reports who it runs as and whether it can read its parent's (the gateway's) environment, then
// becomes the MCP fixture (exec: same pid).
const REPORT = 'echo "whoami uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME user=$USER" >&2; ' +
  'if cat /proc/$PPID/environ >/dev/null 2>&1; then echo "gateway environ: readable" >&2; else echo "gateway environ: denied" >&2; fi; ' +
  'exec "$0" "$@"'

const uidOfPid = (pid: number): number => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])

t.test('a child with servers[].user runs as that account and cannot read the gateway\'s environment; one without can', async (t) => {
  if (process.getuid?.() !== 0) {
    if (process.env.CI !== undefined) throw new Error('this test switches accounts and must run as root in CI')
    t.comment('not root: cannot run a child as another account')
    return
  }
  const account = ensureAccount()
  const gw = await startGateway(t, {
    servers: [
      { name: 'own', transport: 'stdio', command: 'sh', args: ['-c', REPORT, process.execPath, STDIO_FIXTURE] },
      { name: 'dropped', transport: 'stdio', command: 'sh', args: ['-c', REPORT, process.execPath, STDIO_FIXTURE], user: ACCOUNT },
    ],
  })
  const pidOf = async (server: string): Promise<number> => {
    const { client } = await connectClient(t, gw.mcpUrl(server))
    t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: server } })), server, `${server}: the server works`)
    return (JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { pid: number }).pid
  }
  const ownPid = await pidOf('own')
  const droppedPid = await pidOf('dropped')
  t.equal(uidOfPid(ownPid), 0, 'without user: the gateway\'s own account')
  t.equal(uidOfPid(droppedPid), account.uid, `with user: ${ACCOUNT}`)

  const stderrOf = (pid: number): string[] => gw.logs.lines.filter((line) => line.includes(`"pid":${pid}`) && line.includes('stdio server stderr')).map((line) => (JSON.parse(line) as { stderr: string }).stderr)
  t.ok(await eventually(() => stderrOf(droppedPid).length >= 2 && stderrOf(ownPid).length >= 2), 'both reported')
  t.match(stderrOf(droppedPid), [`whoami uid=${account.uid} gid=${account.gid} groups=${account.gid} home=/nonexistent user=${ACCOUNT}`, 'gateway environ: denied'],
    'its primary group only (no supplementary groups kept), its own HOME/USER, and no access to the gateway\'s environment')
  t.match(stderrOf(ownPid), ['whoami uid=0', 'gateway environ: readable'], 'the risk the setting removes: the same account can read it')
})

t.test('refused unless the gateway runs as root; unknown accounts are config errors', async (t) => {
  t.throws(() => resolveRunAs({ user: 'www-data' }, 'server "x"', 1000), { message: /^server "x": user is set, but the gateway runs as uid 1000, not root: only root can start a process as another account/ })
  t.throws(() => resolveRunAs({ user: 'no-such-account-x1' }, 'server "x"', 0), { message: 'server "x": user "no-such-account-x1" does not exist (not in /etc/passwd)' })
  t.throws(() => resolveRunAs({ user: 'root' }, 'server "x"', 0), { message: /is root; name an unprivileged account/ })
  t.throws(() => resolveRunAs({ group: 'no-such-group-x1' }, 'server "x"', 0), { message: 'server "x": group "no-such-group-x1" does not exist (not in /etc/group)' })
  t.same(resolveRunAs({ user: '4321', group: '4322' }, 'server "x"', 0), { uid: 4321, gid: 4322 }, 'numeric ids are taken as they are')
  t.equal(resolveRunAs({}, 'server "x"', 1000), undefined, 'no user/group: nothing to resolve, root or not')

  if (process.getuid?.() !== 0) return
  const account = ensureAccount()
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-runas-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  chownSync(dir, account.uid, account.gid)
  const write = (name: string, user: string): string => {
    const path = join(dir, name)
    writeFileSync(path, stringify({ listen: { host: '127.0.0.1', port: 1 }, dataDir: join(dir, 'data'), store: { memory: true }, auth: { enabled: false }, servers: [{ name: 'tool', transport: 'stdio', command: process.execPath, user }] }))
    return path
  }
  const cli = (args: string[], asAccount: boolean): { status: number | null, output: string } => {
    const r = spawnSync(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 20_000, ...(asAccount ? account : {}) })
    return { status: r.status, output: `${r.stdout}${r.stderr}` }
  }
  const asOther = cli(['start', '-c', write('gw.yaml', ACCOUNT)], true)
  t.equal(asOther.status, 1, 'a gateway that is not root refuses to start')
  t.match(asOther.output, `server \\"tool\\": user is set, but the gateway runs as uid ${account.uid}, not root`)
  const unknown = cli(['check', '-c', write('unknown.yaml', 'no-such-account-x1')], false)
  t.equal(unknown.status, 1, 'check names an account that does not exist')
  t.match(unknown.output, 'servers[0] (tool): user "no-such-account-x1" does not exist (not in /etc/passwd)')
})
