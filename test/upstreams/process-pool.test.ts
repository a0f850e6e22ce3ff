// The stdio process pool on its own: warm processes, maxProcesses, maxProcessesPerUser (with the
// router's "release something idle" answer played by the test), the pause after early crashes
// under an injected clock, retirement, and the "still starting" log. Real child processes of a
// one-line node script; no MCP traffic (that is the router's, tested end to end).
import t from 'tap'
import { makeConfig, logSink, eventually, isProcessAlive } from '../helpers.js'
import { createLogger } from '../../src/observability/logger.js'
import type { StdioServerConfig } from '../../src/config/schema.js'
import { ProcessPool, type ProcessPoolOptions } from '../../src/upstreams/stdio/process-pool.js'
import { ANONYMOUS, type UserIdentity } from '../../src/identity.js'
import type { McpChild } from '../../src/upstreams/stdio/child-process.js'

/** Stays up until its stdin closes (as a stdio server does). */
const IDLE_SCRIPT = 'process.stdin.resume()'
/** Exits at once: every start is an early crash. */
const CRASH_SCRIPT = 'process.exit(3)'

const alice: UserIdentity = { id: 'alice', name: 'alice' }
const bob: UserIdentity = { id: 'bob', name: 'bob' }

function serverConfig (script: string, extra: Record<string, unknown> = {}): StdioServerConfig {
  const config = makeConfig({ servers: [{ name: 'p', transport: 'stdio', command: process.execPath, args: ['-e', script], ...extra }] })
  return config.servers[0] as StdioServerConfig
}

interface PoolUnderTest {
  pool: ProcessPool
  logs: ReturnType<typeof logSink>
  unexpectedExits: () => number
  released: UserIdentity[]
}

function makePool (t: { teardown: (fn: () => unknown) => void }, config: StdioServerConfig, options: Partial<ProcessPoolOptions> = {}): PoolUnderTest {
  const logs = logSink()
  let exits = 0
  const released: UserIdentity[] = []
  const pool = new ProcessPool({
    config,
    log: createLogger('info', logs.stream),
    now: () => Date.now(),
    onUnexpectedExit: () => { exits++ },
    releaseIdleOf: async (user) => { released.push(user); return false },
    ...options,
  })
  t.teardown(async () => {
    pool.stop()
    await pool.terminateAll()
  })
  return { pool, logs, unexpectedExits: () => exits, released }
}

async function caught (promise: Promise<unknown>): Promise<{ code?: string, headers?: Record<string, string> }> {
  try {
    await promise
  } catch (err) {
    return err as { code?: string, headers?: Record<string, string> }
  }
  throw new Error('expected a rejection')
}

t.test('prestart: warm processes are handed out and topped up', async (t) => {
  const { pool } = makePool(t, serverConfig(IDLE_SCRIPT, { prestart: 2, maxProcesses: 4 }))
  pool.refillWarm()
  t.equal(pool.size, 2, 'two warm processes')
  t.same(pool.health().processes.map((p) => p.role), ['warm', 'warm'])
  const warmPids = pool.health().processes.map((p) => p.pid)
  const child = await pool.acquire(ANONYMOUS, 'shared')
  t.ok(warmPids.includes(child.pid), 'a warm process is handed out, not a new one')
  t.equal(pool.size, 3, 'and another warm one takes its place')
  t.same(pool.health().processes.filter((p) => p.role === 'warm').length, 2)
  t.equal(pool.userOf(child), undefined, 'a shared process is nobody\'s')
})

t.test('isolation shared: the stateless and probe processes are nobody\'s, whoever asked first', async (t) => {
  const { pool } = makePool(t, serverConfig(IDLE_SCRIPT, { isolation: 'shared', maxProcesses: 4, maxProcessesPerUser: 1 }))
  const modern = await pool.acquire(alice, 'modern')
  const probe = await pool.acquire(alice, 'probe')
  t.equal(pool.userOf(modern), undefined, 'not alice\'s: revoking her must not end it for everyone')
  t.equal(pool.userOf(probe), undefined)
  t.equal(pool.size, 2, 'nor counted in her maxProcessesPerUser of 1')
  const session = makePool(t, serverConfig(IDLE_SCRIPT, { isolation: 'user', maxProcesses: 4 })).pool
  t.equal(session.userOf(await session.acquire(alice, 'modern')), 'alice', 'under isolation user it is hers, as before')
})

