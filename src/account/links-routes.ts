/**
 * The linked-accounts routes of the account pages (servers[].upstreamAuth oauth; the linking
 * itself is upstream-auth/upstream-links.ts). Registered by account/plugin.ts, whose sign-in,
 * session cookie and CSRF they share:
 *
 *   GET  /account/links                    linked accounts at upstreams
 *   GET  /account/links/:server/connect    asks to confirm (signs in first); <publicUrl>/connect/<server> lands here
 *   POST /account/links/:server/connect    starts linking (CSRF): off to the upstream's authorization server
 *   GET  /account/links/:server/callback   the upstream's authorization server sends the browser back here
 *   POST /account/links/:server/unlink     removes a link and revokes its tokens upstream (CSRF)
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { messagePage } from '../auth-server/pages.js'
import { isStoreUnavailable } from '../store/types.js'
import type { UserIdentity } from '../identity.js'
import { LinkError, type LinkedAccounts } from '../upstream-auth/upstream-links.js'
import { connectPage, LINKS_PATH, linksPage } from './links-page.js'
import { ACCOUNT_PATH, type AccountSession } from './session.js'

/** A signed-in account page user. */
export interface Signedin { readonly session: AccountSession, readonly user: UserIdentity }

export interface LinkRouteDeps {
  readonly links: LinkedAccounts
  readonly signedIn: (request: FastifyRequest) => Promise<Signedin | undefined>
  readonly withForm: (request: FastifyRequest, reply: FastifyReply, then: (who: Signedin, form: URLSearchParams) => Promise<FastifyReply>) => Promise<FastifyReply>
  readonly send: (reply: FastifyReply, status: number, html: string) => FastifyReply
  readonly csrfFor: (who: Signedin) => string
  readonly hasKeys: boolean
  readonly refuse: (reply: FastifyReply) => FastifyReply | undefined
}

/** The linked-accounts routes (upstream-auth/upstream-links.ts does the linking). */
export function linkRoutes (app: FastifyInstance, deps: LinkRouteDeps): void {
  const { links, signedIn, withForm, send: sendPage } = deps
  type ServerParams = { Params: { server: string } }
  const render = async (reply: FastifyReply, who: Signedin, status = 200, error?: string): Promise<FastifyReply> => sendPage(reply, status, linksPage({
    username: who.user.name,
    csrf: deps.csrfFor(who),
    links: await links.list(who.user.id),
    hasKeys: deps.hasKeys,
    ...(error === undefined ? {} : { error }),
  }))
  const unknown = (reply: FastifyReply, server: string): FastifyReply | undefined => links.servers.includes(server)
    ? undefined
    : sendPage(reply, 404, messagePage('No such server', `No MCP server here takes a linked account under the name "${server.slice(0, 64)}".`))

  app.get(LINKS_PATH, async (request, reply) => {
    const refused = deps.refuse(reply)
    if (refused !== undefined) return refused
    const who = await signedIn(request)
    if (who === undefined) return reply.redirect(`${ACCOUNT_PATH}/login?return=${encodeURIComponent(LINKS_PATH)}`, 303)
    return render(reply, who)
  })

  app.get<ServerParams>(`${LINKS_PATH}/:server/connect`, async (request, reply) => {
    const refused = deps.refuse(reply) ?? unknown(reply, request.params.server)
    if (refused !== undefined) return refused
    const who = await signedIn(request)
    const path = `${LINKS_PATH}/${request.params.server}/connect`
    if (who === undefined) return reply.redirect(`${ACCOUNT_PATH}/login?return=${encodeURIComponent(path)}`, 303)
    return sendPage(reply.header('cache-control', 'no-store'), 200, connectPage({ username: who.user.name, server: request.params.server, csrf: deps.csrfFor(who) }))
  })

  app.post<ServerParams>(`${LINKS_PATH}/:server/connect`, async (request, reply) => {
    const refused = deps.refuse(reply) ?? unknown(reply, request.params.server)
    if (refused !== undefined) return refused
    return withForm(request, reply, async (who) => {
      let url: URL
      try {
        url = await links.begin(request.params.server, who.user.id, who.session.sid)
      } catch (err) {
        if (isStoreUnavailable(err)) throw err
        request.log.warn({ server: request.params.server, err: { message: (err as Error).message } }, 'could not start an upstream link')
        return render(reply, who, 502, `The sign-in page of "${request.params.server}" could not be reached. Try again later.`)
      }
      request.log.info({ user: who.user.id, server: request.params.server }, 'upstream link started')
      return reply.headers({ 'cache-control': 'no-store' }).redirect(url.href, 303)
    })
  })

  app.get<ServerParams & { Querystring: Record<string, string | undefined> }>(`${LINKS_PATH}/:server/callback`, async (request, reply) => {
    const refused = deps.refuse(reply) ?? unknown(reply, request.params.server)
    if (refused !== undefined) return refused
    const who = await signedIn(request)
    if (who === undefined) return sendPage(reply, 400, messagePage('Signed out', 'Your account session ended before the link completed.', 'Open the link again.'))
    const query = new URLSearchParams(request.url.split('?')[1] ?? '')
    try {
      await links.complete(request.params.server, who.user.id, who.session.sid, query)
    } catch (err) {
      if (!(err instanceof LinkError)) throw err
      request.log.info({ user: who.user.id, server: request.params.server, reason: err.message }, 'upstream link failed')
      return render(reply, who, 400, err.message)
    }
    request.log.info({ user: who.user.id, server: request.params.server }, 'upstream account linked')
    return reply.redirect(LINKS_PATH, 303)
  })

  app.post<ServerParams>(`${LINKS_PATH}/:server/unlink`, async (request, reply) => {
    const refused = deps.refuse(reply) ?? unknown(reply, request.params.server)
    if (refused !== undefined) return refused
    return withForm(request, reply, async (who) => {
      const isUnlinked = await links.unlink(request.params.server, who.user.id)
      if (!isUnlinked) return render(reply, who, 404, `Your account at "${request.params.server}" is not linked.`)
      request.log.info({ user: who.user.id, server: request.params.server }, 'upstream account unlinked')
      return reply.redirect(LINKS_PATH, 303)
    })
  })
}
