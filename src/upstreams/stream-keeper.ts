/**
 * Keep-alive comments on idle event streams to clients. A GET stream can be
 * silent for hours; proxies and load balancers in between (nginx's
 * `proxy_read_timeout`, cloud balancers' idle timeouts) cut a connection that
 * carries nothing. An SSE comment line (`: keep-alive`) is ignored by every
 * client (WHATWG HTML, "Parsing an event stream": lines starting with a colon).
 *
 * Idle streams must cost nothing per second: one shared timer for all of them,
 * no timer or date per stream. Each stream remembers the sweep tick of its
 * last write (one integer store per write); a sweep writes a comment to those
 * that have been silent for a whole interval. A comment only ever goes between
 * two events, never inside one being relayed in pieces.
 */
import type { ServerResponse } from 'node:http'
import { InFlight } from '../in-flight.js'

const COMMENT = ': keep-alive\n\n'
/** Sweeps per keep-alive interval: a stream gets its comment between 1 and 1 + 1/SWEEPS intervals after its last write. */
const SWEEPS_PER_INTERVAL = 3

export class KeptStream {
  /** The sweep tick of the last write. */
  lastTick: number
  /** Whether what was written so far ends between two events. */
  isAtBoundary = true

  constructor (readonly res: ServerResponse, tick: number) {
    this.lastTick = tick
  }
}

export class StreamKeeper {
  private tick = 0
  /** An InFlight, not a Set: one stream per POST answered as events (see src/in-flight.ts). */
  private readonly streams = new InFlight<KeptStream>()
  private readonly timer: NodeJS.Timeout | undefined

  /** `intervalMs` 0: no keep-alive comments (streams are still counted). */
  constructor (intervalMs: number) {
    if (intervalMs > 0) {
      this.timer = setInterval(() => this.sweep(), Math.max(1, Math.floor(intervalMs / SWEEPS_PER_INTERVAL)))
      this.timer.unref()
    }
  }

  /**
   * Watches a client stream until it closes. One already closed (the client left while the
   * answer waited: a session owner read from the store, a caller credential fetched) is not
   * kept: its 'close' has fired, and an entry for it would stay for good.
   */
  add (res: ServerResponse): KeptStream {
    const stream = new KeptStream(res, this.tick)
    if (res.closed) return stream
    const entry = this.streams.add(stream)
    res.once('close', () => { this.streams.delete(entry) })
    return stream
  }

  /** Bytes went out on the stream (call after writing them). */
  wrote (stream: KeptStream, data: Buffer | string): void {
    stream.lastTick = this.tick
    if (data.length > 0) stream.isAtBoundary = endsEvent(data)
  }

  get size (): number {
    return this.streams.size
  }

  /** Runs on the shared timer; tests call it directly. */
  sweep (): void {
    this.tick++
    for (const stream of this.streams.values()) {
      if (this.tick - stream.lastTick < SWEEPS_PER_INTERVAL || !stream.isAtBoundary) continue
      const { res } = stream
      if (res.destroyed || res.writableEnded) continue
      res.write(COMMENT)
      stream.lastTick = this.tick
    }
  }

  close (): void {
    clearInterval(this.timer)
    this.streams.clear()
  }
}

const LF = 10
const CR = 13

/** Whether written data ends an SSE event: a blank line (LF LF, CR LF CR LF, or CR CR). */
function endsEvent (data: Buffer | string): boolean {
  const n = data.length
  const at = (i: number): number => typeof data === 'string' ? data.charCodeAt(i) : data[i] ?? -1
  const last = at(n - 1)
  const before = n >= 2 ? at(n - 2) : -1
  if (last === LF) return before === LF || (before === CR && n >= 4 && at(n - 3) === LF && at(n - 4) === CR)
  return last === CR && before === CR
}
