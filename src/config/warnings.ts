/**
 * Things a valid config allows but an operator most likely did not mean,
 * printed by `portcullis check` and logged at start. Not errors: the gateway
 * runs, and refuses what it must at request time.
 */
import { ANONYMOUS, type UserIdentity } from '../identity.js'
import { formatPath } from './load.js'
import type { Config } from './schema.js'
import { missingUserField, stdioTemplateValues, templateFields } from './user-template.js'

/** How a local user (auth.users) appears to per-user templates: the access token's sub and preferred_username are the username. */
function localIdentity (user: Config['auth']['users'][number]): UserIdentity {
  return { id: user.username, name: user.username, ...(user.email === undefined ? {} : { email: user.email }) }
}

/** A per-user value some callers cannot fill. */
export interface UserFieldWarning {
  readonly server: string
  readonly field: string
  /** The callers who lack it (local usernames, or "anonymous" when auth is disabled). */
  readonly users: readonly string[]
  /** The sentence `check` prints. */
  readonly message: string
}

/**
 * Per-user values (`${user.*}`) that some callers cannot fill: those callers'
 * sessions are refused (PORTCULLIS_ERR_USER_FIELD_MISSING), never given a
 * shared fallback value.
 */
function userFieldWarnings (config: Config): UserFieldWarning[] {
  const callers: Array<{ label: string, identity: UserIdentity }> = config.auth.enabled
    ? config.auth.users.map((u) => ({ label: u.username, identity: localIdentity(u) }))
    : [{ label: ANONYMOUS.name, identity: ANONYMOUS }]
  const who = (labels: string[]): string => config.auth.enabled ? `local user(s) ${labels.join(', ')} lack` : `"${ANONYMOUS.name}" (auth is disabled: every caller) lacks`
  const warnings: UserFieldWarning[] = []
  config.servers.forEach((server, index) => {
    const values = server.transport === 'stdio' ? stdioTemplateValues(server) : Object.values(server.headers)
    const where = server.transport === 'stdio' ? 'args/env use' : 'headers use'
    for (const field of templateFields(values)) {
      const lacking = callers.filter((c) => missingUserField([`\${user.${field}}`], c.identity) !== undefined).map((c) => c.label)
      if (lacking.length === 0) continue
      const message = `${formatPath(['servers', index])} (${server.name}): ${where} \${user.${field}}, which ${who(lacking)}: their requests to this server will be refused (PORTCULLIS_ERR_USER_FIELD_MISSING); give them a ${field}, or do not use \${user.${field}}`
      warnings.push({ server: server.name, field, users: lacking, message })
    }
  })
  return warnings
}

export function configWarnings (config: Config): UserFieldWarning[] {
  return userFieldWarnings(config)
}
