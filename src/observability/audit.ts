/**
 * The audit trail: one JSON line per MCP request that reaches policy (and per admin API call) — who,
 * through which client, asked which server for what, what the gateway
 * decided and why, and how the call ended. Its own pino stream (a file by
 * default, or stdout/stderr), apart from the operational log, so it can be
 * shipped and kept on its own terms. Never tokens or secrets; tool arguments
 * and results only when audit.includeArguments / includeResults say so.
 */
import { pino, type DestinationStream, type Logger } from 'pino'
import type { Config } from '../config/schema.js'
import { loggerOptions } from './logger.js'
import { AuditFile, type AuditFileLog, type AuditWriteFailure } from './audit-file.js'
import type { Decision } from '../policy/gate.js'

/** Results recorded for debugging are cut here. */
export const MAX_AUDIT_RESULT_CHARS = 4096

export type CallOutcome = 'answered' | 'failed' | 'cancelled'

export interface AuditEntry {
  readonly requestId: string
  readonly server: string
  /** The virtual server the request came through (README "Virtual servers"); `server` is its member. */
  readonly virtualServer?: string
  readonly transport: string
  readonly method: string
  readonly jsonrpcId: string | number | null
  readonly target?: { readonly kind: string, readonly name: string }
  readonly user: { readonly sub: string, readonly username: string } | null
  readonly clientId: string | null
  /** The personal API key the request carried (its public id), when it carried one. */
  readonly keyId?: string
  readonly ip: string
  /** invalid: refused by a guardrail (arguments against the tool's schema, unknown tool). */
  readonly decision: Decision
  /** Why it was refused: the rule, or the bucket. */
  readonly reason?: string
  /** The HTTP status the client got, and how long the call took end to end. */
  readonly status: number
  /**
   * How an allowed request ended: answered (the upstream answered, a result or its own error),
   * failed (the gateway answered for it: upstream down, timed out, crashed) or cancelled (the
   * client left or cancelled before the answer was whole). Absent on refusals and notifications.
   */
  readonly outcome?: CallOutcome
  readonly latencyMs: number
  readonly arguments?: unknown
  readonly result?: string
  /** Matches masked in the result, by detector kind (servers[].redactResults); never the values. */
  readonly redacted?: Readonly<Record<string, number>>
}

/** A change to a server's tool definitions, or an approval of them (README "Guardrails"). */
export interface ToolDefinitionsEntry {
  readonly server: string
  /** changed: a listing differs from the approved set; approved: an operator or first use approved a set. */
  readonly action: 'changed' | 'approved'
  /** Who approved: an OS user, --by, or first-use. */
  readonly by?: string
  /** Per tool: changed, added or removed, with fingerprints before and after. */
  readonly changes: ReadonlyArray<{ readonly name: string, readonly change: string, readonly from?: string, readonly to?: string }>
}

/** One admin API call (README "Administration"): who, what, on what, and how it ended. */
export interface AdminActionEntry {
  /** admin-token, or the administrator's user id. */
  readonly actor: string
  /** The API operation, e.g. users.revoke, sessions.list. */
  readonly action: string
  readonly target?: { readonly kind: string, readonly id: string }
  readonly outcome: 'ok' | 'refused' | 'not_found' | 'failed'
  readonly ip: string
  /** What the action did (counts), or why it was refused; never a credential. */
  readonly detail?: Readonly<Record<string, unknown>>
}

export interface AuditLog {
  readonly includeArguments: boolean
  readonly includeResults: boolean
  record: (entry: AuditEntry) => void
  recordToolDefinitions: (entry: ToolDefinitionsEntry) => void
  recordAdminAction: (entry: AdminActionEntry) => void
  /** False while records cannot be written (a full disk): MCP requests are refused then. */
  isWritable: () => boolean
  lastWriteFailure: () => AuditWriteFailure | undefined
  /** Writes what is pending, waiting at most `deadlineMs` (a shutdown never hangs on a full disk). */
  close: (deadlineMs?: number) => Promise<void>
}

/** How long a shutdown waits for the last records to reach the file. */
const CLOSE_DEADLINE_MS = 2000

/**
 * An MCP request's record as the line pino writes for it (`{"level":30,"time":…,"type":"mcp_audit",
 * …the entry…,"event":"mcp_request"}`), without pino, or undefined when pino must write it. pino's
 * generic path (a masking walk, a stringifier per key, a string built piece by piece) was ~40% of
 * the audit's cost per request in a CPU profile of the bench (docs/benchmarks.md); the record's
 * own fields are never secret, so only records carrying arguments, a result or redaction counts
 * (whose keys come from outside) go through pino and its masking.
 */
export function mcpRequestLine (entry: AuditEntry, timeMs: number): string | undefined {
  if (entry.arguments !== undefined || entry.result !== undefined || entry.redacted !== undefined) return undefined
  // JSON.stringify keeps the entry's key order and skips undefined fields, as pino does.
  const fields = JSON.stringify(entry)
  return `{"level":30,"time":${timeMs},"type":"mcp_audit",${fields.slice(1, -1)},"event":"mcp_request"}\n`
}

export function createAuditLog (config: Config['audit'], log: AuditFileLog, destination?: DestinationStream): AuditLog | undefined {
  if (!config.enabled) return undefined
  const options = { ...loggerOptions('info'), base: { type: 'mcp_audit' }, messageKey: 'event' }
  /** pino writes to `to` synchronously, so records written either way keep their order. */
  const recordTo = (logger: Logger, to: DestinationStream) => (entry: AuditEntry): void => {
    const line = mcpRequestLine(entry, Date.now())
    if (line === undefined) logger.info(entry, 'mcp_request')
    else to.write(line)
  }
  if (destination !== undefined) {
    // Tests collect records in memory: always writable.
    const logger: Logger = pino(options, destination)
    return {
      includeArguments: config.includeArguments,
      includeResults: config.includeResults,
      record: recordTo(logger, destination),
      recordToolDefinitions: (entry) => { logger.info(entry, 'tool_definitions') },
      recordAdminAction: (entry) => { logger.info(entry, 'admin_action') },
      isWritable: () => true,
      lastWriteFailure: () => undefined,
      close: () => new Promise((resolve) => { logger.flush(() => resolve()) }),
    }
  }
  const file = AuditFile.open(config.destination, log)
  const logger: Logger = pino(options, file)
  return {
    includeArguments: config.includeArguments,
    includeResults: config.includeResults,
    record: recordTo(logger, file),
    recordToolDefinitions: (entry) => { logger.info(entry, 'tool_definitions') },
    recordAdminAction: (entry) => { logger.info(entry, 'admin_action') },
    isWritable: () => file.isWritable(),
    lastWriteFailure: () => file.lastWriteFailure(),
    close: (deadlineMs = CLOSE_DEADLINE_MS) => file.close(deadlineMs),
  }
}
