/**
 * What a stdio child gets to see: an allow-listed slice of the gateway's
 * environment (never its secrets) plus the server's configured `env`, with
 * per-user values rendered.
 */
import { PortcullisError } from '../../errors.js'
import { missingUserField, renderEnvValue, type UserTemplateField } from '../../config/user-template.js'
import type { UserIdentity } from '../../identity.js'

/** Enough for programs to find binaries, a home, a locale and a temp dir — nothing else. */
export const INHERITED_ENV_KEYS = ['PATH', 'HOME', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'USER', 'LOGNAME', 'SHELL', 'TERM'] as const

/** `credentials`: the caller's linked tokens by server, for `${user.credentials.<server>}` in `env`. */
export function childEnvironment (configured: Readonly<Record<string, string>>, user: UserIdentity, parent: NodeJS.ProcessEnv = process.env, credentials: ReadonlyMap<string, string> = new Map()): Record<string, string> {
  const env: Record<string, string> = {}
  for (const key of INHERITED_ENV_KEYS) {
    const value = parent[key]
    if (value !== undefined) env[key] = value
  }
  for (const [key, value] of Object.entries(configured)) env[key] = renderEnvValue(value, user, credentials)
  return env
}

const FIELD_WORDS: Readonly<Record<UserTemplateField, string>> = { id: 'user id', name: 'user name', email: 'email' }

/** Refuses a user who lacks a value the server's per-user `args`/`env` need, naming the field. */
export function requireUserFields (server: string, values: readonly string[], user: UserIdentity): void {
  const field = missingUserField(values, user)
  if (field === undefined) return
  throw new PortcullisError('PORTCULLIS_ERR_USER_FIELD_MISSING',
    `MCP server "${server}" needs your account's ${FIELD_WORDS[field]} (\${user.${field}}), and your account has none; ask an administrator to add it`,
    { data: { field } })
}
