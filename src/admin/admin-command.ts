/**
 * `portcullis admin …`: the admin API (README "Administration") from a terminal or a script.
 * It is a client of the running gateway's /admin/api/v1 — nothing is read from or written to
 * the store directly — so what it does is exactly what the API does: checked, audited, on
 * every replica.
 *
 * The credential is `admin.bearerToken` or an admin access token: from PORTCULLIS_ADMIN_TOKEN
 * (preferred: a command-line argument is visible to other users in `ps`) or `--token`. It is
 * sent only to the `--url` given (or the config's publicUrl) and never printed.
 *
 * Lists follow `nextCursor` to the end and print one JSON document `{ "items": [...] }`;
 * actions print the API's JSON answer. Exit 0 on success, 1 on a refusal or an unreachable
 * gateway (the API's message on stderr), 2 on a usage error.
 */

export const ADMIN_USAGE = `Usage: portcullis admin <action> [arguments] [--url URL] [--token TOKEN]

The admin API of a running gateway (README "Administration"), as JSON on stdout.

Actions:
  users                             users seen (when, groups, blocked, live sessions)
  clients                           registered and configured OAuth clients
  sessions [--user ID] [--server NAME]
                                    live MCP sessions (those the answering replica holds)
  revoke-user <id>                  every grant, API key, linked account and session of the user
  linked-accounts <id>              the user's accounts at servers with upstreamAuth: oauth
  unlink <id> <server>              remove the user's linked account at that server (its
                                    tokens are revoked at the server's authorization server, best effort)
  block <id> | unblock <id>         refuse the user everywhere / lift it
  revoke-client <id>                every grant of a registered client, and its registration
  end-session <server> <sessionId>  end one session

Options:
  --url URL        The gateway's public URL (default: publicUrl of --config)
  --token TOKEN    admin.bearerToken or an admin access token; prefer the environment
                   variable PORTCULLIS_ADMIN_TOKEN (a command-line argument shows in ps)
  -c, --config FILE  Only to read publicUrl when --url is not given

Exit status: 0 done, 1 refused or unreachable (the reason on stderr), 2 usage error.
`

export interface AdminCommandOptions {
  readonly action: string | undefined
  readonly args: readonly string[]
  readonly url: string | undefined
  readonly token: string | undefined
  readonly user: string | undefined
  readonly server: string | undefined
}

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2
/** The API's largest page: fewest round trips when following cursors. */
const PAGE_LIMIT = 500
const REQUEST_TIMEOUT_MS = 15_000

interface Call {
  readonly method: 'GET' | 'POST'
  readonly path: string
  readonly query?: Record<string, string>
  readonly isList?: boolean
}

class UsageError extends Error {}

/** The API call an action makes; a UsageError names what is missing. */
function callFor (options: AdminCommandOptions): Call {
  const first = (what: string): string => {
    const value = options.args[0]
    if (value === undefined || value === '') throw new UsageError(`admin ${options.action ?? ''} needs <${what}>`)
    return value
  }
  const id = (what: string): string => encodeURIComponent(first(what))
  const filters = (names: Record<string, string | undefined>): Record<string, string> =>
    Object.fromEntries(Object.entries(names).filter((entry): entry is [string, string] => entry[1] !== undefined))
  switch (options.action) {
    case 'users': return { method: 'GET', path: 'users', isList: true }
    case 'clients': return { method: 'GET', path: 'clients', isList: true }
    case 'sessions': return { method: 'GET', path: 'sessions', isList: true, query: filters({ user: options.user, server: options.server }) }
    case 'revoke-user': return { method: 'POST', path: `users/${id('id')}/revoke` }
    case 'linked-accounts': return { method: 'GET', path: 'linked-accounts', isList: true, query: { user: first('id') } }
    case 'unlink': {
      const user = id('id')
      const server = options.args[1]
      if (server === undefined || server === '') throw new UsageError('admin unlink needs <id> <server>')
      return { method: 'POST', path: `users/${user}/linked-accounts/${encodeURIComponent(server)}/unlink` }
    }
    case 'block': return { method: 'POST', path: `users/${id('id')}/block` }
    case 'unblock': return { method: 'POST', path: `users/${id('id')}/unblock` }
    case 'revoke-client': return { method: 'POST', path: `clients/${id('id')}/revoke` }
    case 'end-session': {
      const server = id('server')
      const session = options.args[1]
      if (session === undefined || session === '') throw new UsageError('admin end-session needs <server> <sessionId>')
      return { method: 'POST', path: `sessions/${server}/${encodeURIComponent(session)}/end` }
    }
    default: throw new UsageError(options.action === undefined ? 'admin needs an action' : `unknown admin action "${options.action}"`)
  }
}

