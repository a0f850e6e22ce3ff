/**
 * The CLI's help texts: the global one and one per subcommand, so that
 * `portcullis <command> --help` (and `portcullis help <command>`) answers
 * for that command instead of printing everything.
 */

import { API_KEY_CACHE_MS } from '../account/api-keys.js'

export const USAGE = `Usage: portcullis <command> [options]

An OAuth 2.1 gateway for MCP servers.

Commands:
  start           Start the gateway (--watch: reload the config file when it changes)
  check           Validate the config; print the resolved servers and routes (secrets masked)
  doctor          Walk the path a client takes (proxy, discovery, registration, upstreams,
                  Redis, event streams) against a running gateway; a checklist with fixes
  hash-password   Print an scrypt hash for auth.users[].passwordHash (reads the password
                  from the terminal, or from stdin when piped)
  migrate-store   Copy the configured store (clients, grants, refresh tokens, signing keys…)
                  into another: --to redis://… (or a .db file). Works beside a running
                  gateway; stop it before switching, or what it writes meanwhile stays behind.
  tools diff <server>
                  What the server's tool listing changed since it was approved (pinTools)
  tools approve <server> [--tool NAME]... [--by WHO]
                  Approve the listed tool definitions (all, or the named tools); running
                  gateways use the approval within seconds. Audited with WHO (default:
                  the OS user running the command).
  admin           The admin API of a running gateway: admin users|clients|sessions|
                  revoke-user|linked-accounts|unlink|block|unblock|revoke-client|
                  end-session --url URL
                  (credential in PORTCULLIS_ADMIN_TOKEN)
  keys            Personal API keys: keys create --user <id> --servers a,b [--scopes x,y]
                  [--expires 30d] [--name n], keys list --user <id>, keys revoke <keyId>
                  (works beside a running gateway)

Options:
  -c, --config <file>  Config file (default: ./portcullis.yaml, then config/portcullis.example.yaml)
  -h, --help           Show this help; portcullis <command> --help shows the command's own
  -v, --version        Print the version

Environment:
  \${VAR} in the config reads the environment; a missing variable is an error.

Docs: README.md (configuration reference, deployment, troubleshooting).
`

const CONFIG_OPTION = '  -c, --config <file>  Config file (default: ./portcullis.yaml, then config/portcullis.example.yaml)\n'

/** `portcullis keys --help`, and what a keys usage error prints. */
export const KEYS_USAGE = `Usage: portcullis keys <create|list|revoke> [options]

Personal API keys (Authorization: Bearer pcs_…) for agents, CI jobs and scripts.
Works while the gateway runs (SQLite or Redis store).

  keys create --user <id> --servers a,b [--scopes x,y] [--expires 30d] [--name <name>]
                 Prints the key on stdout, once; details on stderr. Servers and
                 scopes must be ones the user could get (server access rules and
                 scopes); --scopes omitted: every scope of those servers;
                 --expires up to auth.apiKeys.maxTtl (default auth.apiKeys.defaultTtl).
  keys list --user <id>
                 The user's live keys: key id, name, servers, scopes, dates.
  keys revoke <keyId>
                 Revokes a key; running gateways refuse it within ${API_KEY_CACHE_MS / 1000} seconds.

  --user <id>    a local username, or an identity-provider user id (<provider>:<subject>)
  -c, --config   the gateway's config file
`

/** Every command's own help (admin has its own, beside its code). */
export const COMMAND_USAGE: Readonly<Record<string, string>> = {
  keys: KEYS_USAGE,
  start: `Usage: portcullis start [--config FILE] [--watch]

Starts the gateway: listens on listen.host:listen.port and serves every server at
<publicUrl>/<name>/mcp. Logs go to stdout (log.format: pretty on a terminal, JSON lines
otherwise). SIGTERM or SIGINT shut it down gracefully (shutdownTimeoutMs); a second
signal exits at once. Fails with exit 1 on an invalid config or a stdio command that
cannot be found.

SIGHUP re-reads the config file and applies it without a restart (servers, policy, rate
limits, users, identity providers, origins…); an invalid file changes nothing and the log
says why. listen, publicUrl, store, dataDir, cluster and a few more need a restart: the
log lists them. See README "Reloading".

${CONFIG_OPTION}      --watch          Reload whenever the config file changes (an edit, a rename over it, a
                       ConfigMap update); each outcome is logged
`,
  check: `Usage: portcullis check [--config FILE]

Validates the config without starting anything and prints the resolved servers and
routes, secrets masked. Every error names file:line:column and the key path. Exit 0
when valid (warnings on stderr), 1 when not.

${CONFIG_OPTION}`,
  doctor: `Usage: portcullis doctor [--config FILE] [--url URL]

Walks the path an MCP client takes against a running gateway and prints a checklist,
with a fix for each failure: publicUrl and what arrives behind the proxy (X-Forwarded-*),
the 401 challenge and its resource_metadata, the RFC 9728 and RFC 8414 documents and
that they agree, dynamic client registration (a throwaway client, deleted after when it
can be), clock skew against the upstreams, every upstream reachable and answering
initialize (stdio: the command found and started within startupTimeoutMs; sse: the
server accepting connections), Redis, and
whether event streams arrive unbuffered. Exit 0 when every check passes, 1 otherwise.

${CONFIG_OPTION}  --url <url>          The address clients use (default: publicUrl), e.g. your proxy's
                       https://gw.example.com; checked against publicUrl
`,
  'hash-password': `Usage: portcullis hash-password

Prints an scrypt hash for auth.users[].passwordHash. On a terminal it asks for the
password twice, without echo; piped, it reads all of stdin. At least 8 characters.
`,
  'migrate-store': `Usage: portcullis migrate-store --to STORE [--config FILE] [--prefix PREFIX]

Copies the configured store (clients, grants, refresh tokens, signing keys, users'
linked accounts…) into another. Works beside a running gateway; stop it before
switching, or what it writes meanwhile stays behind.

${CONFIG_OPTION}  --to <store>         redis://[:password@]host:port[/db], rediss://…, or a .db file
  --prefix <prefix>    Redis key prefix at the destination (default: store.prefix)
`,
  tools: `Usage: portcullis tools diff <server> [--config FILE]
       portcullis tools approve <server> [--tool NAME]... [--by WHO] [--config FILE]

pinTools: diff shows what the server's last tool listing changed since it was
approved; approve approves it (all tools, or only those named). Running gateways use
the approval within seconds. Works beside running gateways (SQLite or Redis store).

${CONFIG_OPTION}  --tool <name>        approve only this tool (repeatable)
  --by <who>           who approves, for the audit trail (default: the OS user)
`,
}
