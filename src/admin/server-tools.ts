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
import type { ToolChange } from '../guardrails/tool-approvals.js'
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
    changes: differences.map((d) => changeView(d, observed?.tools[d.name]?.definition)),
  }
}

/** A difference as JSON; an added tool carries its whole definition (there is no earlier one to compare with). */
function changeView (difference: ToolDifference, listed: unknown): Record<string, unknown> {
  return { ...difference, ...(difference.change === 'added' && listed !== undefined ? { definition: listed } : {}) }
}

/** The approval body: absent (approve the whole listing) or `{ "tools": [names] }`. */
export function approvalNames (body: unknown): readonly string[] | undefined {
  if (body === undefined || body === null) return undefined
  if (typeof body !== 'object' || Array.isArray(body)) throw badBody('expected a JSON object { "tools": [names] }, or no body to approve the whole listing')
  const extra = Object.keys(body).filter((key) => key !== 'tools')
  if (extra.length > 0) throw badBody(`unknown field ${JSON.stringify(extra[0])}: expected only "tools"`)
  const tools = (body as { tools?: unknown }).tools
  if (tools === undefined) return undefined
  const isNames = Array.isArray(tools) && tools.length > 0 && tools.length <= MAX_APPROVED_NAMES &&
    tools.every((name: unknown) => typeof name === 'string' && name.length > 0 && name.length <= MAX_NAME_CHARS)
  if (!isNames) throw badBody(`tools: expected 1 to ${MAX_APPROVED_NAMES} tool names (strings of 1 to ${MAX_NAME_CHARS} characters); leave "tools" out to approve the whole listing`)
  return [...new Set(tools as string[])]
}

function badBody (message: string): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `body: ${message}`)
}

/** Approves the named tools (or every difference) by `by`; the changes approved (empty: nothing differed). */
export async function approveServerTools (deps: ServerToolsDeps, server: string, names: readonly string[] | undefined, by: string): Promise<readonly ToolChange[]> {
  const guard = pinnedGuard(deps, server)
  const result = await approveTools(deps.store, server, { names, by, nowMs: deps.now() })
  if (result.status === 'no-listing') {
    throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `no tool listing of server "${server}" has been seen yet; list its tools through the gateway first`)
  }
  if (result.status === 'unknown-tools') {
    const differences = result.differences.map((c) => c.name).join(', ') || 'none'
    throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `nothing to approve for ${result.unknown.map((n) => JSON.stringify(n.slice(0, 64))).join(', ')} (differences: ${differences})`)
  }
  if (result.approved.length > 0) guard.forget()
  return result.approved
}
