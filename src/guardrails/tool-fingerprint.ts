/**
 * A tool's definition as the upstream lists it, reduced to what a model reads
 * and what the call's shape depends on, and its fingerprint: SHA-256 of its
 * canonical JSON. Two listings of the same definition give the same
 * fingerprint whatever the key order or whitespace the upstream used.
 */
import { createHash } from 'node:crypto'

/** The members of a tool that define it (issue 18): a change to any of them is a new definition. */
const DEFINING_FIELDS = ['name', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const

export type ToolDefinition = Readonly<Record<string, unknown>> & { readonly name: string }

/**
 * Canonical JSON (RFC 8785, JCS): object members sorted by key, no whitespace.
 * ECMAScript's JSON.stringify already serialises strings and numbers the way
 * RFC 8785 section 3.2.2 asks, so sorting the keys is all that is left.
 */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

/** The defining members of a listed tool; undefined for an entry without a string name. */
export function toolDefinition (tool: unknown): ToolDefinition | undefined {
  if (tool === null || typeof tool !== 'object' || Array.isArray(tool)) return undefined
  const entry = tool as Record<string, unknown>
  if (typeof entry.name !== 'string') return undefined
  const definition: Record<string, unknown> = {}
  for (const field of DEFINING_FIELDS) if (entry[field] !== undefined) definition[field] = entry[field]
  return definition as ToolDefinition
}

/** Fingerprints remembered by the definition's plain JSON, up to this many (then forgotten together). */
const MAX_REMEMBERED_FINGERPRINTS = 2_000
const remembered = new Map<string, string>()

/**
 * Hex SHA-256 of the definition's canonical JSON. Every listing repeats the same definitions,
 * so the result is remembered by the native JSON.stringify of the definition (many times
 * cheaper than canonicalising and hashing again); a listing in another key order only misses.
 */
export function fingerprintOf (definition: ToolDefinition): string {
  const plain = JSON.stringify(definition)
  const known = remembered.get(plain)
  if (known !== undefined) return known
  const fingerprint = createHash('sha256').update(canonicalJson(definition)).digest('hex')
  if (remembered.size >= MAX_REMEMBERED_FINGERPRINTS) remembered.clear()
  remembered.set(plain, fingerprint)
  return fingerprint
}
