/**
 * Edits to an upstream's answer, needed only now and then: list results
 * filtered by policy, secrets masked in results (servers[].redactResults),
 * results recorded for a debugging audit, and the
 * gateway's own errors for refused members of a JSON-RPC batch merged in.
 * Without an edit, answers pass through as bytes; with one, JSON bodies are
 * buffered and SSE streams are parsed event by event (still streamed), and
 * only the watched responses are re-serialised.
 */
import { StringDecoder } from 'node:string_decoder'
import type { JsonRpcErrorBody, JsonRpcId } from '../errors.js'

export type MessageTransform = (message: Record<string, unknown>) => Record<string, unknown> | undefined

export interface ResponseEdit {
  /** Responses (by request id) to hand to their transform; it may return a replacement. */
  readonly watch: ReadonlyMap<JsonRpcId, MessageTransform>
  /** Errors for batch members the gateway itself refused, added to the answer. */
  readonly extra: readonly JsonRpcErrorBody[]
  /** For every response not in `watch` (a GET stream's replayed answers, whose requests went by earlier). */
  readonly any?: MessageTransform
}

function isResponse (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && 'id' in value && ('result' in value || 'error' in value)
}

/** A single message through the watch list; the same object when untouched. */
export function editMessage (message: unknown, edit: ResponseEdit): unknown {
  if (!isResponse(message)) return message
  const transform = edit.watch.get(message.id as JsonRpcId) ?? looselyWatched(edit.watch, message.id) ?? edit.any
  return transform === undefined ? message : transform(message) ?? message
}

/**
 * The watched request a response answers as clients match ids, when its id is written another
 * way: the MCP SDK client looks a response up by `Number(response.id)`, so an upstream answering
 * request 1 with id "1" or "1.0" is read as that answer, and passed unedited (unfiltered,
 * unmasked, unpinned) when only the exact id was watched. Looked for only when the exact id misses.
 */
function looselyWatched (watch: ReadonlyMap<JsonRpcId, MessageTransform>, id: unknown): MessageTransform | undefined {
  if (watch.size === 0 || (typeof id !== 'string' && typeof id !== 'number')) return undefined
  const asString = String(id)
  const asNumber = Number(id)
  for (const [key, transform] of watch) {
    if (String(key) === asString || (!Number.isNaN(asNumber) && Number(key) === asNumber)) return transform
  }
  return undefined
}

/** A batch of messages through the watch list; the same array when no member changed. */
function editBatch (messages: readonly unknown[], edit: ResponseEdit): readonly unknown[] {
  const edited = messages.map((m) => editMessage(m, edit))
  return edited.every((m, i) => m === messages[i]) ? messages : edited
}

/** Edits a JSON response body (one message or a batch answer). */
export function editJsonBody (body: Buffer, edit: ResponseEdit): Buffer {
  let parsed: unknown
  try {
    // A byte-order mark is dropped first, as clients' response.json() drops it: otherwise an
    // answer every client reads would pass unedited (unfiltered, unmasked, unpinned).
    parsed = JSON.parse(withoutBom(body.toString('utf8')))
  } catch {
    return body
  }
  const messages = Array.isArray(parsed) ? parsed : [parsed]
  const edited = messages.map((m) => editMessage(m, edit))
  // Nothing edited, nothing added: the upstream's own bytes (a watched answer that needed no change).
  if (edit.extra.length === 0 && edited.every((m, i) => m === messages[i])) return body
  let out: unknown = Array.isArray(parsed) ? edited : edited[0]
  if (edit.extra.length > 0) out = [...edited, ...edit.extra]
  return Buffer.from(JSON.stringify(out))
}

function withoutBom (text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
}

