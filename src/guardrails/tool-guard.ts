/**
 * One server's guardrails on tool traffic (README "Guardrails"):
 *
 *  - pinned definitions (servers[].pinTools): each tools/list answer is
 *    fingerprinted tool by tool and compared with the approved set in the
 *    store. The first listing is approved on first use. A change, an added or
 *    a removed tool is logged, counted and audited once (warn); under enforce
 *    the changed and added tools are also hidden from the list and calls to
 *    them refused, until an operator approves them (`portcullis tools approve`,
 *    or the admin API's POST /admin/api/v1/servers/<server>/tools/approve).
 *  - validated arguments (servers[].validateArguments): tools/call arguments
 *    checked against the tool's inputSchema, unknown tools refused, before the
 *    call leaves the gateway.
 *
 * The approved set is re-read from the store at most every
 * TOOL_APPROVALS_CACHE_MS, so an approval made by the CLI, another replica's
 * admin API (or first use) takes effect within that bound, without a restart;
 * one made through this replica's admin API at once (`forget()`).
 * List answers are edited synchronously as they stream by: the route awaits
 * `refresh()` before the request goes upstream, and the edit then uses the
 * state in memory.
 */
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError, type JsonRpcId } from '../errors.js'
import type { ServerConfig } from '../config/schema.js'
import type { Store } from '../store/types.js'
import { storeUnavailableError } from '../store/outage.js'
import type { Decision } from '../policy/gate.js'
import { fingerprintOf, toolDefinition } from './tool-fingerprint.js'
import {
  approveFirstUse, diffTools, FIRST_USE, loadApproved, loadObserved, saveObserved, toolIn,
  type ApprovedTools, type ObservedTools, type PinnedTool, type ToolChange, type ToolSet,
} from './tool-approvals.js'
import type { ArgumentValidator } from './argument-validator.js'

/** How stale the approved set may be: an approval reaches every replica within this. */
export const TOOL_APPROVALS_CACHE_MS = 5_000
/** Changes already reported are remembered (per process) up to this many, then forgotten together. */
const MAX_REPORTED_CHANGES = 1_000
/** Paginated listings being walked (per process), at most this many at once: the oldest is dropped first. */
const MAX_OPEN_LIST_WALKS = 1_000
/** A walk whose next page has not come within this long is abandoned (its pages are not a listing any more). */
export const LIST_WALK_TTL_MS = 10 * 60_000

/** Which listing walk a tools/list page belongs to: the request's cursor, and the MCP session it came in (if any). */
export interface ListPage {
  readonly cursor: unknown
  readonly session: string | undefined
}

interface ListWalk {
  /** The tools of every page so far. */
  readonly tools: ToolSet
  /** When the page that asked for the next one went by. */
  readonly atMs: number
}

export interface ToolGuardOptions {
  readonly server: ServerConfig
  readonly store: Store
  readonly validator: ArgumentValidator
  readonly log: FastifyBaseLogger
  readonly now: () => number
  /** A change seen for the first time: counted and audited by the caller. */
  readonly onChanges: (changes: readonly ToolChange[]) => void
  /** The first listing was approved (trust on first use). */
  readonly onFirstUse: (tools: readonly string[]) => void
}

export interface CallRefusal {
  readonly decision: Decision
  readonly reason: string
  readonly error: PortcullisError
}

interface PinState {
  approved: ApprovedTools | undefined
  observed: ObservedTools | undefined
  loadedAtMs: number
}

export class ToolGuard {
  private readonly server: ServerConfig
  private state: PinState | undefined
  private loading: Promise<void> | undefined
  /** Counts forget() calls: a load that began before one may have read the set it replaced. */
  private forgotten = 0
  private readonly reported = new Set<string>()
  /** Open walks by session and the cursor their next page is asked with. */
  private readonly walks = new Map<string, ListWalk>()

  constructor (private readonly options: ToolGuardOptions) {
    this.server = options.server
  }

  /** Whether any guardrail is on for this server (most answers then pass as bytes). */
  get isActive (): boolean {
    return this.server.pinTools !== 'off' || this.server.validateArguments
  }

