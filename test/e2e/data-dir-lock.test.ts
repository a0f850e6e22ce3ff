// One gateway per SQLite data directory: real `portcullis start` processes (dist/main.js).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { freePort, startCliGateway, startUpstream } from '../helpers.js'

const MAIN = new URL('../../dist/main.js', import.meta.url).pathname

function cli (args: string[]): { status: number | null, output: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 20_000 })
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

t.test('a second start on the same data directory exits naming it and the first one\'s pid; migrate-store works beside; a killed gateway leaves no stale lock', async (t) => {
  const upstream = await startUpstream(t)
  const dir = t.testdir({})
  const dataDir = join(dir, 'data')
  const writeConfig = async (name: string): Promise<string> => {
    const port = await freePort()
    const path = join(dir, name)
    writeFileSync(path, stringify({ publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, dataDir, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }))
    return path
  }
  const firstConfig = await writeConfig('first.yaml')
  const secondConfig = await writeConfig('second.yaml')

  const first = await startCliGateway(t, firstConfig)
  const second = cli(['start', '--config', secondConfig])
  t.equal(second.status, 1, 'the second gateway exits non-zero')
  t.match(second.output, `the data directory ${dataDir} is in use by another gateway (pid ${first.child.pid ?? 0})`, 'naming the directory and the other pid')
  t.notMatch(second.output, /portcullis ready/, 'it never served')

  const migrated = cli(['migrate-store', '--config', firstConfig, '--to', join(dir, 'copy.db')])
  t.equal(migrated.status, 0, `migrate-store works beside the running gateway: ${migrated.output}`)
  t.ok(existsSync(join(dir, 'copy.db')))

  const exited = new Promise((resolve) => first.child.once('exit', resolve))
  first.child.kill('SIGKILL')
  await exited
  const third = await startCliGateway(t, secondConfig)
  t.match(third.output(), /portcullis ready/, 'the kernel dropped the dead gateway\'s lock: no stale lock to clear by hand')
})
