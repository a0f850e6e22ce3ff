/**
 * The admin page (README "Administration"), server-rendered HTML at /admin, registered beside
 * the admin API with authorization on. It lists and acts through the same functions as the API
 * (lists.ts, paging.ts, actions.ts) and audits the same way (actions.ts `audited`, the API's
 * action names, actor = the administrator's user id).
 *
 *   GET  /admin                                  users seen (filters: provider, group, blocked)
 *   GET  /admin/users/:id                        one user: sessions, API keys, linked accounts, actions
 *   GET  /admin/clients                          clients (filter: source)
 *   GET  /admin/sessions                         live sessions on this replica (filters: server, user)
 *   GET  /admin/tools                            pinned servers' pending tool changes
 *   POST /admin/users/:id/revoke|block|unblock   (CSRF)
 *   POST /admin/users/:id/linked-accounts/:server/unlink   (CSRF)
 *   POST /admin/clients/:id/revoke               (CSRF)
 *   POST /admin/sessions/:server/:id/end         (CSRF)
 *   POST /admin/servers/:server/tools/approve    (CSRF)
 *   POST /admin/reload                           (CSRF; only when the gateway was given a reload)
 *   POST /admin/logout                           (CSRF)
 *
 * Access fails closed. Sign-in is the account pages' (account/sign-in.ts: the gateway's own
 * OAuth flow, `prompt=login`), which returns here with a session cookie of the admin page's
 * own (Path=/admin) naming a session kept in the store (account/page-sessions.ts: sign-out and revoking
 * the user end it at once, on every replica). Each request then looks the user up afresh (a local user removed from the
 * YAML, or disabled at their identity provider, is signed out) and requires a user not blocked
 * and in one of admin.groups — the groups the user has now, as the admin API reads them from
 * the token. Not signed in: off to sign in; signed in but no administrator: a 403 page. Every
 * action is a POST/redirect/GET: the form carries HMAC(session id) as its CSRF token (the
 * account pages' mechanism), and the outcome comes back as a one-time signed notice cookie.
 * Sign-in and sign-out are audited too (`session.start`, `session.end`).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { messagePage, PAGE_HEADERS } from '../auth-server/pages.js'
import { STORE_RETRY_AFTER_S, STORE_UNAVAILABLE_PAGE } from '../auth-server/provider.js'
import { ACCOUNT_PATH, type AccountCookies, type AccountSession, type OtherPage, type SessionScope } from '../account/session.js'
import { PortcullisError } from '../errors.js'
import type { UserIdentity } from '../identity.js'
import { reloadAuditDetail, type Reload, type ReloadReport } from '../reload/report.js'
import { isStoreUnavailable } from '../store/types.js'
import type { AuditLog } from '../observability/audit.js'
import { adminActions, adminRecorder, audited, type Outcome, type Target } from './actions.js'
import type { PageSessions } from '../account/page-sessions.js'
import { apiKeysPage, clientsPage, grantItems, idParam, linkedAccountItems, sessionItems, sessionsPage, userItems, usersPage, type ListQuery } from './lists.js'
import type { AdminRoutesOptions } from './plugin.js'
import { serverToolsView, type ApprovalRequest } from './server-tools.js'
import * as views from './page-views.js'
import { ADMIN_PAGE_PATH, type Frame, type ToolsReview } from './page-views.js'

/** The admin page's session cookie: its own name and path, signed for its own purpose. */
export const ADMIN_SCOPE: SessionScope = { cookie: 'portcullis_admin', path: ADMIN_PAGE_PATH, use: 'admin-session' }

/**
 * The admin page as the account sign-in sees it: its cookie, and a sign-in that starts a
 * session kept in the store (account/page-sessions.ts) and audited as `session.start`.
 */
export function adminSignInPage (sessions: PageSessions, audit: AuditLog | undefined): OtherPage {
  const record = adminRecorder(audit, 'admin page call')
  return {
    ...ADMIN_SCOPE,
    startSession: async (userId, request) => {
      const sid = await sessions.start(userId)
      record(request, { actor: userId, action: 'session.start', outcome: 'ok' })
      return sid
    },
  }
}

