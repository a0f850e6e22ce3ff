/**
 * The /account pages: a signed-in user's own corner of the gateway. Today it
 * holds API keys; linked accounts (issue 14) go beside them, behind the same
 * sign-in (sign-in.ts) and session cookie (session.ts).
 *
 *   GET  /account                  -> /account/keys
 *   GET  /account/login            starts the sign-in (OAuth code + PKCE at the embedded AS)
 *   GET  /account/callback         ends it: session cookie, back to the page asked for
 *   POST /account/logout           ends the session (CSRF)
 *   GET  /account/keys             the user's keys and the create form
 *   POST /account/keys             creates a key and shows it once (CSRF)
 *   POST /account/keys/:id/revoke  revokes one of the user's keys (CSRF)
 *   /account/links...              linked accounts at upstreams (links-routes.ts)
 *
 * Other pages sign in here too (the admin page, `otherPages`): /account/login?return=<their
 * path>, and the callback gives them their own session cookie, scoped to their path.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { JSONWebKeySet } from 'jose'
import type { ApiKeysConfig } from '../config/schema.js'
import { messagePage, PAGE_HEADERS } from '../auth-server/pages.js'
import { isStoreUnavailable } from '../store/types.js'
import { STORE_RETRY_AFTER_S, STORE_UNAVAILABLE_PAGE } from '../auth-server/provider.js'
import type { ApiKeys } from './api-keys.js'
import { KeyRequestError, type KeyOwners } from './key-owners.js'
import { API_KEYS_DISABLED_MESSAGE, issueKey } from './issue-key.js'
import { keysPage, type KeysView } from './pages.js'
import { ACCOUNT_PATH, ACCOUNT_SCOPE, LOGIN_COOKIE, SESSION_COOKIE, type AccountCookies, type OtherPage } from './session.js'
import type { PageSessions } from './page-sessions.js'
import { finishSignIn, SignInError, startSignIn, type TokenExchange } from './sign-in.js'
import type { LinkedAccounts } from '../upstream-auth/upstream-links.js'
import { LINKS_PATH } from './links-page.js'
import { linkRoutes, type Signedin } from './links-routes.js'

export interface AccountRoutesOptions {
  readonly publicUrl: string
  readonly settings: ApiKeysConfig
  readonly keys: ApiKeys
  readonly owners: KeyOwners
  readonly cookies: AccountCookies
  readonly jwks: JSONWebKeySet
  readonly exchange: TokenExchange
  /** False when publicUrl cannot take the sign-in's redirect (plain http off loopback). */
  readonly isSignInPossible: boolean
  /** Servers whose users link their own account (upstreamAuth oauth); undefined: none. */
  readonly links?: LinkedAccounts
  /** Pages of their own that sign in through this sign-in (the admin page): returned to at their path, with their own cookie. */
  readonly otherPages?: readonly OtherPage[]
  /** The account pages' sessions in the store: sign-out and revoking the user end them at once. */
  readonly sessions: PageSessions
  /** An administrator blocked the user: their session opens nothing. */
  readonly isUserBlocked: (userId: string) => boolean
  /** Sign-out also ends the user's sign-in at the gateway's authorization server (./ended-sign-ins.ts). */
  readonly endSignIns: (userId: string) => Promise<void>
  readonly now: () => number
}

const MAX_FORM_BYTES = 16 * 1024
const KEYS_PATH = `${ACCOUNT_PATH}/keys`
const CONNECT_RE = /^\/account\/links\/([a-z0-9][a-z0-9_-]{0,62})\/connect$/


function sendPage (reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).send(html)
}

function days (ms: number): string {
  return `${Math.floor(ms / 86_400_000)}d`
}

