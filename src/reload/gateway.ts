/**
 * The running gateway of `portcullis start`, reloadable (README "Reloading").
 *
 * Everything buildApp wires closes over its `config`, so a reload does not change modules in
 * place: it builds a new *generation* — a new Fastify app from the new file — and switches the
 * one HTTP listener over to it. The generations share what must outlive them (SharedParts in
 * app.ts: the store, Redis, rate-limit counters, metrics, the audit log, stdio processes and
 * sessions). A request finishes on the generation that accepted it, event streams included; a
 * retired generation stops its pollers at once and closes when its last request has ended, or
 * at the latest shutdownTimeoutMs after it was retired (each one holds a Fastify app and an
 * oidc-provider: a client holding a stream open must not make memory grow per reload).
 *
 * One reload at a time: a second caller waits for the first and then reads the file again.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildApp, createSharedParts, listenerTimeouts, type AccountChanges, type BuildOptions, type SharedParts } from '../app.js'
import type { AccountRevocation } from '../admin/revoke-user.js'
import { ClusterNotices } from '../cluster/notices.js'
import { ConfigError, configFileSha256, readConfigFile } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { stdioCommandProblems } from '../upstreams/stdio/resolve-command.js'
import { describeChanges, restartOnlyChanges, withRestartOnlyKept } from './changes.js'
import type { ReloadReport } from './report.js'
import { stableJson } from './upstream-pool.js'
import { accountChanges, hasAccountChanges } from './users.js'
import { OUTLIVES_GENERATION } from '../routes/legacy-sessions.js'
import { withTimeout } from '../with-timeout.js'

/** Who asked for a reload; only an operator's own request (API, SIGHUP) is passed on to the other replicas. */
export type ReloadCause = 'api' | 'signal' | 'watch' | 'replica'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** Test-only hooks into each build (never set by `portcullis start`). */
export type TestHooks = Pick<BuildOptions, 'afterWiring'>

interface Generation {
  readonly app: FastifyInstance
  readonly handle: Handler
  /** Requests accepted and not yet ended (an open event stream counts until it closes). */
  inFlight: number
}

/** Whether the server `name` is gone from `after` or defined differently there. */
function serverChanged (name: string, before: Config, after: Config): boolean {
  const was = before.servers.find((s) => s.name === name)
  const is = after.servers.find((s) => s.name === name)
  return was === undefined || is === undefined || stableJson(was) !== stableJson(is)
}

/** Whether who may reach the server at all changed (its `access` list or required `scopes`). */
function reachChanged (name: string, before: Config, after: Config): boolean {
  const was = before.servers.find((s) => s.name === name)
  const is = after.servers.find((s) => s.name === name)
  return was === undefined || is === undefined || stableJson([was.access ?? null, was.scopes]) !== stableJson([is.access ?? null, is.scopes])
}

/**
 * A replica's file may differ from the one another replica applied for a while (a ConfigMap
 * reaches each pod within a minute or so): it is read again after these delays.
 */
const REPLICA_FILE_RETRY_DELAYS_MS = [2_000, 5_000, 15_000, 40_000]

/** How often a retired generation is checked for its last request. */
const RETIRE_CHECK_INTERVAL_MS = 500
/** What an operator runs once the store answers again, for an account a reload could not revoke. */
const REVOKE_HINT = '`portcullis admin revoke-user <id>` (POST /admin/api/v1/users/<id>/revoke) once the store answers'

export class Gateway {
  private current: Generation | undefined
  private readonly retiring = new Set<Generation>()
  /** Retired generations, from their retirement until they have closed: shutdown waits for them (up to its deadline). */
  private readonly closingRetired = new Set<Promise<void>>()
  private readonly connections = new Set<Socket>()
  private queue: Promise<unknown> = Promise.resolve()
  private notices: ClusterNotices | undefined
  private isClosing = false
  private readonly server: Server

  private constructor (
    /** The configuration in force; the shared parts read it too (idle timeouts of kept sessions). */
    private readonly inForce: { config: Config, sha256: string | undefined },
    private readonly log: Logger,
    private readonly shared: SharedParts,
    private readonly testHooks: TestHooks,
  ) {
    this.server = createServer(listenerTimeouts(inForce.config.limits).http, (req, res) => this.route(req, res))
    this.applyListenerTimeouts()
    // A connection that never sent a byte is neither idle nor busy to Node: closed at shutdown.
    this.server.on('connection', (socket: Socket) => {
      this.connections.add(socket)
      socket.once('close', () => this.connections.delete(socket))
    })
  }

