/**
 * servers[].upstreamAuth oauth as an UpstreamCredentials: the caller's own linked access token
 * at the upstream, as `Authorization: Bearer`.
 *
 * - No link (never linked, unlinked, or dropped after a refused refresh): the link error
 *   (link-required.ts), never a 401 from the gateway.
 * - A link made with another upstream or authorization server than discovery finds now
 *   (servers[].url changed, the upstream's metadata names another authorization server, or a
 *   row older than bound links): not linked either, and its tokens are sent nowhere — the
 *   access token was issued for another resource, the refresh token by another server (RFC
 *   6749 6, RFC 9700 4.4). The row stays, unused, until the user links again or unlinks.
 * - Refreshed before it expires (REFRESH_MARGIN_MS ahead, so a request does not arrive with a
 *   token that dies on the way; without a refresh token, used until it expires), and on an upstream 401 (renew, once per request: the
 *   upstream may have revoked it early).
 * - A refresh the authorization server refuses (invalid_grant: revoked, expired) drops the
 *   link: the user gets the link error and links again. A refresh that fails otherwise
 *   (network, 5xx, or the operator's configured client refused: ConfiguredClientRefused,
 *   which linking again would not fix) is a 502, and the link stays.
 * - One refresh per (server, user) at a time: concurrent requests on this replica share it,
 *   and across replicas a short lock in the store (owned: released only by its holder) lets
 *   one refresh while the others wait for its result. A rotating refresh token (OAuth 2.1 4.3.1) used twice is refused the second
 *   time — and servers with reuse detection then revoke the whole grant.
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import * as oidc from 'openid-client'
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError } from '../errors.js'
import type { McpExchange } from '../upstreams/types.js'
import type { UpstreamCredentials } from '../upstreams/upstream-credentials.js'
import type { Store } from '../store/types.js'
import type { LinkedToken, LinkedTokens } from './linked-tokens.js'
import { isBoundTo, LinkNotBound, type UpstreamOAuthClient } from './oauth-client.js'
import { declaresUrlElicitation } from '../mcp/capabilities.js'
import { linkRequiredError } from './link-required.js'

/** Refresh this long before the access token's expiry. */
export const REFRESH_MARGIN_MS = 60_000
/** How long one replica may hold the refresh of a (server, user); the others wait at most this. */
const REFRESH_LOCK_MS = 10_000
const REFRESH_WAIT_STEP_MS = 100
const LOCK_PREFIX = 'upstream-refresh-lock:'

export interface OAuthCredentialsOptions {
  readonly server: string
  readonly publicUrl: string
  readonly client: UpstreamOAuthClient
  readonly tokens: LinkedTokens
  /** Holds the cross-replica refresh lock. */
  readonly store: Store
  /** Whether a session's client declared URL-mode elicitation (session-owners.ts). */
  readonly hasUrlElicitation: (server: string, sessionId: string) => Promise<boolean>
  readonly log: FastifyBaseLogger
  readonly now: () => number
}

export class OAuthCredentials implements UpstreamCredentials {
  private readonly refreshing = new Map<string, Promise<LinkedToken | undefined>>()

  constructor (private readonly opts: OAuthCredentialsOptions) {}

  authorizationFor = async (ex: McpExchange): Promise<string> => {
    // A machine client (client_credentials) has no browser and no account to link: a link would
    // never come, so it is told what the server needs instead of being sent to a page.
    if (ex.user.isClient === true) {
      throw new PortcullisError('PORTCULLIS_ERR_USER_FIELD_MISSING', `MCP server "${this.opts.server}" is reached with each user's own account at its provider (upstreamAuth: oauth); a machine client (client_credentials) has none: call it with a user's token`)
    }
    const token = await this.currentToken(ex.user.id)
    if (token === undefined) throw await this.linkRequired(ex)
    return `Bearer ${token}`
  }

  /**
   * The user's access token, refreshed first when it is about to expire; undefined: no link.
   * Without a refresh token there is nothing to refresh with: the token is used until it
   * actually expires (its row expires with it, linked-tokens.ts).
   */
  currentToken = async (userId: string): Promise<string | undefined> => {
    let linked = await this.bound(userId, await this.opts.tokens.get(this.opts.server, userId))
    if (linked?.expiresAtMs !== undefined) {
      const now = this.opts.now()
      if (linked.refreshToken === undefined) {
        if (linked.expiresAtMs <= now) linked = undefined
      } else if (linked.expiresAtMs - REFRESH_MARGIN_MS <= now) {
        linked = await this.refreshed(userId, linked)
      }
    }
    return linked?.accessToken
  }

  renew = async (ex: McpExchange, rejected: string): Promise<string> => {
    let linked = await this.bound(ex.user.id, await this.opts.tokens.get(this.opts.server, ex.user.id))
    // Another request refreshed it meanwhile: that one is new to the upstream.
    if (linked !== undefined && `Bearer ${linked.accessToken}` !== rejected) return `Bearer ${linked.accessToken}`
    if (linked !== undefined) linked = await this.refreshed(ex.user.id, linked)
    if (linked === undefined) throw await this.linkRequired(ex)
    return `Bearer ${linked.accessToken}`
  }

