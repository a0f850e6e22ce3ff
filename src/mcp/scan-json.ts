/**
 * What JSON.parse lets through but a gateway must not: the same key twice in
 * one object, a `__proto__` key, and nesting without bound.
 *
 * Duplicate keys: RFC 8259 section 4 says names SHOULD be unique and that
 * parsers differ on duplicates ("many implementations report the last
 * name/value pair only", others the first or an error). JSON.parse keeps the
 * last; the gateway judges that reading but forwards the body's bytes, so a
 * first-wins upstream could run `{"method":"tools/call",…,"method":"ping"}`
 * as the call policy never saw. Refusing every duplicate leaves one reading.
 *
 * `__proto__`: JSON.parse makes it an ordinary own property, but the first
 * Object.assign or naive deep merge in an upstream (or a log pipeline) turns
 * it into a prototype change. No MCP message needs the name; fastify's own
 * body parser (secure-json-parse) refuses it by default, and so do we.
 *
 * Depth: JSON.parse is iterative and takes any depth, but every recursive
 * walker after it (JSON.stringify when a message is re-addressed, an
 * upstream's parser) overflows its stack somewhere. MAX_JSON_DEPTH bounds it.
 *
 * The scanner runs on text JSON.parse has already accepted, so it needs no
 * grammar of its own: outside strings, only brackets, braces and commas
 * matter; a string right after `{` or a comma inside an object is a key.
 * Keys are compared as JSON.parse decodes them (`"\u006dethod"` is `method`), and in any letter
 * case: Go's encoding/json matches a struct field to a key ignoring case (Unicode simple folding,
 * so `ſ` is `s` and the Kelvin sign `k`) and keeps the last match, so an upstream built on it
 * reads `{"name":"echo","Name":"delete_repository"}` as the call to `delete_repository` that
 * policy, reading `name`, never judged (GHSA-wvj2-96wp-fq3f in the Go MCP SDK).
 */

/** Containers (objects and arrays) nested deeper than this are refused. serde_json's default recursion limit. */
export const MAX_JSON_DEPTH = 128

export type JsonHazard =
  /** `first`: the key's earlier spelling, when it differs from `key` only in letter case. */
  | { readonly kind: 'duplicate-key', readonly key: string, readonly first?: string }
  | { readonly kind: 'proto-key' }
  | { readonly kind: 'too-deep' }

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d

/** Index of the quote closing the string that opens at `start`. */
function stringEnd (text: string, start: number): number {
  let end = text.indexOf('"', start + 1)
  for (;;) {
    let slashes = 0
    while (text.charCodeAt(end - 1 - slashes) === BACKSLASH) slashes++
    // An even run of backslashes escapes itself, not the quote.
    if (slashes % 2 === 0) return end
    end = text.indexOf('"', end + 1)
  }
}

/** The key whose quotes are at `start` and `end`, decoded as JSON.parse decodes it. */
function keyAt (text: string, start: number, end: number): string {
  const raw = text.slice(start + 1, end)
  return raw.includes('\\') ? JSON.parse(text.slice(start, end + 1)) as string : raw
}

/**
 * A key as compared for duplicates: lower case after upper case, which puts every letter of a
 * Unicode simple-folding orbit (k, K, U+212A; s, S, U+017F; σ, ς, Σ) on one form. Lower-case
 * ASCII keys, nearly all of them, are their own form without a copy. It may also join keys no
 * case-insensitive parser joins (`ß` and `ss`): such an object is refused, never misread.
 */
export function foldKey (key: string): string {
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i)
    if ((c >= 0x41 && c <= 0x5a) || c >= 0x80) return key.toUpperCase().toLowerCase()
  }
  return key
}

/** Up to this many keys an object's keys are checked in an array (cheaper than a Set for the usual few). */
const LINEAR_KEYS = 8

type KeySeen = string[] | Set<string>

/** Records `key` in an object's keys: the holder to keep (a Set once past LINEAR_KEYS), undefined when the key was there already. */
function addKey (keys: KeySeen, key: string): KeySeen | undefined {
  if (Array.isArray(keys)) {
    if (keys.includes(key)) return undefined
    keys.push(key)
    return keys.length > LINEAR_KEYS ? new Set(keys) : keys
  }
  if (keys.has(key)) return undefined
  keys.add(key)
  return keys
}

/**
 * The first hazard in `text`, or undefined. `text` must be valid JSON
 * (JSON.parse accepted it); on anything else the answer means nothing.
 */
export function scanJson (text: string): JsonHazard | undefined {
  /** One entry per open container: the keys seen so far in an object, null for an array. */
  const open: Array<KeySeen | null> = []
  /** Where each open container starts (for the message about a key written twice). */
  const starts: number[] = []
  let keys: KeySeen | null = null
  let isKeyNext = false
  const length = text.length
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      const end = stringEnd(text, i)
      if (isKeyNext && keys !== null) {
        const key = keyAt(text, i, end)
        if (key === '__proto__') return { kind: 'proto-key' }
        const folded = foldKey(key)
        const held = addKey(keys, folded)
        if (held === undefined) return duplicateOf(text, starts[starts.length - 1] ?? 0, key, folded)
        if (held !== keys) open[open.length - 1] = keys = held
        isKeyNext = false
      }
      i = end
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (open.length >= MAX_JSON_DEPTH) return { kind: 'too-deep' }
      keys = c === OPEN_OBJECT ? [] : null
      open.push(keys)
      starts.push(i)
      isKeyNext = keys !== null
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      open.pop()
      starts.pop()
      keys = open.length === 0 ? null : open[open.length - 1] ?? null
      isKeyNext = false
    } else if (c === COMMA) {
      isKeyNext = keys !== null
    }
  }
  return undefined
}

