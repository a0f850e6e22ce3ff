/**
 * The merged-name table of a virtual server: every member's tools (or prompts) under one list,
 * each with a name the client can call and the gateway can route back to (member, original name).
 *
 * The table is a function of the SET of items alone: the same members listing the same names give
 * the same merged names on every restart and every replica, whatever order the lists arrive in, so
 * a client's cached tool list and a name a model remembers keep working (issue 16: "the mapping is
 * stable across restarts"). Every tie-break therefore sorts by content, never by arrival order.
 *
 * Merged names stay inside the MCP tool-name characters [A-Za-z0-9_.-] (spec 2025-11-25,
 * server/tools "Tool Names") and within 64 characters, the longest name Claude accepts.
 */
import { createHash } from 'node:crypto'

export type PrefixMode = 'auto' | 'always' | 'never'

/** Claude's limit on a tool name. */
export const MAX_TOOL_NAME_LENGTH = 64

/** A tool or prompt as its member lists it. */
export interface MemberItem { readonly member: string, readonly name: string }

export interface MergedName { readonly merged: string, readonly member: string, readonly name: string }

export interface NameTable {
  /** In member order (first appearance in the input), then the member's own order. */
  readonly entries: readonly MergedName[]
  /** merged name -> member + original name; undefined when unknown */
  resolve (merged: string): MergedName | undefined
  /** prefix: never only: names listed by more than one member (hidden from the table, reported) */
  readonly collisions: ReadonlyArray<{ readonly name: string, readonly members: readonly string[] }>
}

const HASH_HEX_CHARS = 8
/** The part of a rewritten name kept before '_' + hash: 64 - 9 = 55 characters. */
const KEPT_CHARS = MAX_TOOL_NAME_LENGTH - HASH_HEX_CHARS - 1
const VALID_NAME_RE = /^[A-Za-z0-9_.-]+$/
const INVALID_CHAR_RE = /[^A-Za-z0-9_.-]/g

/** An item with the name it would have before any shortening (`full`). */
interface Candidate { readonly member: string, readonly name: string, readonly full: string }

export function buildNameTable (items: readonly MemberItem[], opts: { prefix: PrefixMode, separator: string }): NameTable {
  const unique = inMemberOrder(distinctItems(items))
  const holders = holdersByName(unique)
  const collisions = opts.prefix === 'never' ? reportCollisions(holders) : Object.freeze([])
  const kept = opts.prefix === 'never' ? unique.filter((item) => holders.get(item.name)?.length === 1) : unique
  const candidates = fullNames(kept, holders, opts)
  const merged = assignNames(candidates)
  const entries = Object.freeze(candidates.map((c, i) => Object.freeze({ merged: merged[i] ?? c.full, member: c.member, name: c.name })))
  const byMerged = new Map(entries.map((e) => [e.merged, e]))
  return Object.freeze({ entries, collisions, resolve: (name: string) => byMerged.get(name) })
}

