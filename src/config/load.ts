/**
 * Loading a config file: YAML -> ${ENV} interpolation -> schema validation ->
 * derived values -> frozen Config. Every problem is reported with the file,
 * line, column and key path, and what was expected.
 */
import { createHash } from 'node:crypto'
import { readFileSync, existsSync, statSync } from 'node:fs'
import { resolve } from 'node:path'
import { isMap, isPair, isScalar, LineCounter, parseDocument, type Document, type Node } from 'yaml'
import type { $ZodIssue } from 'zod/v4/core'
import { DEFAULT_CONFIG_PATHS } from './defaults.js'
import { configSchema, type Config } from './schema.js'
import { hasUserTemplate } from './user-template.js'

export interface ConfigIssue {
  readonly line: number | undefined
  readonly column: number | undefined
  /** Key path such as servers[0].url; empty for the document root. */
  readonly path: string
  readonly message: string
}

export class ConfigError extends Error {
  readonly code = 'PORTCULLIS_ERR_CONFIG'
  readonly source: string
  readonly issues: readonly ConfigIssue[]

  constructor (source: string, issues: readonly ConfigIssue[]) {
    super(issues.map((issue) => formatIssue(source, issue)).join('\n'))
    this.name = 'ConfigError'
    this.source = source
    this.issues = issues
  }
}

function formatIssue (source: string, issue: ConfigIssue): string {
  const where = issue.line === undefined ? source : `${source}:${issue.line}:${issue.column ?? 1}`
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`
}

type PathSegment = string | number

export function formatPath (path: readonly PropertyKey[]): string {
  let out = ''
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`
    else out += out === '' ? String(seg) : `.${String(seg)}`
  }
  return out
}

/**
 * Finds the config file: an explicit path must exist; otherwise the first of
 * ./portcullis.yaml and config/portcullis.example.yaml that exists.
 */
export function resolveConfigPath (explicit: string | undefined, cwd = process.cwd()): string {
  if (explicit !== undefined) {
    const path = resolve(cwd, explicit)
    if (!existsSync(path)) throw new ConfigError(explicit, [{ line: undefined, column: undefined, path: '', message: 'config file not found' }])
    return path
  }
  for (const candidate of DEFAULT_CONFIG_PATHS) {
    const path = resolve(cwd, candidate)
    if (existsSync(path)) return path
  }
  throw new ConfigError(DEFAULT_CONFIG_PATHS.join(' or '), [{
    line: undefined, column: undefined, path: '', message: 'no config file found; pass --config <file> (see config/portcullis.example.yaml)',
  }])
}

export function loadConfigFile (path: string, env: NodeJS.ProcessEnv = process.env): Config {
  return readConfigFile(path, env).config
}

/**
 * The configuration and the SHA-256 (hex) of the text it was parsed from: a reload tells
 * whether the file changed since (--watch at start) and whether replicas read the same file.
 */
export function readConfigFile (path: string, env: NodeJS.ProcessEnv = process.env): { config: Config, sha256: string } {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(path, [{ line: undefined, column: undefined, path: '', message: `cannot read config file (${(err as NodeJS.ErrnoException).code ?? String(err)})` }])
  }
  return { config: parseConfig(text, path, env), sha256: textSha256(text) }
}

