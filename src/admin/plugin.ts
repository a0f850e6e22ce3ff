/**
 * The admin API (README "Administration"), JSON under /admin/api/v1, registered only with
 * authorization on. Thin: each route checks access (admin-access.ts), does one thing through
 * the plain functions beside it, and leaves one audit record — refusals included (who tried is
 * what an operator wants to know), never the credential presented.
 *
 * Errors: `{ "error": { "code": "PORTCULLIS_ERR_…", "message": "…" } }` with the code's status.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ApiKeys } from '../account/api-keys.js'
import { PortcullisError } from '../errors.js'
import type { AdminActionEntry, AuditLog } from '../observability/audit.js'
import { STORE_RETRY_AFTER_S } from '../auth-server/provider.js'
import { isStoreUnavailable, type Store } from '../store/types.js'
import type { ClientConfig } from '../config/schema.js'
import type { Upstream } from '../upstreams/types.js'
import { actorName, type AdminActor, type AdminAuthenticator } from './admin-access.js'
import type { BlockedUsers } from './blocked-users.js'
import { apiKeyItems, clientItems, sessionItems, userItems } from './lists.js'
import { paginate, pageQuery } from './paging.js'
import { revokeUser, type RevokeUserDeps } from './revoke-user.js'
import { revokeClient, type RevokeClientDeps } from './revoke-client.js'
import type { UsersSeen } from './users-seen.js'
import type { ToolGuard } from '../guardrails/tool-guard.js'
import { approvalNames, approveServerTools, serverToolsView, type ServerToolsDeps } from './server-tools.js'
import type { LinkedAccounts } from '../upstream-auth/upstream-links.js'
import type { Reload } from '../reload/report.js'

export const ADMIN_API_PATH = '/admin/api/v1'

/** Ids in paths: any printable text up to 256 characters (user ids of IdP users hold a colon). */
const ID_RE = /^\P{Cc}{1,256}$/u

export interface AdminRoutesOptions {
  readonly authenticate: AdminAuthenticator
  readonly upstreams: ReadonlyMap<string, Upstream>
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
  /** Re-reads the configuration file (README "Reloading"); absent where nothing can reload (tests building the app alone). */
  readonly reload?: Reload
}

interface Outcome {
  readonly status?: number
  readonly body: unknown
  readonly target?: AdminActionEntry['target']
  readonly outcome?: AdminActionEntry['outcome']
  readonly detail?: AdminActionEntry['detail']
}

