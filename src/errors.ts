/**
 * The one catalogue of Portcullis error codes and their wire forms.
 *
 * Every failure the gateway itself answers for has a code here, an HTTP status
 * and, for MCP routes, a JSON-RPC error code. Upstream results and upstream
 * JSON-RPC errors are never rewrapped; only the gateway's own failures are.
 *
 * JSON-RPC codes: the MCP spec (2026-07-28, basic/index "Error Codes") reserves
 * -32000..-32019 as legacy and -32020..-32099 for the spec itself, and asks
 * implementations not to emit codes from that block the spec does not define.
 * So the gateway uses the JSON-RPC 2.0 standard codes (-32700, -32600, -32601,
 * -32602, -32603) plus the spec's own -32020 HeaderMismatch, and tells its
 * errors apart by `error.data.code` (a PORTCULLIS_ERR_* string).
 */

export const JSONRPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  /** MCP 2026-07-28, basic/transports/streamable-http "Server Validation". */
  HEADER_MISMATCH: -32020,
  /**
   * In the "legacy" block -32000..-32019, on purpose: a 2026-07-28 client falls
   * back to `initialize` only when a 400's body is NOT a recognised modern error
   * (streamable-http "Backward Compatibility"); this is what 2025-era servers send.
   */
  LEGACY_BAD_REQUEST: -32000,
  /**
   * MCP 2025-11-25, client/elicitation "URL Elicitation Required Error": the request needs the
   * user to open a URL first; `data.elicitations` lists what to open. Defined by the spec.
   */
  URL_ELICITATION_REQUIRED: -32042,
} as const

interface ErrorSpec {
  readonly status: number
  readonly rpcCode: number
  readonly message: string
}

