/**
 * What the admin API and the admin page list: plain functions over the gateway's own records,
 * no Fastify. The `…Items` functions return every item; the `…Page` ones read a query string's
 * filters and paging (paging.ts) the one way both the API and the page use.
 */
import type { ApiKeys } from '../account/api-keys.js'
import type { ClientConfig } from '../config/schema.js'
import type { Payload, Store } from '../store/types.js'
import type { AccountGrants } from '../auth-server/account-grants.js'
import type { Upstream } from '../upstreams/types.js'
import type { BlockedUsers } from './blocked-users.js'
import type { UsersSeen } from './users-seen.js'
import type { LinkedAccounts } from '../upstream-auth/upstream-links.js'
import { paginate, pageQuery, type Page } from './paging.js'
import { PortcullisError } from '../errors.js'

/** A query string as Fastify parses it. */
export type ListQuery = Readonly<Record<string, unknown>>

/** Ids in paths and filters: any printable text up to 256 characters (user ids of IdP users hold a colon). */
export const ID_RE = /^\P{Cc}{1,256}$/u

/** An id from a path, checked (a coded 400 naming `what` otherwise). */
export function idParam (value: string, what: string): string {
  if (!ID_RE.test(value)) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `${what}: expected 1 to 256 printable characters`)
  return value
}

/** A filter given in the query matches exactly; an absent one matches everything. */
function matches (filter: unknown, value: string): boolean {
  return filter === undefined || filter === value
}

export interface SessionItem {
  readonly server: string
  readonly transport: string
  readonly sessionId: string
  readonly user: string
  readonly client: string
  readonly openedAt: string
  readonly ageS: number
  readonly lastUsedAt: string
  readonly pid?: number
  /** This replica's cluster.advertiseUrl, or 'local'. */
  readonly replica: string
}

/** Live sessions this replica holds, every server. */
export function sessionItems (upstreams: Iterable<Upstream>, replica: string, nowMs: number): SessionItem[] {
  return [...upstreams].flatMap((upstream) => (upstream.liveSessions?.() ?? []).map((s) => ({
    server: upstream.name,
    transport: upstream.transport,
    sessionId: s.sessionId,
    user: s.user,
    client: s.client,
    openedAt: new Date(s.openedAtMs).toISOString(),
    ageS: Math.max(0, Math.floor((nowMs - s.openedAtMs) / 1000)),
    lastUsedAt: new Date(s.lastUsedAtMs).toISOString(),
    ...(s.pid === undefined ? {} : { pid: s.pid }),
    replica,
  })))
}

/** Filters: server, user. */
export function sessionsPage (sessions: readonly SessionItem[], query: ListQuery): Page<SessionItem> {
  const page = pageQuery(query)
  const items = sessions.filter((s) => matches(query.server, s.server) && matches(query.user, s.user))
  return paginate(items, (s) => `${s.server}\n${s.sessionId}`, page)
}

export interface ClientItem {
  readonly clientId: string
  readonly name: string | null
  /** Where its redirects go (scheme and host; custom schemes as scheme://). */
  readonly redirectHosts: string[]
  /** config: listed in auth.clients; registered: Dynamic Client Registration. */
  readonly source: 'config' | 'registered'
  readonly createdAt: string | null
  /** Registered clients live registeredClientTtl past their last sign-in (unusedClientTtl before the first). */
  readonly expiresAt: string | null
  /** Live grants: users who consented to it and have not been revoked. */
  readonly grants: number
}

