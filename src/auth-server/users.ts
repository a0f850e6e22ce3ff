/**
 * Who can sign in with a password: the users listed in YAML (scrypt hashes),
 * nobody when none are listed but identity providers are (people sign in
 * there), or — with neither — one first-run account, `admin`, whose password is generated
 * once, stored only as a hash, and handed to the operator once through an
 * owner-only file (and the terminal, when there is one). There is never a
 * fixed default password.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { UserConfig } from '../config/schema.js'
import type { Store } from '../store/types.js'
import { FIRST_RUN_USERNAME } from '../config/defaults.js'
import { decoyPasswordHash, generatePassword, hashPassword, verifyPassword } from './password.js'

export interface Account {
  readonly username: string
  readonly passwordHash: string
  readonly groups: readonly string[]
  readonly email?: string
  readonly name?: string
}

export const FIRST_RUN_PASSWORD_FILE = 'initial-admin-password'
const FIRST_RUN_KEY = 'auth:first-run-account'

/** Set when this start created the first-run account: the only moment its password exists in clear. */
export interface FirstRunAccount {
  readonly username: string
  readonly password: string
  readonly passwordFile: string
}

export class UserDirectory {
  private constructor (
    private readonly accounts: ReadonlyMap<string, Account>,
    readonly firstRun: FirstRunAccount | undefined,
  ) {}

  /** `hasIdentityProviders`: no first-run account then, even without local users (required: a caller that forgot it made one). */
  static async load (users: readonly UserConfig[], store: Store, dataDir: string, hasIdentityProviders: boolean): Promise<UserDirectory> {
    if (users.length > 0 || hasIdentityProviders) {
      return new UserDirectory(new Map(users.map((u) => [u.username, { ...u }])), undefined)
    }
    let firstRun: FirstRunAccount | undefined
    let stored = await store.kvGet(FIRST_RUN_KEY)
    if (stored === undefined) {
      const password = generatePassword()
      const candidate = JSON.stringify({ username: FIRST_RUN_USERNAME, passwordHash: await hashPassword(password), groups: ['admin'] })
      if (await store.kvSetIfAbsent(FIRST_RUN_KEY, candidate)) {
        const passwordFile = join(dataDir, FIRST_RUN_PASSWORD_FILE)
        writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 })
        firstRun = { username: FIRST_RUN_USERNAME, password, passwordFile }
      }
      stored = await store.kvGet(FIRST_RUN_KEY)
    }
    const account = JSON.parse(stored ?? '{}') as Account
    return new UserDirectory(new Map([[account.username, account]]), firstRun)
  }

  find (username: string): Account | undefined {
    return this.accounts.get(username)
  }

  /** Whether anyone can sign in with a password (the sign-in page shows its form only then). */
  get hasAccounts (): boolean {
    return this.accounts.size > 0
  }

  /** The one local account with this email (case-insensitive); undefined when none or several have it. */
  findByEmail (email: string): Account | undefined {
    const wanted = email.toLowerCase()
    const matches = [...this.accounts.values()].filter((a) => a.email?.toLowerCase() === wanted)
    return matches.length === 1 ? matches[0] : undefined
  }

  /** The account when the password matches. An unknown user costs as much time as a wrong password. */
  async authenticate (username: string, password: string): Promise<Account | undefined> {
    const account = this.accounts.get(username)
    const isValid = await verifyPassword(password, account?.passwordHash ?? await decoyPasswordHash())
    return isValid && account !== undefined ? account : undefined
  }
}
