/**
 * `portcullis keys create|list|revoke`: an operator's hand on personal API keys,
 * beside a running gateway (the store is opened without the data-directory lock:
 * see store/open-store.ts). The same rules as the account page (issue-key.ts).
 */
import type { Config } from '../config/schema.js'
import { createLogger } from '../observability/logger.js'
import { openConfiguredStore, type OpenedStore } from '../store/command-store.js'
import { UserDirectory } from '../auth-server/users.js'
import { ExternalAccounts } from '../auth-server/external-accounts.js'
import { ResourceCatalog } from '../auth-server/resources.js'
import { KEYS_USAGE } from '../cli/usage.js'
import { API_KEY_CACHE_MS, ApiKeys, type ApiKeyRecord } from './api-keys.js'
import { KeyOwners, KeyRequestError } from './key-owners.js'
import { API_KEYS_DISABLED_MESSAGE, issueKey } from './issue-key.js'
import { identityProviderNames } from '../config/auth-parts.js'

export interface KeysCommandArgs {
  readonly action: string | undefined
  readonly keyId: string | undefined
  readonly user: string | undefined
  readonly servers: string | undefined
  readonly scopes: string | undefined
  readonly expires: string | undefined
  readonly name: string | undefined
}

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2

class UsageError extends Error {}

function list (value: string | undefined): string[] {
  return (value ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '')
}

function date (ms: number | undefined): string {
  return ms === undefined ? '-' : new Date(ms).toISOString().slice(0, 16).replace('T', ' ')
}

function describeKey (k: ApiKeyRecord): string {
  return `${k.keyId}  ${JSON.stringify(k.name)}  servers=${k.servers.join(',')}  scopes=${k.scopes.join(',')}  created=${date(k.createdAtMs)}  expires=${date(k.expiresAtMs)}  lastUsed=${date(k.lastUsedAtMs)}`
}

export async function keysCommand (config: Config, args: KeysCommandArgs): Promise<number> {
  if (!['create', 'list', 'revoke'].includes(args.action ?? '')) {
    process.stderr.write(`portcullis: keys needs create, list or revoke\n\n${KEYS_USAGE}`)
    return EXIT_USAGE
  }
  if (!config.auth.enabled) {
    process.stderr.write('portcullis: auth is disabled (auth.enabled: false): there are no users to give keys to\n')
    return EXIT_FAILED
  }
  if (!config.auth.apiKeys.enabled) {
    process.stderr.write(`portcullis: ${API_KEYS_DISABLED_MESSAGE}\n`)
    return EXIT_FAILED
  }
  if (config.store.memory === true) {
    process.stderr.write('portcullis: the store is memory (store.memory: true): keys would live in no gateway\'s store; use SQLite or Redis\n')
    return EXIT_FAILED
  }
  let opened: OpenedStore | undefined
  try {
    opened = await openConfiguredStore(config, createLogger('warn'), (path) => new UsageError(`${path} does not exist yet: start the gateway once first`))
    const keys = new ApiKeys(opened.store, config.auth.apiKeys.maxPerUser, () => Date.now())
    if (args.action === 'revoke') return await revoke(keys, args.keyId)
    if (args.user === undefined || args.user === '') throw new UsageError('--user <id> is required')
    if (args.action === 'list') {
      const found = await keys.list(args.user)
      process.stdout.write(found.length === 0 ? `no live keys for ${args.user}\n` : `${found.map(describeKey).join('\n')}\n`)
      return EXIT_OK
    }
    const owners = new KeyOwners(await UserDirectory.load(config.auth.users, opened.store, config.dataDir, config.auth.identityProviders.length > 0), new ExternalAccounts(opened.store), config.servers, new ResourceCatalog(config), identityProviderNames(config.auth))
    const { record, secret } = await issueKey({ settings: config.auth.apiKeys, keys, owners, now: () => Date.now() }, {
      userId: args.user,
      name: args.name ?? '',
      servers: list(args.servers),
      scopes: list(args.scopes),
      expires: args.expires,
    })
    process.stdout.write(`${secret}\n`)
    process.stderr.write(`created ${describeKey(record)}\nThe key is shown once: store it now.\n`)
    return EXIT_OK
  } catch (err) {
    if (err instanceof UsageError || err instanceof KeyRequestError) {
      process.stderr.write(`portcullis: keys ${args.action ?? ''}: ${err.message}\n`)
      return err instanceof UsageError ? EXIT_USAGE : EXIT_FAILED
    }
    process.stderr.write(`portcullis: keys ${args.action ?? ''} failed: ${err instanceof Error ? err.message : String(err)}\n`)
    return EXIT_FAILED
  } finally {
    await opened?.close()
  }
}

async function revoke (keys: ApiKeys, keyId: string | undefined): Promise<number> {
  if (keyId === undefined || keyId === '') throw new UsageError('revoke needs a key id (see keys list)')
  const revoked = await keys.revoke(keyId)
  if (revoked === undefined) throw new KeyRequestError(`no live key ${JSON.stringify(keyId.slice(0, 40))}`)
  process.stdout.write(`revoked ${revoked.keyId} of ${revoked.userId}; running gateways refuse it within ${API_KEY_CACHE_MS / 1000} seconds\n`)
  return EXIT_OK
}