  /** Whether a tools/call can be refused (enforce, or validation): only then does a call need the approved set. */
  get refusesCalls (): boolean {
    return this.server.pinTools === 'enforce' || this.server.validateArguments
  }

  /** Whether replayed list answers must be edited (enforce hides unapproved tools). */
  get hidesTools (): boolean {
    return this.server.pinTools === 'enforce'
  }

  get pinTools (): ServerConfig['pinTools'] {
    return this.server.pinTools
  }

  /**
   * Drops the copy in memory: the next request re-reads the store. An approval made through
   * this replica's admin API takes effect here at once; other replicas within TOOL_APPROVALS_CACHE_MS.
   */
  forget (): void {
    this.forgotten++
    if (this.state !== undefined) this.state.loadedAtMs = Number.NEGATIVE_INFINITY
  }

  /** Loads the approved and observed sets unless the copy in memory is fresh enough. */
  async refresh (): Promise<void> {
    const state = this.state
    if (state !== undefined && this.options.now() - state.loadedAtMs < TOOL_APPROVALS_CACHE_MS) return
    this.loading ??= this.load().finally(() => { this.loading = undefined })
    await this.loading
  }

  private async load (): Promise<void> {
    const { store, server, now, log } = this.options
    const forgotten = this.forgotten
    try {
      const [approved, observed] = await Promise.all([loadApproved(store, server.name), loadObserved(store, server.name)])
      this.state = { approved, observed, loadedAtMs: forgotten === this.forgotten ? now() : Number.NEGATIVE_INFINITY }
    } catch (err) {
      // A stale copy is better than none: approvals are rare, and the next request retries.
      // With none, only a guardrail that refuses calls must fail closed; warn merely watches.
      if (this.state !== undefined || !this.refusesCalls) {
        log.warn({ server: server.name, err: { message: (err as Error).message } }, 'approved tool definitions could not be read; pinning skipped or using the copy in memory')
        return
      }
      throw storeUnavailableError(err)
    }
  }

  /**
   * A tools/list result on its way to the client: recorded, compared with the
   * approved set, and under enforce returned without unapproved tools
   * (undefined: pass it unchanged).
   *
   * A paginated listing (MCP 2025-06-18, "Pagination": the client sends each
   * page's nextCursor back as the next request's cursor; the last page has
   * none) is followed page by page within its session: only a walk from the
   * first page to the last is a complete listing, the one that shows a tool
   * was removed, and the one trusted on first use (trusting the first page
   * alone would refuse every tool of the later ones as added).
   */
  onList (result: unknown, page: ListPage): Record<string, unknown> | undefined {
    const listed = listedTools(result)
    const state = this.state
    if (listed === undefined || state === undefined) return undefined
    const walked = this.walk(listed, page, (result as Record<string, unknown>).nextCursor)
    const isComplete = walked !== undefined
    const seen = walked ?? listed
    this.observe(state, seen, isComplete)
    if (this.server.pinTools === 'off') return undefined
    if (state.approved === undefined) {
      if (isComplete) this.trustFirstUse(state, seen)
      return undefined
    }
    this.report(diffTools(state.approved.tools, seen, isComplete))
    return this.hidesTools ? this.withoutUnapproved(result, listed) : undefined
  }

  /**
   * This page joined to the earlier pages of its walk: the whole listing when
   * it is the last page of a walk that began at the first, else undefined (the
   * walk is kept for its next page, or its start is unknown).
   */
  private walk (listed: ToolSet, page: ListPage, nextCursor: unknown): ToolSet | undefined {
    const now = this.options.now()
    let tools: ToolSet | undefined
    if (page.cursor === undefined) {
      tools = listed
    } else if (typeof page.cursor === 'string') {
      const key = walkKey(page.session, page.cursor)
      const before = this.walks.get(key)
      this.walks.delete(key)
      if (before !== undefined && now - before.atMs <= LIST_WALK_TTL_MS) tools = { ...before.tools, ...listed }
    }
    if (tools === undefined) return undefined
    if (nextCursor === undefined) return tools
    if (typeof nextCursor === 'string') {
      if (this.walks.size >= MAX_OPEN_LIST_WALKS) this.walks.delete(this.walks.keys().next().value as string)
      this.walks.set(walkKey(page.session, nextCursor), { tools, atMs: now })
    }
    return undefined
  }