  /**
   * The link if it was made with the upstream and authorization server discovery finds now
   * (discovery runs once, then is kept: oauth-client.ts); otherwise undefined, not linked.
   * Every row read is checked, whoever wrote it: another replica may run another configuration.
   */
  private async bound (userId: string, linked: LinkedToken | undefined): Promise<LinkedToken | undefined> {
    if (linked === undefined) return undefined
    let current
    try {
      current = await this.opts.client.binding()
    } catch (err) {
      throw this.unavailable(userId, err, 'could not discover the upstream\'s authorization server')
    }
    if (isBoundTo(linked, current)) return linked
    this.opts.log.info({ server: this.opts.server, user: userId }, 'upstream link made with another upstream or authorization server (or before links were bound); treated as not linked')
    return undefined
  }

  /** The refreshed token, or undefined when the link is gone (no refresh token, refused, or bound elsewhere). */
  private async refreshed (userId: string, linked: LinkedToken): Promise<LinkedToken | undefined> {
    const running = this.refreshing.get(userId)
    if (running !== undefined) return await running
    const refresh = this.refresh(userId, linked).then(async (token) => await this.bound(userId, token)).finally(() => this.refreshing.delete(userId))
    this.refreshing.set(userId, refresh)
    return await refresh
  }

  /**
   * `seen`: the token found expiring or refused. Under the lock the row is read again and used
   * only if it is still that token: another replica may have rotated the refresh token (or the
   * user unlinked) between the first read and the lock, and a rotated refresh token spent twice
   * is refused — servers with reuse detection then revoke the whole grant (OAuth 2.1 4.3.1).
   * Rows are saved and deleted only over the version read under the lock (linked-tokens.ts).
   */
  private async refresh (userId: string, seen: LinkedToken): Promise<LinkedToken | undefined> {
    const { server, log, store } = this.opts
    if (seen.refreshToken === undefined) {
      // Refused by the upstream and nothing to refresh with: that link is dead (a newer one stays).
      const row = await this.opts.tokens.read(server, userId)
      if (row === undefined || row.token.accessToken !== seen.accessToken) return row?.token
      await this.opts.tokens.deleteIfUnchanged(server, userId, row)
      return undefined
    }
    // Discovery (several fetches) before the lock, which then covers only the token request.
    try {
      await this.opts.client.discover()
    } catch (err) {
      throw this.unavailable(userId, err, 'could not refresh an upstream token')
    }
    const lock = `${LOCK_PREFIX}${server}:${userId}`
    const owner = randomUUID()
    if (!await store.kvSetIfAbsent(lock, owner, this.opts.now() + REFRESH_LOCK_MS)) return await this.refreshedElsewhere(userId, seen)
    try {
      const row = await this.opts.tokens.read(server, userId)
      if (row === undefined || row.token.accessToken !== seen.accessToken) return row?.token
      const { refreshToken } = row.token
      if (refreshToken === undefined) return row.token
      let renewed: LinkedToken
      try {
        // The row's own binding: checked against the discovery whose token endpoint would get it.
        renewed = { ...await this.opts.client.refresh(refreshToken, row.token), linkedAtMs: row.token.linkedAtMs }
      } catch (err) {
        // Another upstream or authorization server now: the refresh token was not sent; not linked here.
        if (err instanceof LinkNotBound) return undefined
        if (!isRefusal(err)) throw this.unavailable(userId, err, 'could not refresh an upstream token')
        log.info({ server, user: userId, error: (err as oidc.ResponseBodyError).error }, 'upstream refused the refresh token; link removed')
        await this.opts.tokens.deleteIfUnchanged(server, userId, row)
        return undefined
      }
      if (!await this.opts.tokens.replace(server, userId, row, renewed)) {
        // Unlinked (or linked again) while the request was out: the row as it is now wins.
        log.info({ server, user: userId }, 'upstream link changed during a refresh; refreshed token discarded')
        return await this.opts.tokens.get(server, userId)
      }
      log.debug({ server, user: userId }, 'upstream token refreshed')
      return renewed
    } finally {
      // Only this refresh's own lock: past REFRESH_LOCK_MS another replica may hold a new one.
      await store.kvCompareAndSwap(lock, owner, undefined).catch(() => {})
    }
  }

  private unavailable (userId: string, err: unknown, what: string): PortcullisError {
    this.opts.log.warn({ server: this.opts.server, user: userId, err: { message: (err as Error).message } }, what)
    return new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', 'the upstream\'s authorization server could not be reached for your token; retry shortly', { cause: err })
  }

  /**
   * Another replica holds the refresh: wait for the row to change (a new access token, or no
   * link). Counted in steps rather than read from the injected clock, which tests may hold still.
   */
  private async refreshedElsewhere (userId: string, linked: LinkedToken): Promise<LinkedToken | undefined> {
    for (let waited = 0; waited < REFRESH_LOCK_MS; waited += REFRESH_WAIT_STEP_MS) {
      await delay(REFRESH_WAIT_STEP_MS)
      const current = await this.opts.tokens.get(this.opts.server, userId)
      if (current?.accessToken !== linked.accessToken) return current
    }
    throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', 'your token at the upstream is being refreshed elsewhere; retry shortly')
  }

  private async linkRequired (ex: McpExchange): Promise<PortcullisError> {
    const sessionId = ex.headers['mcp-session-id']
    const canElicitUrl = declaresUrlElicitation(ex.inspection) ||
      (typeof sessionId === 'string' && await this.opts.hasUrlElicitation(this.opts.server, sessionId).catch(() => false))
    return linkRequiredError(this.opts.publicUrl, this.opts.server, canElicitUrl)
  }
}

/** The authorization server said no to the refresh token (RFC 6749 5.2): only linking again helps. */
function isRefusal (err: unknown): boolean {
  return err instanceof oidc.ResponseBodyError && (err.error === 'invalid_grant' || err.error === 'unauthorized_client' || err.error === 'invalid_client')
}