/** A member whose list repeats a name (e.g. across pages) has that item once, at its first place. */
function distinctItems (items: readonly MemberItem[]): MemberItem[] {
  const seen = new Set<string>()
  return items.filter((item) => {
    const key = itemKey(item)
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/** Members in order of first appearance, each member's items in its own order (a stable sort). */
function inMemberOrder (items: readonly MemberItem[]): MemberItem[] {
  const rank = new Map<string, number>()
  items.forEach((item) => { if (!rank.has(item.member)) rank.set(item.member, rank.size) })
  return [...items].sort((a, b) => (rank.get(a.member) ?? 0) - (rank.get(b.member) ?? 0))
}

/** NUL cannot occur in a member name, so the key is unambiguous. */
function itemKey (item: MemberItem): string {
  return `${item.member}\u0000${item.name}`
}

/** name -> the members listing it, in member order. */
function holdersByName (items: readonly MemberItem[]): Map<string, string[]> {
  const holders = new Map<string, string[]>()
  for (const item of items) {
    const list = holders.get(item.name)
    if (list === undefined) holders.set(item.name, [item.member])
    else list.push(item.member)
  }
  return holders
}

/** prefix: never has no fair winner for a shared name, so it is hidden and reported, sorted for a stable report. */
function reportCollisions (holders: ReadonlyMap<string, string[]>): NameTable['collisions'] {
  return Object.freeze([...holders]
    .filter(([, members]) => members.length > 1)
    .sort(([a], [b]) => compare(a, b))
    .map(([name, members]) => Object.freeze({ name, members: Object.freeze([...members]) })))
}

function fullNames (items: readonly MemberItem[], holders: ReadonlyMap<string, string[]>, opts: { prefix: PrefixMode, separator: string }): Candidate[] {
  const prefixed = opts.prefix === 'always'
    ? new Set(items.map(itemKey))
    : opts.prefix === 'auto' ? autoPrefixed(items, holders, opts.separator) : new Set<string>()
  return items.map((item) => ({
    member: item.member,
    name: item.name,
    full: prefixed.has(itemKey(item)) ? `${item.member}${opts.separator}${item.name}` : item.name,
  }))
}

/**
 * prefix: auto. Every holder of a shared name is prefixed; then an item whose own name equals a
 * prefixed name (a member's literal tool `a__x` beside member `a`'s prefixed `x`) is prefixed too,
 * until nothing changes. The set only grows, so this ends; it depends on the set of items alone.
 */
function autoPrefixed (items: readonly MemberItem[], holders: ReadonlyMap<string, string[]>, separator: string): Set<string> {
  const prefixed = new Set(items.filter((item) => (holders.get(item.name)?.length ?? 0) > 1).map(itemKey))
  for (let changed = prefixed.size > 0; changed;) {
    const taken = new Set(items.filter((item) => prefixed.has(itemKey(item))).map((item) => `${item.member}${separator}${item.name}`))
    const clashing = items.filter((item) => !prefixed.has(itemKey(item)) && taken.has(item.name))
    clashing.forEach((item) => prefixed.add(itemKey(item)))
    changed = clashing.length > 0
  }
  return prefixed
}

/**
 * Final names, unique. Names that need no rewriting claim theirs first (a real name is never
 * displaced by a hashed one), then rewritten ones; within each group in content order. A name
 * already taken (two members whose names contain the separator can produce the same prefixed
 * name; a hash can equal a real name) gets the next salted hash: deterministic, and never a duplicate.
 */
function assignNames (candidates: readonly Candidate[]): string[] {
  const ordered = candidates.map((c, index) => ({ c, index })).sort((x, y) => claimOrder(x.c, y.c))
  const taken = new Set<string>()
  const result: string[] = []
  for (const { c, index } of ordered) {
    let merged = needsRewrite(c.full) ? rewritten(c.full, c.full) : c.full
    for (let salt = 1; taken.has(merged); salt++) merged = rewritten(c.full, `${c.full}\u0000${salt}`)
    taken.add(merged)
    result[index] = merged
  }
  return result
}

function claimOrder (a: Candidate, b: Candidate): number {
  return Number(needsRewrite(a.full)) - Number(needsRewrite(b.full)) ||
    compare(a.full, b.full) || compare(a.member, b.member) || compare(a.name, b.name)
}

function needsRewrite (full: string): boolean {
  return full.length > MAX_TOOL_NAME_LENGTH || !VALID_NAME_RE.test(full)
}

/**
 * First 55 characters + '_' + first 8 hex of SHA-256(hashed). A character outside the MCP
 * charset becomes '_' (a member may list such a name; the hash keeps the result unique).
 */
function rewritten (full: string, hashed: string): string {
  const digest = createHash('sha256').update(hashed, 'utf8').digest('hex').slice(0, HASH_HEX_CHARS)
  return `${full.replace(INVALID_CHAR_RE, '_').slice(0, KEPT_CHARS)}_${digest}`
}

/** Code-unit order, the same on every machine (localeCompare depends on the ICU data). */
function compare (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
