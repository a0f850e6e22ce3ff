/**
 * Masks secrets and personal data in upstream results (`servers[].redactResults`)
 * before they reach the client, and so the model's context: every match becomes
 * `[redacted:<kind>]`. What is read: text content blocks, embedded resource
 * text, every string of `structuredContent`, resource text (resources/read)
 * and prompt message text (prompts/get). Binary blobs (images, audio, resource
 * blobs) are not decoded or touched: a pattern cannot tell a key from base64 noise.
 *
 * Cost: each string is first asked of each detector's cheap hint (substring
 * tests); only the detectors whose hint fires join one combined alternation,
 * compiled once per combination and cached, so a string is scanned once.
 */
import { builtInDetectors, operatorDetector, type Detector } from './detectors.js'

/** One entry of `servers[].redactResults`: a detector's (or group's) name, or an operator's pattern. */
export type RedactEntry = string | { readonly name: string, readonly pattern: string }

/** Masked matches by kind, for the audit record and the metric; never the values. */
export type RedactionCounts = Record<string, number>

interface CombinedScan {
  readonly re: RegExp
  /** For each detector in the alternation: the capture group that is set when it matched. */
  readonly groups: ReadonlyArray<readonly [group: number, detector: Detector]>
}

/** Capture groups a regex source opens itself (an operator's pattern may have some). */
function groupCount (source: string): number {
  return (new RegExp(`${source}|`).exec('')?.length ?? 1) - 1
}

export class Redactor {
  /** Detectors with a hint, by bit; the operator's patterns (no hint) are in every scan. */
  private readonly hinted: readonly Detector[]
  private readonly unhinted: readonly Detector[]
  private readonly scans = new Map<number, CombinedScan | null>()

  constructor (detectors: readonly Detector[]) {
    this.hinted = detectors.filter((d) => d.hint !== undefined)
    this.unhinted = detectors.filter((d) => d.hint === undefined)
  }

  /** One string, matches replaced and counted; the same string when nothing matched. */
  redactText (text: string, counts: RedactionCounts): string {
    const scan = this.scanFor(text)
    if (scan === null) return text
    return text.replace(scan.re, (match: string, ...groups: unknown[]) => {
      const detector = scan.groups.find(([group]) => groups[group - 1] !== undefined)?.[1]
      if (detector === undefined || detector.confirm?.(match) === false) return match
      counts[detector.kind] = (counts[detector.kind] ?? 0) + 1
      return `[redacted:${detector.kind}]`
    })
  }

  /**
   * A tools/call, resources/read or prompts/get result (told apart by shape, so a
   * replayed answer whose request is unknown is read the same way): a copy with
   * matches masked, or the same object when nothing matched.
   */
  redactResult (result: unknown, counts: RedactionCounts): unknown {
    if (!isRecord(result)) return result
    const text = (s: string): string => this.redactText(s, counts)
    return withFields(result, {
      content: (v) => mapArray(v, (block) => redactBlock(block, text)),
      structuredContent: (v) => redactDeep(v, text),
      contents: (v) => mapArray(v, (item) => isRecord(item) ? withFields(item, { text: (t) => typeof t === 'string' ? text(t) : t }) : item),
      messages: (v) => mapArray(v, (m) => isRecord(m) ? withFields(m, { content: (block) => redactBlock(block, text) }) : m),
    })
  }

  private scanFor (text: string): CombinedScan | null {
    let mask = 0
    for (let i = 0; i < this.hinted.length; i++) {
      if ((this.hinted[i] as Detector).hint?.(text) === true) mask |= 1 << i
    }
    let scan = this.scans.get(mask)
    if (scan === undefined) {
      scan = this.compile(mask)
      this.scans.set(mask, scan)
    }
    return scan
  }

  private compile (mask: number): CombinedScan | null {
    const chosen = [...this.hinted.filter((_, i) => (mask & (1 << i)) !== 0), ...this.unhinted]
    if (chosen.length === 0) return null
    const groups: Array<readonly [number, Detector]> = []
    let next = 1
    for (const d of chosen) {
      groups.push([next, d])
      next += 1 + groupCount(d.source)
    }
    return { re: new RegExp(chosen.map((d) => `(${d.source})`).join('|'), 'g'), groups }
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

type Edit = (value: unknown) => unknown

/** Copy-on-write: the same object unless an edited field changed. */
function withFields (record: Record<string, unknown>, edits: Record<string, Edit>): Record<string, unknown> {
  let out = record
  for (const [key, edit] of Object.entries(edits)) {
    if (!(key in record)) continue
    const before = record[key]
    const after = edit(before)
    if (after !== before) {
      if (out === record) out = { ...record }
      out[key] = after
    }
  }
  return out
}

/** Copy-on-write map over an array (anything else passes as it was). */
function mapArray (value: unknown, edit: Edit): unknown {
  if (!Array.isArray(value)) return value
  let out: unknown[] | undefined
  for (let i = 0; i < value.length; i++) {
    const after = edit(value[i])
    if (after !== value[i]) {
      out ??= [...value]
      out[i] = after
    }
  }
  return out ?? value
}

/** A content block: text, or an embedded resource's text; images, audio, blobs and links pass. */
function redactBlock (block: unknown, text: (s: string) => string): unknown {
  if (!isRecord(block)) return block
  if (block.type === 'text') return withFields(block, { text: (t) => typeof t === 'string' ? text(t) : t })
  if (block.type === 'resource') {
    return withFields(block, { resource: (r) => isRecord(r) ? withFields(r, { text: (t) => typeof t === 'string' ? text(t) : t }) : r })
  }
  return block
}

/** Every string value, at any depth (keys are names the tool's output schema chose, kept). */
function redactDeep (value: unknown, text: (s: string) => string): unknown {
  if (typeof value === 'string') return text(value)
  if (Array.isArray(value)) return mapArray(value, (v) => redactDeep(v, text))
  if (!isRecord(value)) return value
  return withFields(value, Object.fromEntries(Object.keys(value).map((k) => [k, (v: unknown) => redactDeep(v, text)])))
}
