/**
 * The response a member's route writes for a virtual server's request (./member-link.ts): the
 * part of `http.ServerResponse` the route's steps and the upstream adapters use (src/upstreams:
 * writeHead, setHeader, write, end, flushHeaders, destroy, the state flags, and 'close',
 * 'drain' and 'finish'), with the status and headers known once the head is (writeHead,
 * flushHeaders, or the first write or end). Its bytes are read one of two ways, chosen once:
 * `consume` hands each write to the reader as it happens (the virtual route's relay of a
 * tools/call answer: no stream, no promise per chunk), `body` is a Readable (everything else).
 * What was written before the reader chose is kept and handed over first.
 *
 * 'close' means what it means on a socket: the answer is complete, or the reader left. Reading
 * stops when `body` is destroyed (the client of the virtual route left): the response is
 * destroyed and emits 'close', which is how the adapters learn that their client is gone.
 */
import { EventEmitter } from 'node:events'
import type { OutgoingHttpHeaders } from 'node:http'
import { Readable } from 'node:stream'

type HeaderValue = number | string | readonly string[]

/** A Readable's default highWaterMark (16 Ki; counted in characters for strings, bytes for Buffers): what is kept for a reader that has not chosen yet before the writer waits. */
const PENDING_HIGH_WATER_MARK = 16 * 1024

export interface Consumer {
  /** One write of the route's, in order; false: the reader's own client must drain first (call `resumeWriter` then). */
  readonly data: (chunk: string | Buffer) => boolean
  /** The answer is complete, or was cut short (destroyed): nothing more comes. Called once. */
  readonly end: () => void
}

export class InProcessResponse extends EventEmitter {
  statusCode = 200
  headersSent = false
  writableEnded = false
  writableFinished = false
  destroyed = false
  closed = false
  /** Settles once the head is known (or the response was destroyed before it was). */
  readonly head: Promise<void>
  private readonly fields: Record<string, HeaderValue> = {}
  private isWaitingForDrain = false
  /** Written since the reader said it was full, until it drains: what its client has not taken. */
  private bytesSinceFull = 0
  private settleHead: () => void = () => {}
  /** Written before the reader chose how to read (undefined once it has). */
  private pending: Array<string | Buffer> | undefined = []
  private pendingBytes = 0
  /** The bytes' end has come (end or destroy): passed to the reader, or kept for it (pending). */
  private isEndPassed = false
  /** The reader has been given the end: nothing more goes to it. */
  private isEndDelivered = false
  private readable: Readable | undefined
  private consumer: Consumer | undefined

  constructor () {
    super()
    this.head = new Promise((resolve) => { this.settleHead = resolve })
  }

  /** What the route wrote, as a Readable (backpressure as a socket's: reading lets the writer go on). */
  get body (): Readable {
    if (this.readable !== undefined) return this.readable
    if (this.consumer !== undefined) throw new Error('this answer is already being consumed')
    const readable = new Readable({
      // The reader wants more: a writer that was told to wait may go on.
      read: () => { this.resumeWriter() },
      // Also when a whole answer was read (autoDestroy): only an unfinished one is given up.
      destroy: (err, callback) => {
        if (!this.writableEnded) this.destroy()
        callback(err)
      },
    })
    this.readable = readable
    this.takePending((chunk) => readable.push(chunk), () => readable.push(null))
    return readable
  }

  /** What the route wrote, handed to `consumer` as it is written (what came before first, now). */
  consume (consumer: Consumer): void {
    if (this.readable !== undefined || this.consumer !== undefined) throw new Error('this answer is already being read')
    this.consumer = consumer
    let isReady = true
    this.takePending((chunk) => { isReady = consumer.data(chunk) }, () => consumer.end())
    if (isReady) this.resumeWriter()
  }

  /** The reader left: what its Readable holds is dropped, and the writer sees its client go ('close'). */
  leave (): void {
    if (this.readable !== undefined) this.readable.destroy()
    else this.destroy()
  }

  /** The reader's client drained: a writer that was told to wait may go on. */
  resumeWriter (): void {
    if (!this.isWaitingForDrain) return
    this.isWaitingForDrain = false
    this.bytesSinceFull = 0
    this.emit('drain')
  }

  /** As a socket's: what was written and not yet taken (here: since the reader said it was full). */
  get writableLength (): number {
    return this.bytesSinceFull
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
    if (headers !== undefined) {
      for (const name in headers) {
        const value = headers[name]
        if (value !== undefined) this.fields[name.toLowerCase()] = value
      }
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
    // A writer that does not wait for 'drain' (a stdio answer: its process serves others) writes on.
    if (this.isWaitingForDrain) this.bytesSinceFull += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
    if (this.pass(chunk)) return true
    this.isWaitingForDrain = true
    return false
  }

  end (chunk?: string | Buffer): this {
    if (this.writableEnded || this.destroyed) return this
    if (chunk !== undefined) this.write(chunk)
    this.sendHead()
    this.writableEnded = true
    this.writableFinished = true
    this.passEnd()
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
    if (!this.writableEnded && this.readable?.destroyed !== true) this.passEnd()
    this.settleHead()
    this.close()
    return this
  }

  private pass (chunk: string | Buffer): boolean {
    if (this.consumer !== undefined) return this.consumer.data(chunk)
    if (this.readable !== undefined) return this.readable.push(chunk)
    this.pending?.push(chunk)
    // As much as a Readable would buffer before telling the writer to wait.
    this.pendingBytes += chunk.length
    return this.pendingBytes < PENDING_HIGH_WATER_MARK
  }

  private passEnd (): void {
    if (this.isEndPassed) return
    this.isEndPassed = true
    if (this.consumer === undefined && this.readable === undefined) return
    this.isEndDelivered = true
    if (this.consumer !== undefined) this.consumer.end()
    else this.readable?.push(null)
  }

  /** Hands what was written before the reader chose to it, and the end if it came. */
  private takePending (data: (chunk: string | Buffer) => unknown, end: () => void): void {
    const pending = this.pending ?? []
    this.pending = undefined
    for (const chunk of pending) {
      // The reader may destroy the response while it reads (its client left): nothing after the end.
      if (this.isEndDelivered) return
      data(chunk)
    }
    if (this.isEndPassed && !this.isEndDelivered) {
      this.isEndDelivered = true
      end()
    }
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