  /** Builds the first generation (nothing listens yet: `listen`). */
  /** `fileSha256`: the digest of the text `config` was read from (readConfigFile). */
  static async create (config: Config, log: Logger, fileSha256: string | undefined, testHooks: TestHooks = {}): Promise<Gateway> {
    const inForce = { config, sha256: fileSha256 }
    const shared = await createSharedParts(config, { logger: log }, () => inForce.config)
    const gateway = new Gateway(inForce, log, shared, testHooks)
    try {
      gateway.current = await gateway.build(config)
      gateway.current.app.portcullis.activate()
    } catch (err) {
      await shared.close()
      throw err
    }
    if (shared.redis !== undefined) {
      // A shortcut like every notice: without it each replica still reloads on its own SIGHUP.
      await gateway.listenToReplicas(config).catch((err: Error) => log.warn({ err: { message: err.message } }, 'cannot hear the other replicas\' reloads'))
    }
    return gateway
  }

  /** The generation in force (main.ts reads its first-run account and metrics listener at start). */
  get app (): FastifyInstance {
    return this.generation().app
  }

  get shutdownTimeoutMs (): number {
    return this.config.shutdownTimeoutMs
  }

  async listen (): Promise<void> {
    const { host, port } = this.config.listen
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
  }

  /** Re-reads the file and applies it (README "Reloading"); never throws for a bad file. */
  readonly reload = async (cause: ReloadCause = 'api'): Promise<ReloadReport> => {
    const run = this.queue.then(async () => this.reloadNow(cause))
    this.queue = run.catch(() => undefined)
    const report = await run
    // Passed on only when applied: a refused file is this replica's problem, not the others'.
    const sha256 = this.inForce.sha256
    if ((cause === 'api' || cause === 'signal') && report.applied && sha256 !== undefined) await this.notices?.publish({ type: 'reload', sha256 })
    return report
  }

  /** --watch: an edit made while the gateway was starting (before the watch began) is not missed. */
  async reloadIfChanged (): Promise<void> {
    const now = configFileSha256(this.config.source)
    if (now !== undefined && now !== this.inForce.sha256) await this.reload('watch')
  }

  /**
   * Graceful shutdown: new requests get 503, event streams end, requests in flight finish; at
   * the deadline what is left fails (JSON-RPC errors) and the remaining connections drop.
   * Resolves true when everything the gateway started has ended; false when a reload still
   * building or a retired build still closing was left behind at the deadline (each finishes,
   * and ends its stdio children, on its own).
   */
  async close (): Promise<boolean> {
    this.isClosing = true
    // A reload under way finishes first (its new build is closed, not put in force): otherwise
    // it would swap in a generation nobody closes, with stdio children nobody ends.
    const isReloadDone = await this.reloadsDone(this.config.shutdownTimeoutMs)
    if (!isReloadDone) this.log.warn({ timeoutMs: this.config.shutdownTimeoutMs }, 'shutdown went on without waiting for a reload still building')
    const endsBy = Date.now() + this.config.shutdownTimeoutMs
    const generations = this.generations()
    for (const { app } of generations) app.portcullis.isClosing = true
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    for (const { app } of generations) for (const upstream of app.portcullis.upstreams.values()) upstream.closeStreams()
    for (const upstream of this.shared.upstreams.drainingUpstreams()) upstream.closeStreams()
    this.shared.legacySessions.closeAll()
    for (const socket of this.connections) if (socket.bytesRead === 0) socket.destroy()
    this.server.closeIdleConnections()
    const timeoutMs = this.config.shutdownTimeoutMs
    const deadline = setTimeout(() => {
      this.log.warn({ timeoutMs }, 'shutdown deadline reached; failing in-flight requests')
      const upstreams = [...generations.flatMap(({ app }) => [...app.portcullis.upstreams.values()]), ...this.shared.upstreams.drainingUpstreams()]
      void Promise.all(upstreams.map(async (upstream) => upstream.close())).finally(() => this.server.closeAllConnections())
    }, timeoutMs)
    deadline.unref()
    try {
      await closed
      await this.notices?.close()
      for (const generation of generations) await generation.app.close()
      // A retired build already closing (it left `retiring` when its close began) is waited for
      // too, until the deadline: a build stuck on a store that is down must not hold the shutdown.
      let isRetiredClosed = true
      await withTimeout(Promise.all(this.closingRetired), Math.max(0, endsBy - Date.now()), () => new Error('a retired configuration was still closing at the shutdown deadline'))
        .catch((err: Error) => {
          isRetiredClosed = false
          this.log.warn({ err: { message: err.message } }, 'shutdown went on without waiting for a retired configuration')
        })
      await this.shared.close()
      return isReloadDone && isRetiredClosed
    } finally {
      clearTimeout(deadline)
    }
  }

