/**
 * What the admin API lists: plain functions over the gateway's own records, no Fastify.
 * Each returns every item; the route pages them (paging.ts) after filtering.
 */
import type { ApiKeys } from '../account/api-keys.js'
import type { ClientConfig } from '../config/schema.js'
import type { Store } from '../store/types.js'
import type { Upstream } from '../upstreams/types.js'
import type { BlockedUsers } from './blocked-users.js'
import type { UsersSeen } from './users-seen.js'

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
export function sessionItems (upstreams: ReadonlyMap<string, Upstream>, replica: string, nowMs: number): SessionItem[] {
  return [...upstreams.values()].flatMap((upstream) => (upstream.liveSessions?.() ?? []).map((s) => ({
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
}

/** Clients from the YAML and those registered (a scan of the store's Client records). */
export async function clientItems (store: Store, configured: readonly ClientConfig[]): Promise<ClientItem[]> {
  const out: ClientItem[] = configured.map((c) => ({ clientId: c.clientId, name: c.name ?? null, redirectHosts: redirectHosts(c.redirectUris), source: 'config', createdAt: null, expiresAt: null }))
  const yaml = new Set(configured.map((c) => c.clientId))
  for await (const entry of store.entries()) {
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
  return out
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
