/** Human-friendly units in config: byte sizes ("4mb") and durations ("15m"). */

const SIZE_UNITS: Readonly<Record<string, number>> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }
const SIZE_RE = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i

/** "4mb" -> 4194304; a plain number is bytes. Returns undefined when unparseable. */
export function parseByteSize (value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined
  const m = SIZE_RE.exec(value.trim())
  if (m === null) return undefined
  const bytes = Math.floor(Number(m[1]) * (SIZE_UNITS[(m[2] ?? 'b').toLowerCase()] ?? 1))
  return bytes > 0 ? bytes : undefined
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000, hour: 3_600_000, d: 86_400_000, day: 86_400_000,
}
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|hour|d|day)$/i

/** "15m" -> 900000; a plain number is milliseconds. Returns undefined when unparseable. */
export function parseDuration (value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined
  const m = DURATION_RE.exec(value.trim())
  if (m === null) return undefined
  return Math.round(Number(m[1]) * (DURATION_UNITS_MS[(m[2] ?? 'ms').toLowerCase()] ?? 1))
}

export interface Rate {
  /** Requests (or cost units) allowed per window. */
  readonly max: number
  readonly windowMs: number
  /** As written, for messages: "10/min". */
  readonly text: string
}

const RATE_RE = /^(\d+)\s*\/\s*(\d+)?\s*(s|sec|second|m|min|minute|h|hour|d|day)s?$/i
const RATE_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, sec: 1000, second: 1000, m: 60_000, min: 60_000, minute: 60_000, h: 3_600_000, hour: 3_600_000, d: 86_400_000, day: 86_400_000 }

/** "60/min", "1000/day", "10/30s" -> { max, windowMs }. Undefined when unparseable. */
export function parseRate (value: string): Rate | undefined {
  const m = RATE_RE.exec(value.trim())
  if (m === null) return undefined
  const max = Number(m[1])
  const windowMs = Number(m[2] ?? 1) * (RATE_UNIT_MS[(m[3] ?? '').toLowerCase()] ?? 0)
  if (max < 1 || windowMs <= 0 || !Number.isSafeInteger(max)) return undefined
  return { max, windowMs, text: value.trim() }
}

/** "10 per minute", "1000 per day", "10 per 30 seconds": for messages a model reads. */
export function describeRate (rate: Rate): string {
  const units: Array<[number, string]> = [[86_400_000, 'day'], [3_600_000, 'hour'], [60_000, 'minute'], [1000, 'second']]
  for (const [ms, name] of units) {
    if (rate.windowMs % ms === 0) {
      const count = rate.windowMs / ms
      return count === 1 ? `${rate.max} per ${name}` : `${rate.max} per ${count} ${name}s`
    }
  }
  return `${rate.max} per ${rate.windowMs} ms`
}