/**
 * The page's headers: the sign-in pages' strict ones, and forms may post only to the gateway
 * (CSP3 form-action). Not in the shared PAGE_HEADERS: the sign-in pages' forms are answered by
 * redirects to identity providers, which Chrome checks against form-action too.
 */
const ADMIN_PAGE_HEADERS: Readonly<Record<string, string>> = {
  ...PAGE_HEADERS,
  'content-security-policy': `${PAGE_HEADERS['content-security-policy'] ?? ''}; form-action 'self'`,
}

export interface AdminPageOptions extends Omit<AdminRoutesOptions, 'authenticate'> {
  readonly cookies: AccountCookies
  /** The user as the gateway knows them now (account/key-owners.ts), or undefined when they are gone. */
  readonly identityOf: (userId: string) => Promise<UserIdentity | undefined>
  /** admin.groups */
  readonly groups: readonly string[]
  /** False when publicUrl cannot take the sign-in's redirect (plain http off loopback). */
  readonly isSignInPossible: boolean
  /** Re-reads the configuration: "Reload configuration" is shown only with one. */
  readonly reload?: Reload
  /** The page's sessions in the store: signed out or revoked ends them before their cookie expires. */
  readonly sessions: PageSessions
  /** Sign-out also ends the user's sign-in at the gateway's authorization server (auth-server/ended-sign-ins.ts). */
  readonly endSignIns: (userId: string) => Promise<void>
}

const MAX_FORM_BYTES = 16 * 1024
const MAX_NOTICE_CHARS = 500
const SIGN_IN_PATH = `${ACCOUNT_PATH}/login?return=${encodeURIComponent(ADMIN_PAGE_PATH)}`

interface Admin { readonly session: AccountSession, readonly user: UserIdentity }
/**
 * Signed out: no valid cookie; or a valid one whose session the store no longer holds (signed
 * out, revoked: `session-ended`) or whose user the gateway no longer knows (`user-gone`) — then
 * who it was is known, and recorded.
 */
type SignedOut = { readonly kind: 'signed-out' } | { readonly kind: 'signed-out', readonly userId: string, readonly reason: 'session-ended' | 'user-gone' }
type Access = SignedOut | { readonly kind: 'refused', readonly user: UserIdentity, readonly reason: string } | { readonly kind: 'admin', readonly admin: Admin }
type Params = Record<string, string>

function sendPage (reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply.code(status).headers(ADMIN_PAGE_HEADERS).send(html)
}

/** Fetch Metadata (W3C, "Sec-Fetch-Site"): the browser says the request was started by another site. */
function isCrossSite (request: FastifyRequest): boolean {
  return request.headers['sec-fetch-site'] === 'cross-site'
}

function formOf (request: FastifyRequest): URLSearchParams {
  return request.body instanceof URLSearchParams ? request.body : new URLSearchParams()
}

/** The tool approval form's fields: each tool shown and the `to` fingerprint it was shown at (empty: a removal). */
function reviewedApproval (form: URLSearchParams): ApprovalRequest {
  const names = form.getAll('tool')
  const fingerprints = form.getAll('to')
  if (names.length === 0 || names.length !== fingerprints.length || names.some((name) => name === '')) {
    throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', 'the approval form names no tools, or not each with the definition it showed; open the Tools page again')
  }
  return { names, reviewed: Object.fromEntries(names.map((name, i) => [name, fingerprints[i] === '' ? null : fingerprints[i] ?? null])) }
}

/** The query's filters (and limit) without empty fields: an empty filter box means no filter. */
function filtersOf (query: unknown, names: readonly string[]): Record<string, string> {
  const q = query as Record<string, unknown>
  return Object.fromEntries(names.flatMap((name) => typeof q[name] === 'string' && q[name] !== '' ? [[name, q[name]]] : []))
}

/** What the shared list functions read: the filters and limit, and the cursor of this page. */
function withCursor (filters: Readonly<Record<string, string>>, query: unknown): ListQuery {
  return { ...filters, ...filtersOf(query, ['cursor']) }
}

