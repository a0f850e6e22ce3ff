/**
 * A virtual server's requests to its members: each is an in-process request (app.inject, as
 * the 2024-11-05 routes do) to the member's own `/<member>/mcp` route, so every member check
 * is that route's — access, scopes, policy, guardrails, rate limits, audit, upstream auth and
 * sessions. The caller crosses over as an in-process credential (./credentials.ts), never as
 * the client's Authorization, which stays with the virtual route.
 */
import type { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { isModernRevision } from '../mcp/headers.js'
import { METHOD_TARGETS } from '../mcp/jsonrpc.js'
import { SseEventReader } from '../upstreams/sse-events.js'
import { VIRTUAL_CREDENTIAL_HEADER, type VirtualCredentials, type VirtualGrant } from './credentials.js'

export interface MemberRequest {
  readonly method: 'POST' | 'GET' | 'DELETE'
  readonly member: string
  readonly sessionId?: string | undefined
  readonly protocolVersion?: string | undefined
  readonly body?: unknown
  /** The client's address as the virtual route judged it (rate limits and the audit's ip are the client's). */
  readonly ip: string
  /** Who is calling, through which virtual server (the credential is issued for `member` only). */
  readonly grant: Omit<VirtualGrant, 'member'>
  readonly signal?: AbortSignal
}

export interface MemberResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, unknown>>
  readonly body: Readable
  /** The inner response itself: destroying it ends a GET stream. */
  readonly destroy: () => void
}

/** Clients' answers and notifications get 202 and no body. */
export const ACCEPTED = 202

export class MemberLink {
  constructor (private readonly app: FastifyInstance, private readonly credentials: VirtualCredentials) {}

  async send (request: MemberRequest): Promise<MemberResponse> {
    const handle = this.credentials.issue({ ...request.grant, member: request.member })
    const headers: Record<string, string> = {
      accept: request.method === 'GET' ? 'text/event-stream' : 'application/json, text/event-stream',
      [VIRTUAL_CREDENTIAL_HEADER]: handle,
    }
    if (request.method === 'POST') headers['content-type'] = 'application/json'
    if (request.sessionId !== undefined) headers['mcp-session-id'] = request.sessionId
    if (request.protocolVersion !== undefined) headers['mcp-protocol-version'] = request.protocolVersion
    if (isModernRevision(request.protocolVersion)) Object.assign(headers, mirroredHeaders(request.body))
    try {
      const response = await this.app.inject({
        method: request.method,
        url: `/${request.member}/mcp`,
        headers,
        ...(request.method === 'POST' ? { payload: JSON.stringify(request.body) } : {}),
        remoteAddress: request.ip,
        payloadAsStream: true,
        ...(request.signal === undefined ? {} : { signal: request.signal }),
      })
      const inner = (response.raw as unknown as { res: { destroy: () => void } }).res
      return { status: response.statusCode, headers: response.headers, body: response.stream(), destroy: () => inner.destroy() }
    } finally {
      // The member route read the credential in its first steps, before it answered anything.
      this.credentials.revoke(handle)
    }
  }
}

/**
 * A 2026-07-28 request mirrors its method and target in headers (MCP 2026-07-28 transports,
 * Mcp-Method / Mcp-Name), which the member route checks. A non-ASCII target is base64 in the
 * `=?base64?…?=` form.
 */
function mirroredHeaders (body: unknown): Record<string, string> {
  const message = body !== null && typeof body === 'object' ? body as { method?: unknown, params?: Record<string, unknown> } : {}
  if (typeof message.method !== 'string') return {}
  const out: Record<string, string> = { 'mcp-method': message.method }
  const param = METHOD_TARGETS[message.method]?.param
  const target = param === undefined ? undefined : message.params?.[param]
  if (typeof target === 'string') out['mcp-name'] = /^[\x20-\x7e]*$/.test(target) ? target : `=?base64?${Buffer.from(target, 'utf8').toString('base64')}?=`
  return out
}

/** Every JSON-RPC message of a member's answer, as it comes: one JSON body, or the events of a stream. */
export async function * messagesOf (response: MemberResponse): AsyncGenerator<Record<string, unknown>> {
  const type = String(response.headers['content-type'] ?? '')
  if (type.startsWith('text/event-stream')) {
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
