/**
 * servers[].upstreamAuth oauth as an UpstreamCredentials: the caller's own linked access token
 * at the upstream, as `Authorization: Bearer`.
 *
 * - No link (never linked, unlinked, or dropped after a refused refresh): the link error
 *   (link-required.ts), never a 401 from the gateway.
 * - Refreshed before it expires (REFRESH_MARGIN_MS ahead, so a request does not arrive with a
 *   token that dies on the way), and on an upstream 401 (renew, once per request: the
 *   upstream may have revoked it early).
 * - A refresh the authorization server refuses (invalid_grant: revoked, expired) drops the
 *   link: the user gets the link error and links again. A refresh that fails otherwise
 *   (network, 5xx) is a 502, and the link stays.
 * - One refresh per (server, user) at a time: concurrent requests on this replica share it,
 *   and across replicas a short lock in the store lets one refresh while the others wait for
 *   its result. A rotating refresh token (OAuth 2.1 4.3.1) used twice is refused the second
 *   time — and servers with reuse detection then revoke the whole grant.
 */
import { setTimeout as delay } from 'node:timers/promises'
import * as oidc from 'openid-client'
import type { FastifyBaseLogger } from 'fastify'
import { PortcullisError } from '../errors.js'
import type { McpExchange } from '../upstreams/types.js'
import type { UpstreamCredentials } from '../upstreams/upstream-credentials.js'
import type { Store } from '../store/types.js'
import type { LinkedToken, LinkedTokens } from './linked-tokens.js'
import type { UpstreamOAuthClient } from './oauth-client.js'
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
    const token = await this.currentToken(ex.user.id)
    if (token === undefined) throw await this.linkRequired(ex)
    return `Bearer ${token}`
  }

  /** The user's access token, refreshed first when it is about to expire; undefined: no link. */
  currentToken = async (userId: string): Promise<string | undefined> => {
    let linked = await this.opts.tokens.get(this.opts.server, userId)
    if (linked !== undefined && linked.expiresAtMs !== undefined && linked.expiresAtMs - REFRESH_MARGIN_MS <= this.opts.now()) {
      linked = await this.refreshed(userId, linked)
    }
    return linked?.accessToken
  }

  renew = async (ex: McpExchange, rejected: string): Promise<string> => {
    let linked = await this.opts.tokens.get(this.opts.server, ex.user.id)
    // Another request refreshed it meanwhile: that one is new to the upstream.
    if (linked !== undefined && `Bearer ${linked.accessToken}` !== rejected) return `Bearer ${linked.accessToken}`
    if (linked !== undefined) linked = await this.refreshed(ex.user.id, linked)
    if (linked === undefined) throw await this.linkRequired(ex)
    return `Bearer ${linked.accessToken}`
  }

  /** The refreshed token, or undefined when the link is gone (no refresh token, or refused). */
  private async refreshed (userId: string, linked: LinkedToken): Promise<LinkedToken | undefined> {
    const running = this.refreshing.get(userId)
    if (running !== undefined) return await running
    const refresh = this.refresh(userId, linked).finally(() => this.refreshing.delete(userId))
    this.refreshing.set(userId, refresh)
    return await refresh
  }

  private async refresh (userId: string, linked: LinkedToken): Promise<LinkedToken | undefined> {
    const { server, log } = this.opts
    if (linked.refreshToken === undefined) {
      await this.opts.tokens.delete(server, userId)
      return undefined
    }
    const lock = `${LOCK_PREFIX}${server}:${userId}`
    if (!await this.opts.store.kvSetIfAbsent(lock, '1', this.opts.now() + REFRESH_LOCK_MS)) return await this.refreshedElsewhere(userId, linked)
    try {
      const renewed: LinkedToken = { ...await this.opts.client.refresh(linked.refreshToken), linkedAtMs: linked.linkedAtMs }
      await this.opts.tokens.save(server, userId, renewed)
      log.debug({ server, user: userId }, 'upstream token refreshed')
      return renewed
    } catch (err) {
      if (isRefusal(err)) {
        log.info({ server, user: userId, error: (err as oidc.ResponseBodyError).error }, 'upstream refused the refresh token; link removed')
        await this.opts.tokens.delete(server, userId)
        return undefined
      }
      log.warn({ server, user: userId, err: { message: (err as Error).message } }, 'could not refresh an upstream token')
      throw new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', 'the upstream\'s authorization server could not be reached to refresh your token; retry shortly', { cause: err })
    } finally {
      await this.opts.store.kvDelete(lock).catch(() => {})
    }
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