/** The SHA-256 of the file as it is now; undefined when it cannot be read. */
export function configFileSha256 (path: string): string | undefined {
  try {
    return textSha256(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
}

function textSha256 (text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/**
 * `${NAME}` reads the environment; `$${...}` is a literal `${...}`; `${user.*}`
 * is left for per-user rendering at spawn time; `${gateway.dataDir}` is the
 * resolved data directory (stdio args, env and cwd).
 */
const PLACEHOLDER_RE = /\$?\$\{([^}]*)\}/g
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/
const RUNTIME_TEMPLATE_RE = /^user\.(?:credentials\.[a-z0-9][a-z0-9_-]{0,62}|[A-Za-z_][A-Za-z0-9_]*)$/
const DATA_DIR_PLACEHOLDER = '${gateway.dataDir}'

export function parseConfig (text: string, source: string, env: NodeJS.ProcessEnv = process.env): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true })
  if (doc.errors.length > 0) {
    throw new ConfigError(source, doc.errors.map((e) => ({
      line: e.linePos?.[0].line, column: e.linePos?.[0].col, path: '', message: `invalid YAML: ${(e.message.split('\n')[0] ?? e.code).replace(/ at line \d+, column \d+:?$/, '')}`,
    })))
  }
  const locate = (path: readonly PathSegment[], key?: string): { line: number | undefined, column: number | undefined } => {
    const offset = nodeOffset(doc, path, key)
    if (offset === undefined) return { line: undefined, column: undefined }
    const pos = lineCounter.linePos(offset)
    return { line: pos.line, column: pos.col }
  }

  const raw: unknown = doc.toJS({ maxAliasCount: 100 })
  if (raw === null || raw === undefined) {
    throw new ConfigError(source, [{ line: 1, column: 1, path: '', message: 'the config file is empty; expected a mapping with at least "servers"' }])
  }

  const issues: ConfigIssue[] = []
  /** Values taken from the environment, and their names: an error quoting a value says its name instead. */
  const fromEnv = new Map<string, string>()
  const interpolated = interpolate(raw, [], env, (path, message) => issues.push({ ...locate(path), path: formatPath(path), message }), fromEnv)
  if (issues.length > 0) throw new ConfigError(source, issues)
  // A message quoting a value (a URL, a per-user template) must not print a secret that came from
  // ${ENV} into the terminal, the log or the admin API's reload report.
  const masked = (found: readonly ConfigIssue[]): ConfigIssue[] => found.map((issue) => ({ ...issue, message: maskEnvValues(issue.message, fromEnv) }))

  const parsed = configSchema.safeParse(interpolated, { reportInput: true })
  if (!parsed.success) {
    throw new ConfigError(source, masked(parsed.error.issues.flatMap((issue) => zodIssueToConfigIssues(issue, locate))))
  }
  const config = parsed.data
  const publicUrl = new URL(config.publicUrl ?? defaultPublicUrl(config.listen.host, config.listen.port)).origin
  const dataDir = resolve(config.dataDir)
  const withDataDir = (value: string): string => value.replaceAll(DATA_DIR_PLACEHOLDER, dataDir)
  const servers = config.servers.map((server, index) => {
    if (server.transport !== 'stdio') return server
    const env = Object.fromEntries(Object.entries(server.env).map(([k, v]) => [k, withDataDir(v)]))
    const resolved = { ...server, args: server.args.map(withDataDir), env }
    if (server.cwd === undefined) return resolved
    const cwd = resolve(withDataDir(server.cwd))
    // The data directory is created at start; anything else must exist already.
    // A per-user directory is made when its user's process starts.
    if (!isDirectory(cwd) && !server.cwd.includes(DATA_DIR_PLACEHOLDER) && !hasUserTemplate(server.cwd)) {
      issues.push({ ...locate(['servers', index, 'cwd']), path: formatPath(['servers', index, 'cwd']), message: `directory ${JSON.stringify(server.cwd)} does not exist` })
    }
    return { ...resolved, cwd }
  })
  if (issues.length > 0) throw new ConfigError(source, masked(issues))
  const store = config.store.sqlite === undefined ? config.store : { ...config.store, sqlite: resolve(config.store.sqlite) }
  const destination = config.audit.destination
  const audit = { ...config.audit, destination: destination === 'stdout' || destination === 'stderr' ? destination : resolve(withDataDir(destination)) }
  const auth = config.auth.signingKeysFile === undefined ? config.auth : { ...config.auth, signingKeysFile: resolve(config.auth.signingKeysFile) }
  return deepFreeze({ ...config, publicUrl, dataDir, store, auth, audit, servers, source })
}

function isDirectory (path: string): boolean {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

function defaultPublicUrl (host: string, port: number): string {
  const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
  return `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`
}

function zodIssueToConfigIssues (issue: $ZodIssue, locate: (path: readonly PathSegment[], key?: string) => { line: number | undefined, column: number | undefined }): ConfigIssue[] {
  const path = issue.path.filter((seg): seg is PathSegment => typeof seg !== 'symbol')
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      ...locate(path, key),
      path: formatPath([...path, key]),
      message: `unknown key "${key}"${suggestionFor(key)}`,
    }))
  }
  return [{ ...locate(path), path: formatPath(path), message: describeZodIssue(issue) }]
}

function describeZodIssue (issue: $ZodIssue): string {
  // Record keys are checked by a nested schema; its message is the useful one.
  if (issue.code === 'invalid_key') return issue.issues[0]?.message ?? issue.message
  if (issue.code === 'invalid_type') {
    if (issue.input === undefined) return `missing required key (expected ${issue.expected})`
    // Our own messages already say what was expected; zod's default reads "Invalid input: ...".
    if (!issue.message.startsWith('Invalid input')) return issue.message
    return `expected ${issue.expected}, got ${describeValue(issue.input)}`
  }
  return issue.message
}

function describeValue (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  return `${typeof value} ${JSON.stringify(value)}`
}

