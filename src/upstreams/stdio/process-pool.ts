/**
 * The processes of one stdio server: spawning them (with the caller's per-user
 * values and linked tokens), warm processes started ahead of demand
 * (`prestart`), the pause after repeated early crashes, the `maxProcesses` and
 * `maxProcessesPerUser` caps on processes, retirement, and the "still starting"
 * log of a pending handshake.
 *
 * The pool knows processes, not sessions or eras: StdioUpstream (the router)
 * asks it for a process, wraps it in a Channel, and tells it when a handshake
 * succeeded. What counts as "idle" for a user at their process cap is the
 * router's to say (its sessions and channels), so the pool asks it through
 * `releaseIdleOf`.
 */
import { chownSync, existsSync, mkdirSync } from 'node:fs'
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError } from '../../errors.js'
import type { StdioServerConfig } from '../../config/schema.js'
import { credentialServers, hasUserTemplate, renderUserTemplate, stdioTemplateValues } from '../../config/user-template.js'
import type { LinkedTokenSource } from '../upstream-credentials.js'
import { ANONYMOUS, type UserIdentity } from '../../identity.js'
import { defaultMaxProcessesPerUser } from '../../config/defaults.js'
import { withTimeout } from '../../with-timeout.js'
import { McpChild } from './child-process.js'
import { childEnvironment, requireUserFields } from './environment.js'
import { resolveRunAs, type RunAsAccount } from './run-as.js'

/** Crashes this soon after spawn count towards backoff. */
const CRASH_WINDOW_MS = 10_000
/** Consecutive early crashes before new processes are paused. */
const CRASH_BACKOFF_THRESHOLD = 3
const BACKOFF_BASE_MS = 1_000
const BACKOFF_MAX_MS = 60_000
const CAPACITY_RETRY_AFTER_S = '2'
/** A user at their cap: one of their sessions may finish (or be closed) any moment. */
const USER_CAP_RETRY_AFTER_S = '2'
/**
 * A handshake still unanswered this long logs "still starting", and again at
 * each interval: a first `npx -y` download can take a minute, and an operator
 * watching the log should see that it is waiting, not hung.
 */
export const DEFAULT_STARTING_LOG_INTERVAL_MS = 5_000

export type Role = 'warm' | 'session' | 'user' | 'shared' | 'modern' | 'probe'

const NO_CREDENTIALS: ReadonlyMap<string, string> = new Map()

export interface ProcessPoolOptions {
  readonly config: StdioServerConfig
  readonly log: FastifyBaseLogger
  readonly now: () => number
  /** A process exited without being asked to (a crash, or a server quitting by itself). */
  readonly onUnexpectedExit?: () => void
  /** How often a pending handshake logs "still starting". */
  readonly startingLogIntervalMs?: number
  /** `${user.credentials.<server>}` in env: the caller's linked token at that server (upstreamAuth). */
  readonly linkedToken?: LinkedTokenSource
  /**
   * A user is at maxProcessesPerUser: end one thing of theirs that is idle (a session or a
   * process nothing uses) and answer true, or answer false when nothing of theirs is idle.
   */
  readonly releaseIdleOf: (user: UserIdentity) => Promise<boolean>
}

/** Where the pool stands, for the server's /readyz entry. */
export interface PoolHealth {
  readonly processes: Array<{ pid: number | undefined, role: Role, uptimeMs: number }>
  /** Until then new processes are paused after repeated crashes (0: not paused). */
  readonly backoffUntil: number
  /** How long the oldest pending handshake has waited, while no process has ever started; else undefined. */
  readonly startingForMs: number | undefined
}

/** maxProcessesPerUser reached with nothing of the user's idle: 429 with advice on what to close. */
export function atUserCap (log: FastifyBaseLogger, server: string, maxPerUser: number, count: number, what: 'session' | 'process'): PortcullisError {
  const counted = what === 'session' ? `${count} session${count === 1 ? '' : 's'} open` : `${count} process${count === 1 ? '' : 'es'} running`
  const advice = what === 'session' ? 'close one (DELETE) or wait for one to finish' : 'close a session (DELETE) or wait for one to finish'
  log.info({ server, count, what, maxProcessesPerUser: maxPerUser }, 'user at maxProcessesPerUser with nothing idle; refused')
  return new PortcullisError('PORTCULLIS_ERR_TOO_MANY_SESSIONS', `you have ${counted} on server "${server}" (servers[].maxProcessesPerUser is ${maxPerUser}); ${advice}`, { headers: { 'retry-after': USER_CAP_RETRY_AFTER_S } })
}

