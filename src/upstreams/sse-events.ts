/**
 * Reading a Server-Sent Events stream event by event (WHATWG HTML "Server-sent
 * events", 9.2.6 "Interpreting an event stream"): the gateway reads the
 * answers of its own /mcp route for 2024-11-05 clients, and the streams of
 * `transport: sse` upstreams. Comments (keep-alives) are skipped; the `id`
 * and `retry` fields are not needed by either reader.
 */
import { StringDecoder } from 'node:string_decoder'
import { eventEnd, splitLines } from './response-edit.js'

export interface SseEvent {
  /** The event type; `message` when the event names none. */
  readonly event: string
  readonly data: string
}

export class SseEventReader {
  private pending = ''
  /** A character cut between two network reads is held until its last byte comes. */
  private readonly decoder = new StringDecoder('utf8')

  /** The complete events in `chunk` (with what was held from before); a partial one waits for the next chunk. */
  push (chunk: Buffer | string): SseEvent[] {
    this.pending += typeof chunk === 'string' ? chunk : this.decoder.write(chunk)
    const events: SseEvent[] = []
    for (;;) {
      const end = eventEnd(this.pending)
      if (end === undefined) break
      const event = parseEvent(this.pending.slice(0, end.start))
      this.pending = this.pending.slice(end.end)
      if (event !== undefined) events.push(event)
    }
    return events
  }
}

/** One event's lines; undefined for a block of comments only (no data: the spec dispatches nothing). */
function parseEvent (block: string): SseEvent | undefined {
  let type = 'message'
  const data: string[] = []
  for (const line of splitLines(block)) {
    if (line === '' || line.startsWith(':')) continue
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    const value = colon === -1 ? '' : line.slice(line.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1)
    if (field === 'event') type = value
    else if (field === 'data') data.push(value)
  }
  return data.length === 0 ? undefined : { event: type, data: data.join('\n') }
}