  /** A list result replayed on a GET stream (its request went by earlier): hidden like a live one, not recorded. */
  onReplayedList (result: unknown): Record<string, unknown> | undefined {
    const listed = listedTools(result)
    return this.hidesTools && listed !== undefined ? this.withoutUnapproved(result, listed) : undefined
  }

  /** Why a tools/call must not leave the gateway; undefined when it may. */
  checkCall (tool: string, args: unknown, id: JsonRpcId): CallRefusal | undefined {
    const name = this.server.name
    const approved = this.state?.approved
    const observed = this.state?.observed
    if (this.server.pinTools === 'enforce') {
      const refusal = this.pinRefusal(tool, approved, toolIn(observed?.tools, tool), id)
      if (refusal !== undefined) return refusal
    }
    if (!this.server.validateArguments) return undefined
    // Under enforce, the approved definition is the contract; under warn and off, what the upstream
    // lists now is (an accepted change would otherwise fail against the schema it replaced).
    const reference = this.server.pinTools === 'enforce' ? toolIn(approved?.tools, tool) : toolIn(observed?.tools, tool)
    if (reference === undefined) {
      const isListKnown = this.server.pinTools === 'enforce' || observed?.isComplete === true
      if (!isListKnown) return undefined
      const message = `server "${name}" lists no tool "${tool}"`
      return { decision: 'invalid', reason: message, error: new PortcullisError('PORTCULLIS_ERR_UNKNOWN_TOOL', message, { id }) }
    }
    const problem = this.options.validator.check(reference.fingerprint, reference.definition.inputSchema, args)
    if (problem === undefined) return undefined
    const message = `tool "${tool}": ${problem.path === '' ? 'arguments' : `arguments${problem.path}`} ${problem.message}`
    return { decision: 'invalid', reason: message, error: new PortcullisError('PORTCULLIS_ERR_INVALID_ARGUMENTS', message, { id, data: { path: problem.path } }) }
  }

  private pinRefusal (tool: string, approved: ApprovedTools | undefined, listed: PinnedTool | undefined, id: JsonRpcId): CallRefusal | undefined {
    const name = this.server.name
    const approveHint = `an operator can approve it: portcullis tools diff ${name}; portcullis tools approve ${name} --tool ${tool}`
    let message: string | undefined
    if (approved === undefined) {
      message = `no tool list of server "${name}" is approved yet: list the tools first (the first listing is trusted), or approve one with portcullis tools approve ${name}`
    } else {
      const pinned = toolIn(approved.tools, tool)
      if (pinned === undefined && listed === undefined) {
        const unknown = `server "${name}" lists no approved tool "${tool}"`
        return { decision: 'invalid', reason: unknown, error: new PortcullisError('PORTCULLIS_ERR_UNKNOWN_TOOL', unknown, { id }) }
      }
      if (listed?.fingerprint === LISTED_TWICE) message = `server "${name}" lists tool "${tool}" more than once: which definition a client sees is not known`
      else if (pinned === undefined) message = `tool "${tool}" was added to server "${name}" after its tools were approved; ${approveHint}`
      else if (listed !== undefined && listed.fingerprint !== pinned.fingerprint) {
        message = `the definition of tool "${tool}" of server "${name}" changed since it was approved (${short(pinned.fingerprint)} -> ${short(listed.fingerprint)}); ${approveHint}`
      }
    }
    if (message === undefined) return undefined
    return { decision: 'denied', reason: message, error: new PortcullisError('PORTCULLIS_ERR_TOOL_NOT_APPROVED', message, { id }) }
  }

