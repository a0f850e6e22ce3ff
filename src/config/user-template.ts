/**
 * Per-user values in stdio `args` and `env` and in HTTP upstream `headers`:
 * `${user.id}`, `${user.name}`, `${user.email}`, rendered when a user's
 * process is spawned or per request. Rendered values are escaped so a
 * username can never inject an argument, a path or a header line.
 */
import type { UserIdentity } from '../identity.js'

export const USER_TEMPLATE_FIELDS = ['id', 'name', 'email'] as const
export type UserTemplateField = typeof USER_TEMPLATE_FIELDS[number]
/** Fields some callers have no value for (a machine client, an account without email). */
export const OPTIONAL_USER_FIELDS: ReadonlySet<UserTemplateField> = new Set(['email'])
const TEMPLATE_RE = /\$\{user\.([A-Za-z_][A-Za-z0-9_]*)\}/g
/**
 * `${user.credentials.<server>}` (stdio `env` only): the caller's current access token at the
 * HTTP server of that name, which has `upstreamAuth: oauth` (README "Upstream credentials").
 */
const CREDENTIAL_RE = /\$\{user\.credentials\.([a-z0-9][a-z0-9_-]{0,62})\}/g
/** One pass over both forms, so a rendered value is never read again as a template. */
const ANY_TEMPLATE_RE = /\$\{user\.(?:credentials\.([a-z0-9][a-z0-9_-]{0,62})|([A-Za-z_][A-Za-z0-9_]*))\}/g

export function hasUserTemplate (value: string): boolean {
  return value.includes('${user.')
}

/** Where a stdio server's per-user values may be: its args, its env values and its cwd. */
export function stdioTemplateValues (server: { readonly args: readonly string[], readonly env: Readonly<Record<string, string>>, readonly cwd?: string | undefined }): string[] {
  return [...server.args, ...Object.values(server.env), ...(server.cwd === undefined ? [] : [server.cwd])]
}

/** The `${user.x}` fields a value uses that are not known fields. */
export function unknownTemplateFields (value: string): string[] {
  const unknown: string[] = []
  for (const m of value.matchAll(TEMPLATE_RE)) {
    const field = m[1] ?? ''
    if (!(USER_TEMPLATE_FIELDS as readonly string[]).includes(field)) unknown.push(field)
  }
  return unknown
}

/** The servers whose linked credentials the values use (`${user.credentials.<server>}`), each once. */
export function credentialServers (values: readonly string[]): string[] {
  const servers = new Set<string>()
  for (const value of values) for (const m of value.matchAll(CREDENTIAL_RE)) servers.add(m[1] ?? '')
  return [...servers]
}

/**
 * A stdio `env` value for this user: `${user.*}` fields escaped as in args (escapeUserValue),
 * `${user.credentials.<server>}` replaced by the token as it is — an environment value is
 * never parsed by a shell nor split into arguments, and escaping would change the token.
 * Every credential the value uses must be in `credentials` (the caller checks first).
 */
export function renderEnvValue (value: string, user: UserIdentity, credentials: ReadonlyMap<string, string>): string {
  if (!hasUserTemplate(value)) return value
  const fields: Readonly<Record<string, string | undefined>> = { id: user.id, name: user.name, email: user.email }
  return value.replace(ANY_TEMPLATE_RE, (_m, server: string | undefined, field: string | undefined) => {
    if (server !== undefined) {
      const token = credentials.get(server)
      if (token === undefined) throw new Error(`no linked credential for ${server}`)
      return token
    }
    return escapeUserValue(fields[field ?? ''] ?? '')
  })
}

function percentEncode (ch: string): string {
  return [...Buffer.from(ch, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('')
}

/**
 * Makes a user-supplied value safe inside a path or an argument: anything but
 * letters, digits, `_`, `@` and an inner `-` is percent-encoded, so `..`,
 * `/`, spaces, shell and glob characters and a leading `-` (an option) can
 * never appear. Children are spawned without a shell; this also keeps a
 * username from naming another user's file.
 */
export function escapeUserValue (value: string): string {
  let out = ''
  for (const ch of value) {
    const isSafe = /^[A-Za-z0-9_@]$/.test(ch) || (ch === '-' && out !== '')
    out += isSafe ? ch : percentEncode(ch)
  }
  return out === '' ? '%00' : out
}

/**
 * Makes a user-supplied value safe inside an HTTP header value (RFC 9110 5.5): visible
 * ASCII passes, except `%` (the escape itself) and the delimiters a list or quoted-string
 * reading would split on (`"`, `,`, `;`, `\`); everything else — CR, LF and other
 * controls, space, non-ASCII (as UTF-8 bytes) — is percent-encoded. So a name can never
 * start a new header line, and the upstream reads the value back with decodeURIComponent.
 */
export function escapeHeaderValue (value: string): string {
  let out = ''
  for (const ch of value) out += /^[\x21-\x7e]$/.test(ch) && !'%",;\\'.includes(ch) ? ch : percentEncode(ch)
  return out
}

function render (value: string, user: UserIdentity, escape: (value: string) => string): string {
  if (!hasUserTemplate(value)) return value
  const fields: Readonly<Record<string, string | undefined>> = { id: user.id, name: user.name, email: user.email }
  return value.replace(TEMPLATE_RE, (_m, field: string) => escape(fields[field] ?? ''))
}

/** A stdio argument or environment value for this user (escapeUserValue). */
export function renderUserTemplate (value: string, user: UserIdentity): string {
  return render(value, user, escapeUserValue)
}

/** An HTTP upstream header value for this user (escapeHeaderValue). Check missingUserField first. */
export function renderHeaderTemplate (value: string, user: UserIdentity): string {
  return render(value, user, escapeHeaderValue)
}

function isTemplateField (field: string): field is UserTemplateField {
  return (USER_TEMPLATE_FIELDS as readonly string[]).includes(field)
}

/** The known `${user.x}` fields the values use, each once, in order of first use. */
export function templateFields (values: readonly string[]): UserTemplateField[] {
  const fields = new Set<UserTemplateField>()
  for (const value of values) {
    for (const m of value.matchAll(TEMPLATE_RE)) {
      const field = m[1] ?? ''
      if (isTemplateField(field)) fields.add(field)
    }
  }
  return [...fields]
}

/**
 * The first field the values use that this user has no value for: missing,
 * empty or blank. Such a value must never be rendered: every user lacking it
 * would get the same argument or path (`/data/memory-%00.jsonl`) and so share
 * one another's files.
 */
export function missingUserField (values: readonly string[], user: UserIdentity): UserTemplateField | undefined {
  const own: Readonly<Record<UserTemplateField, string | undefined>> = { id: user.id, name: user.name, email: user.email }
  return templateFields(values).find((field) => (own[field] ?? '').trim() === '')
}
