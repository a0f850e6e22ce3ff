/**
 * The answer to one POST that carried requests. The content type is decided
 * by the first message: when it is the only response owed, a plain JSON body
 * (cheapest, and what most answers are); otherwise an SSE stream that carries
 * progress, server-to-client requests and finally the responses.
 */
import type { ServerResponse } from 'node:http'
import { jsonRpcError, type JsonRpcId, type PortcullisError } from '../../errors.js'
import type { ReplySink } from './channel.js'
import { editMessage, type ResponseEdit } from '../response-edit.js'
import { writeJson, type AnsweredExchange, type FailureRecord } from '../respond.js'

export function sseEvent (json: string): string {
  return `event: message\ndata: ${json}\n\n`
}

export const SSE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache',
  // nginx and kin must not buffer: each event goes out as it happens.
  'x-accel-buffering': 'no',
}

export class PostReply implements ReplySink {
  private mode: 'pending' | 'json' | 'sse' | 'done' = 'pending'
  private readonly remaining: Set<JsonRpcId>
  private readonly finished: Promise<void>
  private resolveFinished: () => void = () => {}
  /** Set when the client went away before the answer was complete. */
  onClientGone: () => void = () => {}
  /**
   * The most written and not yet taken by the client (its socket full) before it counts as not
   * reading: a stdio server's messages cannot wait for one client (a shared process serves
   * others), so the answer is cut instead (its stream ends, as when the client leaves).
   */
  maxUnreadBytes = Number.POSITIVE_INFINITY
  /** Told when the answer is cut for a client that does not read. */
  onNotReading: (unreadBytes: number) => void = () => {}

  private readonly res: ServerResponse
  private readonly failures: FailureRecord | undefined

  constructor (
    ex: Omit<AnsweredExchange, 'inspection'>,
    requestIds: readonly JsonRpcId[],
    private readonly isBatch: boolean,
    private readonly headers: Readonly<Record<string, string>> = {},
  ) {
    this.res = ex.res
    this.failures = ex.failures
    this.remaining = new Set(requestIds)
    this.finished = new Promise((resolve) => { this.resolveFinished = resolve })
    this.res.once('close', () => {
      if (this.mode !== 'done') {
        this.mode = 'done'
        this.onClientGone()
        this.resolveFinished()
      }
    })
  }

  get isOpen (): boolean {
    return this.mode !== 'done' && !this.res.destroyed
  }

  /** Resolves when every response was written, or the client went away. */
  done (): Promise<void> {
    return this.finished
  }

  deliver (json: string, clientId: JsonRpcId, isFinal: boolean): void {
    if (!this.isOpen) return
    if (isFinal) this.remaining.delete(clientId)
    if (this.mode === 'pending' && isFinal && this.remaining.size === 0 && !this.isBatch) {
      this.mode = 'done'
      writeJson(this.res, 200, json, this.headers)
      this.resolveFinished()
      return
    }
    this.writeEvent(json)
    if (this.remaining.size === 0) this.end()
  }

  /** A message that belongs on this stream but answers nothing (server-to-client request, log). */
  push (json: string): void {
    if (this.isOpen) this.writeEvent(json)
  }

  fail (err: PortcullisError, clientId: JsonRpcId): void {
    this.failures?.markFailed(clientId)
    if (!this.isOpen) return
    this.remaining.delete(clientId)
    const json = JSON.stringify(jsonRpcError(err, clientId))
    if (this.mode === 'pending' && this.remaining.size === 0 && !this.isBatch) {
      this.mode = 'done'
      writeJson(this.res, err.status, json, err.headers)
      this.resolveFinished()
      return
    }
    this.writeEvent(json)
    if (this.remaining.size === 0) this.end()
  }

  abandon (clientId: JsonRpcId): void {
    if (!this.isOpen) return
    this.failures?.markCancelled(clientId)
    this.remaining.delete(clientId)
    if (this.remaining.size > 0) return
    if (this.mode === 'pending') {
      // Nothing was sent and nothing is owed any more.
      this.mode = 'done'
      this.res.writeHead(202, this.headers)
      this.res.end()
      this.resolveFinished()
      return
    }
    this.end()
  }

  private writeEvent (json: string): void {
    if (this.mode === 'pending') {
      this.mode = 'sse'
      this.res.writeHead(200, { ...this.headers, ...SSE_HEADERS })
    }
    this.res.write(sseEvent(json))
    const unread = unreadBytesOf(this.res)
    if (unread > this.maxUnreadBytes) {
      this.onNotReading(unread)
      this.res.destroy()
    }
  }

  private end (): void {
    this.mode = 'done'
    this.res.end()
    this.resolveFinished()
  }
}

/** What a response holds that its client has not taken yet (a socket's unsent bytes, or an in-process reader's). */
export function unreadBytesOf (res: ServerResponse): number {
  return res.writableLength ?? 0
}

/** A sink that also takes messages answering nothing (server-to-client requests, logs). */
export interface StreamSink extends ReplySink {
  push: (json: string) => void
}

export function isStreamSink (sink: ReplySink | undefined): sink is StreamSink {
  return sink !== undefined && typeof (sink as Partial<StreamSink>).push === 'function'
}

/** Passes watched responses through the edit (filtered lists, recorded results) on their way out. */
export class EditingSink implements StreamSink {
  constructor (private readonly inner: PostReply, private readonly edit: ResponseEdit) {}

  get isOpen (): boolean {
    return this.inner.isOpen
  }

  deliver (json: string, clientId: JsonRpcId, isFinal: boolean): void {
    if (isFinal && this.edit.watch.has(clientId)) {
      const message: unknown = JSON.parse(json)
      const edited = editMessage(message, this.edit)
      if (edited !== message) json = JSON.stringify(edited)
    }
    this.inner.deliver(json, clientId, isFinal)
  }

  push (json: string): void {
    this.inner.push(json)
  }

  fail (err: PortcullisError, clientId: JsonRpcId): void {
    this.inner.fail(err, clientId)
  }

  abandon (clientId: JsonRpcId): void {
    this.inner.abandon(clientId)
  }
}
