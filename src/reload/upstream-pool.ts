/**
 * The stdio upstreams every build of the app shares (README "Reloading"). A reload builds a new
 * app from the new file; a stdio server whose process-defining settings did not change keeps
 * its StdioUpstream — its processes, sessions and open GET streams — so its clients notice
 * nothing. A changed or removed one drains: the sessions it holds still reach it (mcp.ts asks
 * holderOf before the new definition), it takes no new sessions, and it closes when its last
 * session ends (idle timeout) or, removed, when nothing is in flight on it any more.
 *
 * HTTP and SSE upstreams hold no processes and their sessions live in the shared SessionOwners:
 * each build makes its own, and closes them when it is retired.
 *
 * Two phases: plan() while the next build is made (the pool does not change), commit() once
 * it is in force, abort() when it failed — so a failed reload leaves every upstream as it was.
 */
import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Config, ServerConfig } from '../config/schema.js'
import { StdioUpstream } from '../upstreams/stdio/stdio-upstream.js'
import { SseUpstream } from '../upstreams/sse-upstream.js'
import type { Upstream } from '../upstreams/types.js'
import type { LinkedTokenSource } from '../upstreams/upstream-credentials.js'

/** Settings the gateway judges by (policy, guardrails, scopes): a change to them keeps the processes. */
const JUDGED_FIELDS: ReadonlySet<string> = new Set(['scopes', 'access', 'tools', 'prompts', 'resources', 'rateLimit', 'redactResults', 'pinTools', 'validateArguments', 'maxLegacySessions'])

/** How often draining upstreams are checked for their last session. */
const DRAIN_CHECK_INTERVAL_MS = 1_000

/**
 * Upstreams that hold their sessions in this process — stdio (processes) and sse (each session
 * one upstream event stream, SseUpstream's bridges) — are kept across reloads by definition
 * key; a new instance would know none of their sessions. HTTP upstreams' sessions live upstream
 * and in the shared SessionOwners, so each build makes its own.
 */
type InProcessUpstream = StdioUpstream | SseUpstream

function holdsSessionsInProcess (server: ServerConfig): boolean {
  return server.transport === 'stdio' || server.transport === 'sse'
}

function isInProcess (upstream: Upstream): upstream is InProcessUpstream {
  return upstream instanceof StdioUpstream || upstream instanceof SseUpstream
}

interface Kept {
  readonly upstream: InProcessUpstream
  readonly key: string
}

/** One build's upstreams, before and after it is put in force. */
export interface UpstreamPlan {
  readonly upstreams: ReadonlyMap<string, Upstream>
  /** After the swap: the pool takes the new stdio upstreams and drains those they replace (idempotent). */
  readonly commit: () => void
  /** The build failed or was never put in force: closes only the stdio upstreams the plan made (no-op once committed). */
  readonly abort: () => Promise<void>
}

interface Draining {
  readonly upstream: InProcessUpstream
  /** Removed from the file: no route reaches its sessions, so it closes once nothing is in flight. */
  readonly isRemoved: boolean
}

export class UpstreamPool {
  private readonly kept = new Map<string, Kept>()
  private readonly draining = new Set<Draining>()
  /**
   * Drained upstreams being closed now: still the pool's (a retired build must not close them a
   * second time), and the pool's close waits for them (their processes end first).
   */
  private readonly closing = new Map<InProcessUpstream, Promise<void>>()
  private drainTimer: NodeJS.Timeout | undefined
  private linkedTokenNow: LinkedTokenSource | undefined

  constructor (private readonly log: FastifyBaseLogger) {}

  /**
   * The upstreams of one configuration, by server name: a kept stdio upstream when its
   * definition is unchanged, a new one from `create` otherwise. Nothing in the pool changes
   * until the plan is committed — the generation in force keeps serving on what it has while
   * the next one is built; a build that fails aborts the plan.
   */
  plan (config: Config, create: (server: ServerConfig) => Upstream): UpstreamPlan {
    const upstreams = new Map<string, Upstream>()
    const made: Kept[] = []
    for (const server of config.servers) {
      const kept = this.kept.get(server.name)
      const key = holdsSessionsInProcess(server) ? definitionKey(server) : undefined
      if (kept !== undefined && kept.key === key) {
        upstreams.set(server.name, kept.upstream)
        continue
      }
      const upstream = create(server)
      if (key !== undefined && isInProcess(upstream)) made.push({ upstream, key })
      upstreams.set(server.name, upstream)
    }
    let state: 'planned' | 'committed' | 'aborted' = 'planned'
    return {
      upstreams,
      commit: () => {
        if (state !== 'planned') return
        state = 'committed'
        this.commit(upstreams, made)
      },
      abort: async () => {
        if (state !== 'planned') return
        state = 'aborted'
        await Promise.all(made.map(async ({ upstream }) => upstream.close()))
      },
    }
  }