export class ProcessPool {
  private readonly name: string
  private readonly config: StdioServerConfig
  private readonly log: FastifyBaseLogger
  private readonly now: () => number
  private readonly children = new Map<McpChild, Role>()
  /** The user each process was started for (absent: warm and shared processes, nobody's). */
  private readonly childUsers = new Map<McpChild, string>()
  private readonly retiring = new Set<McpChild>()
  private readonly warm: McpChild[] = []
  /** Processes whose handshake is pending, and when it began. */
  private readonly starting = new Map<McpChild, number>()
  readonly maxPerUser: number
  private readonly usesUserTemplates: boolean
  /** Servers whose linked token the env uses (`${user.credentials.<server>}`). */
  private readonly credentialServers: readonly string[]
  /** servers[].user/group, resolved at start; undefined: the gateway's own account. */
  private readonly account: RunAsAccount | undefined
  private failures = 0
  private backoffUntil = 0
  /** A process of this server has completed a handshake (until then a pending one means the server is starting). */
  private hasStarted = false
  private closed = false

  constructor (private readonly options: ProcessPoolOptions) {
    this.config = options.config
    this.name = options.config.name
    this.log = options.log
    this.now = options.now
    // Before any timer or child: a start that cannot honour user/group fails here.
    this.account = resolveRunAs(this.config, `server "${this.name}"`, process.getuid?.())
    this.usesUserTemplates = stdioTemplateValues(this.config).some(hasUserTemplate)
    this.credentialServers = credentialServers(Object.values(this.config.env))
    // Fail closed: a child that needs a caller's token is never started without one.
    if (this.credentialServers.length > 0 && options.linkedToken === undefined) throw new Error(`server ${this.name}: env uses \${user.credentials.*} but no linked credentials are available (needs auth.enabled)`)
    this.maxPerUser = this.config.maxProcessesPerUser ?? defaultMaxProcessesPerUser(this.config.maxProcesses)
  }

  /** Processes alive now (warm, in use, being retired). */
  get size (): number {
    return this.children.size
  }

  /** stop() was called: no process is started any more, and exits are expected. */
  get isClosed (): boolean {
    return this.closed
  }

  /** The user a process was started for; undefined for warm and shared processes. */
  userOf (child: McpChild): string | undefined {
    return this.childUsers.get(child)
  }

  /** A process whose first exchange pinned it to another use (the era probe's, kept as the prober's modern process). */
  assignRole (child: McpChild, role: Role): void {
    if (this.children.has(child)) this.children.set(child, role)
  }