/** The hazard of `key` written again in the object opening at `open`: with its first spelling when that differs. */
function duplicateOf (text: string, open: number, key: string, folded: string): JsonHazard {
  const first = objectMembers(text, open).find((member) => foldKey(member.key) === folded)?.key
  return first === undefined || first === key ? { kind: 'duplicate-key', key } : { kind: 'duplicate-key', key, first }
}

/*
 * Where things are in a JSON text, for an edit that must leave every other byte as it came
 * (request-trace.ts splices trace context into params._meta: re-serialising would change
 * numbers beyond 2^53, `1.0` and escapes the upstream may read differently). Like scanJson,
 * these expect text JSON.parse has accepted.
 */

/** One member of an object: its decoded key, where its key's quote opens, and where its value begins and ends (exclusive). */
export interface JsonMember {
  readonly key: string
  readonly start: number
  readonly valueStart: number
  readonly end: number
}

/** JSON's four whitespace characters (RFC 8259 section 2). */
function isSpace (c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d
}

/** The first index at or after `i` that is not whitespace. */
export function skipSpace (text: string, i: number): number {
  while (i < text.length && isSpace(text.charCodeAt(i))) i++
  return i
}

/** The index just past the value that begins at `start` (a string, container, number or literal). */
export function valueEnd (text: string, start: number): number {
  const c = text.charCodeAt(start)
  if (c === QUOTE) return stringEnd(text, start) + 1
  if (c !== OPEN_OBJECT && c !== OPEN_ARRAY) {
    let i = start
    while (i < text.length && !isSpace(text.charCodeAt(i)) && !isDelimiter(text.charCodeAt(i))) i++
    return i
  }
  let depth = 0
  for (let i = start; i < text.length; i++) {
    const d = text.charCodeAt(i)
    if (d === QUOTE) i = stringEnd(text, i)
    else if (d === OPEN_OBJECT || d === OPEN_ARRAY) depth++
    else if ((d === CLOSE_OBJECT || d === CLOSE_ARRAY) && --depth === 0) return i + 1
  }
  return text.length
}

function isDelimiter (c: number): boolean {
  return c === COMMA || c === CLOSE_OBJECT || c === CLOSE_ARRAY
}

/** The members of the object that opens at `open` (text[open] is `{`), in order. */
export function objectMembers (text: string, open: number): JsonMember[] {
  const members: JsonMember[] = []
  let i = skipSpace(text, open + 1)
  while (text.charCodeAt(i) === QUOTE) {
    const keyEnd = stringEnd(text, i)
    // Past the key: whitespace, the colon, whitespace.
    const valueStart = skipSpace(text, skipSpace(text, keyEnd + 1) + 1)
    const end = valueEnd(text, valueStart)
    members.push({ key: keyAt(text, i, keyEnd), start: i, valueStart, end })
    i = skipSpace(text, end)
    if (text.charCodeAt(i) === COMMA) i = skipSpace(text, i + 1)
  }
  return members
}

/**
 * The member named `key` of the object that opens at `open` (text[open] is `{`), or undefined:
 * objectMembers(…).find(…) without an array, or a string for each key (a key is decoded only
 * when it holds an escape). With a key written twice, the first; inspectBody refuses such text.
 */
export function memberOf (text: string, open: number, key: string): JsonMember | undefined {
  let i = skipSpace(text, open + 1)
  while (text.charCodeAt(i) === QUOTE) {
    const keyEnd = stringEnd(text, i)
    const valueStart = skipSpace(text, skipSpace(text, keyEnd + 1) + 1)
    const end = valueEnd(text, valueStart)
    const isKey = keyEnd - i - 1 === key.length ? text.startsWith(key, i + 1) : hasEscape(text, i + 1, keyEnd) && keyAt(text, i, keyEnd) === key
    if (isKey) return { key, start: i, valueStart, end }
    i = skipSpace(text, end)
    if (text.charCodeAt(i) === COMMA) i = skipSpace(text, i + 1)
  }
  return undefined
}

function hasEscape (text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (text.charCodeAt(i) === BACKSLASH) return true
  return false
}

/** Where each element of the array that opens at `open` (text[open] is `[`) begins, in order. */
export function arrayElements (text: string, open: number): number[] {
  const starts: number[] = []
  let i = skipSpace(text, open + 1)
  while (i < text.length && text.charCodeAt(i) !== CLOSE_ARRAY) {
    starts.push(i)
    i = skipSpace(text, valueEnd(text, i))
    if (text.charCodeAt(i) === COMMA) i = skipSpace(text, i + 1)
  }
  return starts
}
