// One collection's figures from a line of V8's --trace-gc-nvp output, which changed form
// between Node lines: `... gc=s ... pause=0.9 ... allocated=N promoted=N` (Node 20) and
// `... GC: {"pause":0.9,"gc":"s",...,"allocated":N,"promoted":N}` (Node 26). Used by
// bench/gc-per-request.mjs and test/unit/in-flight.test.ts.

/**
 * @param {string} line
 * @returns {{ kind: 'young' | 'full', pauseMs: number, allocated: number, promoted: number } | undefined}
 *   young: a scavenge (gc=s) or a minor mark-sweep (gc=mmc, where V8 uses one); full: gc=mc.
 *   Undefined for any other line.
 */
export function gcRecord (line) {
  let fields
  const json = line.indexOf('GC: {')
  if (json >= 0) {
    try {
      fields = JSON.parse(line.slice(json + 'GC: '.length))
    } catch {
      return undefined // a line cut where the log's window begins
    }
  } else {
    fields = Object.fromEntries(line.trim().split(/\s+/).map((pair) => pair.split('=', 2)))
  }
  const kind = fields.gc === 's' || fields.gc === 'mmc' ? 'young' : fields.gc === 'mc' ? 'full' : undefined
  if (kind === undefined) return undefined
  return { kind, pauseMs: Number(fields.pause ?? 0), allocated: Number(fields.allocated ?? 0), promoted: Number(fields.promoted ?? 0) }
}
