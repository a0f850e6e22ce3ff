/**
 * Reading a Server-Sent Events stream event by event (WHATWG HTML "Server-sent
 * events", 9.2.6 "Interpreting an event stream"): the gateway reads the
 * answers of its own /mcp route for 2024-11-05 clients, and the streams of
 * `transport: sse` upstreams. Comments (keep-alives) are skipped; the `id`
 * and `retry` fields are not needed by either reader.
 */
import { StringDecoder } from 'node:string_decoder'
import { eventEnd, splitLines } from './response-edit.js'
import { DEFAULT_MAX_SSE_EVENT_BYTES } from '../config/defaults.js'

export interface SseEvent {
  /** The event type; `message` when the event names none. */
  readonly event: string
  readonly data: string
}

/** The code of what SseEventReader.push throws when one event grows past its limit (the stream is to be closed). */
export const SSE_EVENT_TOO_LARGE = 'SSE_EVENT_TOO_LARGE'

class SseEventTooLarge extends Error {
  readonly code = SSE_EVENT_TOO_LARGE

  constructor (readonly maxEventBytes: number) {
    super(`an event stream event is larger than ${maxEventBytes} bytes`)
  }
}

/**
 * How many characters of an incomplete event are looked at again with the next chunk: the
 * longest blank line is "\r\n\r\n", and a "\r" before its first "\n" is part of it.
 */
const HELD_CHARS = 3

export class SseEventReader {
  /**
   * The incomplete event, chunk by chunk: joined once, when its blank line comes. Holding one
   * growing string instead made every chunk rescan (and copy) the whole event: quadratic.
   */
  private parts: string[] = []
  private pendingBytes = 0
  /** The last HELD_CHARS characters of `parts`: where a blank line cut between two chunks starts. */
  private held = ''
  /** A character cut between two network reads is held until its last byte comes (made at the first such cut). */
  private decoder: StringDecoder | undefined

  /** A chunk as text; most end on a character's last byte and need no decoder. */
  private decode (chunk: Buffer): string {
    if (this.decoder === undefined && endsOnCharBoundary(chunk)) return chunk.toString('utf8')
    this.decoder ??= new StringDecoder('utf8')
    return this.decoder.write(chunk)
  }

  /** @param maxEventBytes one event's limit (servers[].maxMessageBytes); past it push throws SseEventTooLarge */
  constructor (private readonly maxEventBytes: number = DEFAULT_MAX_SSE_EVENT_BYTES) {}

  /** The complete events in `chunk` (with what was held from before); a partial one waits for the next chunk. */
  push (chunk: Buffer | string): SseEvent[] {
    const text = typeof chunk === 'string' ? chunk : this.decode(chunk)
    const whole = this.parts.length === 0 ? oneMessage(text, this.maxEventBytes) : undefined
    if (whole !== undefined) return [whole]
    const events: SseEvent[] = []
    let window = this.held + text
    let end = eventEnd(window)
    if (end !== undefined) {
      // The first event began in earlier chunks: everything held, up to its blank line.
      const before = this.parts.join('')
      this.addEvent(events, (before + text).slice(0, before.length - this.held.length + end.start))
      window = window.slice(end.end)
      for (end = eventEnd(window); end !== undefined; end = eventEnd(window)) {
        this.addEvent(events, window.slice(0, end.start))
        window = window.slice(end.end)
      }
      this.parts = []
      this.pendingBytes = 0
      this.held = ''
      this.hold(window)
      return events
    }
    this.hold(text)
    return events
  }

  private hold (text: string): void {
    if (text === '') return
    this.parts.push(text)
    this.pendingBytes += Buffer.byteLength(text)
    this.held = (this.held + text).slice(-HELD_CHARS)
    if (this.pendingBytes > this.maxEventBytes) throw new SseEventTooLarge(this.maxEventBytes)
  }

  private addEvent (events: SseEvent[], block: string): void {
    if (Buffer.byteLength(block) > this.maxEventBytes) throw new SseEventTooLarge(this.maxEventBytes)
    const event = parseEvent(block)
    if (event !== undefined) events.push(event)
  }
}

const MESSAGE_EVENT_PREFIX = 'event: message\ndata: '
const DATA_PREFIX = 'data: '

/**
 * A chunk that is exactly one message event of one data line, as servers write most of them
 * (`event: message` or no type, `data: …`, LF line ends, a blank line), read without splitting
 * lines; undefined for anything else, which the general reader reads.
 */
function oneMessage (text: string, maxEventBytes: number): SseEvent | undefined {
  if (text.length > maxEventBytes / 3 || !text.endsWith('\n\n')) return undefined
  const start = text.startsWith(MESSAGE_EVENT_PREFIX) ? MESSAGE_EVENT_PREFIX.length : text.startsWith(DATA_PREFIX) ? DATA_PREFIX.length : -1
  if (start === -1) return undefined
  const end = text.length - 2
  // One line of data: no other line break (a CR would be one too) before the blank line.
  if (text.indexOf('\n', start) !== end || text.includes('\r')) return undefined
  return { event: 'message', data: text.slice(start, end) }
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

/** True when `bytes` does not end inside a UTF-8 sequence (its last lead byte has all its continuation bytes). */
export function endsOnCharBoundary (bytes: Uint8Array): boolean {
  const last = bytes.length - 1
  // Back over at most three continuation bytes (10xxxxxx) to the lead byte of the last sequence.
  let lead = last
  while (lead >= 0 && last - lead < 3 && ((bytes[lead] as number) & 0xc0) === 0x80) lead--
  if (lead < 0) return true
  const byte = bytes[lead] as number
  const length = byte < 0x80 ? 1 : byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1
  return last - lead + 1 >= length
}
