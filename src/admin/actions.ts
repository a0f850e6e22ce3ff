/**
 * What an administrator does, shared by the admin API (plugin.ts) and the admin page
 * (page-routes.ts), so both act and audit the same way: each action does one thing through the
 * plain functions beside it and returns what to answer (the API's JSON body, a sentence for the
 * page) and what to record; `audited` runs one for an actor and leaves exactly one audit record,
 * refusals and failures included, never the credential presented.
 */
import type { FastifyRequest } from 'fastify'
import { PortcullisError } from '../errors.js'
import type { AdminActionEntry, AuditLog } from '../observability/audit.js'
import type { Upstream } from '../upstreams/types.js'
import type { LinkedAccounts } from '../upstream-auth/upstream-links.js'
import type { BlockedUsers } from './blocked-users.js'
import { revokeUser, type RevokeUserDeps } from './revoke-user.js'
import { revokeClient, type RevokeClientDeps } from './revoke-client.js'
import { approveServerTools, type ApprovalRequest, type ServerToolsDeps } from './server-tools.js'

export interface Outcome {
  readonly status?: number
  readonly body: unknown
  /** One sentence saying what happened, for the admin page's notice. */
  readonly summary?: string
  readonly target?: AdminActionEntry['target']
  readonly outcome?: AdminActionEntry['outcome']
  readonly detail?: AdminActionEntry['detail']
}

export type Target = NonNullable<AdminActionEntry['target']>
export type AdminRecord = (request: FastifyRequest, entry: Omit<AdminActionEntry, 'ip'>) => void

/** One audit record (and one log line, `message`) per admin call. */
export function adminRecorder (audit: AuditLog | undefined, message: string): AdminRecord {
  return (request, entry) => {
    const full = { ...entry, ip: request.ip }
    audit?.recordAdminAction(full)
    request.log.info({ actor: full.actor, action: full.action, target: full.target, outcome: full.outcome }, message)
  }
}

/**
 * Runs `work` for `actor` and records its outcome: the result's (ok, or not_found), or, when it
 * throws, refused (a coded error below 500) or failed — and rethrows for the caller to answer.
 */
export async function audited (record: AdminRecord, request: FastifyRequest, call: { action: string, actor: string, target?: Target }, work: () => Promise<Outcome>): Promise<Outcome> {
  const named = call.target === undefined ? {} : { target: call.target }
  let result: Outcome
  try {
    result = await work()
  } catch (err) {
    const outcome = err instanceof PortcullisError && err.status < 500 ? 'refused' : 'failed'
    record(request, { actor: call.actor, action: call.action, ...named, outcome, detail: { code: err instanceof PortcullisError ? err.code : 'PORTCULLIS_ERR_INTERNAL' } })
    throw err
  }
  const recorded = result.target === undefined ? named : { target: result.target }
  record(request, { actor: call.actor, action: call.action, ...recorded, outcome: result.outcome ?? 'ok', ...(result.detail === undefined ? {} : { detail: result.detail }) })
  return result
}

export interface AdminActionsOptions {
  readonly upstreams: ReadonlyMap<string, Upstream>
  /** An upstream a reload replaced that still holds this session (src/reload/upstream-pool.ts holderOf). */
  readonly sessionHolder: (server: string, sessionId: string) => Upstream | undefined
  /** cluster.advertiseUrl, or 'local'. */
  readonly replica: string
  readonly blocked: BlockedUsers
  readonly revoke: RevokeUserDeps
  readonly revokeClient: RevokeClientDeps
  readonly tools: ServerToolsDeps
  /** Users' linked accounts at servers with upstreamAuth: oauth; absent when there are none. */
  readonly links: LinkedAccounts | undefined
  readonly audit: AuditLog | undefined
}

export interface AdminActions {
  readonly revokeUser: (userId: string) => Promise<Outcome>
  readonly block: (userId: string, by: string) => Promise<Outcome>
  readonly unblock: (userId: string) => Promise<Outcome>
  readonly revokeClient: (clientId: string) => Promise<Outcome>
  readonly endSession: (server: string, sessionId: string) => Promise<Outcome>
  readonly approveTools: (server: string, approval: ApprovalRequest, by: string) => Promise<Outcome>
  readonly unlinkAccount: (userId: string, server: string) => Promise<Outcome>
}

