/**
 * Users who exist at an identity provider, not in YAML: `<provider>:<subject>`.
 * What the IdP last said about them is kept in the store (shared by replicas),
 * so token claims, policy and audit see the same name, email and groups the
 * sign-in, the last revalidation or an ID-JAG assertion established.
 */
import type { Store } from '../store/types.js'
import type { ExternalIdentity } from './idp-identity.js'
import type { UserDirectory } from './users.js'

const KEY_PREFIX = 'idp-account:'

export interface ExternalAccount extends ExternalIdentity {
  /** When the IdP last vouched for this user (sign-in, revalidation, assertion), ms. */
  readonly validatedAtMs: number
  /** Set when the IdP refused the user at revalidation or logged them out: sign-in and tokens stop working. */
  readonly disabled?: { readonly atMs: number, readonly reason: string }
}

/** Account ids of IdP users carry the provider's name and a colon; local usernames cannot contain one. */
export function isExternalAccountId (id: string): boolean {
  return id.includes(':')
}

export class ExternalAccounts {
  constructor (private readonly store: Store) {}

  async find (id: string): Promise<ExternalAccount | undefined> {
    if (!isExternalAccountId(id)) return undefined
    const stored = await this.store.kvGet(KEY_PREFIX + id)
    return stored === undefined ? undefined : JSON.parse(stored) as ExternalAccount
  }

  /** Records what the IdP just said about a user (and clears an earlier disablement: the IdP vouched again). */
  async save (identity: ExternalIdentity, nowMs: number): Promise<ExternalAccount> {
    const account: ExternalAccount = { ...identity, groups: [...identity.groups], validatedAtMs: nowMs }
    await this.store.kvSet(KEY_PREFIX + identity.id, JSON.stringify(account))
    return account
  }

  async disable (id: string, reason: string, nowMs: number): Promise<void> {
    const account = await this.find(id)
    if (account === undefined) return
    await this.store.kvSet(KEY_PREFIX + id, JSON.stringify({ ...account, disabled: { atMs: nowMs, reason } }))
  }
}

/** What tokens (and API keys) say about an account. */
export interface AccountProfile {
  /** The account id: the token's `sub`. */
  readonly id: string
  /** The name policy (`access.users`), templates (`${user.name}`) and audit read; qualified by the provider for IdP users. */
  readonly preferred_username: string
  readonly groups: readonly string[]
  readonly email: string | undefined
  /** A display name. */
  readonly name: string | undefined
}

/**
 * A local user from YAML, or a user an identity provider vouched for (not one it
 * has since disabled): the one lookup OAuth tokens and API keys share, so both
 * describe a person the same way.
 */
export async function accountProfile (users: UserDirectory, externalAccounts: ExternalAccounts, accountId: string, providers: ReadonlySet<string>): Promise<AccountProfile | undefined> {
  const local = users.find(accountId)
  if (local !== undefined) return { id: local.username, preferred_username: local.username, groups: local.groups, email: local.email, name: local.name }
  const external = await externalAccounts.find(accountId)
  // A provider taken out of auth.identityProviders vouches for nobody: its accounts are no one's
  // (their API keys too, whether or not a reload saw them sign in lately).
  if (external === undefined || external.disabled !== undefined || !providers.has(external.provider)) return undefined
  // Qualified by the provider: the same name at two IdPs (or a local user's name) is another person,
  // and policy (access.users) and per-user templates (${user.name}) read this name.
  return { id: external.id, preferred_username: `${external.provider}:${external.name}`, groups: external.groups, email: external.email, name: external.name }
}
