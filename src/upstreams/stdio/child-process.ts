/**
 * One stdio MCP server process: spawned in its own process group, framed as
 * newline-delimited JSON-RPC on stdin/stdout (MCP basic/transports, stdio),
 * stderr logged line by line, and shut down by escalation — stdin closed,
 * then SIGTERM, then SIGKILL to the whole group, so that grandchildren (npx,
 * uvx, shell wrappers) never outlive it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import type { FastifyBaseLogger } from 'fastify'
import { LogBudget } from './log-budget.js'

/** After stdin closes, how long a well-behaved server gets to exit by itself. */
export const STDIN_CLOSE_GRACE_MS = 1_000
/** After SIGTERM, how long before SIGKILL. */
export const SIGTERM_GRACE_MS = 2_000
/** Longest stderr line logged; the rest is cut. */
const MAX_STDERR_LINE_CHARS = 4_096
const MAX_LOGGED_STDOUT_CHARS = 200
/** What ends a line for some reader of the child's stdin (see send). */
const LINE_BREAK = /[\r\n]/
const LINE_BREAKS = /[\r\n]/g
/** Output lines are counted in windows this long; beyond a budget, one summary line per window. */
export const OUTPUT_LOG_WINDOW_MS = 60_000
/** Non-JSON stdout lines logged per window: a banner or a stray debug line, not a flood. */
export const STDOUT_NOISE_LINES_PER_WINDOW = 5
/** stderr is the server's own log, so more of it gets through; still bounded. */
export const STDERR_LINES_PER_WINDOW = 100

export type ChildState = 'running' | 'exited'

export interface ChildExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** Spawn failure (ENOENT, EACCES) or a protocol violation that made us kill it. */
  readonly error?: string
}

export interface ChildSpec {
  readonly server: string
  readonly command: string
  readonly args: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string | undefined
  readonly maxMessageBytes: number
  /** The upstream's clock (log windows, uptime); tests drive it. */
  readonly now?: () => number
  /** Run as this account (servers[].user/group; the gateway is root). */
  readonly account?: { readonly uid: number, readonly gid: number }
}

/** A parsed JSON-RPC message from the child, and its original line (forwarded verbatim where possible). */
export type ChildMessageHandler = (message: Record<string, unknown>, line: string) => void

export class McpChild {
  readonly pid: number | undefined
  readonly spawnedAt: number
  state: ChildState = 'running'
  exitInfo: ChildExit | undefined
  onMessage: ChildMessageHandler = () => {}
  private readonly proc: ChildProcessWithoutNullStreams
  private readonly exitListeners: Array<(exit: ChildExit) => void> = []
  private readonly exited: Promise<ChildExit>
  private readonly spawned: Promise<boolean>
  private pending: Buffer[] = []
  private pendingBytes = 0
  private stderrRest = ''
  private readonly stdoutNoise: LogBudget
  private readonly stderrLines: LogBudget
  /** Reports skipped lines when a window ends with no further output to do it. */
  private summaryTimer: NodeJS.Timeout | undefined

  constructor (private readonly spec: ChildSpec, private readonly log: FastifyBaseLogger) {
    const now = spec.now ?? (() => Date.now())
    this.spawnedAt = now()
    this.stdoutNoise = new LogBudget(STDOUT_NOISE_LINES_PER_WINDOW, OUTPUT_LOG_WINDOW_MS, now, (skipped) => {
      this.log.warn({ server: spec.server, pid: this.pid, skipped, windowMs: OUTPUT_LOG_WINDOW_MS }, 'stdio server wrote more non-JSON-RPC lines to stdout; skipped, not logged')
    })
    this.stderrLines = new LogBudget(STDERR_LINES_PER_WINDOW, OUTPUT_LOG_WINDOW_MS, now, (skipped) => {
      this.log.warn({ server: spec.server, pid: this.pid, skipped, windowMs: OUTPUT_LOG_WINDOW_MS }, 'stdio server wrote more stderr lines; not logged')
    })
    // detached: the child leads a new process group, so the whole tree can be signalled at once.
    // uid/gid: libuv drops supplementary groups, then setgid, then setuid, in the child before exec.
    const account = spec.account === undefined ? {} : { uid: spec.account.uid, gid: spec.account.gid }
    this.proc = spawn(spec.command, [...spec.args], { cwd: spec.cwd, env: { ...spec.env }, stdio: ['pipe', 'pipe', 'pipe'], detached: true, ...account })
    this.pid = this.proc.pid
    this.spawned = new Promise((resolve) => {
      this.proc.once('spawn', () => resolve(true))
      this.proc.once('error', () => resolve(false))
    })
    this.exited = new Promise((resolve) => {
      this.proc.once('error', (err: NodeJS.ErrnoException) => {
        // Spawn failures (ENOENT, EACCES) arrive here and no 'exit' follows.
        if (this.pid === undefined) this.finish({ code: null, signal: null, error: err.code ?? err.message })
      })
      this.proc.once('exit', (code, signal) => this.finish({ code, signal }))
      this.exitListeners.push(resolve)
    })
    this.proc.stdout.on('data', (chunk: Buffer) => this.onStdout(chunk))
    this.proc.stderr.setEncoding('utf8')
    this.proc.stderr.on('data', (chunk: string) => this.onStderr(chunk))
    // EPIPE after the child died is reported through 'exit'; nothing to do here.
    this.proc.stdin.on('error', () => {})
  }

  get isRunning (): boolean {
    return this.state === 'running'
  }