/** One SSE event carrying one JSON-RPC message. */
export function sseMessageEvent (message: unknown): string {
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`
}

/**
 * Incremental SSE editor: feed raw chunks, get text to write. Events whose
 * data is a watched response are rewritten (event name and id kept); all
 * others pass as they were.
 */
export class SseEditor {
  private pending = ''
  /** A character cut between two network writes is held until its last byte comes (chunk.toString would make it U+FFFD). */
  private readonly decoder = new StringDecoder('utf8')
  /** Nothing read yet: a byte-order mark there is dropped (as SSE parsers do). */
  private isAtStart = true
  /** A chunk ended in "\r": held until the next shows whether "\n" follows. */
  private isCrHeld = false

  constructor (private readonly edit: ResponseEdit) {}

  /** Characters of the event not yet whole: what one event holds in memory until its end comes. */
  get pendingLength (): number {
    return this.pending.length
  }

  /** The gateway's own batch errors go first, before the upstream's events. */
  prelude (): string {
    return this.edit.extra.map((e) => sseMessageEvent(e)).join('')
  }

  push (chunk: Buffer): string {
    this.pending += this.lines(this.decoder.write(chunk))
    return this.completeEvents()
  }

  /** The events `pending` holds whole, edited; the rest stays pending. */
  private completeEvents (): string {
    let out = ''
    for (;;) {
      const end = eventEnd(this.pending)
      if (end === undefined) break
      const event = this.pending.slice(0, end.start)
      out += this.rewrite(event) + this.pending.slice(end.start, end.end)
      this.pending = this.pending.slice(end.end)
    }
    return out
  }

  /** Whatever is left when the stream ends (an unterminated event passes as it was). */
  flush (): string {
    // A CR held at the very end is a line's end: the last event may end with it.
    this.pending += this.lines(this.decoder.end()) + (this.isCrHeld ? '\n' : '')
    this.isCrHeld = false
    const out = this.completeEvents()
    const rest = this.pending
    this.pending = ''
    return out + rest
  }

  /**
   * Text whose lone CRs are LFs (CRLF and LF stay). SSE ends a line with CRLF, LF or a lone CR,
   * and clients' parsers take all three: a stream whose lines end in CR alone would otherwise
   * never show this editor an event's end, and pass unedited.
   */
  private lines (decoded: string): string {
    let text = decoded
    if (this.isAtStart && text !== '') {
      this.isAtStart = false
      text = withoutBom(text)
    }
    if (this.isCrHeld) {
      text = `\r${text}`
      this.isCrHeld = false
    }
    if (text.endsWith('\r')) {
      text = text.slice(0, -1)
      this.isCrHeld = true
    }
    return text.includes('\r') ? text.replace(/\r(?!\n)/g, '\n') : text
  }

  private rewrite (event: string): string {
    const lines = splitLines(event)
    const dataLines = lines.filter((l) => l.startsWith('data:'))
    if (dataLines.length === 0) return event
    const data = dataLines.map((l) => l.slice(l.startsWith('data: ') ? 6 : 5)).join('\n')
    let message: unknown
    try {
      message = JSON.parse(data)
    } catch {
      return event
    }
    // MCP 2025-03-26 lets a server answer a batch with a batch in one event: each member is edited.
    const edited = Array.isArray(message) ? editBatch(message, this.edit) : editMessage(message, this.edit)
    if (edited === message) return event
    const kept = lines.filter((l) => !l.startsWith('data:'))
    return [...kept, `data: ${JSON.stringify(edited)}`].join('\n')
  }
}

/**
 * Where the first event ends: the blank line after it, as `/\r?\n\r?\n/` finds
 * it (the editor runs on every event of a masked stream; indexOf finds each
 * "\n" far faster than a regex walks a 1 KB data line). A match's first "\n"
 * is the first "\n" followed by `\r?\n`; it starts one earlier when a "\r" precedes.
 */
export function eventEnd (text: string): { start: number, end: number } | undefined {
  for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', nl + 1)) {
    const start = nl > 0 && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl
    if (text.charCodeAt(nl + 1) === 10) return { start, end: nl + 2 }
    if (text.charCodeAt(nl + 1) === 13 && text.charCodeAt(nl + 2) === 10) return { start, end: nl + 3 }
  }
  return undefined
}

/** `text.split(/\r?\n/)`, by the character: a line loses one "\r" before its "\n". */
export function splitLines (text: string): string[] {
  const lines = text.split('\n')
  for (let i = 0; i < lines.length - 1; i++) {
    const line = lines[i] as string
    if (line.charCodeAt(line.length - 1) === 13) lines[i] = line.slice(0, -1)
  }
  return lines
}
