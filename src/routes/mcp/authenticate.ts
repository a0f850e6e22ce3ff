import { PortcullisError } from '../../errors.js'
import type { McpCall } from './call.js'

/** After the Origin check, before any body is read: who is calling (401; 403 for a token not meant for this server). */
export async function authenticate (call: McpCall): Promise<void> {
  const { authenticate: check, server } = call.route
  if (check === undefined) return
  const trace = call.trace
  call.identity = await (trace === null ? check(call.request, server) : trace.admit(() => check(call.request, server)))
}

/**
 * A virtual server's request (README "Virtual servers", ./member-entry.ts): its caller, set on
 * the call, was verified by the virtual route against the virtual server's own resource. What
 * this route's token check would still refuse is refused here: a caller revoked or blocked
 * since, an API key not made for this member, and a token without this member's own `scopes`.
 */
export function checkMemberCaller (call: McpCall): void {
  const { server } = call.route
  const identity = call.identity
  if (identity === null) return
  // Revoked or blocked since the virtual route checked the token (a retry runs on a timer, as the
  // session's last caller): refused as the token would be. A DELETE only ends the user's session.
  if (call.request.method !== 'DELETE' && call.route.isRevoked?.(identity) === true) {
    call.request.log.info({ server: server.name, virtualServer: call.virtualServer, user: identity.name }, 'virtual server caller refused: grant revoked or user blocked')
    throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'the access token was revoked')
  }
  // An API key names the servers it reaches, never a virtual server (README "Personal API keys"):
  // one made for a server that a reload turned into a virtual server's name reaches no member.
  if (identity.keyId !== undefined && identity.servers?.includes(server.name) !== true) {
    call.request.log.info({ server: server.name, virtualServer: call.virtualServer, user: identity.name, keyId: identity.keyId }, 'API key not valid for this server')
    throw new PortcullisError('PORTCULLIS_ERR_API_KEY_SERVER', `this API key reaches ${identity.servers?.join(', ') ?? 'no server'}, not "${server.name}"`)
  }
  const missing = server.scopes.filter((scope) => !identity.scopes.has(scope))
  if (missing.length > 0) {
    call.request.log.info({ server: server.name, virtualServer: call.virtualServer, user: identity.name, missing }, 'access token lacks a required scope')
    // RFC 6750 section 3.1 / MCP authorization "scope challenge": the client steps up with the
    // scopes it has plus those missing (the virtual route names its own resource_metadata).
    const challenge = call.route.gateOptions.scopeChallenge?.([...new Set([...identity.scopes, ...server.scopes])], `server "${server.name}" needs the scope(s): ${missing.join(' ')}`)
    throw new PortcullisError('PORTCULLIS_ERR_INSUFFICIENT_SCOPE', `needs ${missing.join(', ')} for server "${server.name}"`, challenge === undefined ? undefined : { headers: { 'www-authenticate': challenge } })
  }
}

/**
 * A virtual server's request body held to `bodyLimit`, as the route's parser holds a socket
 * request's (413): what the virtual route forwards can be longer than what the client sent (a
 * message it encodes itself, call_tool's inner call, writes a number such as 1e20 out in full;
 * a member's own name for a tool can be longer than the shortened merged name it replaces).
 */
export function checkMemberBody (call: McpCall): void {
  const body = call.request.body
  const limit = call.route.config.bodyLimit
  if (Buffer.isBuffer(body) && body.length > limit) {
    throw new PortcullisError('PORTCULLIS_ERR_BODY_TOO_LARGE', `the request to member "${call.route.server.name}" is ${body.length} bytes; bodyLimit is ${limit}`)
  }
}

/** The same check on the 2024-11-05 routes; a challenge names the resource as their clients know it. */
export async function authenticateLegacy (call: McpCall): Promise<void> {
  const check = call.route.authenticate
  if (check !== undefined) call.identity = await check(call.request, call.route.server, true)
}
