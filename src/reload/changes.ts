/**
 * What a reloaded file changes (README "Reloading"): the settings that apply at once, and those
 * that cannot change in a running process — the listener, the store and its files, the replica
 * address — which keep their old values until a restart.
 */
import type { Config } from '../config/schema.js'
import { definitionKey, stableJson } from './upstream-pool.js'

type Path = readonly string[]

/**
 * Bound at start: the sockets the process listens on, where state lives (a new store would
 * lose every session and token), the keys tokens are signed with, the replica's address,
 * the audit file, the log's format, the keep-alive timer every stream shares, and tracing.
 */
const RESTART_ONLY: readonly Path[] = [
  ['listen'], ['publicUrl'], ['store'], ['dataDir'], ['cluster'],
  ['metrics', 'listen'],
  ['auth', 'enabled'], ['auth', 'signingKeysFile'], ['auth', 'encryptionKeyFile'],
  ['audit'], ['log', 'format'], ['streamKeepAliveMs'], ['telemetry'],
]

/** Sections reported a level deeper ("auth.users", "rateLimits.perUser") rather than as a whole. */
const NESTED: ReadonlySet<string> = new Set(['auth', 'rateLimits', 'limits', 'metrics', 'admin', 'log'])

/** Settings of `next` that differ from `current` but need a restart, as dotted paths. */
export function restartOnlyChanges (current: Config, next: Config): string[] {
  return restartOnlyPaths(current).filter((path) => stableJson(valueAt(current, path)) !== stableJson(valueAt(next, path))).map((path) => path.join('.'))
}

/** `next` with every restart-only setting as it is in `current`: what a reload applies. */
export function withRestartOnlyKept (current: Config, next: Config): Config {
  const kept = structuredClone(next) as unknown as Record<string, unknown>
  for (const path of restartOnlyPaths(current)) setValueAt(kept, path, valueAt(current, path))
  return kept as unknown as Config
}

/** One short phrase per change between two configurations (both already with restart-only settings equal). */
export function describeChanges (current: Config, next: Config): string[] {
  const changes = serverChanges(current, next)
  const keys = new Set([...Object.keys(current), ...Object.keys(next)])
  for (const key of keys) {
    if (key === 'servers' || key === 'source') continue
    const before = (current as unknown as Record<string, unknown>)[key]
    const after = (next as unknown as Record<string, unknown>)[key]
    if (stableJson(before) === stableJson(after)) continue
    if (!NESTED.has(key) || !isRecord(before) || !isRecord(after)) {
      changes.push(`${key} changed`)
      continue
    }
    for (const field of new Set([...Object.keys(before), ...Object.keys(after)])) {
      if (stableJson(before[field]) !== stableJson(after[field])) changes.push(`${key}.${field} changed`)
    }
  }
  return changes
}

function serverChanges (current: Config, next: Config): string[] {
  const before = new Map(current.servers.map((s) => [s.name, s]))
  const after = new Map(next.servers.map((s) => [s.name, s]))
  const changes: string[] = []
  for (const [name, server] of after) {
    const old = before.get(name)
    if (old === undefined) changes.push(`server added: ${name}`)
    else if (stableJson(old) !== stableJson(server)) {
      const isProcessChanged = server.transport === 'stdio' && (old.transport !== 'stdio' || definitionKey(old) !== definitionKey(server))
      changes.push(isProcessChanged ? `server changed: ${name} (new sessions start the new definition; open ones drain)` : `server changed: ${name}`)
    }
  }
  for (const name of before.keys()) if (!after.has(name)) changes.push(`server removed: ${name}`)
  return changes
}

/**
 * With /metrics on a listener of its own, that listener (made or not at start, with its bearer
 * token) is fixed: metrics.enabled and metrics.bearerToken too.
 */
function restartOnlyPaths (current: Config): Path[] {
  return current.metrics.listen === undefined ? [...RESTART_ONLY] : [...RESTART_ONLY, ['metrics', 'enabled'], ['metrics', 'bearerToken']]
}

function valueAt (config: Config, path: Path): unknown {
  let value: unknown = config
  for (const key of path) value = isRecord(value) ? value[key] : undefined
  return value
}

function setValueAt (target: Record<string, unknown>, path: Path, value: unknown): void {
  const parents = path.slice(0, -1)
  const last = path[path.length - 1] ?? ''
  let node = target
  for (const key of parents) {
    const child = node[key]
    if (!isRecord(child)) return
    node = child
  }
  if (value === undefined) Reflect.deleteProperty(node, last)
  else node[last] = structuredClone(value)
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