type Work = (request: FastifyRequest, actor: AdminActor) => Promise<Outcome>
type Target = NonNullable<AdminActionEntry['target']>

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

  const record = (request: FastifyRequest, entry: Omit<AdminActionEntry, 'ip'>): void => {
    const full = { ...entry, ip: request.ip }
    audit?.recordAdminAction(full)
    request.log.info({ actor: full.actor, action: full.action, target: full.target, outcome: full.outcome }, 'admin api call')
  }

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
    let result: Outcome
    try {
      result = await work(request, actor)
    } catch (err) {
      const outcome = err instanceof PortcullisError && err.status < 500 ? 'refused' : 'failed'
      record(request, { actor: actorName(actor), action, ...named, outcome, detail: { code: err instanceof PortcullisError ? err.code : 'PORTCULLIS_ERR_INTERNAL' } })
      throw err
    }
    const recorded = result.target === undefined ? named : { target: result.target }
    record(request, { actor: actorName(actor), action, ...recorded, outcome: result.outcome ?? 'ok', ...(result.detail === undefined ? {} : { detail: result.detail }) })
    return reply.code(result.status ?? 200).send(result.body)
  }

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    reply.header('cache-control', 'no-store')
    if (error instanceof PortcullisError) return reply.code(error.status).headers(error.headers).send({ error: { code: error.code, message: error.message } })
    if (isStoreUnavailable(error)) {
      request.log.warn({ err: { message: error.message } }, 'admin api: store unreachable')
      return reply.code(503).header('retry-after', String(STORE_RETRY_AFTER_S)).send({ error: { code: 'PORTCULLIS_ERR_STORE_UNAVAILABLE', message: 'The gateway cannot reach its store right now; retry shortly' } })
    }
    const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'admin api call failed')
    return reply.code(status).send({ error: { code: status === 500 ? 'PORTCULLIS_ERR_INTERNAL' : 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST', message: status === 500 ? 'Internal gateway error' : error.message } })
  })

  const sessionsNow = (): ReturnType<typeof sessionItems> => sessionItems(opts.upstreams, opts.replica, opts.now())

  app.get(`${ADMIN_API_PATH}/sessions`, route('sessions.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const page = pageQuery(query)
    const items = sessionsNow().filter((s) => matches(query.server, s.server) && matches(query.user, s.user))
    return { body: paginate(items, (s) => `${s.server}\n${s.sessionId}`, page) }
  }))

  app.get(`${ADMIN_API_PATH}/clients`, route('clients.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const page = pageQuery(query)
    const items = (await clientItems(opts.store, opts.configuredClients)).filter((c) => matches(query.source, c.source))
    return { body: paginate(items, (c) => c.clientId, page) }
  }))

  app.get(`${ADMIN_API_PATH}/users`, route('users.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const page = pageQuery(query)
    const items = (await userItems(opts.usersSeen, blocked, sessionsNow()))
      .filter((u) => matches(query.provider, u.provider ?? '') && (query.group === undefined || u.groups.includes(String(query.group))) && (query.blocked === undefined || String(u.blocked) === query.blocked))
    return { body: paginate(items, (u) => u.id, page) }
  }))

  app.get(`${ADMIN_API_PATH}/api-keys`, route('api-keys.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const page = pageQuery(query)
    const user = typeof query.user === 'string' && ID_RE.test(query.user) ? query.user : undefined
    if (user === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', 'user: expected ?user=<user id> (API keys are listed per user)')
    return { target: { kind: 'user', id: user }, body: paginate(await apiKeyItems(opts.apiKeys, user), (k) => k.keyId, page) }
  }))

  // Linked upstream accounts (upstreamAuth: oauth, README "Upstream credentials"): one user's, and unlink.
  app.get(`${ADMIN_API_PATH}/linked-accounts`, route('linked-accounts.list', async (request) => {
    const query = request.query as Record<string, unknown>
    const user = typeof query.user === 'string' && ID_RE.test(query.user) ? query.user : undefined
    if (user === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', 'user: expected ?user=<user id> (linked accounts are listed per user)')
    const states = opts.links === undefined ? [] : await opts.links.list(user)
    const items = states.map((s) => ({ server: s.server, isLinked: s.linkedAtMs !== undefined, ...(s.linkedAtMs === undefined ? {} : { linkedAt: new Date(s.linkedAtMs).toISOString() }) }))
    return { target: { kind: 'user', id: user }, body: { items } }
  }))

  app.post<{ Params: { id: string, server: string } }>(`${ADMIN_API_PATH}/users/:id/linked-accounts/:server/unlink`, route('linked-accounts.unlink', async (request) => {
    const params = request.params as { id: string, server: string }
    const userId = idParam(params.id, 'user id')
    const server = params.server
    if (opts.links?.servers.includes(server) !== true) {
      return { status: 404, outcome: 'not_found', body: { error: { code: 'PORTCULLIS_ERR_ADMIN_NOT_FOUND', message: 'Not found: no server with upstreamAuth: oauth has this name' } } }
    }
    const isUnlinked = await opts.links.unlink(server, userId)
    if (!isUnlinked) return { status: 404, outcome: 'not_found', body: { error: { code: 'PORTCULLIS_ERR_ADMIN_NOT_FOUND', message: 'Not found: the user has no linked account at this server' } } }
    return { body: { user: userId, server, unlinked: true } }
  }, targetOf('linked-account', 'server/id')))

  app.post<{ Params: { id: string } }>(`${ADMIN_API_PATH}/users/:id/revoke`, route('users.revoke', async (request) => {
    const userId = idParam((request.params as { id: string }).id, 'user id')
    const done = await revokeUser(opts.revoke, userId)
    return { detail: { ...done }, body: { user: userId, revoked: done } }
  }, targetOf('user', 'id')))

  app.post<{ Params: { id: string } }>(`${ADMIN_API_PATH}/users/:id/block`, route('users.block', async (request, actor) => {
    const userId = idParam((request.params as { id: string }).id, 'user id')
    const isChanged = await blocked.block(userId, actorName(actor))
    return { detail: { changed: isChanged }, body: { user: userId, blocked: true, changed: isChanged } }
  }, targetOf('user', 'id')))

  app.post<{ Params: { id: string } }>(`${ADMIN_API_PATH}/users/:id/unblock`, route('users.unblock', async (request) => {
    const userId = idParam((request.params as { id: string }).id, 'user id')
    const isChanged = await blocked.unblock(userId)
    return { detail: { changed: isChanged }, body: { user: userId, blocked: false, changed: isChanged } }
  }, targetOf('user', 'id')))

  app.post<{ Params: { id: string } }>(`${ADMIN_API_PATH}/clients/:id/revoke`, route('clients.revoke', async (request) => {
    const clientId = idParam((request.params as { id: string }).id, 'client id')
    const done = await revokeClient(opts.revokeClient, clientId)
    if (done === undefined) return { status: 404, outcome: 'not_found', body: { error: { code: 'PORTCULLIS_ERR_ADMIN_NOT_FOUND', message: 'Not found: no registered client has this id' } } }
    return { detail: { ...done }, body: { clientId, revoked: done } }
  }, targetOf('client', 'id')))

  const tools: ServerToolsDeps = { store: opts.store, guards: opts.toolGuards, now: opts.now }

  app.get<{ Params: { server: string } }>(`${ADMIN_API_PATH}/servers/:server/tools`, route('tools.list', async (request) => {
    return { body: await serverToolsView(tools, (request.params as { server: string }).server) }
  }, targetOf('server', 'server')))

  app.post<{ Params: { server: string } }>(`${ADMIN_API_PATH}/servers/:server/tools/approve`, route('tools.approve', async (request, actor) => {
    const server = (request.params as { server: string }).server
    const by = actorName(actor)
    const approved = await approveServerTools(tools, server, approvalNames(request.body), by)
    // The approval also joins the tool definition records, as the CLI's does: one place to read who approved what.
    if (approved.length > 0) audit?.recordToolDefinitions({ server, action: 'approved', by, changes: approved })
    return { detail: { approved: approved.map((c) => ({ name: c.name, change: c.change })) }, body: { server, approvedBy: by, approved } }
  }, targetOf('server', 'server')))

  const reload = opts.reload
  if (reload !== undefined) {
    // The report either way; refused (an invalid file) is a 422 with the catalogue's code beside it.
    app.post(`${ADMIN_API_PATH}/reload`, route('config.reload', async () => {
      const report = await reload()
      const detail = { applied: report.applied, changed: report.changed.length, needsRestart: report.needsRestart }
      if (report.applied) return { detail, body: report }
      const error = new PortcullisError('PORTCULLIS_ERR_RELOAD_INVALID_CONFIG')
      return { status: error.status, outcome: 'refused', detail: { ...detail, code: error.code }, body: { ...report, error: { code: error.code, message: error.message } } }
    }))
  }

  app.post<{ Params: { server: string, id: string } }>(`${ADMIN_API_PATH}/sessions/:server/:id/end`, route('sessions.end', async (request) => {
    const params = request.params as { server: string, id: string }
    const sessionId = idParam(params.id, 'session id')
    const upstream = opts.upstreams.get(params.server)
    if (upstream === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_NOT_FOUND', `no MCP server named ${JSON.stringify(params.server.slice(0, 64))}`)
    const isEnded = await upstream.endSession?.(sessionId, 'ended by an administrator') ?? false
    if (!isEnded) return { status: 404, outcome: 'not_found', body: { error: { code: 'PORTCULLIS_ERR_ADMIN_NOT_FOUND', message: `Not found: this replica (${opts.replica}) holds no session ${sessionId} on "${upstream.name}"` } } }
    return { body: { server: upstream.name, sessionId, ended: true } }
  }, targetOf('session', 'server/id')))
}

/** A filter given in the query matches exactly; an absent one matches everything. */
function matches (filter: unknown, value: string): boolean {
  return filter === undefined || filter === value
}

function idParam (value: string, what: string): string {
  if (!ID_RE.test(value)) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `${what}: expected 1 to 256 printable characters`)
  return value
}
