/**
 * Linking a user's account at an upstream (servers[].upstreamAuth oauth), for the account
 * pages (account/plugin.ts):
 *
 * 1. begin: state and PKCE verifier are kept server-side under the state, bound to the user
 *    and to their account session (its random id), for IDP-sign-in's ten minutes; the browser
 *    goes to the upstream's authorization endpoint.
 * 2. complete, at <publicUrl>/account/links/<server>/callback (under /account, so the account
 *    session cookie comes along): the state must belong to this server, this user and this
 *    account session — a link started by someone else and opened by a victim is refused, as
 *    in auth-server/idp-sign-in.ts — and is used once, even when two callbacks race; then the
 *    code is redeemed and the tokens stored (linked-tokens.ts), bound to the authorization
 *    server that issued them and the resource they are for.
 * 3. unlink: the row is deleted, and the tokens revoked at the upstream's authorization server
 *    when it has a revocation endpoint (best effort: the link is gone here either way) — only
 *    when that server is the one that issued them: a link bound elsewhere (or older than bound
 *    links) is deleted and its tokens sent nowhere. unlinkAll does it for every server when
 *    the account is offboarded or revoked.
 */
import * as oidc from 'openid-client'
import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../store/types.js'
import type { LinkedToken, LinkedTokens } from './linked-tokens.js'
import { ConfiguredClientRefused, isBoundTo, LinkNotBound, type UpstreamOAuthClient } from './oauth-client.js'

const PENDING_PREFIX = 'upstream-link-pending:'
const USED_PREFIX = 'upstream-link-used:'
export const LINK_TTL_MS = 10 * 60 * 1000

/** A link that cannot complete; the message is for the user's page. */
export class LinkError extends Error {
  override readonly name = 'LinkError'
}

export interface LinkState {
  readonly server: string
  readonly linkedAtMs?: number
}

/** What the account pages need (account/plugin.ts). */
export interface LinkedAccounts {
  /** Servers an account can be linked at, in configuration order. */
  readonly servers: readonly string[]
  list: (userId: string) => Promise<LinkState[]>
  /** The authorization URL to send the browser to. */
  begin: (server: string, userId: string, sessionId: string) => Promise<URL>
  /** Ends a link from the callback's query; throws LinkError for the page. */
  complete: (server: string, userId: string, sessionId: string, query: URLSearchParams) => Promise<void>
  /** False when there was no link. */
  unlink: (server: string, userId: string) => Promise<boolean>
  /** Every link of an offboarded or revoked user; the number there were. */
  unlinkAll: (userId: string) => Promise<number>
}

interface PendingLink {
  readonly server: string
  readonly userId: string
  readonly sessionId: string
  readonly state: string
  readonly verifier: string
}

export class UpstreamLinks implements LinkedAccounts {
  readonly servers: readonly string[]

  constructor (
    private readonly clients: ReadonlyMap<string, UpstreamOAuthClient>,
    private readonly tokens: LinkedTokens,
    private readonly store: Store,
    private readonly log: FastifyBaseLogger,
    private readonly now: () => number,
  ) {
    this.servers = [...clients.keys()]
  }

  /** A link bound elsewhere is listed as not linked: calls would get the link error (oauth-credentials.ts). */
  async list (userId: string): Promise<LinkState[]> {
    return await Promise.all(this.servers.map(async (server) => {
      const linked = await this.tokens.get(server, userId)
      return linked === undefined || !await this.isUsable(server, linked) ? { server } : { server, linkedAtMs: linked.linkedAtMs }
    }))
  }

  /**
   * Whether calls would use this link. Without discovery (the upstream unreachable) a bound row
   * is listed as linked: the page reports what is stored rather than fail, and the calls say
   * the rest. A row without a binding is never usable.
   */
  private async isUsable (server: string, linked: LinkedToken): Promise<boolean> {
    if (linked.issuer === undefined || linked.resource === undefined) return false
    return await this.client(server).binding().then((current) => isBoundTo(linked, current), () => true)
  }

