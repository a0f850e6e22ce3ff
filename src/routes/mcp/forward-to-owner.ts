import { FORWARDED_HEADER, ReplicaForwarder } from '../../cluster/forward.js'
import type { McpCall } from './call.js'
import { servingUpstream } from './serving-upstream.js'

/**
 * A session another replica holds (cluster.advertiseUrl): relay the request, unread, to its
 * owner, which does everything else (token, policy, limits, audit) once. Never twice:
 * forwarded requests stay here.
 */
export async function forwardToOwner (call: McpCall): Promise<void> {
  const { replicas, upstream, server } = call.route
  const { request, reply } = call
  const sessionId = request.headers['mcp-session-id']
  if (replicas === undefined || upstream.holdsSession === undefined || typeof sessionId !== 'string' || request.headers[FORWARDED_HEADER] !== undefined) return
  if (upstream.holdsSession(sessionId) || servingUpstream(call) !== upstream) return
  const owner = await replicas.directory.ownerOf(server.name, sessionId)
  if (owner === undefined) return
  reply.hijack()
  call.isAnswered = true
  if (!await replicas.forwarder.forward(request, reply.raw, owner, call.trace?.relayHeaders())) {
    await replicas.directory.forget(server.name, sessionId, owner)
    ReplicaForwarder.sessionGone(reply.raw)
  }
}
