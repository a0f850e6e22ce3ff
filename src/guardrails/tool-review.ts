/**
 * Reviewing and approving a server's tool definitions — the one home of the logic behind
 * `portcullis tools diff|approve <server>` and the admin API's
 * `/admin/api/v1/servers/<server>/tools[/approve]` (issue 18, section 1: "until an operator
 * approves"). Plain functions over the store: the CLI formats the result for a terminal, the
 * admin API as JSON; each records the approval in the audit trail with who approved.
 */
import type { Store } from '../store/types.js'
import { canonicalJson } from './tool-fingerprint.js'
import {
  approveObserved, diffTools, loadApproved, loadObserved, saveApproved, toolIn,
  type ApprovedTools, type ObservedTools, type ToolChange,
} from './tool-approvals.js'

/** One top-level field of a changed definition (description, inputSchema, …); an absent side is a field the definition lacks. */
export interface FieldChange {
  readonly field: string
  readonly before?: unknown
  readonly after?: unknown
}

export interface ToolDifference extends ToolChange {
  /** For `changed`: the fields that differ, sorted by name. */
  readonly fields?: readonly FieldChange[]
}

export interface ToolsReview {
  readonly approved: ApprovedTools | undefined
  readonly observed: ObservedTools | undefined
  /** What the last listing seen differs in from the approved set (removals only when that listing was complete). */
  readonly differences: readonly ToolDifference[]
}

export async function reviewTools (store: Store, server: string): Promise<ToolsReview> {
  const [approved, observed] = await Promise.all([loadApproved(store, server), loadObserved(store, server)])
  if (observed === undefined) return { approved, observed, differences: [] }
  const differences = diffTools(approved?.tools ?? {}, observed.tools, observed.isComplete).map((change) => {
    if (change.change !== 'changed') return change
    return { ...change, fields: fieldChanges(toolIn(approved?.tools, change.name)?.definition ?? {}, toolIn(observed.tools, change.name)?.definition ?? {}) }
  })
  return { approved, observed, differences }
}

/** The top-level fields whose canonical JSON differs. */
export function fieldChanges (before: Readonly<Record<string, unknown>>, after: Readonly<Record<string, unknown>>): FieldChange[] {
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()
  const changes: FieldChange[] = []
  for (const field of fields) {
    const isBefore = field in before
    const isAfter = field in after
    if (isBefore && isAfter && canonicalJson(before[field]) === canonicalJson(after[field])) continue
    changes.push({ field, ...(isBefore ? { before: before[field] } : {}), ...(isAfter ? { after: after[field] } : {}) })
  }
  return changes
}

export interface ApproveToolsRequest {
  /** The tools to approve; undefined: every difference (the whole current listing). */
  readonly names: readonly string[] | undefined
  /** Who approves: an OS user or --by (CLI), the admin actor (API). */
  readonly by: string
  readonly nowMs: number
  /**
   * The `to` fingerprint each named tool showed when it was reviewed (null: its removal was
   * reviewed). A tool whose definition changed again since is not approved: approving what
   * nobody saw is what pinning is there to prevent.
   */
  readonly reviewed?: Readonly<Record<string, string | null>>
}

export type ApproveToolsResult =
  /** No listing has been seen: there is nothing to approve against. */
  | { readonly status: 'no-listing' }
  /** Names given that are no difference (unchanged, or never listed): nothing is written. */
  | { readonly status: 'unknown-tools', readonly unknown: readonly string[], readonly differences: readonly ToolChange[] }
  /** Tools whose definitions changed since they were reviewed (`reviewed`): nothing is written. */
  | { readonly status: 'changed-since-review', readonly changed: readonly string[] }
  /** Written (`approved` empty: the listed tools were the approved ones, nothing written). */
  | { readonly status: 'approved', readonly approved: readonly ToolChange[] }

/**
 * Approves the last listing seen, whole or the named tools of it. Every gateway re-reads the
 * approved set from the store within TOOL_APPROVALS_CACHE_MS (tool-guard.ts).
 */
export async function approveTools (store: Store, server: string, request: ApproveToolsRequest): Promise<ApproveToolsResult> {
  const [approved, observed] = await Promise.all([loadApproved(store, server), loadObserved(store, server)])
  if (observed === undefined) return { status: 'no-listing' }
  const before = approved?.tools ?? {}
  const differences = diffTools(before, observed.tools, observed.isComplete)
  const names = request.names === undefined || request.names.length === 0 ? undefined : request.names
  const unknown = names?.filter((name) => !differences.some((c) => c.name === name))
  if (unknown !== undefined && unknown.length > 0) return { status: 'unknown-tools', unknown, differences }
  const chosen = names === undefined ? differences : differences.filter((c) => names.includes(c.name))
  const changed = changedSinceReview(chosen, request.reviewed)
  if (changed.length > 0) return { status: 'changed-since-review', changed }
  if (chosen.length === 0) return { status: 'approved', approved: [] }
  await saveApproved(store, server, { tools: approveObserved(before, observed, names), approvedAtMs: request.nowMs, approvedBy: request.by })
  return { status: 'approved', approved: chosen }
}

/** The chosen tools whose current `to` fingerprint is not the one reviewed (none reviewed: none). */
function changedSinceReview (chosen: readonly ToolChange[], reviewed: ApproveToolsRequest['reviewed']): string[] {
  if (reviewed === undefined) return []
  return chosen.filter((c) => Object.hasOwn(reviewed, c.name) && (reviewed[c.name] ?? undefined) !== c.to).map((c) => c.name)
}