/** Clients from the YAML and those registered, with their grants (one scan of the store's Client and Grant records). */
export async function clientItems (store: Store, configured: readonly ClientConfig[]): Promise<ClientItem[]> {
  const out: Array<Omit<ClientItem, 'grants'>> = configured.map((c) => ({ clientId: c.clientId, name: c.name ?? null, redirectHosts: redirectHosts(c.redirectUris), source: 'config', createdAt: null, expiresAt: null }))
  const yaml = new Set(configured.map((c) => c.clientId))
  const grants = new Map<string, number>()
  for await (const entry of store.entries()) {
    if (entry.kind === 'record' && entry.model === 'Grant' && typeof entry.payload.clientId === 'string') grants.set(entry.payload.clientId, (grants.get(entry.payload.clientId) ?? 0) + 1)
    if (entry.kind !== 'record' || entry.model !== 'Client' || yaml.has(entry.id)) continue
    const p = entry.payload
    const issuedAtS = typeof p.client_id_issued_at === 'number' ? p.client_id_issued_at : undefined
    out.push({
      clientId: entry.id,
      name: typeof p.client_name === 'string' ? p.client_name : null,
      redirectHosts: redirectHosts(Array.isArray(p.redirect_uris) ? p.redirect_uris : []),
      source: 'registered',
      createdAt: issuedAtS === undefined ? null : new Date(issuedAtS * 1000).toISOString(),
      expiresAt: entry.expiresAtMs === undefined ? null : new Date(entry.expiresAtMs).toISOString(),
    })
  }
  return out.map((c) => ({ ...c, grants: grants.get(c.clientId) ?? 0 }))
}

/** Filter: source. */
export async function clientsPage (store: Store, configured: readonly ClientConfig[], query: ListQuery): Promise<Page<ClientItem>> {
  const page = pageQuery(query)
  const items = (await clientItems(store, configured)).filter((c) => matches(query.source, c.source))
  return paginate(items, (c) => c.clientId, page)
}

function redirectHosts (uris: readonly unknown[]): string[] {
  const hosts = uris.flatMap((uri) => {
    try {
      const url = new URL(String(uri))
      return [url.host === '' ? `${url.protocol}//` : url.host]
    } catch {
      return []
    }
  })
  return [...new Set(hosts)]
}

export interface UserItem {
  readonly id: string
  readonly provider: string | null
  readonly groups: readonly string[]
  readonly lastSeen: string | null
  readonly blocked: boolean
  /** Live MCP sessions on this replica. */
  readonly sessions: number
}

/** Users seen, and blocked users never seen (blocked ahead of their first sign-in). */
export async function userItems (seen: UsersSeen, blocked: BlockedUsers, sessions: readonly SessionItem[]): Promise<UserItem[]> {
  const count = (id: string): number => sessions.filter((s) => s.user === id).length
  const items: UserItem[] = (await seen.list()).map((u) => ({ id: u.id, provider: u.provider, groups: u.groups, lastSeen: new Date(u.lastSeenMs).toISOString(), blocked: blocked.has(u.id), sessions: count(u.id) }))
  const listed = new Set(items.map((u) => u.id))
  for (const b of blocked.list()) {
    if (!listed.has(b.userId)) items.push({ id: b.userId, provider: null, groups: [], lastSeen: null, blocked: true, sessions: count(b.userId) })
  }
  return items
}

/** The `blocked` filter: absent, `true` or `false` — anything else would silently match nobody. */
function blockedFilter (query: ListQuery): boolean | undefined {
  if (query.blocked === undefined) return undefined
  if (query.blocked === 'true' || query.blocked === 'false') return query.blocked === 'true'
  throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', 'blocked: expected true or false')
}

/** Filters: provider, group, blocked (true / false). */
export async function usersPage (seen: UsersSeen, blocked: BlockedUsers, sessions: readonly SessionItem[], query: ListQuery): Promise<Page<UserItem>> {
  const page = pageQuery(query)
  const isBlocked = blockedFilter(query)
  const items = (await userItems(seen, blocked, sessions))
    .filter((u) => matches(query.provider, u.provider ?? '') && (query.group === undefined || u.groups.includes(String(query.group))) && (isBlocked === undefined || u.blocked === isBlocked))
  return paginate(items, (u) => u.id, page)
}

export interface ApiKeyItem {
  readonly keyId: string
  readonly user: string
  readonly name: string
  readonly servers: readonly string[]
  readonly scopes: readonly string[]
  readonly createdAt: string
  readonly expiresAt: string
  readonly lastUsedAt: string | null
}