  /** True once the reload queue has emptied; false when `timeoutMs` passed first (a build stuck on a slow store must not hold the shutdown). */
  private async reloadsDone (timeoutMs: number): Promise<boolean> {
    // The queue never rejects (each run's failure is caught where it is queued): a rejection here is the timeout.
    return withTimeout(this.queue, timeoutMs, () => new Error('a reload was still building at the shutdown deadline')).then(() => true, () => false)
  }

  private get config (): Config {
    return this.inForce.config
  }

  private generation (): Generation {
    if (this.current === undefined) throw new Error('the gateway has no generation yet')
    return this.current
  }

  private generations (): Generation[] {
    return [...(this.current === undefined ? [] : [this.current]), ...this.retiring]
  }

  private route (req: IncomingMessage, res: ServerResponse): void {
    const generation = this.generation()
    generation.inFlight++
    let isCounted = true
    const release = (): void => {
      if (!isCounted) return
      isCounted = false
      generation.inFlight--
    }
    res.once('close', release)
    // A 2024-11-05 event stream lives in the shared parts, not in this generation: it must not keep it from closing.
    res.once(OUTLIVES_GENERATION, release)
    generation.handle(req, res)
  }

  private async build (config: Config): Promise<Generation> {
    let handle: Handler | undefined
    const app = await buildApp(config, {
      ...this.testHooks,
      logger: this.log,
      shared: this.shared,
      reload: async () => this.reload('api'),
      // Fastify gets a server of its own it never listens on: closing a generation must not close the listener.
      serverFactory: (handler) => {
        handle = handler
        return createServer()
      },
    })
    try {
      await app.ready()
      if (handle === undefined) throw new Error('fastify made no request handler')
    } catch (err) {
      await app.close().catch((closeErr: Error) => this.log.warn({ err: { message: closeErr.message } }, 'could not close a failed build'))
      throw err
    }
    return { app, handle, inFlight: 0 }
  }

  private async reloadNow (cause: ReloadCause): Promise<ReloadReport> {
    if (this.isClosing) return this.refused(cause, ['the gateway is shutting down'])
    const source = this.config.source
    let next: Config
    let sha256: string
    try {
      ({ config: next, sha256 } = readConfigFile(source))
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      return this.refused(cause, err.message.split('\n'))
    }
    const problems = stdioCommandProblems(next)
    if (problems.length > 0) return this.refused(cause, problems.map((p) => `${source}: ${p}`))
    const needsRestart = restartOnlyChanges(this.config, next)
    const applied = withRestartOnlyKept(this.config, next)
    const changed = describeChanges(this.config, applied)
    let warnings: readonly string[] = []
    if (changed.length > 0) {
      let generation: Generation
      try {
        // A failed build closed what it made; the generation in force and the shared parts are as they were.
        generation = await this.build(applied)
      } catch (err) {
        return this.refused(cause, [`${source}: ${(err as Error).message}`])
      }
      if (this.isClosing) {
        // Shutdown began during the build: this generation is never put in force.
        await generation.app.close()
        return this.refused(cause, ['the gateway is shutting down'])
      }
      const previous = this.generation()
      const previousConfig = this.config
      this.current = generation
      generation.app.portcullis.activate()
      this.inForce.config = applied
      this.applyListenerTimeouts()
      this.log.level = applied.log.level
      this.retire(previous, previousConfig, applied)
      warnings = await this.revokeAccounts(generation, accountChanges(previousConfig, applied))
    }
    this.inForce.sha256 = sha256
    const report: ReloadReport = { applied: true, changed, needsRestart, errors: [], warnings }
    this.log.info({ cause, changed, needsRestart }, needsRestart.length === 0 ? 'configuration reloaded' : 'configuration reloaded; some settings need a restart')
    return report
  }

