/**
 * Reading a POSTed MCP body once: parse, validate the JSON-RPC 2.0 envelope,
 * classify each message, and pull out what later steps need (method, the
 * tool/prompt/resource it targets, ids, the modern protocol revision).
 *
 * The body itself is forwarded verbatim; nothing here rewrites it.
 */
import { PortcullisError, type JsonRpcId } from '../errors.js'
import { foldKey, MAX_JSON_DEPTH, scanJson, type JsonHazard } from './scan-json.js'

export type MessageKind = 'request' | 'notification' | 'response'

export interface McpMessage {
  readonly kind: MessageKind
  /** Undefined for notifications. */
  readonly id: JsonRpcId | undefined
  /** Undefined for responses. */
  readonly method: string | undefined
  readonly params: Readonly<Record<string, unknown>> | undefined
  /** tools/call and prompts/get: params.name; resources/read, subscribe, unsubscribe: params.uri. */
  readonly target: string | undefined
  /** The whole parsed message (adapters that must re-address it use this; the HTTP proxy forwards the bytes). */
  readonly value: Readonly<Record<string, unknown>>
}

export interface McpInspection {
  readonly isBatch: boolean
  readonly messages: readonly McpMessage[]
  /** Ids of the requests in the body, in order: what an error reply must answer. */
  readonly requestIds: readonly JsonRpcId[]
  /**
   * The revision a modern (2026-07-28+) request declares in
   * params._meta["io.modelcontextprotocol/protocolVersion"]; undefined for 2025-era traffic.
   */
  readonly modernVersion: string | undefined
}

/** MCP 2026-07-28 basic/index "_meta": per-request protocol fields. */
export const META_PROTOCOL_VERSION = 'io.modelcontextprotocol/protocolVersion'

export type TargetKind = 'tool' | 'prompt' | 'resource'

/**
 * The methods that act on one tool, prompt or resource: its kind (policy, audit) and the
 * param that names it (policy, the Mcp-Name header). The one table of them.
 */
export const METHOD_TARGETS: Readonly<Record<string, { readonly kind: TargetKind, readonly param: 'name' | 'uri' }>> = {
  'tools/call': { kind: 'tool', param: 'name' },
  'prompts/get': { kind: 'prompt', param: 'name' },
  'resources/read': { kind: 'resource', param: 'uri' },
  'resources/subscribe': { kind: 'resource', param: 'uri' },
  'resources/unsubscribe': { kind: 'resource', param: 'uri' },
}

/** MCP notifications all live under `notifications/`; any other method is a request method. */
export function isRequestMethod (method: string): boolean {
  return !method.startsWith('notifications/')
}

/**
 * Messages that policy, rate limits and the audit trail judge: requests, and
 * notifications whose method is a request method (`tools/call` without an id).
 * A server may well run such a "notification" (many dispatch on the method
 * alone), so it must not slip past the rules a request meets.
 */
export function isJudged (message: McpMessage): boolean {
  return message.kind === 'request' || (message.kind === 'notification' && message.method !== undefined && isRequestMethod(message.method))
}

/** Parses and classifies a POST body. Throws PortcullisError (parse / invalid request / invalid params). */
export function inspectBody (body: Buffer | undefined): McpInspection {
  if (body === undefined || body.length === 0) {
    throw new PortcullisError('PORTCULLIS_ERR_PARSE', 'the request body is empty')
  }
  const text = body.toString('utf8')
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new PortcullisError('PORTCULLIS_ERR_PARSE')
  }
  // One reading only: what policy judges must be what every upstream parser reads (see scan-json.ts).
  const hazard = scanJson(text)
  if (hazard !== undefined) throw refusedShape(hazard, parsed)
  if (Array.isArray(parsed)) {
    // JSON-RPC batches: MCP 2025-03-26 only (removed in 2025-06-18), still accepted for those clients.
    if (parsed.length === 0) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'an empty batch is not a valid JSON-RPC request')
    const messages = parsed.map((item, index) => classify(item, index))
    return { isBatch: true, messages, requestIds: distinctRequestIds(messages), modernVersion: undefined }
  }
  return inspectValue(parsed)
}

/**
 * One message judged as inspectBody judges it once its JSON text has been scanned. Also for a
 * message the gateway itself built from a body inspectBody accepted (a virtual server's request
 * to a member: the client's message, re-addressed), without the text: JSON.stringify of such a
 * value has no duplicate key, no `__proto__` and the depth inspectBody allowed, so scanning it
 * would find nothing.
 */
export function inspectValue (value: unknown): McpInspection {
  const message = classify(value, undefined)
  return {
    isBatch: false,
    messages: [message],
    requestIds: message.kind === 'request' ? [message.id ?? null] : [],
    modernVersion: modernVersionOf(message),
  }
}

const MAX_KEY_ECHO_CHARS = 80