/** An admin page action: its audit name and target, the work, and where to go after (or a page of its own). */
interface ActionRoute {
  readonly action: string
  readonly target?: (request: FastifyRequest) => Target
  readonly back: (request: FastifyRequest) => string
  readonly work: (request: FastifyRequest, admin: Admin) => Promise<Outcome>
  readonly respond?: (reply: FastifyReply, frame: Frame, result: Outcome) => FastifyReply
}
type Call = { readonly action: string, readonly target?: Target }

export async function adminPageRoutes (app: FastifyInstance, opts: AdminPageOptions): Promise<void> {
  const { cookies } = opts
  const adminGroups = new Set(opts.groups)
  const record = adminRecorder(opts.audit, 'admin page call')
  const tools = { store: opts.store, guards: opts.toolGuards, now: opts.now }
  const actions = adminActions({ upstreams: opts.upstreams, sessionHolder: opts.sessionHolder, replica: opts.replica, blocked: opts.blocked, revoke: opts.revoke, revokeClient: opts.revokeClient, tools, links: opts.links, audit: opts.audit })
  const sessionsNow = (): ReturnType<typeof sessionItems> => sessionItems(opts.allUpstreams(), opts.replica, opts.now())
  /** Each POST route's audit name, by its route pattern: a form refused before its handler runs is still recorded. */
  const postActions = new Map<string, string>()

  /**
   * A POST refused by Fastify before its handler (415 not a form, 413 too large): audited as
   * refused, actor whoever the cookie names (checked no further: nothing was done).
   */
  const recordRejectedPost = async (request: FastifyRequest, status: number, code: string): Promise<void> => {
    if (request.method !== 'POST' || (status !== 413 && status !== 415)) return
    const session = await cookies.session(request.headers.cookie, ADMIN_SCOPE)
    const action = postActions.get(request.routeOptions.url ?? '') ?? 'page.post'
    record(request, { actor: session?.userId ?? 'unknown', action, outcome: 'refused', detail: { code, status } })
  }

  app.setErrorHandler(async (error: Error & { statusCode?: number, code?: string }, request, reply) => {
    if (error instanceof PortcullisError && error.status < 500) return sendPage(reply, error.status, messagePage('Request refused', error.message, `Back to ${ADMIN_PAGE_PATH}.`))
    if (isStoreUnavailable(error)) {
      request.log.warn({ err: { message: error.message } }, 'admin page: store unreachable')
      return sendPage(reply.header('retry-after', String(STORE_RETRY_AFTER_S)), 503, STORE_UNAVAILABLE_PAGE)
    }
    const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'admin page failed')
    await recordRejectedPost(request, status, error.code ?? 'FST_ERR')
    return sendPage(reply, status, messagePage('Something went wrong', status === 500 ? 'Something went wrong on our side.' : 'The request was not understood.'))
  })

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: MAX_FORM_BYTES }, (_request, body, done) => {
    done(null, new URLSearchParams(body as string))
  })

  /** Who asks, failing closed: signed out, refused (blocked, or in none of admin.groups), or an administrator. */
  const accessOf = async (request: FastifyRequest): Promise<Access> => {
    const session = await cookies.session(request.headers.cookie, ADMIN_SCOPE)
    if (session === undefined) return { kind: 'signed-out' }
    if (!await opts.sessions.isLive(session)) return { kind: 'signed-out', userId: session.userId, reason: 'session-ended' }
    const user = await opts.identityOf(session.userId)
    if (user === undefined) return { kind: 'signed-out', userId: session.userId, reason: 'user-gone' }
    if (opts.blocked.has(user.id)) return { kind: 'refused', user, reason: 'This account is blocked on this gateway.' }
    if (!(user.groups ?? []).some((group) => adminGroups.has(group))) return { kind: 'refused', user, reason: `${user.name} is in none of the administrator groups (admin.groups).` }
    return { kind: 'admin', admin: { session, user } }
  }

  /** A refusal: audited (who tried is what an operator wants to know), and a page saying why. */
  const refuse = (request: FastifyRequest, reply: FastifyReply, call: Call & { actor: string, why?: string }, code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED' | 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', title: string, reason: string): FastifyReply => {
    const { why, ...named } = call
    record(request, { ...named, outcome: 'refused', detail: { code, ...(why === undefined ? {} : { reason: why }) } })
    return sendPage(reply, code === 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED' ? 401 : 403, messagePage(title, reason))
  }

  /** Who a signed-out request was, when its cookie says (and why it no longer counts). */
  const signedOutActor = (access: SignedOut): { actor: string, why?: string } => 'userId' in access ? { actor: access.userId, why: access.reason } : { actor: 'unknown' }

  /** The administrator who sent this form with their page's CSRF token; otherwise the refusal sent. */
  const formSender = async (request: FastifyRequest, reply: FastifyReply, call: Call): Promise<Admin | FastifyReply> => {
    const access = await accessOf(request)
    if (access.kind === 'signed-out') return refuse(request, reply, { ...call, ...signedOutActor(access) }, 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', 'Signed out', `Your admin session has ended. Sign in again at ${ADMIN_PAGE_PATH}.`)
    if (access.kind === 'admin' && !cookies.isCsrfValid(access.admin.session, formOf(request).get('csrf') ?? undefined)) {
      return refuse(request, reply, { ...call, actor: access.admin.user.id }, 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', 'Request refused', 'This form was not sent from your admin page. Open the page again and retry.')
    }
    if (access.kind === 'refused') return refuse(request, reply, { ...call, actor: access.user.id }, 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', 'Not an administrator', access.reason)
    return access.admin
  }

  /** The work, audited; a refusal of the work itself (a coded 4xx) becomes an outcome to show, not an error page. */
  const perform = async (request: FastifyRequest, call: Call, admin: Admin, work: ActionRoute['work']): Promise<Outcome> => {
    try {
      return await audited(record, request, { ...call, actor: admin.user.id }, async () => work(request, admin))
    } catch (err) {
      if (!(err instanceof PortcullisError) || err.status >= 500) throw err
      return { status: err.status, outcome: 'refused', summary: err.message, body: undefined }
    }
  }

  const frameFor = async (request: FastifyRequest, reply: FastifyReply, admin: Admin): Promise<Frame> => {
    const notice = await cookies.notice(request.headers.cookie, ADMIN_SCOPE)
    if (notice !== undefined) reply.header('set-cookie', cookies.clearNoticeCookie(ADMIN_SCOPE))
    return { admin: admin.user.name, csrf: cookies.csrfFor(admin.session), canReload: opts.reload !== undefined, ...(notice === undefined ? {} : { notice }) }
  }

  /**
   * A GET view: access, one audit record (the API's list action name), the page. A view another
   * site sent the browser to (SameSite=Lax sends the cookie along) goes to the bare /admin
   * instead: another site must not make an administrator's audit trail say they looked at a
   * user they never chose to look at.
   */
  const view = (action: string, render: (request: FastifyRequest, frame: Frame) => Promise<string>, target?: (request: FastifyRequest) => Target) => async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    if (isCrossSite(request) && request.url !== ADMIN_PAGE_PATH) return reply.headers({ 'cache-control': 'no-store' }).redirect(ADMIN_PAGE_PATH, 303)
    const access = await accessOf(request)
    if (access.kind === 'signed-out') {
      if (!opts.isSignInPossible) return sendPage(reply, 404, messagePage('Admin page unavailable', 'The admin page needs an https publicUrl (or a loopback one) to sign you in; use the admin API.'))
      return reply.headers({ 'cache-control': 'no-store' }).redirect(SIGN_IN_PATH, 303)
    }
    const named = target === undefined ? {} : { target: target(request) }
    if (access.kind === 'refused') return refuse(request, reply, { action, actor: access.user.id, ...named }, 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', 'Not an administrator', access.reason)
    const frame = await frameFor(request, reply, access.admin)
    let html = ''
    await audited(record, request, { action, actor: access.admin.user.id, ...named }, async () => {
      html = await render(request, frame)
      return { body: undefined }
    })
    return sendPage(reply, 200, html)
  }

  /**
   * A POST action (POST/redirect/GET): the sender, the work (audited), then back to the route's
   * page with the outcome as a one-time notice — or, with `respond`, a result page of its own.
   */
  const act = (route: ActionRoute) => async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const call: Call = { action: route.action, ...(route.target === undefined ? {} : { target: route.target(request) }) }
    const admin = await formSender(request, reply, call)
    if (!('session' in admin)) return admin
    const result = await perform(request, call, admin, route.work)
    if (route.respond !== undefined) return route.respond(reply, await frameFor(request, reply, admin), result)
    const notice = { isError: (result.outcome ?? 'ok') !== 'ok', text: (result.summary ?? 'Done.').slice(0, MAX_NOTICE_CHARS) }
    return reply.header('set-cookie', await cookies.noticeCookie(notice, ADMIN_SCOPE)).headers({ 'cache-control': 'no-store' }).redirect(route.back(request), 303)
  }

  /** A POST action at `path`, known to the error handler by its audit name. */
  const postAction = (path: string, route: ActionRoute): void => {
    postActions.set(path, route.action)
    app.post(path, act(route))
  }

  const param = (name: string) => (request: FastifyRequest): string => (request.params as Params)[name] ?? ''
  const userTarget = (request: FastifyRequest): Target => ({ kind: 'user', id: param('id')(request).slice(0, 256) })
  const userPath = (request: FastifyRequest): string => `${ADMIN_PAGE_PATH}/users/${encodeURIComponent(param('id')(request))}`
  const userPathPattern = `${ADMIN_PAGE_PATH}/users/:id`

  app.get(ADMIN_PAGE_PATH, view('users.list', async (request, frame) => {
    const filters = filtersOf(request.query, ['provider', 'group', 'blocked', 'limit'])
    return views.usersPage(frame, await usersPage(opts.usersSeen, opts.blocked, sessionsNow(), withCursor(filters, request.query)), filters)
  }))

  app.get(userPathPattern, view('users.show', async (request, frame) => {
    const id = idParam(param('id')(request), 'user id')
    const sessions = sessionsNow()
    return views.userPage(frame, {
      id,
      item: (await userItems(opts.usersSeen, opts.blocked, sessions)).find((u) => u.id === id),
      sessions: sessions.filter((s) => s.user === id),
      apiKeys: await apiKeysPage(opts.apiKeys, id, withCursor({}, request.query)),
      linked: await linkedAccountItems(opts.links, id),
      grants: await grantItems(opts.store, opts.revoke.grants, id),
      rateLimits: opts.rateLimitsOf(id),
    })
  }, userTarget))

  app.get(`${ADMIN_PAGE_PATH}/clients`, view('clients.list', async (request, frame) => {
    const filters = filtersOf(request.query, ['source', 'limit'])
    return views.clientsPage(frame, await clientsPage(opts.store, opts.configuredClients, withCursor(filters, request.query)), filters)
  }))

  app.get(`${ADMIN_PAGE_PATH}/sessions`, view('sessions.list', async (request, frame) => {
    const filters = filtersOf(request.query, ['server', 'user', 'limit'])
    return views.sessionsPage(frame, sessionsPage(sessionsNow(), withCursor(filters, request.query)), filters)
  }))

  app.get(`${ADMIN_PAGE_PATH}/tools`, view('tools.list', async (_request, frame) => {
    const pinned = [...opts.toolGuards].filter(([, guard]) => guard.pinTools !== 'off').map(([server]) => server)
    const reviews: ToolsReview[] = []
    for (const server of pinned) {
      const review = await serverToolsView(tools, server)
      // The changes as the API gives them: fields before/after for a changed tool, the definition of an added one.
      reviews.push({ server, pinTools: String(review.pinTools), hasListing: review.lastListing !== null, changes: review.changes as ToolsReview['changes'] })
    }
    return views.toolsPage(frame, reviews)
  }))

  const userId = (request: FastifyRequest): string => idParam(param('id')(request), 'user id')
  postAction(`${userPathPattern}/revoke`, { action: 'users.revoke', target: userTarget, back: userPath, work: async (request) => actions.revokeUser(userId(request)) })
  postAction(`${userPathPattern}/block`, { action: 'users.block', target: userTarget, back: userPath, work: async (request, admin) => actions.block(userId(request), admin.user.id) })
  postAction(`${userPathPattern}/unblock`, { action: 'users.unblock', target: userTarget, back: userPath, work: async (request) => actions.unblock(userId(request)) })
  // The API's action and target (plugin.ts): one audit name for an unlink, wherever it was done.
  postAction(`${userPathPattern}/linked-accounts/:server/unlink`, {
    action: 'linked-accounts.unlink',
    target: (request) => ({ kind: 'linked-account', id: `${param('server')(request).slice(0, 64)}/${param('id')(request).slice(0, 256)}` }),
    back: userPath,
    work: async (request) => actions.unlinkAccount(userId(request), param('server')(request)),
  })
  postAction(`${ADMIN_PAGE_PATH}/clients/:id/revoke`, {
    action: 'clients.revoke',
    target: (request) => ({ kind: 'client', id: param('id')(request).slice(0, 256) }),
    back: () => `${ADMIN_PAGE_PATH}/clients`,
    work: async (request) => actions.revokeClient(idParam(param('id')(request), 'client id')),
  })
  postAction(`${ADMIN_PAGE_PATH}/sessions/:server/:id/end`, {
    action: 'sessions.end',
    target: (request) => ({ kind: 'session', id: `${param('server')(request).slice(0, 64)}/${param('id')(request).slice(0, 256)}` }),
    back: () => `${ADMIN_PAGE_PATH}/sessions`,
    work: async (request) => actions.endSession(param('server')(request), idParam(param('id')(request), 'session id')),
  })
  // The page approves exactly the changes it showed, each at the definition it showed (fingerprint
  // `to`): a change listed after the page was drawn, or a definition changed again, is not approved blind.
  postAction(`${ADMIN_PAGE_PATH}/servers/:server/tools/approve`, {
    action: 'tools.approve',
    target: (request) => ({ kind: 'server', id: param('server')(request).slice(0, 64) }),
    back: () => `${ADMIN_PAGE_PATH}/tools`,
    work: async (request, admin) => actions.approveTools(param('server')(request), reviewedApproval(formOf(request)), admin.user.id),
  })

  // Anyone signed in may sign out (an administrator or not); the CSRF token keeps other sites from
  // doing it for them. The session ends in the store: the cookie, if kept, no longer opens the page.
  const logoutPath = `${ADMIN_PAGE_PATH}/logout`
  postActions.set(logoutPath, 'session.end')
  app.post(logoutPath, async (request, reply) => {
    const session = await cookies.session(request.headers.cookie, ADMIN_SCOPE)
    if (session === undefined || !cookies.isCsrfValid(session, formOf(request).get('csrf') ?? undefined)) {
      return refuse(request, reply, { action: 'session.end', actor: session?.userId ?? 'unknown' }, 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', 'Request refused', 'This form was not sent from your admin page.')
    }
    await opts.sessions.end(session)
    await opts.endSignIns(session.userId)
    record(request, { actor: session.userId, action: 'session.end', outcome: 'ok' })
    return sendPage(reply.header('set-cookie', cookies.clearCookie(ADMIN_SCOPE.cookie, ADMIN_SCOPE.path)), 200, messagePage('Signed out', 'You have signed out of the admin page.'))
  })

  const { reload } = opts
  if (reload !== undefined) {
    // The report is the answer (what changed, what needs a restart, why the file was refused): a page, not a notice.
    postAction(`${ADMIN_PAGE_PATH}/reload`, {
      action: 'config.reload',
      back: () => ADMIN_PAGE_PATH,
      work: async () => {
        const report = await reload()
        return { outcome: report.applied ? 'ok' : 'refused', body: report, detail: reloadAuditDetail(report) }
      },
      respond: (reply, frame, result) => {
        const report = result.body as ReloadReport | undefined
        return report === undefined ? sendPage(reply, result.status ?? 400, messagePage('Reload refused', result.summary ?? 'The reload was refused.')) : sendPage(reply, 200, views.reloadPage(frame, report))
      },
    })
  }
}