  /** Whether this upstream belongs to the pool (closed by it, never by one build of the app). */
  owns (upstream: Upstream): boolean {
    return isInProcess(upstream) && (this.kept.get(upstream.name)?.upstream === upstream || [...this.draining].some((d) => d.upstream === upstream) || this.closing.has(upstream))
  }

  /** A draining upstream of this server that holds the session: the session stays on its own process. */
  holderOf (server: string, sessionId: string): Upstream | undefined {
    for (const { upstream } of this.draining) {
      if (upstream.name === server && upstream.holdsSession(sessionId)) return upstream
    }
    return undefined
  }

  /** Upstreams still draining (the admin API lists their sessions too). */
  drainingUpstreams (): Upstream[] {
    return [...this.draining].map((d) => d.upstream)
  }

  /**
   * `${user.credentials.<server>}` through the newest build's source: a kept stdio upstream
   * outlives the build that made it, whose outbound fetches close when it is retired.
   */
  readonly linkedToken: LinkedTokenSource = async (server, user, canElicitUrl) => {
    const source = this.linkedTokenNow
    if (source === undefined) throw new Error('linked upstream accounts are not configured')
    return source(server, user, canElicitUrl)
  }

  useLinkedToken (source: LinkedTokenSource | undefined): void {
    this.linkedTokenNow = source
  }

  async close (): Promise<void> {
    clearInterval(this.drainTimer)
    const all = [...[...this.kept.values()].map((k) => k.upstream), ...[...this.draining].map((d) => d.upstream)]
    this.kept.clear()
    this.draining.clear()
    await Promise.all([...all.map(async (upstream) => upstream.close()), ...this.closing.values()])
  }

  /**
   * The new generation is in force: its stdio upstreams join the pool; every kept one it does
   * not use drains — replaced by a new definition, by another transport, or removed.
   */
  private commit (upstreams: ReadonlyMap<string, Upstream>, made: readonly Kept[]): void {
    for (const [name, kept] of this.kept) {
      if (upstreams.get(name) === kept.upstream) continue
      this.kept.delete(name)
      this.drain(kept.upstream, !upstreams.has(name))
    }
    for (const entry of made) this.kept.set(entry.upstream.name, entry)
  }

  private drain (upstream: InProcessUpstream, isRemoved: boolean): void {
    this.draining.add({ upstream, isRemoved })
    // A removed server's open streams would keep it (and its processes) alive with no route to it.
    if (isRemoved) upstream.closeStreams()
    this.log.info({ server: upstream.name, sessions: upstream.liveSessions().length, removed: isRemoved }, 'stdio server definition replaced: its sessions drain on the old processes')
    if (this.drainTimer === undefined) {
      this.drainTimer = setInterval(() => this.closeDrained(), DRAIN_CHECK_INTERVAL_MS)
      this.drainTimer.unref()
    }
    this.closeDrained()
  }

  private closeDrained (): void {
    for (const entry of this.draining) {
      const { upstream, isRemoved } = entry
      const load = upstream.load()
      const isBusy = load.exchanges > 0 || load.streams > 0
      if (isBusy || (!isRemoved && upstream.liveSessions().length > 0)) continue
      this.draining.delete(entry)
      this.log.info({ server: upstream.name }, 'drained stdio server closed')
      const closing = upstream.close().catch((err: Error) => this.log.warn({ server: upstream.name, err: { message: err.message } }, 'could not close a drained stdio server'))
      this.closing.set(upstream, closing)
      void closing.finally(() => this.closing.delete(upstream))
    }
    if (this.draining.size === 0) {
      clearInterval(this.drainTimer)
      this.drainTimer = undefined
    }
  }
}

/** A stable digest of what defines a stdio server's processes (key order does not matter). */
export function definitionKey (server: ServerConfig): string {
  const defining = Object.fromEntries(Object.entries(server).filter(([field]) => !JUDGED_FIELDS.has(field)))
  return createHash('sha256').update(stableJson(defining)).digest('hex')
}

/** JSON with object keys sorted, so equal values give equal text. */
export function stableJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}
