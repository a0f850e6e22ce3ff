/**
 * Whom an API key acts for, and what it may be given. A key is never more
 * than its user: its servers are those the user's identity reaches under each
 * server's `access` rule, its scopes those the authorization server would grant
 * for those servers. The identity is looked up afresh (never frozen into the
 * key): a local user removed from YAML, or an identity-provider user the
 * provider has disabled, has no identity, and so no working keys.
 */
import type { ServerConfig } from '../config/schema.js'
import type { UserIdentity } from '../identity.js'
import { ServerPolicy } from '../policy/policy.js'
import type { ResourceCatalog } from '../auth-server/resources.js'
import type { UserDirectory } from '../auth-server/users.js'
import { accountProfile, type ExternalAccounts } from '../auth-server/external-accounts.js'

/** What a user may put on a key: per reachable server, its grantable scopes. */
export type Entitlements = ReadonlyMap<string, readonly string[]>

export class KeyOwners {
  private readonly policies: ReadonlyMap<string, ServerPolicy>

  constructor (
    private readonly users: UserDirectory,
    private readonly externalAccounts: ExternalAccounts,
    private readonly servers: readonly ServerConfig[],
    private readonly catalog: ResourceCatalog,
    /** The identity providers configured now (auth.identityProviders names). */
    private readonly providers: ReadonlySet<string>,
  ) {
    this.policies = new Map(servers.map((s) => [s.name, new ServerPolicy(s)]))
  }

  /**
   * The user as their OAuth tokens describe them: a local user from YAML, or an
   * IdP user from what the provider last said (kept current by revalidation).
   */
  async identityOf (userId: string): Promise<UserIdentity | undefined> {
    const profile = await accountProfile(this.users, this.externalAccounts, userId, this.providers)
    if (profile === undefined) return undefined
    return { id: profile.id, name: profile.preferred_username, groups: profile.groups, ...(profile.email === undefined ? {} : { email: profile.email }) }
  }

  entitlementsOf (user: UserIdentity): Entitlements {
    const caller = { name: user.name, groups: user.groups ?? [], clientId: undefined, isClient: false, scopes: undefined }
    const entitled = new Map<string, readonly string[]>()
    for (const server of this.servers) {
      if (this.policies.get(server.name)?.reach(caller).allowed !== true) continue
      entitled.set(server.name, this.catalog.grantableScopes(this.catalog.urlOf(server.name)))
    }
    return entitled
  }

  /**
   * Checks a request for a key against the user's entitlements; returns the scopes to
   * store (all of the servers' grantable scopes when none are named), or throws a
   * KeyRequestError saying what the user cannot have.
   */
  checkRequest (entitled: Entitlements, servers: readonly string[], scopes: readonly string[] | undefined): string[] {
    if (servers.length === 0) throw new KeyRequestError('choose at least one server')
    const known = new Set(this.servers.map((s) => s.name))
    for (const server of servers) {
      if (!known.has(server)) throw new KeyRequestError(`unknown server "${server}"`)
      if (!entitled.has(server)) throw new KeyRequestError(`the user may not reach server "${server}" (its access rule)`)
    }
    const grantable = new Set(servers.flatMap((s) => entitled.get(s) ?? []))
    if (scopes === undefined || scopes.length === 0) return [...grantable]
    for (const scope of scopes) {
      if (!grantable.has(scope)) throw new KeyRequestError(`scope "${scope}" cannot be granted for ${servers.join(', ')} (grantable: ${[...grantable].join(', ')})`)
    }
    return [...new Set(scopes)]
  }
}

/** A key request asks for something the user cannot have, or is malformed. */
export class KeyRequestError extends Error {
  readonly code = 'PORTCULLIS_ERR_API_KEY_REQUEST'
  constructor (message: string) {
    super(message)
    this.name = 'KeyRequestError'
  }
}
