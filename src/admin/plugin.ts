/**
 * The admin API (README "Administration"), JSON under /admin/api/v1, registered only with
 * authorization on. Thin: each route checks access (admin-access.ts), does one thing through
 * the lists and actions the admin page shares (lists.ts, actions.ts), and leaves one audit
 * record — refusals included (who tried is what an operator wants to know), never the
 * credential presented.
 *
 * Errors: `{ "error": { "code": "PORTCULLIS_ERR_…", "message": "…" } }` with the code's status.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ApiKeys } from '../account/api-keys.js'
import { PortcullisError } from '../errors.js'
import type { AuditLog } from '../observability/audit.js'
import { STORE_RETRY_AFTER_S } from '../auth-server/provider.js'
import { isStoreUnavailable, type Store } from '../store/types.js'
import type { ClientConfig } from '../config/schema.js'
import type { Upstream } from '../upstreams/types.js'
import { actorName, type AdminActor, type AdminAuthenticator } from './admin-access.js'
import type { BlockedUsers } from './blocked-users.js'
import { apiKeysPage, clientsPage, grantsPage, idParam, linkedAccountItems, sessionItems, sessionsPage, userQuery, usersPage } from './lists.js'
import type { RevokeUserDeps } from './revoke-user.js'
import type { RevokeClientDeps } from './revoke-client.js'
import type { UsersSeen } from './users-seen.js'
import type { ToolGuard } from '../guardrails/tool-guard.js'
import { approvalRequest, serverToolsView, type ServerToolsDeps } from './server-tools.js'
import type { LinkedAccounts } from '../upstream-auth/upstream-links.js'
import { adminActions, adminRecorder, audited, type Outcome, type Target } from './actions.js'
import type { BucketState } from '../rate-limit/limiter.js'
import { reloadAuditDetail, type Reload } from '../reload/report.js'

export const ADMIN_API_PATH = '/admin/api/v1'

export interface AdminRoutesOptions {
  readonly authenticate: AdminAuthenticator
  readonly upstreams: ReadonlyMap<string, Upstream>
  /** The upstreams in force and those a reload replaced that still hold sessions (their sessions are listed too). */
  readonly allUpstreams: () => Iterable<Upstream>
  readonly sessionHolder: (server: string, sessionId: string) => Upstream | undefined
  readonly store: Store
  readonly configuredClients: readonly ClientConfig[]
  /** cluster.advertiseUrl, or 'local'. */
  readonly replica: string
  readonly usersSeen: UsersSeen
  readonly blocked: BlockedUsers
  readonly apiKeys: ApiKeys
  readonly revoke: RevokeUserDeps
  readonly revokeClient: RevokeClientDeps
  /** Each server's guardrails: its pinTools mode, and the copy of the approved tools to forget on approval. */
  readonly toolGuards: ReadonlyMap<string, ToolGuard>
  /** Users' linked accounts at servers with upstreamAuth: oauth; absent when there are none. */
  readonly links?: LinkedAccounts
  readonly audit: AuditLog | undefined
  readonly now: () => number
  /** A user's (or `client:<id>`'s) rate-limit buckets as this replica last charged them (the limiter). */
  readonly rateLimitsOf: (userId: string) => BucketState[]
  /** Re-reads the configuration file (README "Reloading"); absent where nothing can reload (tests building the app alone). */
  readonly reload?: Reload
}

type Work = (request: FastifyRequest, actor: AdminActor) => Promise<Outcome>

/** The target an action names in its path, recorded even when the action is refused. */
function targetOf (kind: string, param: 'id' | 'server' | 'server/id'): (request: FastifyRequest) => Target {
  return (request: FastifyRequest): Target => {
    const params = request.params as { id?: string, server?: string }
    const id = String(params.id ?? '').slice(0, 256)
    const server = String(params.server ?? '').slice(0, 64)
    return { kind, id: param === 'id' ? id : param === 'server' ? server : `${server}/${id}` }
  }
}

