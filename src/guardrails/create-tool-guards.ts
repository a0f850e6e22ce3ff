/** One ToolGuard per server, its changes and first-use approvals counted and audited. */
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config/schema.js'
import type { Store } from '../store/types.js'
import type { AuditLog } from '../observability/audit.js'
import type { Metrics } from '../observability/metrics.js'
import { ArgumentValidator } from './argument-validator.js'
import { FIRST_USE } from './tool-approvals.js'
import { ToolGuard } from './tool-guard.js'

export interface ToolGuardDeps {
  readonly store: Store
  readonly log: FastifyBaseLogger
  readonly now: () => number
  readonly metrics: Metrics
  readonly audit: AuditLog | undefined
}

export function createToolGuards (config: Config, deps: ToolGuardDeps): Map<string, ToolGuard> {
  // One validator for all servers: its cache bound is the gateway's, not each server's.
  const validator = new ArgumentValidator()
  const guards = new Map<string, ToolGuard>()
  for (const server of config.servers) {
    guards.set(server.name, new ToolGuard({
      server,
      store: deps.store,
      validator,
      log: deps.log,
      now: deps.now,
      onChanges: (changes) => {
        for (const c of changes) deps.metrics.toolDefinitionChanges.inc({ server: server.name, change: c.change })
        deps.audit?.recordToolDefinitions({ server: server.name, action: 'changed', changes })
      },
      onFirstUse: (tools) => {
        deps.log.info({ server: server.name, tools: tools.length }, 'tool definitions approved on first use')
        deps.audit?.recordToolDefinitions({ server: server.name, action: 'approved', by: FIRST_USE, changes: tools.map((name) => ({ name, change: 'added' })) })
      },
    }))
  }
  return guards
}
