// The README's two reference tables against their sources: the Errors table against
// src/errors.ts's catalogue, the Configuration reference against the config schema. A code or
// key added in one place and forgotten in the other fails here, not in a reader's hands.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { ERRORS } from '../../src/errors.js'
import { configSchema } from '../../src/config/schema.js'

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

/** The text of the README section under `## <title>`, up to the next `## ` heading. */
function section (title: string): string {
  const start = README.indexOf(`\n## ${title}\n`)
  if (start < 0) throw new Error(`README has no "## ${title}" section`)
  const end = README.indexOf('\n## ', start + 1)
  return README.slice(start, end < 0 ? undefined : end)
}

/** A table's body rows whose first cell starts with a backtick, split into trimmed cells. */
function tableRows (text: string): string[][] {
  return text.split('\n').filter((line) => line.startsWith('| `'))
    .map((line) => line.slice(1, line.endsWith('|') ? -1 : undefined).split(' | ').map((cell) => cell.trim()))
}

t.test('every error code in src/errors.ts is in the README table once, with its HTTP status and JSON-RPC code', async (t) => {
  const rows = tableRows(section('Errors')).filter((cells) => cells[0]?.startsWith('`PORTCULLIS_ERR_'))
  const documented = rows.map((cells) => (cells[0] ?? '').replace(/`/g, ''))
  t.same([...documented].sort(), Object.keys(ERRORS).sort(), 'the same codes, each once')
  for (const [code, http, rpc] of rows) {
    const spec = ERRORS[(code ?? '').replace(/`/g, '') as keyof typeof ERRORS]
    if (spec === undefined) continue
    // "200 (403 without a request: …)": the status a request gets comes first.
    t.equal(Number(/^\d+/.exec(http ?? '')?.[0]), spec.status, `${code}: HTTP status`)
    // "—": the admin API's codes, answered as JSON, not JSON-RPC.
    if (rpc !== '—') t.equal(Number(rpc), spec.rpcCode, `${code}: JSON-RPC code`)
  }
})

/** What the walk needs of zod 4's schema definitions (`schema._zod.def`). */
interface SchemaDef {
  readonly type: string
  readonly innerType?: Schema
  readonly in?: Schema
  readonly out?: Schema
  readonly shape?: Record<string, Schema>
  readonly catchall?: Schema
  readonly element?: Schema
  readonly options?: readonly Schema[]
  readonly valueType?: Schema
}
interface Schema { readonly _zod: { readonly def: SchemaDef } }

/** Key paths the schema accepts as the README writes them: `servers[].url`, `servers[].tools.<name>.scopes`. */
function schemaKeys (schema: Schema, path: string, into: Map<string, boolean>): void {
  const def = schema._zod.def
  const below = (next: Schema | undefined, at: string): void => { if (next !== undefined) schemaKeys(next, at, into) }
  switch (def.type) {
    case 'optional': case 'nullable': case 'default': case 'prefault': case 'readonly': case 'catch': case 'nonoptional':
      return below(def.innerType, path)
    case 'pipe': below(def.in, path); return below(def.out, path)
    case 'array': return below(def.element, `${path}[]`)
    case 'union': for (const option of def.options ?? []) below(option, path); return
    case 'record': return below(def.valueType, `${path}.<name>`)
    case 'object':
      for (const [key, value] of Object.entries(def.shape ?? {})) {
        const at = path === '' ? key : `${path}.${key}`
        into.set(at, into.get(at) ?? false)
        below(value, at)
      }
      // A catch-all (a per-tool rule beside allow/deny) is keyed by name.
      if (def.catchall !== undefined && def.catchall._zod.def.type !== 'never' && def.catchall._zod.def.type !== 'unknown') below(def.catchall, `${path}.<name>`)
      if (path !== '') into.set(path.replace(/(\[\])+$/, ''), true)
      return
    default:
  }
}

/** The key path one level up (`auth.users[].name` -> `auth.users`), or undefined at the top. */
function parentOf (path: string): string | undefined {
  const dot = path.lastIndexOf('.')
  return dot < 0 ? undefined : path.slice(0, dot).replace(/(\[\])+$/, '')
}

