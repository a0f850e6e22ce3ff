/**
 * What a person starting the gateway needs next: where to point MCP clients
 * and how to sign in. Printed once the gateway listens, for the pretty log
 * format only (a person at a terminal); JSON logs carry the same URLs in the
 * `portcullis ready` line.
 */
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { FIRST_RUN_USERNAME } from '../config/defaults.js'
import { FIRST_RUN_PASSWORD_FILE } from '../auth-server/users.js'

/** The first-run account, when the gateway created one (no users, no identity providers). */
export interface FirstRunHint {
  readonly username: string
  readonly passwordFile: string
}

export function startBanner (config: Config, firstRun: FirstRunHint | undefined): string {
  const width = Math.max(...config.servers.map((s) => s.name.length))
  const lines = [
    '',
    '  Portcullis is ready. Point MCP clients (Streamable HTTP transport) at:',
    ...config.servers.map((s) => `    ${s.name.padEnd(width)}  ${config.publicUrl}/${s.name}/mcp`),
    '',
    ...signInLines(config, firstRun),
    `  Something not working? portcullis doctor --config ${config.source}`,
    '',
  ]
  return `${lines.join('\n')}\n`
}

function signInLines (config: Config, firstRun: FirstRunHint | undefined): string[] {
  if (!config.auth.enabled) return ['  Authorization is OFF (auth.enabled: false): no sign-in; anyone who can reach the port can use them.', '']
  const ways: string[] = []
  if (firstRun !== undefined) ways.push(`the first-run account "${firstRun.username}" (password in ${firstRun.passwordFile})`)
  // Created on an earlier start: the account is there, its password in the data directory.
  else if (config.auth.users.length === 0 && config.auth.identityProviders.length === 0) ways.push(`the first-run account "${FIRST_RUN_USERNAME}" (password in ${join(config.dataDir, FIRST_RUN_PASSWORD_FILE)})`)
  if (config.auth.users.length > 0) ways.push(`a local account (auth.users: ${config.auth.users.length})`)
  for (const idp of config.auth.identityProviders) ways.push(`identity provider "${idp.name}"`)
  return [
    '  A client gets a 401, registers itself and opens the gateway\'s sign-in page in a browser.',
    `  Sign in with ${ways.join(', or ')}.`,
    `  Your account page (personal API keys): ${config.publicUrl}/account`,
    '',
  ]
}