  async begin (server: string, userId: string, sessionId: string): Promise<URL> {
    const client = this.client(server)
    const pending: PendingLink = { server, userId, sessionId, state: oidc.randomState(), verifier: oidc.randomPKCECodeVerifier() }
    const url = await client.authorizationUrl(pending.state, pending.verifier)
    await this.store.kvSet(PENDING_PREFIX + pending.state, JSON.stringify(pending), this.now() + LINK_TTL_MS)
    return url
  }

  async complete (server: string, userId: string, sessionId: string, query: URLSearchParams): Promise<void> {
    const state = query.get('state') ?? ''
    const stored = state === '' ? undefined : await this.store.kvGet(PENDING_PREFIX + state)
    const pending = stored === undefined ? undefined : JSON.parse(stored) as PendingLink
    if (pending?.server !== server || pending.userId !== userId || pending.sessionId !== sessionId) {
      throw new LinkError('This link is no longer valid, or was started in another browser or by another account.')
    }
    const hit = await this.store.hit(USED_PREFIX + state, LINK_TTL_MS)
    await this.store.kvDelete(PENDING_PREFIX + state)
    if (hit.count !== 1) throw new LinkError('This link was already used.')
    const refused = query.get('error')
    if (refused !== null) throw new LinkError(`The provider did not link your account (${refused.slice(0, 100)}).`)
    const client = this.client(server)
    const callbackUrl = new URL(client.redirectUri)
    callbackUrl.search = query.toString()
    let tokens
    try {
      tokens = await client.redeem(callbackUrl, pending.state, pending.verifier)
    } catch (err) {
      if (err instanceof ConfiguredClientRefused) {
        // Trying again cannot help the user: the gateway's own client credentials are wrong.
        this.log.error({ server, user: userId, err: { message: err.message } }, 'upstream refused the gateway client credentials')
        throw new LinkError(`The provider refused this gateway's own credentials, so no account can be linked at "${server}" until an administrator corrects them.`)
      }
      this.log.warn({ server, user: userId, err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'could not redeem an upstream authorization code')
      throw new LinkError('The provider\'s answer could not be used to link your account. Try again.')
    }
    await this.tokens.save(server, userId, { ...tokens, linkedAtMs: this.now() })
  }

  async unlink (server: string, userId: string): Promise<boolean> {
    const linked = await this.tokens.get(server, userId)
    if (linked === undefined) return false
    await this.tokens.delete(server, userId)
    const client = this.client(server)
    // Best effort: the link is gone here whatever the upstream's authorization server says.
    // revoke() sends a token only to the server that issued it (LinkNotBound otherwise).
    try {
      if (linked.refreshToken !== undefined) await client.revoke(linked.refreshToken, 'refresh_token', linked)
      await client.revoke(linked.accessToken, 'access_token', linked)
    } catch (err) {
      if (err instanceof LinkNotBound) {
        this.log.info({ server, user: userId }, 'unlinked upstream token not revoked: it was issued by another authorization server or for another upstream')
      } else {
        this.log.warn({ server, user: userId, err: { message: (err as Error).message } }, 'could not revoke an unlinked upstream token')
      }
    }
    return true
  }

  /**
   * An account the gateway no longer vouches for (IdP offboarding, admin revoke) keeps no
   * upstream tokens: each link is deleted and revoked upstream (best effort, as unlink).
   */
  async unlinkAll (userId: string): Promise<number> {
    let count = 0
    for (const server of this.servers) {
      if (await this.unlink(server, userId)) count++
    }
    if (count > 0) this.log.info({ user: userId, links: count }, 'upstream links removed for an ended account')
    return count
  }

  private client (server: string): UpstreamOAuthClient {
    const client = this.clients.get(server)
    if (client === undefined) throw new Error(`no upstreamAuth oauth server named ${server}`)
    return client
  }
}
