/**
 * The public routes of servers[].upstreamAuth oauth (thin: the work is in upstream-links.ts and
 * oauth-client.ts):
 *
 *   GET /connect/<server>                       the link in every "link your account" error;
 *                                               on to the account pages (their cookie is scoped
 *                                               to /account), which sign the user in first
 *   GET /oauth/client-metadata/<server>.json    the gateway's Client ID Metadata Document for
 *                                               that server's authorization server
 */
import type { FastifyInstance } from 'fastify'
import { messagePage, PAGE_HEADERS } from '../auth-server/pages.js'
import { clientMetadataDocument } from './oauth-client.js'
import { connectPath } from './link-required.js'

export interface UpstreamAuthRoutesOptions {
  readonly publicUrl: string
  /** The servers with upstreamAuth oauth. */
  readonly servers: readonly string[]
}

export async function upstreamAuthRoutes (app: FastifyInstance, opts: UpstreamAuthRoutesOptions): Promise<void> {
  const isKnown = (server: string): boolean => opts.servers.includes(server)

  app.get<{ Params: { server: string } }>(connectPath(':server'), async (request, reply) => {
    const { server } = request.params
    if (!isKnown(server)) return reply.code(404).headers(PAGE_HEADERS).send(messagePage('No such server', 'No MCP server here takes a linked account under this name.'))
    return reply.redirect(`/account/links/${server}/connect`, 303)
  })

  app.get<{ Params: { file: string } }>('/oauth/client-metadata/:file', async (request, reply) => {
    const server = /^(.+)\.json$/.exec(request.params.file)?.[1]
    if (server === undefined || !isKnown(server)) return reply.code(404).send({ error: 'not_found' })
    // Public, like any client metadata document; authorization servers may cache it.
    return reply.headers({ 'cache-control': 'public, max-age=300' }).send(clientMetadataDocument(opts.publicUrl, server))
  })
}
