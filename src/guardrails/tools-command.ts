/**
 * `portcullis tools diff <server>` and `portcullis tools approve <server>
 * [--tool NAME]... [--by WHO]`: what the upstream lists now against what was
 * approved, and approving it. Works beside running gateways: it reads and
 * writes the configured store (SQLite or Redis) directly, and every gateway
 * re-reads the approved set within TOOL_APPROVALS_CACHE_MS. The diff and the
 * approval themselves live in tool-review.ts, shared with the admin API.
 */
import { userInfo } from 'node:os'
import type { Config } from '../config/schema.js'
import { createAuditLog } from '../observability/audit.js'
import { createLogger } from '../observability/logger.js'
import { openConfiguredStore, type OpenedStore } from '../store/command-store.js'
import { canonicalJson } from './tool-fingerprint.js'
import { approveTools, reviewTools, type ToolDifference, type ToolsReview } from './tool-review.js'
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
    if (action === 'diff') {
      process.stdout.write(describeDiff(server, await reviewTools(opened.store, server)))
      return EXIT_OK
    }
    return await approve(config, opened, server, options)
  } catch (err) {
    process.stderr.write(`portcullis: tools ${action} failed: ${err instanceof Error ? err.message : String(err)}\n`)
    return EXIT_FAILED
  } finally {
    await opened?.close()
  }
}

async function approve (config: Config, opened: OpenedStore, server: string, options: ToolsCommandOptions): Promise<number> {
  const by = options.by ?? osUser()
  const result = await approveTools(opened.store, server, { names: options.tools, by, nowMs: Date.now() })
  if (result.status === 'no-listing') {
    process.stderr.write(`portcullis: no tool listing of server "${server}" has been seen yet; list its tools through the gateway first\n`)
    return EXIT_FAILED
  }
  if (result.status === 'unknown-tools') {
    process.stderr.write(`portcullis: nothing to approve for ${result.unknown.map((n) => `"${n}"`).join(', ')} (differences: ${result.differences.map((c) => c.name).join(', ') || 'none'})\n`)
    return EXIT_FAILED
  }
  // The CLI passes no reviewed fingerprints (it approves what `diff` shows now): kept for the type's sake.
  if (result.status === 'changed-since-review') {
    process.stderr.write(`portcullis: ${result.changed.join(', ')} changed again since reviewed; run tools diff again\n`)
    return EXIT_FAILED
  }
  if (result.approved.length === 0) {
    process.stdout.write(`server ${server}: the listed tools are the approved ones; nothing to approve\n`)
    return EXIT_OK
  }
  // The approval's audit record; a failure to write it is said on stderr (the gateway's own log is not here).
  const audit = createAuditLog(config.audit, { error: (_details, message) => { process.stderr.write(`portcullis: ${message}\n`) }, info: () => {} })
  audit?.recordToolDefinitions({ server, action: 'approved', by, changes: result.approved })
  await audit?.close()
  process.stdout.write(`server ${server}: approved by ${by}:\n${result.approved.map((c) => `  ${c.change.padEnd(8)} ${c.name}\n`).join('')}` +
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
export function describeDiff (server: string, review: ToolsReview): string {
  const { approved, observed, differences } = review
  const lines: string[] = []
  lines.push(approved === undefined
    ? `server ${server}: no tools approved yet (the first listing through the gateway is approved on first use)`
    : `server ${server}: ${Object.keys(approved.tools).length} tools approved ${new Date(approved.approvedAtMs).toISOString()} by ${approved.approvedBy}`)
  if (observed === undefined) {
    lines.push('no listing seen yet')
    return `${lines.join('\n')}\n`
  }
  lines.push(`last listing seen ${new Date(observed.observedAtMs).toISOString()} (${Object.keys(observed.tools).length} tools${observed.isComplete ? '' : ', paginated: removals unknown'})`)
  if (differences.length === 0) {
    lines.push('no differences')
    return `${lines.join('\n')}\n`
  }
  for (const difference of differences) lines.push(...describeDifference(difference))
  lines.push(`${differences.length} difference(s). Approve all: portcullis tools approve ${server}; one: --tool NAME`)
  return `${lines.join('\n')}\n`
}

function describeDifference (difference: ToolDifference): string[] {
  const head = `  ${difference.change.padEnd(8)} ${difference.name}  ${difference.from?.slice(0, 12) ?? ''}${difference.from !== undefined && difference.to !== undefined ? ' -> ' : ''}${difference.to?.slice(0, 12) ?? ''}`
  const lines = [head]
  for (const field of difference.fields ?? []) {
    const was = 'before' in field ? canonicalJson(field.before) : '(none)'
    const now = 'after' in field ? canonicalJson(field.after) : '(none)'
    lines.push(`      ${field.field}:`, `        - ${cut(was)}`, `        + ${cut(now)}`)
  }
  return lines
}

function cut (text: string): string {
  return text.length <= MAX_SHOWN_CHARS ? text : `${text.slice(0, MAX_SHOWN_CHARS)}… (${text.length} chars)`
}