/**
 * The configuration reference's rows as key paths, each with its row's text. A first cell may
 * name several keys: "`metrics.listen.host`, `metrics.listen.port`" or
 * "`auth.identityProviders[].authorizationUrl`, `tokenUrl`, `apiUrl`" (siblings of the first).
 */
function documentedKeys (): Map<string, string> {
  const keys = new Map<string, string>()
  for (const cells of tableRows(section('Configuration reference'))) {
    const names = [...(cells[0] ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? '')
    const first = names[0] ?? ''
    const siblings = first.includes('.') ? first.slice(0, first.lastIndexOf('.') + 1) : ''
    const row = cells.join(' | ')
    for (const name of names) {
      const key = (name === first || name.includes('.') ? name : siblings + name).replace(/(\[\])+$/, '')
      keys.set(key, (keys.get(key) ?? '') + row)
    }
  }
  return keys
}

/** Whether a row names `key` in code: `username`, or inside `{ name, pattern }`. */
function namesKey (row: string, key: string): boolean {
  const word = new RegExp(`(^|[^\\w.-])${key}($|[^\\w-])`)
  return [...row.matchAll(/`([^`]+)`/g)].some((m) => word.test(m[1] ?? ''))
}

t.test('every key the config schema accepts is in the README configuration reference', async (t) => {
  const keys = new Map<string, boolean>()
  schemaKeys(configSchema as unknown as Schema, '', keys)
  const documented = documentedKeys()
  const missing: string[] = []
  for (const [key, hasKeysBelow] of keys) {
    // A mapping's own row is optional when its keys have rows of their own.
    if (documented.has(key) || hasKeysBelow) continue
    // Or the nearest documented mapping above names it in its row (`auth.users[]`: `username`, …).
    const leaf = key.slice(key.lastIndexOf('.') + 1)
    let above = parentOf(key)
    while (above !== undefined && !documented.has(above)) above = parentOf(above)
    if (above !== undefined && namesKey(documented.get(above) ?? '', leaf)) continue
    missing.push(key)
  }
  t.same(missing, [], 'schema keys with no row, and not named in a row above them')
})

t.test('every key in the README configuration reference is one the config schema accepts', async (t) => {
  const keys = new Map<string, boolean>()
  schemaKeys(configSchema as unknown as Schema, '', keys)
  const unknown = [...documentedKeys().keys()].filter((key) => !keys.has(key))
  t.same(unknown, [], 'documented keys the schema would refuse')
})

t.test('the configuration reference is one table: no blank line splits it', async (t) => {
  const text = section('Configuration reference')
  const start = text.indexOf('\n| key |')
  t.ok(start > 0, 'the table starts with its header')
  const lines = text.slice(start + 1).split('\n')
  const end = lines.findIndex((line) => !line.startsWith('|'))
  const after = lines.slice(end).filter((line) => line.startsWith('| `'))
  t.same(after, [], 'rows after the table ends render as a paragraph of pipes, not as rows')
})

t.test('every admin action `portcullis admin --help` lists is in the global help and the README CLI block', async (t) => {
  const { ADMIN_USAGE } = await import('../../src/admin/admin-command.js')
  const { USAGE } = await import('../../src/cli/usage.js')
  const block = ADMIN_USAGE.slice(ADMIN_USAGE.indexOf('Actions:'), ADMIN_USAGE.indexOf('Options:'))
  const actions = [...block.matchAll(/^ {2}([a-z-]+)(?: |$)|\| ([a-z-]+)/gm)].map((m) => m[1] ?? m[2] ?? '')
  t.ok(actions.length >= 10, `the actions are read: ${actions.join(', ')}`)
  const cli = section('CLI')
  const adminLine = USAGE.slice(USAGE.indexOf('  admin '), USAGE.indexOf('  keys '))
  for (const action of actions) {
    t.match(adminLine, new RegExp(`\\b${action}\\b`), `portcullis --help names admin ${action}`)
    t.match(cli, new RegExp(`\\b${action}\\b`), `README CLI names admin ${action}`)
  }
})
