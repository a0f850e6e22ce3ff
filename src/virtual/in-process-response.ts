/**
 * The response a member's route writes for a virtual server's request (./member-link.ts): the
 * part of `http.ServerResponse` the route's steps and the upstream adapters use (src/upstreams:
 * writeHead, setHeader, write, end, flushHeaders, destroy, the state flags, and 'close',
 * 'drain' and 'finish'), whose bytes come out as `body`, a Readable, with the status and
 * headers known once the head is (writeHead, flushHeaders, or the first write or end).
 *
 * 'close' means what it means on a socket: the answer is complete, or the reader left. Reading
 * stops when `body` is destroyed (the client of the virtual route left): the response is
 * destroyed and emits 'close', which is how the adapters learn that their client is gone.
 */
import { EventEmitter } from 'node:events'
import type { OutgoingHttpHeaders } from 'node:http'
import { Readable } from 'node:stream'

type HeaderValue = number | string | readonly string[]

export class InProcessResponse extends EventEmitter {
  statusCode = 200
  headersSent = false
  writableEnded = false
  writableFinished = false
  destroyed = false
  closed = false
  /** What the route wrote, for the virtual layer to read. */
  readonly body: Readable
  /** Settles once the head is known (or the response was destroyed before it was). */
  readonly head: Promise<void>
  private readonly fields: Record<string, HeaderValue> = {}
  private isWaitingForDrain = false
  private settleHead: () => void = () => {}

  constructor () {
    super()
    this.body = new Readable({
      // The reader wants more: a writer that was told to wait may go on (backpressure, as a socket's).
      read: () => {
        if (!this.isWaitingForDrain) return
        this.isWaitingForDrain = false
        this.emit('drain')
      },
      // Also when a whole answer was read (autoDestroy): only an unfinished one is given up.
      destroy: (err, callback) => {
        if (!this.writableEnded) this.destroy()
        callback(err)
      },
    })
    this.head = new Promise((resolve) => { this.settleHead = resolve })
  }

  /** The head as a reader sees it: lowercase names. */
  get headers (): Readonly<Record<string, HeaderValue>> {
    return this.fields
  }

  setHeader (name: string, value: HeaderValue): this {
    if (!this.headersSent) this.fields[name.toLowerCase()] = value
    return this
  }

  getHeader (name: string): HeaderValue | undefined {
    return this.fields[name.toLowerCase()]
  }

  writeHead (statusCode: number, headers?: OutgoingHttpHeaders): this {
    if (this.headersSent) return this
    this.statusCode = statusCode
    for (const [name, value] of Object.entries(headers ?? {})) {
      if (value !== undefined) this.fields[name.toLowerCase()] = value
    }
    this.sendHead()
    return this
  }

  flushHeaders (): void {
    this.sendHead()
  }

  write (chunk: string | Buffer): boolean {
    if (this.writableEnded || this.destroyed) return false
    this.sendHead()
    if (this.body.push(chunk)) return true
    this.isWaitingForDrain = true
    return false
  }

  end (chunk?: string | Buffer): this {
    if (this.writableEnded || this.destroyed) return this
    if (chunk !== undefined) this.write(chunk)
    this.sendHead()
    this.writableEnded = true
    this.writableFinished = true
    this.body.push(null)
    // As a socket's: after the writer's own call has returned.
    process.nextTick(() => {
      this.emit('finish')
      this.close()
    })
    return this
  }

  /**
   * The writer dropped the answer, or the reader left. A reader still reading gets the answer
   * as far as it went, then its end: never an 'error' event, which a reader that only drains
   * the body (resume) would not handle. A JSON body cut short does not parse, and a stream's
   * unfinished event is no event (SseEventReader): the virtual layer sees no answer.
   */
  destroy (): this {
    if (this.destroyed) return this
    this.destroyed = true
    if (!this.writableEnded && !this.body.destroyed) this.body.push(null)
    this.settleHead()
    this.close()
    return this
  }

  private sendHead (): void {
    if (this.headersSent) return
    this.headersSent = true
    this.settleHead()
  }

  private close (): void {
    if (this.closed) return
    this.closed = true
    this.emit('close')
  }
}
