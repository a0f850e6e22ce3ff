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
 * Keys are compared as JSON.parse decodes them (`"\u006dethod"` is `method`).
 */

/** Containers (objects and arrays) nested deeper than this are refused. serde_json's default recursion limit. */
export const MAX_JSON_DEPTH = 128

export type JsonHazard =
  | { readonly kind: 'duplicate-key', readonly key: string }
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
  let keys: KeySeen | null = null
  let isKeyNext = false
  const length = text.length
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      const end = stringEnd(text, i)
      if (isKeyNext && keys !== null) {
        const raw = text.slice(i + 1, end)
        const key = raw.includes('\\') ? JSON.parse(text.slice(i, end + 1)) as string : raw
        if (key === '__proto__') return { kind: 'proto-key' }
        const held = addKey(keys, key)
        if (held === undefined) return { kind: 'duplicate-key', key }
        if (held !== keys) open[open.length - 1] = keys = held
        isKeyNext = false
      }
      i = end
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (open.length >= MAX_JSON_DEPTH) return { kind: 'too-deep' }
      keys = c === OPEN_OBJECT ? [] : null
      open.push(keys)
      isKeyNext = keys !== null
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      open.pop()
      keys = open.length === 0 ? null : open[open.length - 1] ?? null
      isKeyNext = false
    } else if (c === COMMA) {
      isKeyNext = keys !== null
    }
  }
  return undefined
}
