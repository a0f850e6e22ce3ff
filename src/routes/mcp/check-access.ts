import { PortcullisError } from '../../errors.js'
import type { RequestIdentity } from '../../resource-server/verify-token.js'
import type { McpCall } from './call.js'

/** May this caller reach this server at all (servers[].access)? 403 otherwise. */
export function checkAccess (call: McpCall): void {
  setCaller(call, call.identity)
  const { policy, metrics, server } = call.route
  const reach = policy.reach(call.caller)
  if (!reach.allowed) {
    metrics.policyDenials.inc({ server: server.name, reason: 'access' })
    throw new PortcullisError('PORTCULLIS_ERR_ACCESS_DENIED', reach.message)
  }
}

/** The caller as policy sees it; rate limits count an anonymous caller by address. */
function setCaller (call: McpCall, identity: RequestIdentity | null): void {
  if (identity === null) {
    call.callerKey = `ip:${call.request.ip}`
    return
  }
  call.caller = { name: identity.name, groups: identity.groups ?? [], clientId: identity.clientId, isClient: identity.isClient, scopes: identity.scopes }
  call.callerKey = identity.isClient ? `client:${identity.clientId}` : `sub:${identity.id}`
}
