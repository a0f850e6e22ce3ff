/**
 * Can a stdio server's `command` be started? Answered the way the kernel's
 * execvp(3) will answer at spawn (POSIX, exec "Description"; libuv spawns
 * with the same rule): a command with a slash is that path, relative to the
 * child's working directory; one without is looked up in each PATH entry in
 * turn (an empty entry is the working directory), with the PATH the child
 * gets. Checked by `check`, at start and by /readyz, so a missing program is
 * a message naming it and the PATH searched, not a bare 502 for the first
 * client.
 */
import { accessSync, constants, statSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Config } from '../../config/schema.js'
import { hasUserTemplate } from '../../config/user-template.js'
import { resolveRunAs } from './run-as.js'

/** What execvp searches when the environment has no PATH (glibc's default). */
const DEFAULT_PATH = '/bin:/usr/bin'

export type CommandCheck =
  | { readonly isStartable: true, readonly path: string }
  | { readonly isStartable: false, readonly reason: string }

export interface CommandContext {
  /** The child's working directory (servers[].cwd, else the gateway's). */
  readonly cwd: string
  /** The child's PATH (servers[].env.PATH, else the gateway's); undefined: none. */
  readonly path: string | undefined
}

/** Why `path` cannot be executed, or undefined when it can. */
function unexecutable (path: string): string | undefined {
  let isFile: boolean
  try {
    isFile = statSync(path).isFile()
  } catch {
    return 'does not exist'
  }
  if (!isFile) return 'is not a file'
  try {
    accessSync(path, constants.X_OK)
    return undefined
  } catch {
    return 'is not executable'
  }
}

export function resolveCommand (command: string, context: CommandContext): CommandCheck {
  if (command.includes('/')) {
    const path = resolve(context.cwd, command)
    const problem = unexecutable(path)
    return problem === undefined ? { isStartable: true, path } : { isStartable: false, reason: `command "${command}" ${path === command ? '' : `(${path}) `}${problem}` }
  }
  const searched = context.path ?? DEFAULT_PATH
  for (const dir of searched.split(':')) {
    const path = resolve(context.cwd, dir === '' ? '.' : dir, command)
    if (unexecutable(path) === undefined) return { isStartable: true, path }
  }
  return { isStartable: false, reason: `command "${command}" is not on PATH (searched ${searched === '' ? '(empty PATH)' : searched})` }
}

export interface StdioCommandConfig {
  readonly command: string
  readonly cwd?: string | undefined
  readonly env: Readonly<Record<string, string>>
}

/** The context a server's child will have; undefined when its PATH is per-user (unknown until a user calls). */
export function commandContextOf (server: StdioCommandConfig, parent: NodeJS.ProcessEnv = process.env): CommandContext | undefined {
  const configured = server.env.PATH
  if (configured !== undefined && hasUserTemplate(configured)) return undefined
  return { cwd: resolve(server.cwd ?? '.'), path: configured ?? parent.PATH }
}

export function checkServerCommand (server: StdioCommandConfig, parent: NodeJS.ProcessEnv = process.env): CommandCheck {
  const context = commandContextOf(server, parent)
  return context === undefined ? { isStartable: true, path: server.command } : resolveCommand(server.command, context)
}

/**
 * One line per stdio server that cannot be started, naming it: a command that
 * is not there, or a user/group that does not exist. For `check` and `start`
 * (whether the gateway is root is `start`'s question: `check` may run elsewhere).
 */
export function stdioCommandProblems (config: Config, parent: NodeJS.ProcessEnv = process.env): string[] {
  const problems: string[] = []
  config.servers.forEach((server, index) => {
    if (server.transport !== 'stdio') return
    const result = checkServerCommand(server, parent)
    if (!result.isStartable) problems.push(`servers[${index}].command (${server.name}): ${result.reason}`)
    try {
      resolveRunAs(server, `servers[${index}] (${server.name})`, 0)
    } catch (err) {
      problems.push((err as Error).message)
    }
  })
  return problems
}
