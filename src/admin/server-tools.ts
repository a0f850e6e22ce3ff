/**
 * Pinned tool definitions through the admin API (issue 18, section 1; README "Pinned tool
 * definitions"): GET /admin/api/v1/servers/<server>/tools shows what `portcullis tools diff`
 * shows, as JSON; POST …/tools/approve approves like `portcullis tools approve`. Both go
 * through guardrails/tool-review.ts, the one home of the diff and the approval.
 *
 * An approval is written to the store, where every replica's guard re-reads it within
 * TOOL_APPROVALS_CACHE_MS; this replica's guard forgets its copy at once.
 */
import { PortcullisError } from '../errors.js'
import type { Store } from '../store/types.js'
import { toolIn, type ToolChange } from '../guardrails/tool-approvals.js'
import type { ToolGuard } from '../guardrails/tool-guard.js'
import { approveTools, reviewTools, type ToolDifference } from '../guardrails/tool-review.js'

/** Tool names in an approval body: at most this many, each 1 to 256 characters. */
const MAX_APPROVED_NAMES = 1_000
const MAX_NAME_CHARS = 256

export interface ServerToolsDeps {
  readonly store: Store
  readonly guards: ReadonlyMap<string, ToolGuard>
  readonly now: () => number
}

/** The server's guard; 404 for a server the gateway does not have, 400 when nothing is pinned. */
function pinnedGuard (deps: ServerToolsDeps, server: string): ToolGuard {
  const guard = deps.guards.get(server)
  if (guard === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_NOT_FOUND', `no MCP server named ${JSON.stringify(server.slice(0, 64))}`)
  if (guard.pinTools === 'off') throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `server "${server}" has pinTools: off: its tool definitions are not pinned, there is nothing to review or approve`)
  return guard
}

export async function serverToolsView (deps: ServerToolsDeps, server: string): Promise<Record<string, unknown>> {
  const guard = pinnedGuard(deps, server)
  const { approved, observed, differences } = await reviewTools(deps.store, server)
  return {
    server,
    pinTools: guard.pinTools,
    approved: approved === undefined
      ? null
      : {
          approvedAt: new Date(approved.approvedAtMs).toISOString(),
          approvedBy: approved.approvedBy,
          tools: Object.entries(approved.tools).sort(([a], [b]) => a.localeCompare(b)).map(([name, tool]) => ({ name, fingerprint: tool.fingerprint, definition: tool.definition })),
        },
    lastListing: observed === undefined
      ? null
      : { seenAt: new Date(observed.observedAtMs).toISOString(), isComplete: observed.isComplete, tools: Object.keys(observed.tools).sort() },
    changes: differences.map((d) => changeView(d, toolIn(observed?.tools, d.name)?.definition)),
  }
}

/** A difference as JSON; an added tool carries its whole definition (there is no earlier one to compare with). */
function changeView (difference: ToolDifference, listed: unknown): Record<string, unknown> {
  return { ...difference, ...(difference.change === 'added' && listed !== undefined ? { definition: listed } : {}) }
}

/** An approval: the tools named (undefined: the whole listing), and the `to` fingerprints they were reviewed at. */
export interface ApprovalRequest {
  readonly names: readonly string[] | undefined
  readonly reviewed?: Readonly<Record<string, string | null>>
}

/**
 * The approval body: absent (approve the whole listing) or `{ "tools": [names] }`, optionally
 * with `"reviewed": { name: <the change's "to" fingerprint, null for a removal> }` — each tool
 * named there is approved only while its definition is still the one reviewed.
 */
export function approvalRequest (body: unknown): ApprovalRequest {
  if (body === undefined || body === null) return { names: undefined }
  if (typeof body !== 'object' || Array.isArray(body)) throw badBody('expected a JSON object { "tools": [names] }, or no body to approve the whole listing')
  const extra = Object.keys(body).filter((key) => key !== 'tools' && key !== 'reviewed')
  if (extra.length > 0) throw badBody(`unknown field ${JSON.stringify(extra[0])}: expected only "tools" and "reviewed"`)
  const { tools, reviewed } = body as { tools?: unknown, reviewed?: unknown }
  if (tools === undefined) {
    if (reviewed !== undefined) throw badBody('reviewed: needs "tools", the tools it names')
    return { names: undefined }
  }
  const isNames = Array.isArray(tools) && tools.length > 0 && tools.length <= MAX_APPROVED_NAMES &&
    tools.every((name: unknown) => typeof name === 'string' && name.length > 0 && name.length <= MAX_NAME_CHARS)
  if (!isNames) throw badBody(`tools: expected 1 to ${MAX_APPROVED_NAMES} tool names (strings of 1 to ${MAX_NAME_CHARS} characters); leave "tools" out to approve the whole listing`)
  const names = [...new Set(tools as string[])]
  return reviewed === undefined ? { names } : { names, reviewed: reviewedFingerprints(reviewed, names) }
}

/** `reviewed`: an object whose keys are among the named tools and whose values are fingerprints or null. */
function reviewedFingerprints (reviewed: unknown, names: readonly string[]): Record<string, string | null> {
  const isMap = typeof reviewed === 'object' && reviewed !== null && !Array.isArray(reviewed) &&
    Object.entries(reviewed).every(([name, fp]) => names.includes(name) && (fp === null || (typeof fp === 'string' && fp.length > 0 && fp.length <= MAX_NAME_CHARS)))
  if (!isMap) throw badBody('reviewed: expected { "<a tool named in tools>": "<its change\'s to fingerprint>" or null for a removal }')
  return { ...(reviewed as Record<string, string | null>) }
}

function badBody (message: string): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `body: ${message}`)
}

/** Approves the named tools (or every difference) by `by`; the changes approved (empty: nothing differed). */
export async function approveServerTools (deps: ServerToolsDeps, server: string, approval: ApprovalRequest, by: string): Promise<readonly ToolChange[]> {
  const guard = pinnedGuard(deps, server)
  const result = await approveTools(deps.store, server, { names: approval.names, by, nowMs: deps.now(), ...(approval.reviewed === undefined ? {} : { reviewed: approval.reviewed }) })
  if (result.status === 'no-listing') {
    throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `no tool listing of server "${server}" has been seen yet; list its tools through the gateway first`)
  }
  if (result.status === 'unknown-tools') {
    const differences = result.differences.map((c) => c.name).join(', ') || 'none'
    throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `nothing to approve for ${result.unknown.map((n) => JSON.stringify(n.slice(0, 64))).join(', ')} (differences: ${differences})`)
  }
  if (result.status === 'changed-since-review') {
    throw new PortcullisError('PORTCULLIS_ERR_ADMIN_CONFLICT', `the definition of ${result.changed.map((n) => JSON.stringify(n.slice(0, 64))).join(', ')} changed since it was reviewed; review the changes again`)
  }
  if (result.approved.length > 0) guard.forget()
  return result.approved
}
