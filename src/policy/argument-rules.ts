/**
 * Per-tool argument rules for what a schema cannot say:
 *   tools.run_query: { arguments: { deny: { sql: ["(?i)\\bdrop\\b"] } } }
 * A call whose argument (a string, or any string inside it) matches a deny
 * pattern is refused before it leaves the gateway.
 *
 * Patterns are JavaScript regular expressions with one addition: a leading
 * `(?i)` (the inline flag operators know from PCRE, RE2 and Python) becomes
 * the `i` flag, since JavaScript has no inline flags. Any other inline flag
 * group is refused by name rather than misread. Each pattern is checked with
 * safe-regex2 (fastify's own guard for route patterns): one whose star height
 * could backtrack catastrophically on a long argument (ReDoS) is a config
 * error at `check` and `start`, never a slow call.
 */
import safeRegex from 'safe-regex2'

export interface ArgumentDeny {
  readonly argument: string
  readonly pattern: string
  readonly regex: RegExp
}

/**
 * The longest argument text matched (a bounded cost per call: a safe pattern can still take
 * time quadratic in the text). A longer string under an argument with deny rules is refused:
 * what was not looked through is not let through.
 */
export const MAX_MATCHED_CHARS = 65_536

const INLINE_FLAGS_RE = /^\(\?([a-zA-Z]+)\)/

/** A compiled pattern, or the reason it cannot be one. */
export function compileDenyPattern (pattern: string): RegExp | string {
  let source = pattern
  let flags = ''
  const inline = INLINE_FLAGS_RE.exec(pattern)
  if (inline !== null) {
    if (inline[1] !== 'i') return `inline flags (?${inline[1]}) are not supported; only a leading (?i) (case-insensitive) is`
    source = pattern.slice(inline[0].length)
    flags += 'i'
  }
  if (/\(\?[a-zA-Z]+[):]/.test(source)) return 'inline flag groups such as (?i) are supported only at the very start of a pattern'
  let regex: RegExp
  try {
    regex = new RegExp(source, flags)
  } catch (err) {
    return `not a valid regular expression: ${(err as Error).message}`
  }
  if (!safeRegex(regex)) return 'may backtrack catastrophically (nested repetition such as (a+)+); rewrite it without repetition inside repetition'
  return regex
}

export function compileArgumentDeny (deny: Readonly<Record<string, readonly string[]>>): ArgumentDeny[] {
  const rules: ArgumentDeny[] = []
  for (const [argument, patterns] of Object.entries(deny)) {
    for (const pattern of patterns) {
      const regex = compileDenyPattern(pattern)
      if (typeof regex === 'string') throw new Error(`arguments.deny.${argument}: ${JSON.stringify(pattern)} ${regex}`)
      rules.push({ argument, pattern, regex })
    }
  }
  return rules
}

/** The first rule an argument breaks, as a message; undefined when none does. */
export function argumentRefusal (rules: readonly ArgumentDeny[], args: unknown, tool: string): string | undefined {
  if (rules.length === 0) return undefined
  const values = args !== null && typeof args === 'object' && !Array.isArray(args) ? args as Record<string, unknown> : {}
  for (const rule of rules) {
    const value = values[rule.argument]
    if (value === undefined) continue
    const texts = stringsOf(value, 0)
    // Fail closed: what cannot be looked through is not let through.
    if (texts === undefined) return `argument "${rule.argument}" of tool "${tool}" is nested too deeply to check against its deny rules`
    if (texts.some((text) => rule.regex.test(text.slice(0, MAX_MATCHED_CHARS)))) {
      return `argument "${rule.argument}" of tool "${tool}" matches the deny pattern ${JSON.stringify(rule.pattern)}`
    }
    const longest = Math.max(...texts.map((text) => text.length))
    if (longest > MAX_MATCHED_CHARS) {
      return `argument "${rule.argument}" of tool "${tool}" holds a string of ${longest} characters, longer than the ${MAX_MATCHED_CHARS} its deny rules are checked on`
    }
  }
  return undefined
}

/** Arguments nested deeper than this are refused rather than walked (a stack cannot overflow on them). */
const MAX_ARGUMENT_DEPTH = 32

/** A string, or every string inside an array or object (a rule on `sql` also covers `sql: ["..."]`); undefined when too deep. */
function stringsOf (value: unknown, depth: number): string[] | undefined {
  if (typeof value === 'string') return [value]
  if (value === null || typeof value !== 'object') return [String(value)]
  if (depth >= MAX_ARGUMENT_DEPTH) return undefined
  const texts: string[] = []
  for (const inner of Object.values(value as Record<string, unknown>)) {
    const found = stringsOf(inner, depth + 1)
    if (found === undefined) return undefined
    texts.push(...found)
  }
  return texts
}
