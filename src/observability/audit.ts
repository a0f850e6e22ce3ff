/**
 * The audit trail: one JSON line per MCP request that reaches policy — who,
 * through which client, asked which server for what, what the gateway
 * decided and why, and how the call ended. Its own pino stream (a file by
 * default, or stdout/stderr), apart from the operational log, so it can be
 * shipped and kept on its own terms. Never tokens or secrets; tool arguments
 * and results only when audit.includeArguments / includeResults say so.
 */
import { pino, type DestinationStream, type Logger } from 'pino'
import type { Config } from '../config/schema.js'
import { loggerOptions } from './logger.js'

/** Results recorded for debugging are cut here. */
export const MAX_AUDIT_RESULT_CHARS = 4096
/** Records are written in batches of up to this many bytes (one syscall instead of one per request)... */
const AUDIT_BUFFER_BYTES = 4096
/** ...and at least this often, so a quiet gateway's last records still reach the file promptly. */
const AUDIT_FLUSH_INTERVAL_MS = 1000

export interface AuditEntry {
  readonly requestId: string
  readonly server: string
  readonly transport: string
  readonly method: string
  readonly jsonrpcId: string | number | null
  readonly target?: { readonly kind: string, readonly name: string }
  readonly user: { readonly sub: string, readonly username: string } | null
  readonly clientId: string | null
  /** The personal API key the request carried (its public id), when it carried one. */
  readonly keyId?: string
  readonly ip: string
  readonly decision: 'allowed' | 'denied' | 'rate_limited'
  /** Why it was refused: the rule, or the bucket. */
  readonly reason?: string
  /** The HTTP status the client got, and how long the call took end to end. */
  readonly status: number
  readonly latencyMs: number
  readonly arguments?: unknown
  readonly result?: string
}

export interface AuditLog {
  readonly includeArguments: boolean
  readonly includeResults: boolean
  record: (entry: AuditEntry) => void
  close: () => Promise<void>
}

export function createAuditLog (config: Config['audit'], destination?: DestinationStream): AuditLog | undefined {
  if (!config.enabled) return undefined
  const options = { ...loggerOptions('info'), base: { type: 'mcp_audit' }, messageKey: 'event' }
  let stream: DestinationStream
  let flusher: NodeJS.Timeout | undefined
  if (destination !== undefined) {
    stream = destination
  } else {
    const dest = config.destination === 'stdout' ? 1 : config.destination === 'stderr' ? 2 : config.destination
    const boom = pino.destination({ dest, mkdir: typeof dest === 'string', append: true, sync: false, minLength: AUDIT_BUFFER_BYTES })
    flusher = setInterval(() => boom.flush(), AUDIT_FLUSH_INTERVAL_MS)
    flusher.unref()
    stream = boom
  }
  const log: Logger = pino(options, stream)
  return {
    includeArguments: config.includeArguments,
    includeResults: config.includeResults,
    record: (entry) => { log.info(entry, 'mcp_request') },
    close: () => new Promise((resolve) => {
      clearInterval(flusher)
      log.flush(() => resolve())
    }),
  }
}
