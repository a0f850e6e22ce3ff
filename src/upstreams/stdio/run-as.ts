/**
 * The Unix account a stdio server runs as (`servers[].user` / `group`).
 *
 * A child running as the gateway's own account can read the gateway's
 * /proc/<pid>/environ (and its memory, with ptrace) — its secrets, however
 * carefully the child's own environment is allow-listed. Another account
 * cannot (proc(5): environ is readable only with ptrace access, which needs
 * the same uid). Switching account needs root (setuid(2)), so the gateway
 * refuses `user`/`group` unless it runs as root, rather than start a child
 * under its own account while the config says otherwise (fail closed).
 *
 * Names are resolved once, at start, from /etc/passwd and /etc/group (a
 * numeric id is taken as it is); Node's spawn then does setgroups(0), setgid
 * and setuid in the child (libuv), so it keeps no supplementary groups.
 */
import { readFileSync } from 'node:fs'

export interface RunAsAccount {
  readonly uid: number
  readonly gid: number
  /** The account's name and home, for the child's USER/LOGNAME/HOME (absent for a bare uid). */
  readonly name?: string
  readonly home?: string
}

export class RunAsError extends Error {
  readonly code = 'PORTCULLIS_ERR_CONFIG'
  constructor (message: string) {
    super(message)
    this.name = 'RunAsError'
  }
}

export interface AccountDatabase {
  readonly passwd: string
  readonly group: string
}

function readOrEmpty (path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

export function systemAccounts (): AccountDatabase {
  return { passwd: readOrEmpty('/etc/passwd'), group: readOrEmpty('/etc/group') }
}

const NUMERIC_ID_RE = /^\d+$/

/** Rows of a colon-separated database, as field arrays (comments and blank lines skipped). */
function rows (text: string): string[][] {
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).map((line) => line.split(':'))
}

function findUser (db: AccountDatabase, user: string): { uid: number, gid: number, name: string, home: string } | undefined {
  const isNumeric = NUMERIC_ID_RE.test(user)
  // passwd(5): name:password:uid:gid:gecos:home:shell
  const row = rows(db.passwd).find((fields) => isNumeric ? fields[2] === user : fields[0] === user)
  if (row === undefined) return undefined
  return { name: row[0] ?? user, uid: Number(row[2]), gid: Number(row[3]), home: row[5] ?? '/' }
}

function findGroup (db: AccountDatabase, group: string): number | undefined {
  if (NUMERIC_ID_RE.test(group)) return Number(group)
  // group(5): name:password:gid:members
  const row = rows(db.group).find((fields) => fields[0] === group)
  return row === undefined ? undefined : Number(row[2])
}

export interface RunAsSettings {
  readonly user?: string | undefined
  readonly group?: string | undefined
}

/**
 * The account for a server's children; undefined when it sets neither user
 * nor group. `where` names the server in messages (`servers[2] (github)`).
 */
export function resolveRunAs (settings: RunAsSettings, where: string, gatewayUid: number | undefined, db: AccountDatabase = systemAccounts()): RunAsAccount | undefined {
  const { user, group } = settings
  if (user === undefined && group === undefined) return undefined
  if (gatewayUid !== 0) {
    const key = user === undefined ? 'group' : 'user'
    throw new RunAsError(`${where}: ${key} is set, but the gateway runs as uid ${gatewayUid ?? '?'}, not root: only root can start a process as another account. Run the gateway as root (it drops each child to its account), or remove ${key} (the child then runs as the gateway's own account and can read its environment through /proc)`)
  }
  let account: { uid: number, gid: number, name?: string, home?: string } | undefined
  if (user !== undefined) {
    account = findUser(db, user)
    if (account === undefined && !NUMERIC_ID_RE.test(user)) throw new RunAsError(`${where}: user "${user}" does not exist (not in /etc/passwd)`)
    account ??= { uid: Number(user), gid: Number(user) }
    if (account.uid === 0) throw new RunAsError(`${where}: user "${user}" is root; name an unprivileged account (or remove user)`)
  }
  let gid = account?.gid ?? 0
  if (group !== undefined) {
    const found = findGroup(db, group)
    if (found === undefined) throw new RunAsError(`${where}: group "${group}" does not exist (not in /etc/group)`)
    gid = found
  }
  return { uid: account?.uid ?? 0, gid, ...(account?.name === undefined ? {} : { name: account.name }), ...(account?.home === undefined ? {} : { home: account.home }) }
}