function refusedShape (hazard: JsonHazard, parsed: unknown): PortcullisError {
  // The id is echoed when it is unambiguous: a single message whose duplicate is not "id".
  const single = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Record<string, unknown> : undefined
  const id = single !== undefined && isId(single.id) && !(hazard.kind === 'duplicate-key' && foldKey(hazard.key) === 'id') ? single.id : null
  if (hazard.kind === 'too-deep') return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `the JSON body nests objects and arrays deeper than ${MAX_JSON_DEPTH} levels`, { id })
  if (hazard.kind === 'proto-key') return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', 'the key "__proto__" is not accepted in a JSON object', { id })
  const key = hazard.key.length > MAX_KEY_ECHO_CHARS ? `${hazard.key.slice(0, MAX_KEY_ECHO_CHARS)}…` : hazard.key
  if (hazard.first !== undefined) {
    const first = hazard.first.length > MAX_KEY_ECHO_CHARS ? `${hazard.first.slice(0, MAX_KEY_ECHO_CHARS)}…` : hazard.first
    return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `keys ${JSON.stringify(first)} and ${JSON.stringify(key)} of one JSON object differ only in letter case (parsers that ignore case read them as one key)`, { id })
  }
  return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `duplicate key ${JSON.stringify(key)} in a JSON object (each key may appear once)`, { id })
}

/**
 * The ids of a batch's requests, each once. Two requests with one id are refused: an answer is
 * matched to its request by id (the answer's edits — filtered lists, masked results — are kept
 * by id), so a second `tools/list` or `tools/call` under a `tools/list`'s id would take over
 * its edit and the upstream's listing would go out unfiltered. Ids are compared as parsed: two
 * numbers past 2^53 that JSON.parse rounds to one are one id here, whatever the upstream reads.
 */
function distinctRequestIds (messages: readonly McpMessage[]): JsonRpcId[] {
  const ids: JsonRpcId[] = []
  const seen = new Map<JsonRpcId, number>()
  messages.forEach((m, index) => {
    if (m.kind !== 'request') return
    const id = m.id ?? null
    const first = seen.get(id)
    if (first !== undefined) throw invalid(`has the id ${JSON.stringify(id)} of batch item ${first}: each request in a batch needs an id of its own`, index)
    seen.set(id, index)
    ids.push(id)
  })
  return ids
}

function modernVersionOf (message: McpMessage): string | undefined {
  const meta = message.params?._meta
  if (meta === null || typeof meta !== 'object') return undefined
  const version = (meta as Record<string, unknown>)[META_PROTOCOL_VERSION]
  return typeof version === 'string' ? version : undefined
}

function isId (value: unknown): value is string | number {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))
}

function invalid (detail: string, index: number | undefined, id: JsonRpcId = null): PortcullisError {
  const where = index === undefined ? '' : `batch item ${index}: `
  return new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', where + detail, { id })
}

function classify (value: unknown, index: number | undefined): McpMessage {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid('expected a JSON-RPC 2.0 message object', index)
  }
  const msg = value as Record<string, unknown>
  const id = isId(msg.id) ? msg.id : null
  if (msg.jsonrpc !== '2.0') throw invalid('"jsonrpc" must be "2.0"', index, id)

  if ('method' in msg) {
    if (typeof msg.method !== 'string' || msg.method === '') throw invalid('"method" must be a non-empty string', index, id)
    const params = msg.params
    if (params !== undefined && (params === null || typeof params !== 'object' || Array.isArray(params))) {
      throw invalid('"params" must be an object', index, id)
    }
    const typedParams = params as Record<string, unknown> | undefined
    if (!('id' in msg)) {
      // A request method sent without an id is still judged on what it targets (see isJudged).
      const target = isRequestMethod(msg.method) ? targetOf(msg.method, typedParams, null, index) : undefined
      return { kind: 'notification', id: undefined, method: msg.method, params: typedParams, target, value: msg }
    }
    // MCP basic/index: request ids MUST be a string or integer, and MUST NOT be null.
    if (!isId(msg.id)) throw invalid('"id" must be a string or a number', index)
    return { kind: 'request', id: msg.id, method: msg.method, params: typedParams, target: targetOf(msg.method, typedParams, msg.id, index), value: msg }
  }

  if ('result' in msg || 'error' in msg) {
    if ('result' in msg && 'error' in msg) throw invalid('a response carries "result" or "error", not both', index, id)
    if (!('id' in msg) || !(isId(msg.id) || msg.id === null)) throw invalid('a response needs an "id"', index)
    return { kind: 'response', id: msg.id as JsonRpcId, method: undefined, params: undefined, target: undefined, value: msg }
  }
  throw invalid('expected a request, notification or response (no "method", "result" or "error")', index, id)
}

function targetOf (method: string, params: Record<string, unknown> | undefined, id: JsonRpcId, index: number | undefined): string | undefined {
  const key = METHOD_TARGETS[method]?.param
  if (key === undefined) return undefined
  const value = params?.[key]
  if (typeof value !== 'string' || value === '') {
    const where = index === undefined ? '' : `batch item ${index}: `
    throw new PortcullisError('PORTCULLIS_ERR_INVALID_PARAMS', `${where}${method} requires params.${key} (a non-empty string)`, { id })
  }
  return value
}
