/**
 * `portcullis tools diff <server>` and `portcullis tools approve <server>
 * [--tool NAME]... [--by WHO]`: what the upstream lists now against what was
 * approved, and approving it. Works beside running gateways: it reads and
 * writes the configured store (SQLite or Redis) directly, and every gateway
 * re-reads the approved set within TOOL_APPROVALS_CACHE_MS. The admin API
 * does not exist yet; this command is the way to approve.
 */
import { userInfo } from 'node:os'
import type { Config } from '../config/schema.js'
import { createAuditLog } from '../observability/audit.js'
import { createLogger } from '../observability/logger.js'
import { openConfiguredStore, type OpenedStore } from '../store/command-store.js'
import { canonicalJson } from './tool-fingerprint.js'
import {
  approveObserved, diffTools, loadApproved, loadObserved, saveApproved,
  type ApprovedTools, type ObservedTools, type ToolChange,
} from './tool-approvals.js'
import { TOOL_APPROVALS_CACHE_MS } from './tool-guard.js'

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2
/** A changed field's old and new JSON are shown up to this many characters each. */
const MAX_SHOWN_CHARS = 400

export interface ToolsCommandOptions {
  readonly action: string | undefined
  readonly server: string | undefined
  readonly tools: readonly string[] | undefined
  readonly by: string | undefined
}

export const TOOLS_USAGE = 'portcullis tools diff <server> | portcullis tools approve <server> [--tool NAME]... [--by WHO]'

export async function toolsCommand (config: Config, options: ToolsCommandOptions): Promise<number> {
  const { action, server } = options
  if ((action !== 'diff' && action !== 'approve') || server === undefined) {
    process.stderr.write(`portcullis: usage: ${TOOLS_USAGE}\n`)
    return EXIT_USAGE
  }
  if (!config.servers.some((s) => s.name === server)) {
    process.stderr.write(`portcullis: no server "${server}" in ${config.source} (servers: ${config.servers.map((s) => s.name).join(', ')})\n`)
    return EXIT_USAGE
  }
  let opened: OpenedStore | undefined
  try {
    opened = await openConfiguredStore(config, createLogger('warn'))
    const [approved, observed] = await Promise.all([loadApproved(opened.store, server), loadObserved(opened.store, server)])
    if (action === 'diff') {
      process.stdout.write(describeDiff(server, approved, observed))
      return EXIT_OK
    }
    return await approve(config, opened, server, approved, observed, options)
  } catch (err) {
    process.stderr.write(`portcullis: tools ${action} failed: ${err instanceof Error ? err.message : String(err)}\n`)
    return EXIT_FAILED
  } finally {
    await opened?.close()
  }
}

async function approve (config: Config, opened: OpenedStore, server: string, approved: ApprovedTools | undefined, observed: ObservedTools | undefined, options: ToolsCommandOptions): Promise<number> {
  if (observed === undefined) {
    process.stderr.write(`portcullis: no tool listing of server "${server}" has been seen yet; list its tools through the gateway first\n`)
    return EXIT_FAILED
  }
  const before = approved?.tools ?? {}
  const changes = diffTools(before, observed.tools, observed.isComplete)
  const names = options.tools === undefined || options.tools.length === 0 ? undefined : options.tools
  const unknown = names?.filter((name) => !changes.some((c) => c.name === name))
  if (unknown !== undefined && unknown.length > 0) {
    process.stderr.write(`portcullis: nothing to approve for ${unknown.map((n) => `"${n}"`).join(', ')} (differences: ${changes.map((c) => c.name).join(', ') || 'none'})\n`)
    return EXIT_FAILED
  }
  const approvedChanges = names === undefined ? changes : changes.filter((c) => names.includes(c.name))
  if (approvedChanges.length === 0) {
    process.stdout.write(`server ${server}: the listed tools are the approved ones; nothing to approve\n`)
    return EXIT_OK
  }
  const by = options.by ?? osUser()
  await saveApproved(opened.store, server, { tools: approveObserved(before, observed, names), approvedAtMs: Date.now(), approvedBy: by })
  // The approval's audit record; a failure to write it is said on stderr (the gateway's own log is not here).
  const audit = createAuditLog(config.audit, { error: (_details, message) => { process.stderr.write(`portcullis: ${message}\n`) }, info: () => {} })
  audit?.recordToolDefinitions({ server, action: 'approved', by, changes: approvedChanges })
  await audit?.close()
  process.stdout.write(`server ${server}: approved by ${by}:\n${approvedChanges.map((c) => `  ${c.change.padEnd(8)} ${c.name}\n`).join('')}` +
    `Running gateways use it within ${TOOL_APPROVALS_CACHE_MS / 1000} s (${opened.describe}).\n`)
  return EXIT_OK
}

function osUser (): string {
  try {
    return userInfo().username
  } catch {
    return process.env.USER ?? `uid ${process.getuid?.() ?? '?'}`
  }
}

/** The differences, field by field, readable in a terminal. */
export function describeDiff (server: string, approved: ApprovedTools | undefined, observed: ObservedTools | undefined): string {
  const lines: string[] = []
  lines.push(approved === undefined
    ? `server ${server}: no tools approved yet (the first listing through the gateway is approved on first use)`
    : `server ${server}: ${Object.keys(approved.tools).length} tools approved ${new Date(approved.approvedAtMs).toISOString()} by ${approved.approvedBy}`)
  if (observed === undefined) {
    lines.push('no listing seen yet')
    return `${lines.join('\n')}\n`
  }
  lines.push(`last listing seen ${new Date(observed.observedAtMs).toISOString()} (${Object.keys(observed.tools).length} tools${observed.isComplete ? '' : ', paginated: removals unknown'})`)
  const changes = diffTools(approved?.tools ?? {}, observed.tools, observed.isComplete)
  if (changes.length === 0) {
    lines.push('no differences')
    return `${lines.join('\n')}\n`
  }
  for (const change of changes) lines.push(...describeChange(change, approved, observed))
  lines.push(`${changes.length} difference(s). Approve all: portcullis tools approve ${server}; one: --tool NAME`)
  return `${lines.join('\n')}\n`
}

function describeChange (change: ToolChange, approved: ApprovedTools | undefined, observed: ObservedTools): string[] {
  const head = `  ${change.change.padEnd(8)} ${change.name}  ${change.from?.slice(0, 12) ?? ''}${change.from !== undefined && change.to !== undefined ? ' -> ' : ''}${change.to?.slice(0, 12) ?? ''}`
  if (change.change !== 'changed') return [head]
  const before: Readonly<Record<string, unknown>> = approved?.tools[change.name]?.definition ?? {}
  const after: Readonly<Record<string, unknown>> = observed.tools[change.name]?.definition ?? {}
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()
  const lines = [head]
  for (const field of fields) {
    const was = field in before ? canonicalJson(before[field]) : '(none)'
    const now = field in after ? canonicalJson(after[field]) : '(none)'
    if (was !== now) lines.push(`      ${field}:`, `        - ${cut(was)}`, `        + ${cut(now)}`)
  }
  return lines
}

function cut (text: string): string {
  return text.length <= MAX_SHOWN_CHARS ? text : `${text.slice(0, MAX_SHOWN_CHARS)}… (${text.length} chars)`
}