export async function accountRoutes (app: FastifyInstance, opts: AccountRoutesOptions): Promise<void> {
  const { cookies, keys, owners, settings, links } = opts
  const home = settings.enabled || links === undefined ? KEYS_PATH : LINKS_PATH
  const otherPageAt = (path: string): OtherPage | undefined => opts.otherPages?.find((scope) => scope.path === path)
  /** Only our own pages: never an open redirect. */
  const isReturnPath = (path: string): boolean => {
    if (path === KEYS_PATH || (path === LINKS_PATH && links !== undefined)) return true
    const server = CONNECT_RE.exec(path)?.[1]
    return server !== undefined && links?.servers.includes(server) === true
  }

  /**
   * Where a failed sign-in starts again: the page it was for (the admin page's sign-in must not
   * point at /account/keys, a 404 with API keys off); without one, the account pages when they
   * are there.
   */
  const startAgain = (returnTo: string | undefined): string => {
    const page = returnTo === undefined ? undefined : otherPageAt(returnTo)?.path ?? (isReturnPath(returnTo) ? returnTo : undefined)
    if (page !== undefined) return `Start again at ${opts.publicUrl}${page}.`
    return settings.enabled || links !== undefined ? `Start again at ${opts.publicUrl}${home}.` : 'Start again from the page you were signing in to.'
  }

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    if (isStoreUnavailable(error)) {
      request.log.warn({ err: { message: error.message } }, 'account page: store unreachable')
      return sendPage(reply.header('retry-after', String(STORE_RETRY_AFTER_S)), 503, STORE_UNAVAILABLE_PAGE)
    }
    const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'account page failed')
    return sendPage(reply, status, messagePage('Something went wrong', status === 500 ? 'Something went wrong on our side.' : 'The request was not understood.'))
  })

  // Forms keep repeated fields (servers, scopes) as lists.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: MAX_FORM_BYTES }, (_request, body, done) => {
    done(null, new URLSearchParams(body as string))
  })

  /**
   * The signed-in user: a session the store still holds (not signed out, not revoked), of a user
   * still a user (removed from YAML or disabled at the IdP: signed out) and not blocked.
   */
  const signedIn = async (request: FastifyRequest): Promise<Signedin | undefined> => {
    const session = await cookies.session(request.headers.cookie)
    if (session === undefined || opts.isUserBlocked(session.userId) || !await opts.sessions.isLive(session)) return undefined
    const user = await owners.identityOf(session.userId)
    return user === undefined ? undefined : { session, user }
  }

  /** Runs `then` for a signed-in user with a valid form; otherwise answers for it. */
  const withForm = async (request: FastifyRequest, reply: FastifyReply, then: (who: Signedin, form: URLSearchParams) => Promise<FastifyReply>): Promise<FastifyReply> => {
    const who = await signedIn(request)
    const form = request.body instanceof URLSearchParams ? request.body : new URLSearchParams()
    if (who === undefined) return sendPage(reply, 401, messagePage('Signed out', 'Your account session has ended.', `Sign in again at ${opts.publicUrl}${KEYS_PATH}.`))
    if (!cookies.isCsrfValid(who.session, form.get('csrf') ?? undefined)) {
      request.log.info({ user: who.user.id }, 'account form refused: CSRF token missing or wrong')
      return sendPage(reply, 403, messagePage('Request refused', 'This form was not sent from your account page.', 'Open the page again and retry.'))
    }
    return then(who, form)
  }

  const renderKeys = async (reply: FastifyReply, who: Signedin, status = 200, extra: Pick<KeysView, 'created' | 'error'> = {}): Promise<FastifyReply> => {
    return sendPage(reply, status, keysPage({
      username: who.user.name,
      csrf: cookies.csrfFor(who.session),
      keys: await keys.list(who.user.id),
      entitled: owners.entitlementsOf(who.user),
      defaultExpiry: days(settings.defaultTtl),
      maxExpiry: days(settings.maxTtl),
      ...extra,
    }))
  }

  const refuseUnlessUsable = (reply: FastifyReply): FastifyReply | undefined => {
    if (!settings.enabled) return sendPage(reply, 404, messagePage('API keys are disabled', API_KEYS_DISABLED_MESSAGE))
    if (!opts.isSignInPossible) return sendPage(reply, 404, messagePage('Account pages unavailable', 'The account pages need an https publicUrl (or a loopback one) to sign you in.'))
    return undefined
  }

  /** Sign-in serves the keys and the linked accounts: refused only when neither is there. */
  const refuseSignInUnlessUsable = (reply: FastifyReply): FastifyReply | undefined => links === undefined ? refuseUnlessUsable(reply) : refuseUnlessSignInPossible(reply)
  const refuseUnlessSignInPossible = (reply: FastifyReply): FastifyReply | undefined => {
    if (!opts.isSignInPossible) return sendPage(reply, 404, messagePage('Account pages unavailable', 'The account pages need an https publicUrl (or a loopback one) to sign you in.'))
    return undefined
  }

  app.get(ACCOUNT_PATH, async (_request, reply) => reply.redirect(home, 303))

  app.get<{ Querystring: { return?: string } }>(`${ACCOUNT_PATH}/login`, async (request, reply) => {
    const other = otherPageAt(request.query.return ?? '')
    // Another page's sign-in needs neither API keys nor linked accounts.
    const refused = other === undefined ? refuseSignInUnlessUsable(reply) : refuseUnlessSignInPossible(reply)
    if (refused !== undefined) return refused
    const returnTo = other?.path ?? (isReturnPath(request.query.return ?? '') ? request.query.return as string : home)
    const { url, pending } = startSignIn(opts.publicUrl, returnTo)
    return reply.header('set-cookie', await cookies.loginCookie(pending)).headers({ 'cache-control': 'no-store' }).redirect(url, 303)
  })

  app.get<{ Querystring: Record<string, string | undefined> }>(`${ACCOUNT_PATH}/callback`, async (request, reply) => {
    const pending = await cookies.pendingLogin(request.headers.cookie)
    if (pending === undefined) return sendPage(reply, 400, messagePage('Sign-in expired', 'This sign-in is no longer valid.', startAgain(undefined)))
    let userId: string
    try {
      userId = await finishSignIn(request.query, pending, { publicUrl: opts.publicUrl, jwks: opts.jwks, exchange: opts.exchange, clientIp: request.ip, now: opts.now })
    } catch (err) {
      if (!(err instanceof SignInError)) throw err
      request.log.info({ reason: err.message }, 'account sign-in failed')
      return sendPage(reply.header('set-cookie', cookies.clearCookie(LOGIN_COOKIE)), 400, messagePage('Sign-in failed', err.message, startAgain(pending.returnTo)))
    }
    const other = otherPageAt(pending.returnTo)
    request.log.info({ user: userId, page: other?.path ?? ACCOUNT_PATH }, 'signed in to the account pages')
    const cookie = other === undefined ? await cookies.sessionCookie(userId, ACCOUNT_SCOPE, await opts.sessions.start(userId)) : await cookies.sessionCookie(userId, other, await other.startSession(userId, request))
    reply.header('set-cookie', [cookies.clearCookie(LOGIN_COOKIE), cookie])
    return reply.redirect(pending.returnTo, 303)
  })

  app.post(`${ACCOUNT_PATH}/logout`, async (request, reply) => withForm(request, reply, async (who) => {
    await opts.sessions.end(who.session)
    await opts.endSignIns(who.user.id)
    request.log.info({ user: who.user.id }, 'signed out of the account pages')
    return sendPage(reply.header('set-cookie', cookies.clearCookie(SESSION_COOKIE)), 200, messagePage('Signed out', 'You have signed out of your account page.'))
  }))

  app.get(KEYS_PATH, async (request, reply) => {
    const refused = refuseUnlessUsable(reply)
    if (refused !== undefined) return refused
    const who = await signedIn(request)
    if (who === undefined) return reply.redirect(`${ACCOUNT_PATH}/login?return=${encodeURIComponent(KEYS_PATH)}`, 303)
    return renderKeys(reply, who)
  })

  app.post(KEYS_PATH, async (request, reply) => {
    const refused = refuseUnlessUsable(reply)
    if (refused !== undefined) return refused
    return withForm(request, reply, async (who, form) => {
      try {
        const created = await issueKey({ settings, keys, owners, now: opts.now }, {
          userId: who.user.id,
          name: form.get('name') ?? '',
          servers: form.getAll('servers'),
          scopes: form.getAll('scopes'),
          expires: form.get('expires') ?? undefined,
        })
        request.log.info({ user: who.user.id, keyId: created.record.keyId, servers: created.record.servers }, 'API key created')
        return await renderKeys(reply, who, 201, { created })
      } catch (err) {
        if (!(err instanceof KeyRequestError)) throw err
        return renderKeys(reply, who, 400, { error: err.message })
      }
    })
  })

  app.post<{ Params: { keyId: string } }>(`${KEYS_PATH}/:keyId/revoke`, async (request, reply) => {
    const refused = refuseUnlessUsable(reply)
    if (refused !== undefined) return refused
    return withForm(request, reply, async (who) => {
      const revoked = await keys.revoke(request.params.keyId, who.user.id)
      if (revoked === undefined) return renderKeys(reply, who, 404, { error: 'No such key of yours (already revoked or expired?).' })
      request.log.info({ user: who.user.id, keyId: revoked.keyId }, 'API key revoked')
      return reply.redirect(KEYS_PATH, 303)
    })
  })

  if (links !== undefined) linkRoutes(app, { links, signedIn, withForm, send: sendPage, csrfFor: (who) => cookies.csrfFor(who.session), hasKeys: settings.enabled, refuse: refuseUnlessSignInPossible })
}