/** A user's live API keys (never their secrets: only hashes are stored). */
export async function apiKeyItems (keys: ApiKeys, userId: string): Promise<ApiKeyItem[]> {
  return (await keys.list(userId)).map((k) => ({
    keyId: k.keyId,
    user: k.userId,
    name: k.name,
    servers: k.servers,
    scopes: k.scopes,
    createdAt: new Date(k.createdAtMs).toISOString(),
    expiresAt: new Date(k.expiresAtMs).toISOString(),
    lastUsedAt: k.lastUsedAtMs === undefined ? null : new Date(k.lastUsedAtMs).toISOString(),
  }))
}

/** The user whose keys or linked accounts are asked for (`?user=`): required. */
export function userQuery (query: ListQuery, what: string): string {
  const user = typeof query.user === 'string' && ID_RE.test(query.user) ? query.user : undefined
  if (user === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `user: expected ?user=<user id> (${what} are listed per user)`)
  return user
}

export async function apiKeysPage (keys: ApiKeys, userId: string, query: ListQuery): Promise<Page<ApiKeyItem>> {
  const page = pageQuery(query)
  return paginate(await apiKeyItems(keys, userId), (k) => k.keyId, page)
}

export interface LinkedAccountItem {
  readonly server: string
  readonly isLinked: boolean
  readonly linkedAt?: string
}

/** A user's linked upstream accounts, per server with upstreamAuth: oauth (none without such servers). */
export async function linkedAccountItems (links: LinkedAccounts | undefined, userId: string): Promise<LinkedAccountItem[]> {
  const states = links === undefined ? [] : await links.list(userId)
  return states.map((s) => ({ server: s.server, isLinked: s.linkedAtMs !== undefined, ...(s.linkedAtMs === undefined ? {} : { linkedAt: new Date(s.linkedAtMs).toISOString() }) }))
}

export interface GrantItem {
  readonly grantId: string
  readonly clientId: string | null
  /** Each resource (MCP server URL, or the admin API) with the scopes granted for it. */
  readonly resources: Readonly<Record<string, string>>
  readonly createdAt: string | null
  readonly expiresAt: string | null
  /** The grant's refresh-token family: tokens not yet rotated away, the newest's rotation count and issue time. */
  readonly refreshTokens: { readonly live: number, readonly rotations: number, readonly lastIssuedAt: string | null }
}

/** A user's live grants (one per client they consented to), with their refresh-token families. */
export async function grantItems (store: Store, grants: AccountGrants, userId: string): Promise<GrantItem[]> {
  const items: GrantItem[] = []
  for (const grantId of await grants.of(userId)) {
    const grant = await store.find('Grant', grantId)
    // Listed until it expires, but revoked or expired grants have no record any more.
    if (grant === undefined || grant.accountId !== userId) continue
    const tokens = (await store.findByGrantId(grantId)).filter((r) => r.model === 'RefreshToken').map((r) => r.payload)
    const live = tokens.filter((p) => typeof p.consumed !== 'number')
    // Each rotation counts one more than the token it replaced: the newest has the most.
    const newest = tokens.reduce<Payload | undefined>((a, p) => a === undefined || numberOf(p.rotations) > numberOf(a.rotations) ? p : a, undefined)
    items.push({
      grantId,
      clientId: typeof grant.clientId === 'string' ? grant.clientId : null,
      resources: scopesByResource(grant.resources),
      createdAt: isoFromSeconds(grant.iat),
      expiresAt: isoFromSeconds(grant.exp),
      refreshTokens: { live: live.length, rotations: numberOf(newest?.rotations), lastIssuedAt: isoFromSeconds(newest?.iat) },
    })
  }
  return items
}

export async function grantsPage (store: Store, grants: AccountGrants, userId: string, query: ListQuery): Promise<Page<GrantItem>> {
  const page = pageQuery(query)
  return paginate(await grantItems(store, grants, userId), (g) => g.grantId, page)
}

function scopesByResource (resources: unknown): Record<string, string> {
  if (resources === null || typeof resources !== 'object') return {}
  return Object.fromEntries(Object.entries(resources).filter(([, scope]) => typeof scope === 'string') as Array<[string, string]>)
}

function numberOf (value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0
}

function isoFromSeconds (value: unknown): string | null {
  return typeof value === 'number' && Number.isFinite(value) ? new Date(value * 1000).toISOString() : null
}