  /**
   * Users removed or regrouped, identity providers removed: their grants are revoked (and, for
   * the removed, their API keys and sessions, stdio processes included) by the generation now in
   * force. What could not be revoked is the report's warnings: the new file is in force (they
   * cannot sign in again), but their current tokens would live on until they expire.
   */
  private async revokeAccounts (generation: Generation, changes: AccountChanges): Promise<readonly string[]> {
    if (!hasAccountChanges(changes)) return []
    let revocation: AccountRevocation
    try {
      revocation = await generation.app.portcullis.revokeAccounts(changes)
    } catch (err) {
      this.log.error({ ...changes, err: { message: (err as Error).message } }, 'could not revoke the access of accounts the reload removed or regrouped')
      return [`the access of the accounts the reload removed or regrouped is not revoked: ${(err as Error).message}; revoke each with ${REVOKE_HINT}`]
    }
    const { providerAccounts, failures } = revocation
    if (failures.length === 0) {
      this.log.info({ ...changes, providerAccounts }, 'accounts removed or regrouped by the reload: their access revoked')
      return []
    }
    this.log.error({ ...changes, providerAccounts, failures }, 'could not revoke the access of accounts the reload removed or regrouped')
    return failures.map(({ account, change, error }) => change === 'providers not listed'
      ? `the accounts of the removed identity providers (${account}) could not be listed, so their access is not revoked: ${error}; revoke each with ${REVOKE_HINT}`
      : `the access of ${account} (${change}) is not revoked: ${error}; revoke it with ${REVOKE_HINT.replaceAll('<id>', account)}`)
  }

  private refused (cause: ReloadCause, errors: string[]): ReloadReport {
    this.log.error({ cause, errors }, 'configuration reload refused: nothing changed')
    return { applied: false, changed: [], needsRestart: [], errors, warnings: [] }
  }

  /** Stops the generation's background work now; closes it when its last request has ended. */
  private retire (generation: Generation, before: Config, after: Config): void {
    this.retiring.add(generation)
    // A stream of a server removed or changed would keep the old definition flowing: it ends,
    // and the client reopens it on the new one. The pool's stdio upstreams are not this build's
    // (their sessions and streams live on across a reload), except one the new build keeps
    // whose access list or required scopes changed: its streams end, so each client is judged
    // again when it reopens one (a user the new access list leaves out must not keep receiving
    // the server's messages).
    const next = this.current?.app.portcullis.upstreams
    for (const upstream of generation.app.portcullis.upstreams.values()) {
      if (!serverChanged(upstream.name, before, after)) continue
      const isKept = this.shared.upstreams.owns(upstream)
      if (!isKept || (next?.get(upstream.name) === upstream && reachChanged(upstream.name, before, after))) upstream.closeStreams()
    }
    const deadline = Date.now() + after.shutdownTimeoutMs
    const close = async (): Promise<void> => {
      await generation.app.portcullis.stopBackground()
      while (generation.inFlight > 0 && !this.isClosing && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, RETIRE_CHECK_INTERVAL_MS))
      if (this.isClosing) return
      this.retiring.delete(generation)
      // At the deadline, what is left of this build's own requests fails as at shutdown; streams
      // of the pool's stdio upstreams go on (they are written by the upstream, not by this app).
      await generation.app.close()
      this.log.info({ requestsLeft: generation.inFlight }, 'retired configuration closed')
    }
    const closing = close().catch((err: Error) => this.log.warn({ err: { message: err.message } }, 'could not close a retired configuration'))
    this.closingRetired.add(closing)
    void closing.finally(() => this.closingRetired.delete(closing))
  }

  /** limits.* apply to the listener itself (a new connection sees the new values). */
  private applyListenerTimeouts (): void {
    const timeouts = listenerTimeouts(this.config.limits)
    this.server.keepAliveTimeout = timeouts.keepAliveTimeout
    this.server.requestTimeout = timeouts.requestTimeout
    this.server.headersTimeout = timeouts.http.headersTimeout
  }

  /** Replicas on Redis: a reload on one is a reload on all (each reads its own file). */
  private async listenToReplicas (config: Config): Promise<void> {
    if (this.shared.redis === undefined) return
    const notices = new ClusterNotices(this.shared.redis, `${config.store.prefix}notices`, this.log as FastifyBaseLogger)
    this.notices = notices
    await notices.start(config.store.redis ?? '')
    notices.onReload(async (sha256) => this.reloadForReplica(sha256))
  }

  /**
   * Another replica applied the file with this digest. This one reads its own; when that
   * differs, it says so and reads it again a few times (a ConfigMap reaches pods one by one).
   */
  private async reloadForReplica (sha256: string): Promise<void> {
    await this.reload('replica')
    for (const delayMs of REPLICA_FILE_RETRY_DELAYS_MS) {
      if (this.isClosing || configFileSha256(this.config.source) === sha256) return
      this.log.warn({ file: this.config.source, retryInMs: delayMs }, 'this replica\'s configuration file differs from the one another replica applied')
      await new Promise((resolve) => setTimeout(resolve, delayMs).unref())
      if (configFileSha256(this.config.source) === sha256) await this.reload('replica')
    }
    if (!this.isClosing && configFileSha256(this.config.source) !== sha256) {
      this.log.error({ file: this.config.source }, 'replicas run different configuration files: give every replica the same file')
    }
  }
}