/** Codes are stable: clients and operators may branch on them. Listed in README. */
export const ERRORS = {
  PORTCULLIS_ERR_PARSE: { status: 400, rpcCode: JSONRPC.PARSE_ERROR, message: 'Parse error: the request body is not valid JSON' },
  PORTCULLIS_ERR_INVALID_REQUEST: { status: 400, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Invalid Request' },
  PORTCULLIS_ERR_INVALID_PARAMS: { status: 400, rpcCode: JSONRPC.INVALID_PARAMS, message: 'Invalid params' },
  PORTCULLIS_ERR_HEADER_MISMATCH: { status: 400, rpcCode: JSONRPC.HEADER_MISMATCH, message: 'Header mismatch' },
  PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION: { status: 400, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Bad Request: unsupported MCP-Protocol-Version' },
  PORTCULLIS_ERR_BODY_TOO_LARGE: { status: 413, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Request body is larger than the gateway accepts' },
  PORTCULLIS_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Unsupported Content-Type: MCP requests are application/json' },
  PORTCULLIS_ERR_UNAUTHORIZED: { status: 401, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Unauthorized' },
  PORTCULLIS_ERR_INSUFFICIENT_SCOPE: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden: the access token lacks a required scope' },
  PORTCULLIS_ERR_ACCESS_DENIED: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden by policy' },
  /** A personal API key sent to a server it was not created for. */
  PORTCULLIS_ERR_API_KEY_SERVER: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden: this API key is not valid for this MCP server' },
  PORTCULLIS_ERR_POLICY_DENIED: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden by policy' },
  /**
   * 403, not 400: the request is well formed, but this caller's identity lacks
   * a value the server's per-user args/env need (`${user.email}`); no change to
   * the request can fix it, only a change to the account.
   */
  PORTCULLIS_ERR_USER_FIELD_MISSING: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden: your account lacks a value this MCP server needs' },
  /**
   * servers[].upstreamAuth tokenExchange (RFC 8693): the server acts as the caller with a token
   * exchanged from their identity provider's, and the gateway holds none for them (a local or
   * machine account, another provider's, or the IdP gave no refresh token). HTTP 200, as
   * PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED below: a JSON-RPC error in a 2xx answer reaches the
   * user and model, a 4xx is a transport failure to an MCP client — and never 401: the gateway's
   * own token is fine, and a 401 would send the client into a pointless new OAuth dance; only
   * signing in through the identity provider fixes it.
   */
  PORTCULLIS_ERR_UPSTREAM_SIGN_IN_REQUIRED: { status: 200, rpcCode: JSONRPC.INVALID_REQUEST, message: 'This MCP server needs your sign-in through the identity provider' },
  /**
   * Guardrails (README "Guardrails"). Arguments that fail the tool's inputSchema, and tool
   * names the upstream does not list, are -32602 (MCP spec, server/tools "Error Handling":
   * unknown tools and invalid arguments are protocol errors) with HTTP 200, so that an MCP
   * client hands the error to its model, which can correct the call.
   */
  PORTCULLIS_ERR_INVALID_ARGUMENTS: { status: 200, rpcCode: JSONRPC.INVALID_PARAMS, message: 'Invalid arguments' },
  PORTCULLIS_ERR_UNKNOWN_TOOL: { status: 200, rpcCode: JSONRPC.INVALID_PARAMS, message: 'Unknown tool' },
  /** servers[].pinTools: enforce, and the tool's definition differs from the approved one: only an operator can fix it. */
  PORTCULLIS_ERR_TOOL_NOT_APPROVED: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden: this tool\'s definition is not approved' },
  PORTCULLIS_ERR_RATE_LIMITED: { status: 429, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Too many requests' },
  /** A user at servers[].maxSessionsPerUser / maxProcessesPerUser with no idle session to end. */
  PORTCULLIS_ERR_TOO_MANY_SESSIONS: { status: 429, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Too many sessions open' },
  PORTCULLIS_ERR_RATE_LIMIT_UNAVAILABLE: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Rate limits cannot be checked right now; retry shortly' },
  PORTCULLIS_ERR_FORBIDDEN_ORIGIN: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden: Origin is not allowed' },
  PORTCULLIS_ERR_UNKNOWN_SERVER: { status: 404, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Not found: no MCP server has this name' },
  PORTCULLIS_ERR_METHOD_NOT_ALLOWED: { status: 405, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Method not allowed' },
  /**
   * servers[].upstreamAuth oauth: the caller has not linked their account at this upstream (or
   * the link expired, was revoked, or could not be refreshed); `data.url` is the page that links
   * it. HTTP 200, like the guardrail errors: an MCP client hands a JSON-RPC error in a 2xx answer
   * to its user and model, while a 4xx is a transport failure — and a 401 would start a pointless
   * new OAuth sign-in with the gateway, whose own token is fine.
   */
  PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED: { status: 200, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Your account at this MCP server\'s provider is not linked' },
  /** The same for a client that declared URL-mode elicitation (2025-11-25): -32042 with `data.elicitations`. */
  PORTCULLIS_ERR_UPSTREAM_LINK_ELICITATION: { status: 200, rpcCode: JSONRPC.URL_ELICITATION_REQUIRED, message: 'Your account at this MCP server\'s provider is not linked' },
  /**
   * The upstream answered 403 `WWW-Authenticate: Bearer error="insufficient_scope"` (RFC 6750
   * 3.1; MCP 2025-11-25 scope challenge): the credential the gateway sent for the caller is valid
   * but lacks a scope, named in `data.scope`. Not a refused credential: the link is kept and
   * nothing is refreshed, which could not add a scope. HTTP 200 as the link error, for the
   * client's user and model; not PORTCULLIS_ERR_INSUFFICIENT_SCOPE, whose challenge would send
   * the client to a pointless step-up at the gateway, whose own token is fine.
   */
  PORTCULLIS_ERR_UPSTREAM_INSUFFICIENT_SCOPE: { status: 200, rpcCode: JSONRPC.INVALID_REQUEST, message: 'The MCP server refused the call: the credential the gateway holds for you there lacks a scope' },
  PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE: { status: 502, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Upstream MCP server is unavailable' },
  PORTCULLIS_ERR_UPSTREAM_TIMEOUT: { status: 504, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Upstream MCP server did not answer in time' },
  PORTCULLIS_ERR_SESSION_REQUIRED: { status: 400, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Bad Request: Mcp-Session-Id header is required (send initialize first)' },
  PORTCULLIS_ERR_SESSION_NOT_FOUND: { status: 404, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Session not found: start a new session with initialize' },
  PORTCULLIS_ERR_LEGACY_UPSTREAM: { status: 400, rpcCode: JSONRPC.LEGACY_BAD_REQUEST, message: 'Bad Request: this MCP server speaks protocol revision 2025-11-25 or earlier; send initialize' },
  PORTCULLIS_ERR_CAPACITY: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Upstream MCP server is at its process limit; retry shortly' },
  PORTCULLIS_ERR_UPSTREAM_RESTARTING: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Upstream MCP server keeps failing; new processes are paused' },
  PORTCULLIS_ERR_UPSTREAM_BUSY: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Upstream MCP server is at the connection or stream budget the gateway allows it; retry shortly' },
  /** An API key's identity-provider user is due for a re-check and the IdP cannot be asked (README "Offboarding"). */
  PORTCULLIS_ERR_IDP_UNAVAILABLE: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'The gateway cannot re-check your account with its identity provider right now; retry shortly' },
  PORTCULLIS_ERR_STORE_UNAVAILABLE: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'The gateway cannot reach its store right now; retry shortly' },
  PORTCULLIS_ERR_AUDIT_UNAVAILABLE: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'The gateway cannot write its audit trail right now, so it serves no MCP requests; retry shortly' },
  PORTCULLIS_ERR_SHUTTING_DOWN: { status: 503, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Gateway is shutting down; retry on another instance' },
  /**
   * The admin API (README "Administration"): JSON `{ error: { code, message } }`, never JSON-RPC
   * (rpcCode unused). No credential, or one that is not valid: 401; a valid one without admin rights: 403.
   */
  PORTCULLIS_ERR_ADMIN_UNAUTHORIZED: { status: 401, rpcCode: JSONRPC.INVALID_REQUEST, message: 'The admin API needs admin.bearerToken or a gateway access token for <publicUrl>/admin' },
  PORTCULLIS_ERR_ADMIN_FORBIDDEN: { status: 403, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Forbidden: this access token does not grant admin rights' },
  PORTCULLIS_ERR_ADMIN_BAD_REQUEST: { status: 400, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Bad admin API request' },
  PORTCULLIS_ERR_ADMIN_NOT_FOUND: { status: 404, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Not found' },
  PORTCULLIS_ERR_ADMIN_CONFLICT: { status: 409, rpcCode: JSONRPC.INVALID_REQUEST, message: 'Nothing approved' },
  /** POST /admin/api/v1/reload read a file `portcullis check` would refuse: nothing changed (the body's `errors` say why). */
  PORTCULLIS_ERR_RELOAD_INVALID_CONFIG: { status: 422, rpcCode: JSONRPC.INVALID_REQUEST, message: 'The configuration file is invalid; nothing changed' },
  PORTCULLIS_ERR_INTERNAL: { status: 500, rpcCode: JSONRPC.INTERNAL_ERROR, message: 'Internal gateway error' },
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

export type JsonRpcId = string | number | null

/**
 * An error the gateway answers for. `detail` is safe to show a client (it says
 * what was wrong with *their* input); anything about upstream internals goes to
 * `cause` and is logged, never sent.
 */
export class PortcullisError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly rpcCode: number
  readonly detail: string | undefined
  readonly headers: Readonly<Record<string, string>>
  /** The JSON-RPC id to echo when the error is about one message whose id is known. */
  readonly rpcId: JsonRpcId | undefined
  /** Extra, client-safe members of the JSON-RPC error's `data` (beside `code`). */
  readonly data: Readonly<Record<string, unknown>> | undefined

  constructor (code: ErrorCode, detail?: string, options?: { cause?: unknown, headers?: Record<string, string>, id?: JsonRpcId, data?: Record<string, unknown> }) {
    const spec = ERRORS[code]
    super(detail === undefined ? spec.message : `${spec.message}: ${detail}`, { cause: options?.cause })
    this.name = 'PortcullisError'
    this.code = code
    this.status = spec.status
    this.rpcCode = spec.rpcCode
    this.detail = detail
    this.headers = options?.headers ?? {}
    this.rpcId = options?.id
    this.data = options?.data
  }
}

export interface JsonRpcErrorBody {
  jsonrpc: '2.0'
  id: JsonRpcId
  error: { code: number, message: string, data: { code: ErrorCode } & Record<string, unknown> }
}

/** The JSON-RPC error object for one id. */
export function jsonRpcError (err: PortcullisError, id: JsonRpcId, data?: Record<string, unknown>): JsonRpcErrorBody {
  return { jsonrpc: '2.0', id, error: { code: err.rpcCode, message: err.message, data: { code: err.code, ...err.data, ...data } } }
}

/**
 * The HTTP body for an error answering a POST. A batch gets one error per
 * request id (JSON-RPC 2.0 section 6); a single request gets its id echoed;
 * anything else (notifications, unparseable bodies) gets `id: null`.
 */
export function jsonRpcErrorPayload (err: PortcullisError, ids: readonly JsonRpcId[], isBatch: boolean, data?: Record<string, unknown>): JsonRpcErrorBody | JsonRpcErrorBody[] {
  if (isBatch && ids.length > 0) return ids.map((id) => jsonRpcError(err, id, data))
  return jsonRpcError(err, ids[0] ?? null, data)
}