  /**
   * Writes one message as one line. JSON text holds a raw CR or LF only as whitespace between
   * tokens (RFC 8259 section 7: inside a string they must be escaped), so each becomes a space.
   * A lone CR too: the line readers of most stdio servers (Python's TextIOWrapper in the MCP
   * Python SDK, Java's readLine, .NET's ReadLine, Node's readline) end a line there, and a body
   * forwarded verbatim would reach them as several messages, some of which policy never judged.
   */
  send (json: string): void {
    if (!this.isRunning) return
    this.proc.stdin.write(LINE_BREAK.test(json) ? `${json.replace(LINE_BREAKS, ' ')}\n` : `${json}\n`)
  }

  onExit (listener: (exit: ChildExit) => void): void {
    if (this.exitInfo !== undefined) listener(this.exitInfo)
    else this.exitListeners.push(listener)
  }

  /** True once the OS started the program; false when spawning failed (ENOENT, EACCES). */
  whenSpawned (): Promise<boolean> {
    return this.spawned
  }

  whenExited (): Promise<ChildExit> {
    return this.exited
  }

  /** Escalating shutdown; resolves once the process (and its group) is gone. */
  async terminate (): Promise<void> {
    if (this.isRunning) {
      this.proc.stdin.end()
      if (!(await this.exitWithin(STDIN_CLOSE_GRACE_MS))) {
        this.signalGroup('SIGTERM')
        if (!(await this.exitWithin(SIGTERM_GRACE_MS))) {
          this.signalGroup('SIGKILL')
          await this.exitWithin(SIGTERM_GRACE_MS)
        }
      }
    }
    // The leader is gone; make sure nothing it started lingers in its group.
    this.signalGroup('SIGKILL')
  }

  /** Kills at once (protocol violations, shutdown deadline). */
  kill (reason: string): void {
    if (this.isRunning) this.log.warn({ server: this.spec.server, pid: this.pid, reason }, 'killing stdio server')
    this.signalGroup('SIGKILL')
  }

  private async exitWithin (ms: number): Promise<boolean> {
    if (!this.isRunning) return true
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
    const result = await Promise.race([this.exited.then(() => true as const), timedOut])
    clearTimeout(timer)
    return result
  }

  private signalGroup (signal: NodeJS.Signals): void {
    if (this.pid === undefined) return
    try {
      process.kill(-this.pid, signal)
    } catch {
      // ESRCH: the group is already gone.
    }
  }

  private finish (exit: ChildExit): void {
    if (this.exitInfo !== undefined) return
    this.state = 'exited'
    this.exitInfo = exit
    if (this.stderrRest !== '') this.logStderr(this.stderrRest)
    clearTimeout(this.summaryTimer)
    this.stdoutNoise.flush()
    this.stderrLines.flush()
    for (const listener of this.exitListeners.splice(0)) listener(exit)
  }

  private onStdout (chunk: Buffer): void {
    let start = 0
    let newline = chunk.indexOf(10)
    while (newline !== -1) {
      const piece = chunk.subarray(start, newline)
      const line = this.pending.length === 0 ? piece : Buffer.concat([...this.pending, piece])
      this.pending = []
      this.pendingBytes = 0
      this.onLine(line)
      start = newline + 1
      newline = chunk.indexOf(10, start)
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start)
      this.pendingBytes += rest.length
      if (this.pendingBytes > this.spec.maxMessageBytes) {
        this.pending = []
        this.pendingBytes = 0
        this.log.error({ server: this.spec.server, pid: this.pid, maxMessageBytes: this.spec.maxMessageBytes }, 'stdio server sent a message larger than maxMessageBytes')
        this.kill('message too large')
        return
      }
      this.pending.push(rest)
    }
  }

  private onLine (bytes: Buffer): void {
    const end = bytes.length > 0 && bytes[bytes.length - 1] === 13 ? bytes.length - 1 : bytes.length
    if (end === 0) return
    const line = bytes.toString('utf8', 0, end)
    let message: unknown
    try {
      message = JSON.parse(line)
    } catch {
      message = undefined
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message) || (message as { jsonrpc?: unknown }).jsonrpc !== '2.0') {
      // Servers that print banners or debug output on stdout: skip, but say so (within a budget).
      if (this.stdoutNoise.take()) this.log.warn({ server: this.spec.server, pid: this.pid, line: line.slice(0, MAX_LOGGED_STDOUT_CHARS) }, 'stdio server wrote a non-JSON-RPC line to stdout; skipped')
      else this.scheduleSummary()
      return
    }
    this.onMessage(message as Record<string, unknown>, line)
  }

  private onStderr (chunk: string): void {
    const text = this.stderrRest + chunk
    const lines = text.split('\n')
    this.stderrRest = lines.pop() ?? ''
    if (this.stderrRest.length > MAX_STDERR_LINE_CHARS) {
      this.logStderr(this.stderrRest)
      this.stderrRest = ''
    }
    for (const line of lines) if (line.trim() !== '') this.logStderr(line)
  }

  private logStderr (line: string): void {
    if (!this.stderrLines.take()) return this.scheduleSummary()
    this.log.info({ server: this.spec.server, pid: this.pid, stderr: line.replace(/\r$/, '').slice(0, MAX_STDERR_LINE_CHARS) }, 'stdio server stderr')
  }

  /** Noise that stops mid-window is still reported when the window ends, not only at exit. */
  private scheduleSummary (): void {
    if (this.summaryTimer !== undefined || !this.isRunning) return
    this.summaryTimer = setTimeout(() => {
      this.summaryTimer = undefined
      this.stdoutNoise.rollIfDue()
      this.stderrLines.rollIfDue()
      if (this.stdoutNoise.pending > 0 || this.stderrLines.pending > 0) this.scheduleSummary()
    }, OUTPUT_LOG_WINDOW_MS)
    this.summaryTimer.unref()
  }
}