/** A nudge for the commonest typos: snake_case and wrong case of known keys. */
const KNOWN_KEYS = [
  'publicUrl', 'trustProxy', 'allowInsecurePublicUrl', 'metrics', 'bearerToken', 'cluster', 'advertiseUrl', 'registeredClientTtl', 'unusedClientTtl', 'listen', 'host', 'port', 'bodyLimit', 'allowedOrigins', 'shutdownTimeoutMs', 'dataDir', 'log', 'level', 'requests',
  'servers', 'name', 'transport', 'url', 'headers', 'forwardHeaders', 'timeoutMs',
  'command', 'args', 'env', 'cwd', 'isolation', 'maxProcesses', 'maxProcessesPerUser', 'maxSessionsPerUser', 'sessionCost', 'prestart', 'idleTimeoutMs', 'startupTimeoutMs', 'requestTimeoutMs', 'maxMessageBytes', 'maxLegacySessions', 'maxSessions', 'user', 'group', 'maxStreams', 'maxConnections', 'http2', 'streamKeepAliveMs', 'identity', 'header',
  'scopes', 'store', 'sqlite', 'memory', 'auth', 'enabled', 'accessTokenTtl', 'refreshTokenTtl', 'refreshTokenReuseGrace', 'users', 'username',
  'passwordHash', 'groups', 'email', 'clients', 'clientId', 'clientSecret', 'redirectUris', 'grantTypes', 'dynamicRegistration',
  'clientMetadataDocuments', 'allowedHosts', 'defaultResource', 'signingKeysFile', 'apiKeys', 'defaultTtl', 'maxTtl', 'maxPerUser', 'login', 'maxFailures', 'maxFailuresPerIp', 'window',
  'redis', 'prefix', 'access', 'clients', 'tools', 'prompts', 'resources', 'allow', 'deny', 'rateLimit', 'globalRateLimit', 'cost', 'concurrency',
  'rateLimits', 'perUser', 'perUserPerTool', 'token', 'onStoreError', 'audit', 'destination', 'includeArguments', 'includeResults',
  'redactResults', 'pattern',
  'identityProviders', 'issuer', 'idJag', 'authorizationUrl', 'tokenUrl', 'apiUrl',
  'pinTools', 'validateArguments', 'arguments',
  'upstreamAuth',
  'admin',
  'telemetry', 'otlp', 'endpoint', 'serviceName', 'sampleRatio',
]
function suggestionFor (key: string): string {
  const norm = key.toLowerCase().replace(/[_-]/g, '')
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const known of KNOWN_KEYS) {
    // A key known elsewhere but not here (stdio's `group` inside a rule) is no hint for itself.
    if (known === key) continue
    const d = editDistance(norm, known.toLowerCase())
    // Close enough to be a typo: two edits, or a third of a long key (timout -> timeoutMs).
    if (d < bestDistance && d <= Math.max(2, Math.floor(known.length / 3))) { best = known; bestDistance = d }
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`
}

/** Levenshtein distance; keys are short, so the quadratic table is fine. */
function editDistance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length] ?? 0
}

/** Values shorter than this are left in messages: too short to be a secret, and they would mangle the text. */
const MIN_MASKED_ENV_CHARS = 4

/** `message` with every value that came from the environment replaced by its `${NAME}`, longest first. */
function maskEnvValues (message: string, fromEnv: ReadonlyMap<string, string>): string {
  let out = message
  for (const [value, name] of [...fromEnv].sort((a, b) => b[0].length - a[0].length)) {
    if (value.length < MIN_MASKED_ENV_CHARS) continue
    out = out.replaceAll(value, `\${${name}}`)
    // Quoted in a JSON string, the value's escapes differ: those go too.
    const quoted = JSON.stringify(value).slice(1, -1)
    if (quoted !== value) out = out.replaceAll(quoted, `\${${name}}`)
  }
  return out
}

function interpolate (value: unknown, path: PathSegment[], env: NodeJS.ProcessEnv, report: (path: PathSegment[], message: string) => void, fromEnv: Map<string, string>): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value
    return value.replace(PLACEHOLDER_RE, (match: string, name: string) => {
      if (match.startsWith('$$')) return match.slice(1)
      if (RUNTIME_TEMPLATE_RE.test(name) || match === DATA_DIR_PLACEHOLDER) return match
      if (!ENV_NAME_RE.test(name)) {
        report(path, `invalid placeholder ${match}: expected \${ENV_VAR} (letters, digits, _), a per-user \${user.<field>}, \${user.credentials.<server>} or \${gateway.dataDir}`)
        return match
      }
      const found = env[name]
      if (found === undefined) {
        report(path, `environment variable ${name} is not set (referenced as \${${name}}); set it, or write $\${${name}} for a literal`)
        return match
      }
      if (found !== '') fromEnv.set(found, name)
      return found
    })
  }
  if (Array.isArray(value)) return value.map((item, i) => interpolate(item, [...path, i], env, report, fromEnv))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = interpolate(v, [...path, k], env, report, fromEnv)
    return out
  }
  return value
}

/** Source offset of the node at `path` (or of the key `key` inside it); the deepest existing ancestor otherwise. */
function nodeOffset (doc: Document, path: readonly PathSegment[], key?: string): number | undefined {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth), true)
    if (node === undefined || node === null || typeof node !== 'object' || !('range' in node)) continue
    if (key !== undefined && depth === path.length && isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key)
      const keyNode = pair?.key as Node | undefined
      if (keyNode?.range !== undefined && keyNode.range !== null) return keyNode.range[0]
    }
    const range = (node as Node).range
    if (range !== undefined && range !== null) return range[0]
  }
  return undefined
}

function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}
