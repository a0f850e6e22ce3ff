/**
 * A virtual server's requests to its members: each runs, in process, the steps of the member's
 * own `/<member>/mcp` route that follow admission and the token check (routes/mcp/member-entry.ts),
 * so every member check is that route's — access, scopes, policy, guardrails, rate limits,
 * audit, upstream auth and sessions. The virtual route admitted the request and checked the
 * client's token for its own resource; the caller crosses over as an object, never as a header
 * (a socket request cannot name one), and the client's Authorization stays with the virtual route.
 * No HTTP request is made up: the member's answer is what its route writes on an
 * InProcessResponse, read back as a stream.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import { isModernRevision } from '../mcp/headers.js'
import { METHOD_TARGETS, inspectValue, type McpInspection } from '../mcp/jsonrpc.js'
import type { ParamHeader } from '../mcp/param-headers.js'
import type { RequestIdentity } from '../resource-server/verify-token.js'
import { SseEventReader } from '../upstreams/sse-events.js'
import { InProcessResponse, type Consumer } from './in-process-response.js'
import { isEventStream } from '../net/media-type.js'

/** Who is calling, through which virtual server. */
export interface VirtualGrant {
  /** The caller as the virtual route verified it; null with auth off. */
  readonly identity: RequestIdentity | null
  readonly virtualServer: string
}

export interface MemberRequest {
  readonly method: 'POST' | 'GET' | 'DELETE'
  readonly member: string
  readonly sessionId?: string | undefined
  readonly protocolVersion?: string | undefined
  readonly body?: unknown
  /** The client's address as the virtual route judged it (rate limits and the audit's ip are the client's). */
  readonly ip: string
  readonly grant: VirtualGrant
  /** The virtual request's id and logger: the member's audit record and log lines name the client's request. */
  readonly requestId?: string | undefined
  readonly log: FastifyBaseLogger
  readonly signal?: AbortSignal
  /** The client's own bytes (with the member's name for the tool spliced in, when it differs) and their inspection, when `body` is the client's message: sent as they are. */
  readonly raw?: RawMessage | undefined
  /** A 2026-07-28 tools/call: the tool's x-mcp-header parameters, mirrored from its arguments as Mcp-Param-* headers. */
  readonly paramHeaders?: readonly ParamHeader[] | undefined
}

/** A client's message as it came (or with only params.name replaced): its bytes, and the inspection of what they say. */
export interface RawMessage {
  readonly bytes: Buffer
  readonly inspection: McpInspection
}

export interface MemberResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, unknown>>
  /** The answer's bytes as a Readable; or, instead, `consume` (one or the other, once). */
  readonly body: Readable
  /** The answer's bytes handed over as the member's route writes them (the tools/call relay: no stream in between). */
  readonly consume: (consumer: Consumer) => void
  /** The reader's client drained after `consume`'s data said to wait. */
  readonly resumeWriter: () => void
  /** The client of this answer left: a GET stream ends, as when a client closes its connection. */
  readonly destroy: () => void
}

/** What a member's route is given: the request as its steps read it, and the caller. */
export interface InProcessRequest {
  readonly method: MemberRequest['method']
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer | undefined
  /** The body's message as the route's inspect step would read it (it was built from one the virtual route inspected): not parsed again. */
  readonly inspection?: McpInspection | undefined
  readonly ip: string
  readonly id: string
  readonly log: FastifyBaseLogger
  readonly caller: VirtualGrant
}

/** A member's route, run for one request: it answers on `res`, its errors too (it never rejects). */
export type MemberEntry = (request: InProcessRequest, res: InProcessResponse) => Promise<void>

/** Clients' answers and notifications get 202 and no body. */
export const ACCEPTED = 202

export class MemberLink {
  /** Ids for requests no client request stands behind (a retry on a timer). */
  private ownIds = 0

  constructor (private readonly entryOf: (member: string) => MemberEntry | undefined) {}

