/**
 * Approved and observed tool definitions per server, kept in the store so
 * that every replica, every per-user process and the `portcullis tools`
 * command see one set. Two key-values per server:
 *
 *   tools:approved:<server>  what an operator (or trust on first use) approved
 *   tools:observed:<server>  the latest listing the gateway saw, for `tools diff`
 *
 * Each maps tool name -> { fingerprint, definition }. Definitions are kept
 * whole: the approved inputSchema is what arguments are validated against, and
 * the diff shows what changed.
 */
import type { Store } from '../store/types.js'
import type { ToolDefinition } from './tool-fingerprint.js'

export interface PinnedTool {
  readonly fingerprint: string
  readonly definition: ToolDefinition
}

export type ToolSet = Readonly<Record<string, PinnedTool>>

export interface ApprovedTools {
  readonly tools: ToolSet
  readonly approvedAtMs: number
  /** `first-use` for trust on first use; otherwise who approved (an OS user, or --by). */
  readonly approvedBy: string
}

export interface ObservedTools {
  readonly tools: ToolSet
  readonly observedAtMs: number
  /** Whether a complete listing (one page without nextCursor, or a walk from the first page to the last) was seen: only then is a name not in it unknown. */
  readonly isComplete: boolean
}

export interface ToolChange {
  readonly name: string
  readonly change: 'changed' | 'added' | 'removed'
  /** Fingerprints before (approved) and after (observed). */
  readonly from?: string
  readonly to?: string
}

export const FIRST_USE = 'first-use'

const approvedKey = (server: string): string => `tools:approved:${server}`
const observedKey = (server: string): string => `tools:observed:${server}`

function parse<T> (text: string | undefined): T | undefined {
  return text === undefined ? undefined : JSON.parse(text) as T
}

export async function loadApproved (store: Store, server: string): Promise<ApprovedTools | undefined> {
  return parse<ApprovedTools>(await store.kvGet(approvedKey(server)))
}

export async function loadObserved (store: Store, server: string): Promise<ObservedTools | undefined> {
  return parse<ObservedTools>(await store.kvGet(observedKey(server)))
}

export async function saveObserved (store: Store, server: string, observed: ObservedTools): Promise<void> {
  await store.kvSet(observedKey(server), JSON.stringify(observed))
}

/** Trust on first use: only when nothing was approved before (replicas may race; one wins). */
export async function approveFirstUse (store: Store, server: string, tools: ToolSet, nowMs: number): Promise<boolean> {
  const approved: ApprovedTools = { tools, approvedAtMs: nowMs, approvedBy: FIRST_USE }
  return store.kvSetIfAbsent(approvedKey(server), JSON.stringify(approved))
}

export async function saveApproved (store: Store, server: string, approved: ApprovedTools): Promise<void> {
  await store.kvSet(approvedKey(server), JSON.stringify(approved))
}

/** A tool of a set by its own name only: `constructor` or `toString` are no tools of any set. */
export function toolIn (set: ToolSet | undefined, name: string): PinnedTool | undefined {
  return set !== undefined && Object.hasOwn(set, name) ? set[name] : undefined
}

/**
 * What differs between the approved set and a listing. Removals are only
 * known from a complete listing (`isComplete`: one page with no cursor, or a
 * complete walk of pages from the first to the one without a nextCursor).
 */
export function diffTools (approved: ToolSet, listed: ToolSet, isComplete: boolean): ToolChange[] {
  const changes: ToolChange[] = []
  for (const [name, tool] of Object.entries(listed)) {
    const before = toolIn(approved, name)
    if (before === undefined) changes.push({ name, change: 'added', to: tool.fingerprint })
    else if (before.fingerprint !== tool.fingerprint) changes.push({ name, change: 'changed', from: before.fingerprint, to: tool.fingerprint })
  }
  if (isComplete) {
    for (const [name, tool] of Object.entries(approved)) {
      if (toolIn(listed, name) === undefined) changes.push({ name, change: 'removed', from: tool.fingerprint })
    }
  }
  return changes.sort((a, b) => a.name.localeCompare(b.name))
}

/**
 * The approved set after an operator approves the observed one: every tool
 * (`names` undefined), or only the named ones (a removed tool's approval drops it).
 */
export function approveObserved (approved: ToolSet, observed: ObservedTools, names: readonly string[] | undefined): ToolSet {
  // A paginated listing not seen whole cannot say a tool is gone: the approved ones stay.
  if (names === undefined) return observed.isComplete ? { ...observed.tools } : { ...approved, ...observed.tools }
  const next = new Map(Object.entries(approved))
  for (const name of names) {
    const tool = toolIn(observed.tools, name)
    if (tool === undefined) next.delete(name)
    else next.set(name, tool)
  }
  return Object.fromEntries(next)
}
