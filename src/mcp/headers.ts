/**
 * MCP 2026-07-28 request metadata headers (basic/transports/streamable-http,
 * "Request Metadata" and "Server Validation"): Mcp-Method mirrors `method`,
 * Mcp-Name mirrors params.name (tools/call, prompts/get) or params.uri
 * (resources/read), and MCP-Protocol-Version mirrors the body's _meta version.
 * A missing, malformed or mismatched header is HTTP 400 with -32020.
 *
 * The gateway reads the body, so policy never trusts these headers; it checks
 * them so that nothing downstream (other proxies, the upstream) can be fooled
 * by a header that disagrees with the body.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { PortcullisError } from '../errors.js'
import { METHOD_TARGETS, type McpInspection, type McpMessage } from './jsonrpc.js'

/** The first revision that requires header/body mirroring. YYYY-MM-DD strings order correctly. */
export const FIRST_MODERN_REVISION = '2026-07-28'

/** Methods whose Mcp-Name header is REQUIRED in 2026-07-28 (it mirrors the param METHOD_TARGETS names). */
const NAME_REQUIRED: ReadonlySet<string> = new Set(['tools/call', 'prompts/get', 'resources/read'])

/** The MCP revisions the gateway knows; a stdio session accepts an MCP-Protocol-Version header naming one of them. */
export const KNOWN_REVISIONS: ReadonlySet<string> = new Set(['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25', '2026-07-28'])

/** RFC 9110 field-value characters: visible ASCII, space, tab. */
const FIELD_VALUE_RE = /^[\t\x20-\x7e]*$/
const BASE64_SENTINEL_RE = /^=\?base64\?([A-Za-z0-9+/]*={0,2})\?=$/
const MAX_ECHO_CHARS = 80

function single (headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

function mismatch (message: McpMessage, detail: string): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_HEADER_MISMATCH', detail, { id: message.id ?? null })
}

function shown (value: string): string {
  return value.length > MAX_ECHO_CHARS ? `${value.slice(0, MAX_ECHO_CHARS)}…` : value
}

/** Decodes the `=?base64?…?=` form (required for non-ASCII values). Undefined when malformed. */
export function decodeHeaderValue (raw: string): string | undefined {
  if (!FIELD_VALUE_RE.test(raw)) return undefined
  if (!raw.startsWith('=?base64?')) return raw
  const m = BASE64_SENTINEL_RE.exec(raw)
  if (m === null || m[1] === undefined) return undefined
  const bytes = Buffer.from(m[1], 'base64')
  const text = bytes.toString('utf8')
  // Reject byte sequences that are not UTF-8 (they would not round-trip).
  return Buffer.from(text, 'utf8').equals(bytes) ? text : undefined
}

/** MCP revisions are dates (basic/versioning: YYYY-MM-DD). */
const REVISION_RE = /^\d{4}-\d{2}-\d{2}$/

/** A revision at or after 2026-07-28; a value that is no revision at all ("latest") is not modern. */
export function isModernRevision (version: string | undefined): boolean {
  return version !== undefined && REVISION_RE.test(version) && version >= FIRST_MODERN_REVISION
}

/**
 * Validates the mirrored headers of a POST. Required only for modern
 * requests; when a client sends them anyway they must still agree with the body.
 */
export function checkMirroredHeaders (inspection: McpInspection, headers: IncomingHttpHeaders): void {
  const versionHeader = single(headers, 'mcp-protocol-version')
  const isModern = inspection.modernVersion !== undefined || isModernRevision(versionHeader)
  if (inspection.isBatch) {
    if (isModern) throw new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `JSON-RPC batches are not part of MCP ${versionHeader ?? inspection.modernVersion ?? FIRST_MODERN_REVISION}`)
    return
  }
  const message = inspection.messages[0]
  if (message === undefined || message.kind === 'response') return
  const mustMirror = isModern && message.kind === 'request'

  if (inspection.modernVersion !== undefined) {
    if (versionHeader === undefined) {
      throw mismatch(message, 'the MCP-Protocol-Version header is required for modern requests')
    }
    if (versionHeader !== inspection.modernVersion) {
      throw mismatch(message, `MCP-Protocol-Version header value '${shown(versionHeader)}' does not match body value '${shown(inspection.modernVersion)}'`)
    }
  }

  const methodHeader = single(headers, 'mcp-method')
  if (methodHeader === undefined) {
    if (mustMirror) throw mismatch(message, 'the Mcp-Method header is required')
  } else if (!FIELD_VALUE_RE.test(methodHeader)) {
    throw mismatch(message, 'the Mcp-Method header contains invalid characters')
  } else if (methodHeader !== message.method) {
    throw mismatch(message, `Mcp-Method header value '${shown(methodHeader)}' does not match body value '${shown(message.method ?? '')}'`)
  }

  const nameHeader = single(headers, 'mcp-name')
  const nameParam = message.method !== undefined && NAME_REQUIRED.has(message.method) ? METHOD_TARGETS[message.method]?.param : undefined
  if (nameHeader === undefined) {
    if (mustMirror && nameParam !== undefined) throw mismatch(message, `the Mcp-Name header is required for ${message.method ?? ''}`)
    return
  }
  const decoded = decodeHeaderValue(nameHeader)
  if (decoded === undefined) throw mismatch(message, 'the Mcp-Name header contains invalid characters or malformed base64')
  if (message.target !== undefined && decoded !== message.target) {
    throw mismatch(message, `Mcp-Name header value '${shown(decoded)}' does not match body value '${shown(message.target)}'`)
  }
}

/**
 * The version header on a 2025-era request to a server the gateway itself
 * speaks Streamable HTTP for (a stdio bridge). MCP 2025-11-25 basic/transports,
 * "Protocol Version Header": "If the server receives a request with an invalid
 * or unsupported `MCP-Protocol-Version`, it **MUST** respond with `400 Bad
 * Request`." An absent header is allowed: the server "**SHOULD** assume
 * protocol version `2025-03-26`". HTTP upstreams answer this for themselves.
 */
export function checkProtocolVersionHeader (headers: IncomingHttpHeaders): void {
  const version = single(headers, 'mcp-protocol-version')
  if (version === undefined || KNOWN_REVISIONS.has(version)) return
  const shownVersion = FIELD_VALUE_RE.test(version) ? shown(version) : '(invalid characters)'
  throw new PortcullisError('PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION', `'${shownVersion}'; supported: ${[...KNOWN_REVISIONS].join(', ')}`)
}