  /**
   * A running process for `user` in `role`: a warm one when it can be, else a new one.
   * `canElicitUrl`: the initialize starting it declared URL-mode elicitation (a missing link is then -32042).
   */
  async acquire (user: UserIdentity, role: Role, canElicitUrl = false): Promise<McpChild> {
    const now = this.now()
    if (now < this.backoffUntil) {
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_RESTARTING', `MCP server "${this.name}"`, { headers: { 'retry-after': String(Math.ceil((this.backoffUntil - now) / 1000)) } })
    }
    // Under isolation: shared, the stateless (2026-07-28) and probe processes serve everyone too:
    // none is the first caller's (revoking that caller must not end it, nor count it in their cap).
    const isUsers = role !== 'warm' && role !== 'shared' && this.config.isolation !== 'shared' && user.id !== ANONYMOUS.id
    // Before room is made: a caller without a linked account ends no other process of theirs.
    const credentials = await this.credentialsOf(user, canElicitUrl)
    if (isUsers) await this.makeRoomFor(user)
    // After the awaits: shutdown may have begun meanwhile (stop, then terminateAll), and a child
    // started now would be one terminateAll never saw, left running after the gateway exits.
    if (this.closed) throw new PortcullisError('PORTCULLIS_ERR_SHUTTING_DOWN', `MCP server "${this.name}" is stopping`)
    const warm = this.usesUserTemplates || role === 'probe' ? undefined : this.warm.shift()
    if (warm !== undefined && warm.isRunning) {
      this.children.set(warm, role)
      if (isUsers) this.childUsers.set(warm, user.id)
      this.refillWarm()
      return warm
    }
    if (this.children.size >= this.config.maxProcesses) {
      this.log.warn({ server: this.name, maxProcesses: this.config.maxProcesses }, 'stdio server at its process limit')
      throw new PortcullisError('PORTCULLIS_ERR_CAPACITY', `MCP server "${this.name}" runs ${this.config.maxProcesses} processes`, { headers: { 'retry-after': CAPACITY_RETRY_AFTER_S } })
    }
    const child = this.spawn(user, role, credentials)
    if (isUsers) this.childUsers.set(child, user.id)
    if (!(await child.whenSpawned())) {
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `MCP server "${this.name}" failed to start`)
    }
    return child
  }

  /** The caller has every per-user value the server's args and env use (never an empty, shared rendering). */
  requireUserValues (user: UserIdentity): void {
    if (this.usesUserTemplates) requireUserFields(this.name, stdioTemplateValues(this.config), user)
  }

  /** Processes started for this user and still running (not being retired). */
  private processesOf (user: UserIdentity): number {
    let count = 0
    for (const [child, id] of this.childUsers) if (id === user.id && !this.retiring.has(child)) count++
    return count
  }

  /**
   * maxProcessesPerUser for processes: before a new process for the user, the router ends
   * what of theirs is idle; with nothing idle, 429.
   */
  private async makeRoomFor (user: UserIdentity): Promise<void> {
    while (this.processesOf(user) >= this.maxPerUser) {
      if (!await this.options.releaseIdleOf(user)) throw atUserCap(this.log, this.name, this.maxPerUser, this.processesOf(user), 'process')
    }
  }

  /**
   * The caller's current tokens for `${user.credentials.<server>}` (README "Upstream
   * credentials"): a child keeps the token it started with; a token refreshed later reaches
   * the next process started for the user, not a running one.
   */
  private async credentialsOf (user: UserIdentity, canElicitUrl: boolean): Promise<ReadonlyMap<string, string>> {
    const source = this.options.linkedToken
    if (this.credentialServers.length === 0 || source === undefined) return NO_CREDENTIALS
    const entries = await Promise.all(this.credentialServers.map(async (server) => [server, await source(server, user, canElicitUrl)] as const))
    return new Map(entries)
  }

  private spawn (user: UserIdentity, role: Role, credentials: ReadonlyMap<string, string> = NO_CREDENTIALS): McpChild {
    // Also here, where values are rendered: no path may spawn a process with another's or an empty value.
    this.requireUserValues(user)
    const child = new McpChild({
      server: this.name,
      command: this.config.command,
      args: this.config.args.map((arg) => renderUserTemplate(arg, user)),
      env: childEnvironment(this.config.env, user, this.parentEnvironment(), credentials),
      cwd: this.workingDirectory(user),
      maxMessageBytes: this.config.maxMessageBytes,
      now: this.now,
      ...(this.account === undefined ? {} : { account: this.account }),
    }, this.log)
    this.children.set(child, role)
    this.log.info({ server: this.name, pid: child.pid, role, user: user.name }, 'stdio server started')
    child.onExit((exit) => {
      this.children.delete(child)
      this.childUsers.delete(child)
      const warmIndex = this.warm.indexOf(child)
      if (warmIndex !== -1) this.warm.splice(warmIndex, 1)
      const wasRetired = this.retiring.delete(child)
      if (this.closed || wasRetired) return
      this.options.onUnexpectedExit?.()
      const isEarly = this.now() - child.spawnedAt < CRASH_WINDOW_MS
      this.log.warn({ server: this.name, pid: child.pid, code: exit.code, signal: exit.signal, error: exit.error, command: exit.error === undefined ? undefined : this.config.command }, exit.error === undefined ? 'stdio server exited' : 'stdio server failed to start')
      if (isEarly || exit.error !== undefined) this.recordFailure()
    })
    return child
  }

  /**
   * The child's working directory: servers[].cwd with the user's values filled in (escaped, so a
   * name cannot climb out), made on first use, readable by its process's account alone.
   */
  private workingDirectory (user: UserIdentity): string | undefined {
    const cwd = this.config.cwd
    if (cwd === undefined || !hasUserTemplate(cwd)) return cwd
    const dir = renderUserTemplate(cwd, user)
    try {
      if (!existsSync(dir)) {
        mkdirSync(dir, { recursive: true, mode: 0o700 })
        if (this.account !== undefined) chownSync(dir, this.account.uid, this.account.gid)
      }
    } catch (err) {
      this.log.error({ server: this.name, user: user.name, code: (err as NodeJS.ErrnoException).code }, 'could not make a stdio server\'s per-user working directory')
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `MCP server "${this.name}" could not be started: its working directory could not be made`)
    }
    return dir
  }

  /** Another account's child gets its own HOME, USER and LOGNAME, not the gateway's. */
  private parentEnvironment (): NodeJS.ProcessEnv {
    const account = this.account
    if (account?.name === undefined) return process.env
    return { ...process.env, USER: account.name, LOGNAME: account.name, ...(account.home === undefined ? {} : { HOME: account.home }) }
  }

  private recordFailure (): void {
    this.failures++
    if (this.failures >= CRASH_BACKOFF_THRESHOLD) {
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.failures - CRASH_BACKOFF_THRESHOLD))
      this.backoffUntil = this.now() + delay
      this.log.warn({ server: this.name, failures: this.failures, pausedMs: delay }, 'stdio server keeps failing; pausing new processes')
    }
  }

  /** A process answered its first exchange: the server starts, and any crash pause ends. */
  recordSuccess (): void {
    this.hasStarted = true
    this.failures = 0
    this.backoffUntil = 0
  }

  /** Tops the warm processes up to `prestart` (not for per-user servers, not while paused). */
  refillWarm (): void {
    if (this.closed || this.usesUserTemplates || this.now() < this.backoffUntil) return
    while (this.warm.length < this.config.prestart && this.children.size < this.config.maxProcesses) {
      this.warm.push(this.spawn(ANONYMOUS, 'warm'))
    }
  }

  /**
   * While a process's handshake is pending: "still starting" in the log at each
   * interval with the time waited, and the process listed as starting in
   * /readyz. Returns the stop, called once the handshake settles either way.
   */
  watchStartup (child: McpChild): () => void {
    const startedAt = this.now()
    this.starting.set(child, startedAt)
    const timer = setInterval(() => {
      this.log.info({ server: this.name, pid: child.pid, elapsedMs: this.now() - startedAt, startupTimeoutMs: this.config.startupTimeoutMs }, 'stdio server still starting')
    }, this.options.startingLogIntervalMs ?? DEFAULT_STARTING_LOG_INTERVAL_MS)
    timer.unref()
    return () => {
      clearInterval(timer)
      this.starting.delete(child)
    }
  }

  /** A handshake bounded by startupTimeoutMs; running out counts as a failure towards the crash pause. */
  async withStartupTimeout<T> (promise: Promise<T>, child: McpChild): Promise<T> {
    const stopWatching = this.watchStartup(child)
    try {
      return await withTimeout(promise, this.config.startupTimeoutMs, () => {
        this.log.warn({ server: this.name, pid: child.pid, startupTimeoutMs: this.config.startupTimeoutMs }, 'stdio server did not complete its handshake in time')
        this.recordFailure()
        return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT', `MCP server "${this.name}" did not start in time`)
      })
    } finally {
      stopWatching()
    }
  }

  /**
   * Ends a process on purpose (its exit is not a crash). `beforeStop` runs once it is marked,
   * before the signal: the router fails what is in flight on it.
   */
  async retire (child: McpChild, beforeStop: () => void = () => {}): Promise<void> {
    if (!child.isRunning) return
    this.retiring.add(child)
    beforeStop()
    await child.terminate()
  }

  health (): PoolHealth {
    const now = this.now()
    const processes = [...this.children].map(([child, role]) => ({ pid: child.pid, role, uptimeMs: now - child.spawnedAt }))
    const startingForMs = !this.hasStarted && this.starting.size > 0 ? Math.max(0, ...[...this.starting.values()].map((since) => now - since)) : undefined
    return { processes, backoffUntil: this.backoffUntil, startingForMs }
  }

  /** No new processes from now on, and exits are expected (shutdown has begun). */
  stop (): void {
    this.closed = true
  }

  /** Every process, warm or in use, is ended. */
  async terminateAll (): Promise<void> {
    await Promise.all([...this.children.keys()].map((child) => child.terminate()))
  }
}