t.test('maxProcesses: the next process is refused with 503 capacity and a Retry-After', async (t) => {
  const { pool } = makePool(t, serverConfig(IDLE_SCRIPT, { maxProcesses: 1 }))
  const child = await pool.acquire(alice, 'session')
  t.ok(child.isRunning)
  t.equal(pool.userOf(child), 'alice')
  t.match(await caught(pool.acquire(bob, 'session')), { code: 'PORTCULLIS_ERR_CAPACITY', headers: { 'retry-after': '2' } })
  t.equal(pool.size, 1)
})

t.test('maxProcessesPerUser: the router is asked to free something of the user\'s; with nothing idle, 429', async (t) => {
  const { pool, released } = makePool(t, serverConfig(IDLE_SCRIPT, { maxProcesses: 4, maxProcessesPerUser: 1 }))
  await pool.acquire(alice, 'session')
  t.match(await caught(pool.acquire(alice, 'session')), { code: 'PORTCULLIS_ERR_TOO_MANY_SESSIONS', headers: { 'retry-after': '2' } })
  t.same(released.map((u) => u.id), ['alice'], 'only alice was asked to make room')
  await pool.acquire(bob, 'session')
  t.equal(pool.size, 2, 'bob is not held to alice\'s cap')
})

t.test('maxProcessesPerUser: a process the router retires makes room, and its exit is no crash', async (t) => {
  const owned: McpChild[] = []
  const holder: { pool?: ProcessPool } = {}
  const made = makePool(t, serverConfig(IDLE_SCRIPT, { maxProcesses: 4, maxProcessesPerUser: 1 }), {
    releaseIdleOf: async () => {
      const idle = owned.shift()
      if (idle === undefined) return false
      await holder.pool?.retire(idle)
      return true
    },
  })
  holder.pool = made.pool
  const first = await made.pool.acquire(alice, 'user')
  owned.push(first)
  const second = await made.pool.acquire(alice, 'user')
  t.not(second.pid, first.pid)
  t.notOk(first.isRunning, 'the idle process was retired for the new one')
  t.ok(await eventually(() => made.pool.size === 1), 'one process left')
  t.equal(made.unexpectedExits(), 0, 'a retired process is not an unexpected exit')
})

t.test('early crashes pause new processes (injected clock), and a success ends the pause', async (t) => {
  let clock = 1_000_000
  const { pool, unexpectedExits, logs } = makePool(t, serverConfig(CRASH_SCRIPT, { maxProcesses: 4 }), { now: () => clock })
  for (let i = 1; i <= 3; i++) {
    await pool.acquire(ANONYMOUS, 'shared')
    t.ok(await eventually(() => unexpectedExits() === i), `crash ${i} seen`)
  }
  t.equal(pool.health().backoffUntil, clock + 1_000, 'paused for a second after the third early crash')
  t.match(logs.text(), /keeps failing; pausing new processes/)
  t.match(await caught(pool.acquire(ANONYMOUS, 'shared')), { code: 'PORTCULLIS_ERR_UPSTREAM_RESTARTING', headers: { 'retry-after': '1' } })
  clock += 1_000
  await pool.acquire(ANONYMOUS, 'shared')
  t.ok(await eventually(() => unexpectedExits() === 4), 'crash 4 seen')
  t.equal(pool.health().backoffUntil, clock + 2_000, 'the pause doubles')
  pool.recordSuccess()
  t.equal(pool.health().backoffUntil, 0, 'a handshake that succeeds ends the pause')
})

