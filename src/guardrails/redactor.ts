/**
 * Masks secrets and personal data in upstream results (`servers[].redactResults`)
 * before they reach the client, and so the model's context: every match becomes
 * `[redacted:<kind>]`. What is read: text content blocks, embedded resource
 * text, every string of `structuredContent`, resource text (resources/read)
 * and prompt message text (prompts/get). Binary blobs (images, audio, resource
 * blobs) are not decoded or touched: a pattern cannot tell a key from base64 noise.
 *
 * Cost: a string is scanned as one alternation of every detector would
 * scan it (the leftmost match wins, the first detector listed on a tie, the
 * scan resumes after it), but each detector searches on its own: one regex is
 * far cheaper than an alternation of nine, a detector's needles let it jump
 * over text with `indexOf`, and one with nothing left to find is not asked
 * again. Each needle's next place is remembered for the string (the scan only
 * moves forward), so a needle the rest of a string lacks is not searched for
 * again after every match: the scan stays linear in the string's length.
 * A 1 KB result costs a few µs (docs/benchmarks.md).
 */
import { builtInDetectors, operatorDetector, type Detector, type MatchSpan } from './detectors.js'

/** One entry of `servers[].redactResults`: a detector's (or group's) name, or an operator's pattern. */
export type RedactEntry = string | { readonly name: string, readonly pattern: string }

/** Masked matches by kind, for the audit record and the metric; never the values. */
export type RedactionCounts = Record<string, number>

/** No match at or after the position: the detector is done with this string. */
const NONE = -1
const UNKNOWN = -2

export class Redactor {
  private readonly detectors: readonly Detector[]
  /** One global regex per detector, reused (the scan is synchronous, so `lastIndex` is never shared). */
  private readonly regexes: readonly RegExp[]
  /** Per detector, its next match in the string being scanned (start NONE: none left). */
  private readonly starts: number[]
  private readonly ends: number[]
  /** Per detector, per needle: where it next occurs (NONE: nowhere further; UNKNOWN: not searched yet in this string). */
  private readonly needleAt: number[][]

  constructor (detectors: readonly Detector[]) {
    this.detectors = detectors
    this.regexes = detectors.map((d) => new RegExp(d.source, 'g'))
    this.starts = detectors.map(() => NONE)
    this.ends = detectors.map(() => NONE)
    this.needleAt = detectors.map((d) => (d.needles ?? []).map(() => UNKNOWN))
  }

  /** One string, matches replaced and counted; the same string when nothing matched. */
  redactText (text: string, counts: RedactionCounts): string {
    const { detectors, starts, ends } = this
    let live = 0
    for (let i = 0; i < detectors.length; i++) {
      const places = this.needleAt[i] as number[]
      for (let j = 0; j < places.length; j++) places[j] = UNKNOWN
      this.next(i, text, 0)
      if (starts[i] !== NONE) live++
    }
    if (live === 0) return text
    let out = ''
    let copied = 0
    let from = 0
    let isChanged = false
    for (;;) {
      let winner = NONE
      for (let i = 0; i < detectors.length; i++) {
        if (starts[i] === NONE) continue
        // A detector whose match began inside the last one looks again after it (as the alternation would).
        if ((starts[i] as number) < from) this.next(i, text, from)
        if (starts[i] !== NONE && (winner === NONE || (starts[i] as number) < (starts[winner] as number))) winner = i
      }
      if (winner === NONE) break
      const detector = detectors[winner] as Detector
      const start = starts[winner] as number
      const end = ends[winner] as number
      if (detector.confirm === undefined || detector.confirm(text.slice(start, end))) {
        counts[detector.kind] = (counts[detector.kind] ?? 0) + 1
        out += `${text.slice(copied, start)}[redacted:${detector.kind}]`
        copied = end
        isChanged = true
      }
      // An empty match (an operator's pattern with lookaheads only) moves on one, as String.replace does.
      from = end > start ? end : end + 1
    }
    return isChanged ? out + text.slice(copied) : text
  }

  /**
   * A tools/call, resources/read or prompts/get result (told apart by shape, so a
   * replayed answer whose request is unknown is read the same way): a copy with
   * matches masked, or the same object when nothing matched.
   */
  redactResult (result: unknown, counts: RedactionCounts): unknown {
    if (!isRecord(result)) return result
    const text = (s: string): string => this.redactText(s, counts)
    let out = result
    out = withField(out, 'content', mapArray(result.content, redactBlock, text))
    out = withField(out, 'structuredContent', redactDeep(result.structuredContent, text))
    out = withField(out, 'contents', mapArray(result.contents, redactTextField, text))
    out = withField(out, 'messages', mapArray(result.messages, redactMessage, text))
    return out
  }

