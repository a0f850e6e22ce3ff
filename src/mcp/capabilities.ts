/**
 * What a client declared in its initialize request's `capabilities` (MCP 2025-11-25
 * basic/lifecycle "Capability Negotiation"), read from the inspected body. Pure.
 */
import type { McpInspection, McpMessage } from './jsonrpc.js'

/** Whether this POST is an initialize whose client declared URL-mode elicitation (client/elicitation "URL Mode": `capabilities.elicitation.url`). */
export function declaresUrlElicitation (inspection: McpInspection | undefined): boolean {
  return initializeDeclaresUrlElicitation(inspection?.messages.find((m) => m.method === 'initialize'))
}

/** The same, for the initialize message itself. */
export function initializeDeclaresUrlElicitation (init: McpMessage | undefined): boolean {
  const capabilities = init?.params?.capabilities
  if (typeof capabilities !== 'object' || capabilities === null) return false
  const elicitation = (capabilities as Record<string, unknown>).elicitation
  if (typeof elicitation !== 'object' || elicitation === null) return false
  const url = (elicitation as Record<string, unknown>).url
  return typeof url === 'object' && url !== null
}