  async send (request: MemberRequest): Promise<MemberResponse> {
    const entry = this.entryOf(request.member)
    // The configuration's schema makes every member a server of the same build.
    if (entry === undefined) throw new Error(`no route for member ${request.member}`)
    const headers: IncomingHttpHeaders = { accept: request.method === 'GET' ? 'text/event-stream' : 'application/json, text/event-stream' }
    if (request.method === 'POST') headers['content-type'] = 'application/json'
    if (request.sessionId !== undefined) headers['mcp-session-id'] = request.sessionId
    if (request.protocolVersion !== undefined) headers['mcp-protocol-version'] = request.protocolVersion
    if (isModernRevision(request.protocolVersion)) Object.assign(headers, mirroredHeaders(request.body, request.paramHeaders))
    const res = new InProcessResponse()
    const signal = request.signal
    signal?.throwIfAborted()
    if (signal !== undefined) {
      const abort = (): void => { res.destroy() }
      signal.addEventListener('abort', abort, { once: true })
      res.once('close', () => { signal.removeEventListener('abort', abort) })
    }
    const id = request.requestId ?? `virtual-${++this.ownIds}`
    const isPost = request.method === 'POST'
    const body = isPost ? request.raw?.bytes ?? Buffer.from(JSON.stringify(request.body)) : undefined
    const inspection = isPost ? request.raw?.inspection ?? inspected(request.body) : undefined
    entry({ method: request.method, headers, body, inspection, ip: request.ip, id, log: request.log, caller: request.grant }, res).catch((err: unknown) => {
      // A fault of the route's own error answer: the answer is dropped, never left hanging.
      request.log.error({ err, member: request.member }, 'virtual member request failed')
      res.destroy()
    })
    await res.head
    if (!res.headersSent) throw signal?.reason ?? new Error(`member ${request.member} dropped the request`)
    return new LinkedResponse(res)
  }
}

/** A member's answer as its route wrote it (a class: an object literal with a getter is built through the runtime, per request). */
class LinkedResponse implements MemberResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, unknown>>

  constructor (private readonly res: InProcessResponse) {
    this.status = res.statusCode
    this.headers = res.headers
  }

  get body (): Readable {
    return this.res.body
  }

  consume (consumer: Consumer): void {
    this.res.consume(consumer)
  }

  resumeWriter (): void {
    this.res.resumeWriter()
  }

  destroy (): void {
    this.res.leave()
  }
}

/** The message's inspection, or undefined for the member route's inspect step to refuse it with its own error. */
function inspected (body: unknown): McpInspection | undefined {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined
  try {
    return inspectValue(body as Record<string, unknown>)
  } catch {
    return undefined
  }
}

/**
 * A 2026-07-28 request mirrors its method and target in headers (MCP 2026-07-28 transports,
 * Mcp-Method / Mcp-Name, and a tool's x-mcp-header arguments as Mcp-Param-*), which the member
 * route checks (and an HTTP member's upstream with it). A non-ASCII value is base64 in the
 * `=?base64?…?=` form.
 */
function mirroredHeaders (body: unknown, params: readonly ParamHeader[] = []): Record<string, string> {
  const message = body !== null && typeof body === 'object' ? body as { method?: unknown, params?: Record<string, unknown> } : {}
  if (typeof message.method !== 'string') return {}
  const out: Record<string, string> = { 'mcp-method': message.method }
  const param = METHOD_TARGETS[message.method]?.param
  const target = param === undefined ? undefined : message.params?.[param]
  if (typeof target === 'string') out['mcp-name'] = headerValue(target)
  for (const p of params) {
    const value = valueAt(message.params?.arguments, p.path)
    if (typeof value === 'string') out[p.header] = headerValue(value)
    else if (typeof value === 'number' || typeof value === 'boolean') out[p.header] = String(value)
  }
  return out
}

/**
 * A value as a header carries it: as it is when visible ASCII with no space at either end (which
 * HTTP would trim), else in the `=?base64?…?=` form.
 */
function headerValue (value: string): string {
  return /^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/.test(value) ? value : `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`
}

function valueAt (args: unknown, path: readonly string[]): unknown {
  let value = args
  for (const key of path) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
    value = (value as Record<string, unknown>)[key]
  }
  return value
}

/** Every JSON-RPC message of a member's answer, as it comes: one JSON body, or the events of a stream. */
export async function * messagesOf (response: MemberResponse): AsyncGenerator<Record<string, unknown>> {
  if (isEventStream(response.headers['content-type'])) {
    const reader = new SseEventReader()
    for await (const chunk of response.body) {
      for (const event of reader.push(chunk as Buffer)) {
        if (event.event !== 'message' || event.data === '') continue
        const message = parseObject(event.data)
        if (message !== undefined) yield message
      }
    }
    return
  }
  const text = await readAll(response.body)
  if (text === '') return
  const parsed = parseJson(text)
  for (const message of Array.isArray(parsed) ? parsed : [parsed]) {
    if (message !== null && typeof message === 'object') yield message as Record<string, unknown>
  }
}

/** A member's whole answer as text, read as the route writes it (no stream in between). */
export async function textOf (response: MemberResponse): Promise<string> {
  const chunks: Buffer[] = []
  await new Promise<void>((resolve) => {
    response.consume({
      data: (chunk) => {
        chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
        return true
      },
      end: resolve,
    })
  })
  return chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8')
}

export async function readAll (body: Readable): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

function parseJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function parseObject (text: string): Record<string, unknown> | undefined {
  const parsed = parseJson(text)
  return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Record<string, unknown> : undefined
}