export async function adminCommand (options: AdminCommandOptions, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  let call: Call
  let base: URL
  try {
    call = callFor(options)
    if (options.url === undefined) throw new UsageError('admin needs --url <publicUrl> (or --config with publicUrl)')
    base = parseBase(options.url)
    if (options.token === undefined || options.token === '') throw new UsageError('admin needs a credential: PORTCULLIS_ADMIN_TOKEN (or --token)')
  } catch (e) {
    if (!(e instanceof UsageError)) throw e
    err.write(`portcullis: ${e.message}\n\n${ADMIN_USAGE}`)
    return EXIT_USAGE
  }
  const headers = { authorization: `Bearer ${options.token}`, accept: 'application/json' }
  try {
    if (call.isList !== true) {
      out.write(`${JSON.stringify(await request(base, call, headers, {}), null, 2)}\n`)
      return EXIT_OK
    }
    const items: unknown[] = []
    let cursor: string | undefined
    do {
      const page = await request(base, call, headers, { limit: String(PAGE_LIMIT), ...(cursor === undefined ? {} : { cursor }) }) as { items?: unknown[], nextCursor?: string }
      items.push(...(page.items ?? []))
      cursor = page.nextCursor
    } while (cursor !== undefined)
    out.write(`${JSON.stringify({ items }, null, 2)}\n`)
    return EXIT_OK
  } catch (e) {
    err.write(`portcullis: admin ${options.action ?? ''}: ${(e as Error).message}\n`)
    return EXIT_FAILED
  }
}

/** The public URL's origin and path prefix (a gateway may live under a path behind its proxy). */
function parseBase (url: string): URL {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new UsageError(`--url: expected the gateway's URL, e.g. https://gw.example.com, got ${JSON.stringify(url.slice(0, 200))}`)
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new UsageError('--url: expected an http(s) URL')
  if (parsed.username !== '' || parsed.password !== '') throw new UsageError('--url: credentials go in PORTCULLIS_ADMIN_TOKEN, not in the URL')
  return new URL(`${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}/admin/api/v1/`)
}

async function request (base: URL, call: Call, headers: Record<string, string>, extra: Record<string, string>): Promise<unknown> {
  const url = new URL(call.path, base)
  for (const [name, value] of Object.entries({ ...call.query, ...extra })) url.searchParams.set(name, value)
  let res: Response
  try {
    res = await fetch(url, { method: call.method, headers, redirect: 'manual', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name
    throw new Error(`cannot reach ${url.origin} (${cause})`, { cause: e })
  }
  const text = await res.text()
  let body: unknown
  try {
    body = text === '' ? {} : JSON.parse(text)
  } catch (cause) {
    throw new Error(`${res.status} from ${url.origin}${url.pathname}: not the admin API's JSON (is --url the gateway's public URL?)`, { cause })
  }
  if (!res.ok) {
    const error = (body as { error?: { code?: string, message?: string } }).error
    throw new Error(`${res.status} ${error?.code ?? ''} ${error?.message ?? ''}`.replace(/\s+/g, ' ').trim())
  }
  return body
}
