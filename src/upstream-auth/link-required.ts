/**
 * The answer to a caller who has no usable linked account at an upstream with
 * `upstreamAuth: oauth`: a JSON-RPC error that a person and a model can act on, carrying the
 * page that links the account, `<publicUrl>/connect/<server>` (in the message and in
 * `error.data.url`).
 *
 * A client that declared URL-mode elicitation (MCP 2025-11-25 client/elicitation, "URL Mode",
 * `capabilities.elicitation.url` in initialize) gets the spec's own form instead:
 * -32042 URLElicitationRequiredError with `data.elicitations: [{ mode: 'url', elicitationId,
 * url, message }]`, which it shows to its user as a link to open, then retries.
 */
import { randomUUID } from 'node:crypto'
import { PortcullisError } from '../errors.js'

export function connectPath (server: string): string {
  return `/connect/${server}`
}

export function linkRequiredError (publicUrl: string, server: string, canElicitUrl: boolean): PortcullisError {
  const url = `${publicUrl}${connectPath(server)}`
  const message = `Open ${url} in a browser to sign in at the provider of MCP server "${server}" and link your account; then retry.`
  if (!canElicitUrl) return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', message, { data: { server, url } })
  return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_LINK_ELICITATION', message, {
    data: { server, url, elicitations: [{ mode: 'url', elicitationId: randomUUID(), url, message }] },
  })
}
