/**
 * MCP 2026-07-28 `Mcp-Param-{Name}` headers (basic/transports/streamable-http,
 * "Custom Headers from Tool Parameters"): a tool's inputSchema may mark a
 * property with `x-mcp-header: "{Name}"`, and a client then mirrors that
 * argument of every tools/call into the header. "Any server that processes the
 * message body MUST validate that encoded header values, after decoding if
 * Base64-encoded, match the corresponding values in the request body"
 * (400, -32020 HeaderMismatch otherwise); a value in the body without its
 * header is rejected too.
 *
 * For a stdio server the gateway is that server's HTTP side, so it validates.
 * It learns the annotations from the tools/list answers it relays (a map per
 * server, by tool name, the newest answer winning). For a tool it has not
 * seen listed the check cannot run: nothing says which arguments are
 * mirrored. A client that is refused re-reads tools/list (the spec asks it
 * to), which refreshes the map on its way through.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { PortcullisError } from '../errors.js'
import { decodeHeaderValue } from './headers.js'
import type { McpInspection, McpMessage } from './jsonrpc.js'

export interface ParamHeader {
  /** As written in x-mcp-header (for messages): the header is `Mcp-Param-{name}`. */
  readonly name: string
  /** The lowercase header name Node gives us. */
  readonly header: string
  /** The chain of `properties` keys from the schema root to the annotated property. */
  readonly path: readonly string[]
  readonly type: 'string' | 'integer' | 'boolean'
}

/** RFC 9110 section 5.1 field-name token: 1*tchar. */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Integer header values are compared numerically ("42.0" is 42), as the spec suggests. */
const NUMBER_RE = /^[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/
const MAX_SCHEMA_DEPTH = 32
/** Tools remembered per server: an upstream listing without end cannot grow the map without end. */
const MAX_TOOLS = 10_000
const MAX_ECHO_CHARS = 80

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * The annotated parameters of one inputSchema, or undefined when an annotation
 * breaks the spec's constraints (such a tool is invalid: clients drop it).
 * Only properties reachable through `properties` chains count.
 */
export function paramHeadersOf (inputSchema: unknown): ParamHeader[] | undefined {
  const found: ParamHeader[] = []
  const walk = (schema: Record<string, unknown>, path: readonly string[]): boolean => {
    if (path.length > MAX_SCHEMA_DEPTH || !isObject(schema.properties)) return true
    for (const [key, sub] of Object.entries(schema.properties)) {
      if (!isObject(sub)) continue
      const here = [...path, key]
      const annotation = sub['x-mcp-header']
      if (annotation !== undefined) {
        const type = sub.type
        if (typeof annotation !== 'string' || !TOKEN_RE.test(annotation)) return false
        if (type !== 'string' && type !== 'integer' && type !== 'boolean') return false
        found.push({ name: annotation, header: `mcp-param-${annotation.toLowerCase()}`, path: here, type })
      }
      if (!walk(sub, here)) return false
    }
    return true
  }
  if (!isObject(inputSchema) || !walk(inputSchema, [])) return undefined
  const headers = new Set(found.map((p) => p.header))
  return headers.size === found.length ? found : undefined
}

/** What one server's tools mirror, learnt from its tools/list answers. */
export class ToolParamHeaders {
  private readonly tools = new Map<string, readonly ParamHeader[]>()

  /** Reads a tools/list result (one page); tools without annotations are remembered as such. */
  learn (result: unknown): void {
    if (!isObject(result) || !Array.isArray(result.tools)) return
    for (const tool of result.tools as unknown[]) {
      if (!isObject(tool) || typeof tool.name !== 'string') continue
      const params = paramHeadersOf(tool.inputSchema)
      if (params === undefined) {
        // An invalid definition: conforming clients exclude the tool, so there is nothing to check.
        this.tools.delete(tool.name)
      } else if (this.tools.has(tool.name) || this.tools.size < MAX_TOOLS) {
        this.tools.set(tool.name, params)
      }
    }
  }

  of (tool: string): readonly ParamHeader[] | undefined {
    return this.tools.get(tool)
  }
}

function valueAt (args: unknown, path: readonly string[]): unknown {
  let value = args
  for (const key of path) {
    if (!isObject(value)) return undefined
    value = value[key]
  }
  return value
}

function single (headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

function shown (value: string): string {
  return value.length > MAX_ECHO_CHARS ? `${value.slice(0, MAX_ECHO_CHARS)}…` : value
}

function matches (decoded: string, value: unknown, type: ParamHeader['type']): boolean {
  if (type === 'integer') return typeof value === 'number' && NUMBER_RE.test(decoded) && Number(decoded) === value
  if (type === 'boolean') return typeof value === 'boolean' && decoded === String(value)
  return typeof value === 'string' && decoded === value
}

function mismatch (message: McpMessage, detail: string): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_HEADER_MISMATCH', detail, { id: message.id ?? null })
}

/** Validates the Mcp-Param-* headers of a modern tools/call against its arguments. */
export function checkParamHeaders (inspection: McpInspection, headers: IncomingHttpHeaders, known: ToolParamHeaders): void {
  const message = inspection.messages[0]
  if (inspection.isBatch || message === undefined || message.method !== 'tools/call' || message.target === undefined) return
  const params = known.of(message.target)
  if (params === undefined) return
  for (const param of params) {
    const value = valueAt(message.params?.arguments, param.path)
    const raw = single(headers, param.header)
    const where = `arguments.${param.path.join('.')}`
    if (value === undefined || value === null) {
      if (raw !== undefined) throw mismatch(message, `the Mcp-Param-${param.name} header is sent but ${where} has no value`)
      continue
    }
    if (raw === undefined) throw mismatch(message, `the Mcp-Param-${param.name} header is required: tool "${message.target}" mirrors ${where}`)
    const decoded = decodeHeaderValue(raw)
    if (decoded === undefined) throw mismatch(message, `the Mcp-Param-${param.name} header contains invalid characters or malformed base64`)
    if (!matches(decoded, value, param.type)) {
      throw mismatch(message, `Mcp-Param-${param.name} header value '${shown(decoded)}' does not match body value '${shown(typeof value === 'string' ? value : JSON.stringify(value))}'`)
    }
  }
}
