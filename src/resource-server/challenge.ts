/**
 * WWW-Authenticate challenges (RFC 6750 3, RFC 9728 5.1, MCP authorization
 * "Protected Resource Metadata Discovery" and "Scope Challenge Handling").
 */

export interface ChallengeParams {
  readonly resourceMetadata: string
  /** Every scope the operation needs (MCP 2026-07-28: one challenge naming them all). */
  readonly scopes?: readonly string[]
  readonly error?: 'invalid_token' | 'insufficient_scope' | 'invalid_request'
  readonly description?: string
}

/** Quoted-string content (RFC 9110 5.6.4): visible ASCII and spaces only; no quotes or backslashes. */
function quote (value: string): string {
  return `"${value.replace(/[^\x20-\x7e]|["\\]/g, '')}"`
}

export function bearerChallenge (params: ChallengeParams): string {
  const parts: string[] = []
  if (params.error !== undefined) parts.push(`error=${quote(params.error)}`)
  if (params.description !== undefined) parts.push(`error_description=${quote(params.description)}`)
  parts.push(`resource_metadata=${quote(params.resourceMetadata)}`)
  if (params.scopes !== undefined && params.scopes.length > 0) parts.push(`scope=${quote(params.scopes.join(' '))}`)
  return `Bearer ${parts.join(', ')}`
}
