/**
 * One set of rules for a new key, whoever asks (the account page, `portcullis
 * keys create`): keys enabled, the user exists, the servers and scopes are the
 * user's to give, the name is short and printable, the lifetime within maxTtl.
 */
import type { ApiKeysConfig } from '../config/schema.js'
import { parseDuration } from '../config/units.js'
import { ApiKeyLimitError, MAX_KEY_NAME_CHARS, type ApiKeyRecord, type ApiKeys } from './api-keys.js'
import { KeyRequestError, type KeyOwners } from './key-owners.js'

export interface KeyRequest {
  readonly userId: string
  readonly name: string
  readonly servers: readonly string[]
  /** Empty or undefined: every scope the servers grant. */
  readonly scopes: readonly string[] | undefined
  /** A duration (`30d`, `12h`); undefined: auth.apiKeys.defaultTtl. */
  readonly expires: string | undefined
}

export interface KeyIssuerDeps {
  readonly settings: ApiKeysConfig
  readonly keys: ApiKeys
  readonly owners: KeyOwners
  readonly now: () => number
}

export const API_KEYS_DISABLED_MESSAGE = 'API keys are disabled on this gateway (auth.apiKeys.enabled: false)'
const NAME_RE = /^[\p{L}\p{N}\p{P}\p{Zs}]*$/u

export function lifetimeOf (expires: string | undefined, settings: ApiKeysConfig): number {
  if (expires === undefined || expires.trim() === '') return settings.defaultTtl
  const ms = parseDuration(expires.trim())
  if (ms === undefined || ms <= 0) throw new KeyRequestError(`expiry "${expires.slice(0, 20)}": expected a duration such as 30d, 12h or 90m`)
  if (ms > settings.maxTtl) throw new KeyRequestError(`expiry ${expires.trim()} is longer than auth.apiKeys.maxTtl allows (${Math.floor(settings.maxTtl / 86_400_000)}d)`)
  return ms
}

export async function issueKey (deps: KeyIssuerDeps, request: KeyRequest): Promise<{ record: ApiKeyRecord, secret: string }> {
  if (!deps.settings.enabled) throw new KeyRequestError(API_KEYS_DISABLED_MESSAGE)
  const name = request.name.trim()
  if (name.length > MAX_KEY_NAME_CHARS || !NAME_RE.test(name)) throw new KeyRequestError(`the name must be at most ${MAX_KEY_NAME_CHARS} printable characters`)
  const ttlMs = lifetimeOf(request.expires, deps.settings)
  const user = await deps.owners.identityOf(request.userId)
  if (user === undefined) throw new KeyRequestError(`no such user "${request.userId.slice(0, 100)}" (a local user from auth.users, or an identity-provider user who has signed in and is not disabled)`)
  const servers = [...new Set(request.servers)]
  const scopes = deps.owners.checkRequest(deps.owners.entitlementsOf(user), servers, request.scopes)
  try {
    return await deps.keys.create({ userId: user.id, name: name === '' ? 'unnamed key' : name, servers, scopes, expiresAtMs: deps.now() + ttlMs })
  } catch (err) {
    if (err instanceof ApiKeyLimitError) throw new KeyRequestError(err.message)
    throw err
  }
}