t.test('a crash long after spawn (by the injected clock) does not count towards the pause', async (t) => {
  let clock = 1_000_000
  const { pool, unexpectedExits } = makePool(t, serverConfig(IDLE_SCRIPT, { maxProcesses: 4 }), { now: () => clock })
  for (let i = 1; i <= 3; i++) {
    const child = await pool.acquire(ANONYMOUS, 'shared')
    clock += 60_000
    process.kill(child.pid as number, 'SIGKILL')
    t.ok(await eventually(() => unexpectedExits() === i), `exit ${i} seen`)
  }
  t.equal(pool.health().backoffUntil, 0, 'late exits are not early crashes')
})

t.test('a pending handshake logs "still starting" and shows as starting until the first success', async (t) => {
  const { pool, logs } = makePool(t, serverConfig(IDLE_SCRIPT), { startingLogIntervalMs: 20 })
  const child = await pool.acquire(ANONYMOUS, 'shared')
  const stop = pool.watchStartup(child)
  t.ok(await eventually(() => logs.lines.filter((l) => l.includes('stdio server still starting')).length >= 2), 'logged at each interval')
  t.type(pool.health().startingForMs, 'number')
  stop()
  t.equal(pool.health().startingForMs, undefined, 'nothing pending')
  const stopAgain = pool.watchStartup(child)
  pool.recordSuccess()
  t.equal(pool.health().startingForMs, undefined, 'a server that has started once is not "starting"')
  stopAgain()
})

t.test('a handshake past startupTimeoutMs fails with 504 and counts towards the pause', async (t) => {
  const clock = 1_000_000
  const { pool, logs } = makePool(t, serverConfig(IDLE_SCRIPT, { startupTimeoutMs: 50, maxProcesses: 4 }), { now: () => clock })
  const child = await pool.acquire(ANONYMOUS, 'shared')
  for (let i = 0; i < 3; i++) {
    t.match(await caught(pool.withStartupTimeout(new Promise(() => {}), child)), { code: 'PORTCULLIS_ERR_UPSTREAM_TIMEOUT' })
  }
  t.match(logs.text(), /did not complete its handshake in time/)
  t.equal(pool.health().backoffUntil, clock + 1_000, 'three timeouts pause new processes')
})

t.test('stop: exits are expected and no warm process is started any more', async (t) => {
  const { pool, unexpectedExits } = makePool(t, serverConfig(IDLE_SCRIPT, { prestart: 1 }))
  pool.refillWarm()
  await pool.acquire(alice, 'session')
  t.equal(pool.size, 2, 'a warm process and one in use')
  const pids = pool.health().processes.map((p) => p.pid as number)
  pool.stop()
  t.ok(pool.isClosed, 'closed')
  await pool.terminateAll()
  t.ok(await eventually(() => pool.size === 0))
  t.notOk(pids.some(isProcessAlive), 'no child survives')
  pool.refillWarm()
  t.equal(pool.size, 0, 'no refill after stop')
  t.equal(unexpectedExits(), 0)
})

t.test('stop while a request waits for room: it gets no process, and none is started', async (t) => {
  // The router frees something of alice's slowly; shutdown begins meanwhile.
  let freeing: () => void = () => {}
  const asked = new Promise<void>((resolve) => { freeing = resolve })
  let release: (freed: boolean) => void = () => {}
  const { pool } = makePool(t, serverConfig(IDLE_SCRIPT, { maxProcesses: 4, maxProcessesPerUser: 1 }), {
    releaseIdleOf: async () => {
      freeing()
      return new Promise<boolean>((resolve) => { release = resolve })
    },
  })
  await pool.acquire(alice, 'user')
  const waiting = pool.acquire(alice, 'user')
  await asked
  pool.stop()
  await pool.terminateAll()
  release(true)
  t.match(await caught(waiting), { code: 'PORTCULLIS_ERR_SHUTTING_DOWN' }, 'refused: the gateway is stopping')
  t.equal(pool.size, 0, 'no process started after terminateAll')
})