  /** Where detector i's regex must start looking (`from` when it has no needles), or NONE when no match is left. */
  private firstNeedle (i: number, text: string, from: number): number {
    const detector = this.detectors[i] as Detector
    const needles = detector.needles
    if (needles === undefined) return from
    const places = this.needleAt[i] as number[]
    let first = NONE
    for (let j = 0; j < needles.length; j++) {
      let at = places[j] as number
      if (at === UNKNOWN || (at !== NONE && at < from)) {
        at = text.indexOf(needles[j] as string, from)
        places[j] = at
      }
      if (at !== NONE && (first === NONE || at < first)) first = at
    }
    return first === NONE ? NONE : Math.max(from, first - (detector.needleOffset ?? 0))
  }

  /** Detector i's leftmost match at or after `from` into starts/ends. */
  private next (i: number, text: string, from: number): void {
    const detector = this.detectors[i] as Detector
    let span: MatchSpan | undefined
    if (detector.find !== undefined) {
      span = from <= text.length ? detector.find(text, from) : undefined
    } else {
      const at = this.firstNeedle(i, text, from)
      if (at !== NONE && at <= text.length) {
        const re = this.regexes[i] as RegExp
        re.lastIndex = at
        const match = re.exec(text)
        if (match !== null) span = { start: match.index, end: match.index + match[0].length }
      }
    }
    this.starts[i] = span?.start ?? NONE
    this.ends[i] = span?.end ?? NONE
  }
}

/** The server's redactor, or undefined when it masks nothing (its answers then pass as bytes). */
export function createRedactor (entries: readonly RedactEntry[]): Redactor | undefined {
  if (entries.length === 0) return undefined
  const names = entries.filter((e): e is string => typeof e === 'string')
  const patterns = entries.filter((e): e is Exclude<RedactEntry, string> => typeof e !== 'string')
  return new Redactor([...builtInDetectors(names), ...patterns.map((p) => operatorDetector(p.name, p.pattern))])
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

type Text = (s: string) => string
type Edit = (value: unknown, text: Text) => unknown

/**
 * Copy-on-write: the same record when the value is the one it holds, else a
 * copy with it (the walk runs per result, so no closures or entry lists are
 * built per field). A key the record lacks stays absent.
 */
function withField (record: Record<string, unknown>, key: string, after: unknown): Record<string, unknown> {
  if (!(key in record) || record[key] === after) return record
  return { ...record, [key]: after }
}

/** Copy-on-write map over an array (anything else passes as it was). */
function mapArray (value: unknown, edit: Edit, text: Text): unknown {
  if (!Array.isArray(value)) return value
  let out: unknown[] | undefined
  for (let i = 0; i < value.length; i++) {
    const after = edit(value[i], text)
    if (after !== value[i]) {
      out ??= [...value]
      out[i] = after
    }
  }
  return out ?? value
}

/** A record's `text` when it is a string (resource contents, text blocks); anything else passes. */
function redactTextField (item: unknown, text: Text): unknown {
  if (!isRecord(item) || typeof item.text !== 'string') return item
  return withField(item, 'text', text(item.text))
}

/** A content block: text, or an embedded resource's text; images, audio, blobs and links pass. */
function redactBlock (block: unknown, text: Text): unknown {
  if (!isRecord(block)) return block
  if (block.type === 'text') return redactTextField(block, text)
  if (block.type === 'resource') return withField(block, 'resource', redactTextField(block.resource, text))
  return block
}

/** A prompt message: its one content block. */
function redactMessage (message: unknown, text: Text): unknown {
  return isRecord(message) ? withField(message, 'content', redactBlock(message.content, text)) : message
}

/** Every string value, at any depth (keys are names the tool's output schema chose, kept). */
function redactDeep (value: unknown, text: Text): unknown {
  if (typeof value === 'string') return text(value)
  if (Array.isArray(value)) return mapArray(value, redactDeep, text)
  if (!isRecord(value)) return value
  let out = value
  for (const key of Object.keys(value)) out = withField(out, key, redactDeep(value[key], text))
  return out
}