function notFound (message: string): Outcome {
  return { status: 404, outcome: 'not_found', summary: message, body: { error: { code: 'PORTCULLIS_ERR_ADMIN_NOT_FOUND', message: `Not found: ${message}` } } }
}

function plural (n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`
}

/** The actions; `by` is the actor's name (admin-token, or an administrator's user id). */
export function adminActions (opts: AdminActionsOptions): AdminActions {
  return {
    revokeUser: async (userId: string): Promise<Outcome> => {
      const done = await revokeUser(opts.revoke, userId)
      if (done === undefined) return notFound(`no user ${userId} is known to this gateway, and there was nothing of theirs to revoke`)
      return { detail: { ...done }, summary: `Revoked ${userId}: ${plural(done.grants, 'grant')} and ${plural(done.apiKeys, 'API key')}; their sessions ended.`, body: { user: userId, revoked: done } }
    },

    block: async (userId: string, by: string): Promise<Outcome> => {
      const isChanged = await opts.blocked.block(userId, by)
      // Blocked, no token is issued to them; unblocked later, the browser that was signed in
      // must not skip the password as if nothing had happened.
      await opts.revoke.endSignIns(userId)
      return { detail: { changed: isChanged }, summary: isChanged ? `Blocked ${userId}.` : `${userId} was already blocked.`, body: { user: userId, blocked: true, changed: isChanged } }
    },

    unblock: async (userId: string): Promise<Outcome> => {
      const isChanged = await opts.blocked.unblock(userId)
      return { detail: { changed: isChanged }, summary: isChanged ? `Unblocked ${userId}.` : `${userId} was not blocked.`, body: { user: userId, blocked: false, changed: isChanged } }
    },

    revokeClient: async (clientId: string): Promise<Outcome> => {
      const done = await revokeClient(opts.revokeClient, clientId)
      if (done === undefined) return notFound('no registered client has this id')
      return { detail: { ...done }, summary: `Revoked client ${clientId} (${plural(done.grants, 'grant')}); it must register again.`, body: { clientId, revoked: done } }
    },

    endSession: async (server: string, sessionId: string): Promise<Outcome> => {
      // A session opened before a reload may live on the replaced (draining) upstream, as for mcp.ts.
      const upstream = opts.sessionHolder(server, sessionId) ?? opts.upstreams.get(server)
      if (upstream === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_NOT_FOUND', `no MCP server named ${JSON.stringify(server.slice(0, 64))}`)
      const isEnded = await upstream.endSession?.(sessionId, 'ended by an administrator') ?? false
      if (!isEnded) return notFound(`this replica (${opts.replica}) holds no session ${sessionId} on "${upstream.name}"`)
      return { summary: `Ended session ${sessionId} on ${upstream.name}.`, body: { server: upstream.name, sessionId, ended: true } }
    },

    approveTools: async (server: string, approval: ApprovalRequest, by: string): Promise<Outcome> => {
      const approved = await approveServerTools(opts.tools, server, approval, by)
      // The approval also joins the tool definition records, as the CLI's does: one place to read who approved what.
      if (approved.length > 0) opts.audit?.recordToolDefinitions({ server, action: 'approved', by, changes: approved })
      return {
        detail: { approved: approved.map((c) => ({ name: c.name, change: c.change })) },
        summary: approved.length === 0 ? `Nothing to approve on ${server}.` : `Approved on ${server}: ${approved.map((c) => `${c.name} (${c.change})`).join(', ')}.`,
        body: { server, approvedBy: by, approved },
      }
    },

    // The user's tokens at the upstream are deleted here and revoked there (best effort: upstream-links.ts).
    unlinkAccount: async (userId: string, server: string): Promise<Outcome> => {
      const links = opts.links
      if (links?.servers.includes(server) !== true) return notFound('no server with upstreamAuth: oauth has this name')
      if (!await links.unlink(server, userId)) return notFound('the user has no linked account at this server')
      return { summary: `Unlinked ${userId}'s account at ${server}.`, body: { user: userId, server, unlinked: true } }
    },
  }
}
