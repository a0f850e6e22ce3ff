/**
 * Re-addressing a message on a shared stdio process by editing its text, not by encoding the
 * parsed message again. JSON.parse rounds integers beyond 2^53 and reads `1.0` as `1`, so a
 * message encoded again tells the child (or the client) numbers its sender never wrote: a tool
 * called with one row id acts on another. Only the id, progress token or subscription id the
 * channel must change is replaced; every other byte goes as it came (as request-trace.ts does
 * for trace context). The text is one JSON object that JSON.parse accepted.
 */
import { objectMembers, skipSpace, type JsonMember } from '../../mcp/scan-json.js'

const OPEN_OBJECT = 0x7b

/** The member `key` of the object opening at `open`, as JSON.parse reads it: the last of that name. */
function lastMember (text: string, open: number, key: string): JsonMember | undefined {
  let found: JsonMember | undefined
  for (const member of objectMembers(text, open)) if (member.key === key) found = member
  return found
}

/** The member at `path` (each step a member of an object); undefined when a step is missing or not an object. */
export function memberAt (text: string, path: readonly string[]): JsonMember | undefined {
  let open = skipSpace(text, 0)
  let member: JsonMember | undefined
  for (const key of path) {
    if (text.charCodeAt(open) !== OPEN_OBJECT) return undefined
    member = lastMember(text, open, key)
    if (member === undefined) return undefined
    open = member.valueStart
  }
  return member
}

/** The JSON text of a member's value, as its sender wrote it. */
export function valueText (text: string, member: JsonMember): string {
  return text.slice(member.valueStart, member.end)
}

/** `text` with the values of the given members (none inside another) replaced by JSON texts. */
export function replaced (text: string, places: ReadonlyArray<readonly [JsonMember, string]>): string {
  let out = text
  for (const [at, value] of [...places].sort((a, b) => b[0].valueStart - a[0].valueStart)) out = out.slice(0, at.valueStart) + value + out.slice(at.end)
  return out
}

/** `text` with the value at `path` replaced by the JSON text `value`; undefined when there is no such member. */
export function withValueAt (text: string, path: readonly string[], value: string): string | undefined {
  const at = memberAt(text, path)
  return at === undefined ? undefined : replaced(text, [[at, value]])
}
