import { PortcullisError } from '../../errors.js'
import { VIRTUAL_CREDENTIAL_HEADER } from '../../virtual/credentials.js'
import type { McpCall } from './call.js'

/** After the Origin check, before any body is read: who is calling (401; 403 for a token not meant for this server). */
export async function authenticate (call: McpCall): Promise<void> {
  // A virtual server's in-process request (README "Virtual servers"): its caller was verified there.
  if (call.request.headers[VIRTUAL_CREDENTIAL_HEADER] !== undefined) {
    acceptVirtual(call)
    return
  }
  const { authenticate: check, server } = call.route
  if (check === undefined) return
  const trace = call.trace
  call.identity = await (trace === null ? check(call.request, server) : trace.admit(() => check(call.request, server)))
}

/**
 * The in-process credential (src/virtual/credentials.ts): a handle the virtual layer issued for
 * this member and this inner request, else 401 as for a bad token (fail closed: a guessed or
 * stale handle, or one sent over a socket, names nothing). The member's own `scopes` still apply,
 * as the token check applies them.
 */
function acceptVirtual (call: McpCall): void {
  const { server, virtualCredentials } = call.route
  const grant = virtualCredentials?.accept(call.request.headers[VIRTUAL_CREDENTIAL_HEADER], server.name)
  if (grant === undefined) {
    call.request.log.warn({ server: server.name }, 'virtual server credential refused')
    throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'this MCP server needs an OAuth access token')
  }
  const identity = grant.identity
  // Revoked or blocked since the virtual route checked the token (a retry runs on a timer, as the
  // session's last caller): refused as the token would be. A DELETE only ends the user's session.
  if (identity !== null && call.request.method !== 'DELETE' && call.route.isRevoked?.(identity) === true) {
    call.request.log.info({ server: server.name, virtualServer: grant.virtualServer, user: identity.name }, 'virtual server credential refused: grant revoked or user blocked')
    throw new PortcullisError('PORTCULLIS_ERR_UNAUTHORIZED', 'the access token was revoked')
  }
  call.identity = identity
  call.virtualServer = grant.virtualServer
  if (identity === null) return
  const missing = server.scopes.filter((scope) => !identity.scopes.has(scope))
  if (missing.length > 0) {
    call.request.log.info({ server: server.name, virtualServer: grant.virtualServer, user: identity.name, missing }, 'access token lacks a required scope')
    // RFC 6750 section 3.1 / MCP authorization "scope challenge": the client steps up with the
    // scopes it has plus those missing (the virtual route names its own resource_metadata).
    const challenge = call.route.gateOptions.scopeChallenge?.([...new Set([...identity.scopes, ...server.scopes])], `server "${server.name}" needs the scope(s): ${missing.join(' ')}`)
    throw new PortcullisError('PORTCULLIS_ERR_INSUFFICIENT_SCOPE', `needs ${missing.join(', ')} for server "${server.name}"`, challenge === undefined ? undefined : { headers: { 'www-authenticate': challenge } })
  }
}

/** The same check on the 2024-11-05 routes; a challenge names the resource as their clients know it. */
export async function authenticateLegacy (call: McpCall): Promise<void> {
  const check = call.route.authenticate
  if (check !== undefined) call.identity = await check(call.request, call.route.server, true)
}