  /** The latest listing, kept in the store for `tools diff` (written only when it differs). */
  private observe (state: PinState, listed: ToolSet, isComplete: boolean): void {
    const before = state.observed
    const tools = isComplete || before === undefined ? listed : { ...before.tools, ...listed }
    const isKnownComplete = isComplete || (before?.isComplete ?? false)
    if (before !== undefined && before.isComplete === isKnownComplete && sameTools(before.tools, tools)) return
    const observed: ObservedTools = { tools, observedAtMs: this.options.now(), isComplete: isKnownComplete }
    state.observed = observed
    saveObserved(this.options.store, this.server.name, observed).catch((err: Error) => {
      this.options.log.warn({ server: this.server.name, err: { message: err.message } }, 'the listed tool definitions could not be stored (tools diff shows an older listing)')
    })
  }

  private trustFirstUse (state: PinState, listed: ToolSet): void {
    const { store, now, log } = this.options
    state.approved = { tools: listed, approvedAtMs: now(), approvedBy: FIRST_USE }
    approveFirstUse(store, this.server.name, listed, now()).then((isFirst) => {
      if (isFirst) this.options.onFirstUse(Object.keys(listed))
      // Another replica approved first: its set is the one; read it on the next request.
      else state.loadedAtMs = 0
    }, (err: Error) => {
      state.loadedAtMs = 0
      log.warn({ server: this.server.name, err: { message: err.message } }, 'the first tool listing could not be stored as approved; the next listing tries again')
    })
  }

  /** Reports each change once per process (every listing repeats it until approved). */
  private report (changes: readonly ToolChange[]): void {
    const fresh = changes.filter((c) => {
      const key = `${c.change}:${c.name}:${c.from ?? ''}:${c.to ?? ''}`
      if (this.reported.has(key)) return false
      if (this.reported.size >= MAX_REPORTED_CHANGES) this.reported.clear()
      this.reported.add(key)
      return true
    })
    if (fresh.length === 0) return
    this.options.log.warn({ server: this.server.name, changes: fresh, pinTools: this.server.pinTools }, 'tool definitions differ from the approved ones')
    this.options.onChanges(fresh)
  }

  private withoutUnapproved (result: unknown, listed: ToolSet): Record<string, unknown> | undefined {
    const approved = this.state?.approved?.tools
    const tools = (result as { tools?: unknown } | null)?.tools
    if (approved === undefined || !Array.isArray(tools)) return undefined
    const kept = tools.filter((tool: unknown) => {
      const name = (tool as { name?: unknown } | null)?.name
      const shown = toolIn(listed, name as string)
      return typeof name === 'string' && shown !== undefined && shown.fingerprint !== LISTED_TWICE && toolIn(approved, name)?.fingerprint === shown.fingerprint
    })
    return kept.length === tools.length ? undefined : { ...(result as Record<string, unknown>), tools: kept }
  }
}

/** The tools of a list result by name, fingerprinted; undefined when it is not one. */
export function listedTools (result: unknown): ToolSet | undefined {
  const tools = (result as { tools?: unknown } | null | undefined)?.tools
  if (!Array.isArray(tools)) return undefined
  // No prototype: a tool named __proto__ is a key like any other, not the set's prototype.
  const listed: Record<string, PinnedTool> = Object.create(null) as Record<string, PinnedTool>
  for (const tool of tools) {
    const definition = toolDefinition(tool)
    if (definition === undefined) continue
    // A name listed twice is no one definition: a client may take either entry, so it matches
    // no approved fingerprint (under enforce both entries are hidden and calls refused).
    const fingerprint = Object.hasOwn(listed, definition.name) ? LISTED_TWICE : fingerprintOf(definition)
    listed[definition.name] = { fingerprint, definition }
  }
  return listed
}

/** The fingerprint of a name an upstream listed more than once. */
const LISTED_TWICE = 'listed more than once'

function sameTools (a: ToolSet, b: ToolSet): boolean {
  const names = Object.keys(a)
  return names.length === Object.keys(b).length && names.every((n) => a[n]?.fingerprint === toolIn(b, n)?.fingerprint)
}

/** Sessions and cursors are the client's and the upstream's strings: joined by a character neither is likely to hold. */
function walkKey (session: string | undefined, cursor: string): string {
  return `${session ?? ''}\u0000${cursor}`
}

/** Enough of a fingerprint to tell two apart in a message. */
function short (fingerprint: string): string {
  return fingerprint.slice(0, 12)
}
