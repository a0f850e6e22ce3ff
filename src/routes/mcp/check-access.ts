import { PortcullisError } from '../../errors.js'
import { inspectBody, isJudged, type McpInspection } from '../../mcp/jsonrpc.js'
import type { RequestIdentity } from '../../resource-server/verify-token.js'
import type { McpCall } from './call.js'
import { auditEntry } from './record.js'

/** May this caller reach this server at all (servers[].access)? 403 otherwise, audited. */
export function checkAccess (call: McpCall): void {
  setCaller(call, call.identity)
  const { policy, metrics, server } = call.route
  const reach = policy.reach(call.caller)
  if (!reach.allowed) {
    metrics.policyDenials.inc({ server: server.name, reason: 'access' })
    const error = new PortcullisError('PORTCULLIS_ERR_ACCESS_DENIED', reach.message)
    auditRefusal(call, error)
    throw error
  }
}

/**
 * The audit records of a request refused before its body was judged (the access list): one
 * per message policy would have judged, as `denied` with reason `access`. A body that does not
 * parse has no messages to record; its refusal is the same 403.
 */
function auditRefusal (call: McpCall, error: PortcullisError): void {
  const { audit } = call.route
  const { request } = call
  if (audit === undefined || request.method !== 'POST') return
  let inspection: McpInspection
  try {
    inspection = inspectBody(Buffer.isBuffer(request.body) ? request.body : undefined)
  } catch {
    return
  }
  for (const message of inspection.messages) {
    if (isJudged(message)) audit.record(auditEntry(call, message, { decision: 'denied', reason: 'access' }, error.status))
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