export async function adminRoutes (app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const { audit, blocked } = opts

  const record = adminRecorder(audit, 'admin api call')
  const tools: ServerToolsDeps = { store: opts.store, guards: opts.toolGuards, now: opts.now }
  const actions = adminActions({ upstreams: opts.upstreams, sessionHolder: opts.sessionHolder, replica: opts.replica, blocked, revoke: opts.revoke, revokeClient: opts.revokeClient, tools, links: opts.links, audit })

  /** Access check, the work, one audit record. */
  const route = (action: string, work: Work, target?: (request: FastifyRequest) => Target) => async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    reply.header('cache-control', 'no-store')
    const named = target === undefined ? {} : { target: target(request) }
    let actor: AdminActor
    try {
      actor = await opts.authenticate(request.headers.authorization)
    } catch (err) {
      if (err instanceof PortcullisError) record(request, { actor: 'unknown', action, ...named, outcome: 'refused', detail: { code: err.code } })
      throw err
    }
    const result = await audited(record, request, { action, actor: actorName(actor), ...named }, async () => work(request, actor))
    return reply.code(result.status ?? 200).send(result.body)
  }

  /** Each action's audit name and target, by route pattern. */
  const postActions = new Map<string, { action: string, target?: (request: FastifyRequest) => Target }>()

  /**
   * An action whose body Fastify refused before the handler (415 not JSON, 413 too large):
   * audited as refused, actor the credential's if it is one (nothing was done either way).
   */
  const recordRejectedBody = async (request: FastifyRequest, status: number, code: string): Promise<void> => {
    const known = postActions.get(request.routeOptions.url ?? '')
    if (known === undefined || (status !== 413 && status !== 415)) return
    const actor = await opts.authenticate(request.headers.authorization).then(actorName, () => 'unknown')
    record(request, { actor, action: known.action, ...(known.target === undefined ? {} : { target: known.target(request) }), outcome: 'refused', detail: { code, status } })
  }

  app.setErrorHandler(async (error: Error & { statusCode?: number, code?: string }, request, reply) => {
    reply.header('cache-control', 'no-store')
    if (error instanceof PortcullisError) return reply.code(error.status).headers(error.headers).send({ error: { code: error.code, message: error.message } })
    if (isStoreUnavailable(error)) {
      request.log.warn({ err: { message: error.message } }, 'admin api: store unreachable')
      return reply.code(503).header('retry-after', String(STORE_RETRY_AFTER_S)).send({ error: { code: 'PORTCULLIS_ERR_STORE_UNAVAILABLE', message: 'The gateway cannot reach its store right now; retry shortly' } })
    }
    const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'admin api call failed')
    await recordRejectedBody(request, status, error.code ?? 'FST_ERR')
    return reply.code(status).send({ error: { code: status === 500 ? 'PORTCULLIS_ERR_INTERNAL' : 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST', message: status === 500 ? 'Internal gateway error' : error.message } })
  })

  const sessionsNow = (): ReturnType<typeof sessionItems> => sessionItems(opts.allUpstreams(), opts.replica, opts.now())

  /** An action, known to the error handler by its audit name (a body refused before the handler is still recorded). */
  const post = (path: string, action: string, work: Work, target?: (request: FastifyRequest) => Target): void => {
    postActions.set(path, { action, ...(target === undefined ? {} : { target }) })
    app.post(path, route(action, work, target))
  }

  app.get(`${ADMIN_API_PATH}/sessions`, route('sessions.list', async (request) => {
    return { body: sessionsPage(sessionsNow(), request.query as Record<string, unknown>) }
  }))

  app.get(`${ADMIN_API_PATH}/clients`, route('clients.list', async (request) => {
    return { body: await clientsPage(opts.store, opts.configuredClients, request.query as Record<string, unknown>) }
  }))

  app.get(`${ADMIN_API_PATH}/users`, route('users.list', async (request) => {
    return { body: await usersPage(opts.usersSeen, blocked, sessionsNow(), request.query as Record<string, unknown>) }
  }))

  app.get(`${ADMIN_API_PATH}/api-keys`, route('api-keys.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const user = userQuery(query, 'API keys')
    return { target: { kind: 'user', id: user }, body: await apiKeysPage(opts.apiKeys, user, query) }
  }))

  // One user's grants (a client they consented to) with their refresh-token families.
  app.get(`${ADMIN_API_PATH}/grants`, route('grants.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const user = userQuery(query, 'grants')
    return { target: { kind: 'user', id: user }, body: await grantsPage(opts.store, opts.revoke.grants, user, query) }
  }))

  // One user's rate-limit buckets, as this replica last charged them (README "Administration").
  app.get<{ Params: { id: string } }>(`${ADMIN_API_PATH}/users/:id/rate-limits`, route('rate-limits.show', async (request) => {
    const userId = idParam((request.params as { id: string }).id, 'user id')
    return { body: { user: userId, replica: opts.replica, items: opts.rateLimitsOf(userId) } }
  }, targetOf('user', 'id')))

  // Linked upstream accounts (upstreamAuth: oauth, README "Upstream credentials"): one user's, and unlink.
  app.get(`${ADMIN_API_PATH}/linked-accounts`, route('linked-accounts.list', async (request) => {
    const user = userQuery(request.query as Record<string, unknown>, 'linked accounts')
    return { target: { kind: 'user', id: user }, body: { items: await linkedAccountItems(opts.links, user) } }
  }))

  post(`${ADMIN_API_PATH}/users/:id/linked-accounts/:server/unlink`, 'linked-accounts.unlink', async (request) => {
    const params = request.params as { id: string, server: string }
    return await actions.unlinkAccount(idParam(params.id, 'user id'), params.server)
  }, targetOf('linked-account', 'server/id'))

  post(`${ADMIN_API_PATH}/users/:id/revoke`, 'users.revoke', async (request) => {
    return await actions.revokeUser(idParam((request.params as { id: string }).id, 'user id'))
  }, targetOf('user', 'id'))

  post(`${ADMIN_API_PATH}/users/:id/block`, 'users.block', async (request, actor) => {
    return await actions.block(idParam((request.params as { id: string }).id, 'user id'), actorName(actor))
  }, targetOf('user', 'id'))

  post(`${ADMIN_API_PATH}/users/:id/unblock`, 'users.unblock', async (request) => {
    return await actions.unblock(idParam((request.params as { id: string }).id, 'user id'))
  }, targetOf('user', 'id'))

  post(`${ADMIN_API_PATH}/clients/:id/revoke`, 'clients.revoke', async (request) => {
    return await actions.revokeClient(idParam((request.params as { id: string }).id, 'client id'))
  }, targetOf('client', 'id'))

  app.get<{ Params: { server: string } }>(`${ADMIN_API_PATH}/servers/:server/tools`, route('tools.list', async (request) => {
    return { body: await serverToolsView(tools, (request.params as { server: string }).server) }
  }, targetOf('server', 'server')))

  post(`${ADMIN_API_PATH}/servers/:server/tools/approve`, 'tools.approve', async (request, actor) => {
    return await actions.approveTools((request.params as { server: string }).server, approvalRequest(request.body), actorName(actor))
  }, targetOf('server', 'server'))

  const reload = opts.reload
  if (reload !== undefined) {
    // The report either way; refused (an invalid file) is a 422 with the catalogue's code beside it.
    post(`${ADMIN_API_PATH}/reload`, 'config.reload', async () => {
      const report = await reload()
      const detail = reloadAuditDetail(report)
      if (report.applied) return { detail, body: report }
      const error = new PortcullisError('PORTCULLIS_ERR_RELOAD_INVALID_CONFIG')
      return { status: error.status, outcome: 'refused', detail, body: { ...report, error: { code: error.code, message: error.message } } }
    })
  }

  post(`${ADMIN_API_PATH}/sessions/:server/:id/end`, 'sessions.end', async (request) => {
    const params = request.params as { server: string, id: string }
    return await actions.endSession(params.server, idParam(params.id, 'session id'))
  }, targetOf('session', 'server/id'))
}
