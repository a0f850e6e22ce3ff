/**
 * Per-server policy: who may reach the server, and which tools, prompts and
 * resources they may use. Compiled once from the config; judged per JSON-RPC
 * message from the body (never from headers).
 *
 * Order for a call to tool T (prompts and resources alike):
 *   1. tools.deny matches T                 -> denied (names the pattern)
 *   2. tools.allow is set and misses T      -> denied
 *   3. T's rule names users/groups/clients and the caller is none of them
 *                                           -> denied (names the rule)
 *   4. T's rule needs scopes the token lacks -> insufficient_scope (step up)
 *   5. an argument matches T's arguments.deny -> denied (names argument and pattern)
 *   6. otherwise allowed, with T's rule (limits, cost, concurrency)
 *
 * Lists (tools/list, prompts/list, resources/list, resources/templates/list)
 * are filtered for the caller to what steps 1-3 allow: a client never sees
 * what it can never call. Scope-gated entries stay listed: calling one starts
 * the step-up, while no step-up makes a caller a member of a group.
 */
import type { AccessConfig, NamedRule, ServerConfig, ToolRule } from '../config/schema.js'
import { isJudged, METHOD_TARGETS, type McpMessage, type TargetKind } from '../mcp/jsonrpc.js'
import { compileGlob, type Matcher } from './glob.js'
import { argumentRefusal, compileArgumentDeny, type ArgumentDeny } from './argument-rules.js'
import { recordableTarget } from '../mcp/redacted-uri.js'

export type { TargetKind }

/** The list methods whose results are filtered, and where the names are. */
export const LIST_METHODS: Readonly<Record<string, { kind: TargetKind, field: string, key: string }>> = {
  'tools/list': { kind: 'tool', field: 'tools', key: 'name' },
  'prompts/list': { kind: 'prompt', field: 'prompts', key: 'name' },
  'resources/list': { kind: 'resource', field: 'resources', key: 'uri' },
  'resources/templates/list': { kind: 'resource', field: 'resourceTemplates', key: 'uriTemplate' },
}

/** Who is asking, as policy sees it. `scopes` undefined: authorization is off, scope rules do not apply. */
export interface Caller {
  readonly name: string
  readonly groups: readonly string[]
  readonly clientId: string | undefined
  readonly isClient: boolean
  readonly scopes: ReadonlySet<string> | undefined
}

export type Verdict =
  | { readonly allowed: true, readonly kind: TargetKind | undefined, readonly name: string | undefined, readonly tool: ToolRule | undefined }
  | { readonly allowed: false, readonly reason: 'denied', readonly message: string }
  | { readonly allowed: false, readonly reason: 'scope', readonly requiredScopes: readonly string[], readonly message: string }

interface Pattern { readonly pattern: string, readonly matches: Matcher }

/** Who an access list or a rule names; a caller matching any entry is in it. */
interface Audience {
  readonly users?: readonly string[] | undefined
  readonly groups?: readonly string[] | undefined
  readonly clients?: readonly string[] | undefined
}

/**
 * A user is in an audience by name or group; a machine client (client_credentials) only by
 * its client id, never as a user of the same name (its token's sub is its client id).
 */
function isInAudience (audience: Audience, caller: Caller): boolean {
  if (caller.isClient) return caller.clientId !== undefined && (audience.clients?.includes(caller.clientId) ?? false)
  return (audience.users?.includes(caller.name) ?? false) || (audience.groups?.some((g) => caller.groups.includes(g)) ?? false)
}

/** Whether a rule limits who may use its names at all (a rule with scopes only admits everyone). */
function hasAudience (rule: Audience): boolean {
  return rule.users !== undefined || rule.groups !== undefined || rule.clients !== undefined
}

/** "user alice or groups sre, ops": who a rule admits, for refusals and `check` output. */
export function describeAudience (rule: Audience): string {
  const part = (one: string, names: readonly string[] | undefined): string[] =>
    names === undefined ? [] : [`${one}${names.length === 1 ? '' : 's'} ${names.join(', ')}`]
  return [...part('user', rule.users), ...part('group', rule.groups), ...part('client', rule.clients)].join(' or ')
}

interface CompiledList<R> {
  readonly allow: readonly Pattern[] | undefined
  readonly deny: readonly Pattern[]
  readonly exact: ReadonlyMap<string, R>
  readonly patterns: ReadonlyArray<Pattern & { readonly rule: R }>
  /** Some rule names users, groups or clients: lists differ per caller. */
  readonly hasAudiences: boolean
}

function compileList<R extends Audience> (list: { allow?: string[], deny: string[] } & Record<string, unknown>): CompiledList<R> {
  const exact = new Map<string, R>()
  const patterns: Array<Pattern & { rule: R }> = []
  for (const [key, value] of Object.entries(list)) {
    if (key === 'allow' || key === 'deny') continue
    if (key.includes('*') || key.includes('?')) patterns.push({ pattern: key, matches: compileGlob(key), rule: value as R })
    else exact.set(key, value as R)
  }
  const compile = (p: string): Pattern => ({ pattern: p, matches: compileGlob(p) })
  const hasAudiences = [...exact.values(), ...patterns.map((p) => p.rule)].some(hasAudience)
  return { allow: list.allow?.map(compile), deny: list.deny.map(compile), exact, patterns, hasAudiences }
}

/** The argument deny patterns of every tool rule (exact and pattern keys), by rule. */
function compileArgumentRules (tools: Record<string, unknown>): Map<ToolRule, readonly ArgumentDeny[]> {
  const compiled = new Map<ToolRule, readonly ArgumentDeny[]>()
  for (const [key, value] of Object.entries(tools)) {
    if (key === 'allow' || key === 'deny') continue
    const rule = value as ToolRule
    if (rule.arguments !== undefined) compiled.set(rule, compileArgumentDeny(rule.arguments.deny))
  }
  return compiled
}

const ALLOWED_UNTARGETED: Verdict = { allowed: true, kind: undefined, name: undefined, tool: undefined }
const KIND_PLURAL: Readonly<Record<TargetKind, 'tools' | 'prompts' | 'resources'>> = { tool: 'tools', prompt: 'prompts', resource: 'resources' }

export class ServerPolicy {
  private readonly lists: Readonly<Record<TargetKind, CompiledList<ToolRule | NamedRule>>>
  private readonly access: AccessConfig | undefined
  /** Each tool rule's argument deny patterns, compiled here, once: a call only matches them. */
  private readonly argumentRules: ReadonlyMap<ToolRule, readonly ArgumentDeny[]>

  constructor (private readonly server: ServerConfig) {
    this.access = server.access
    // Compiled at start: a bad pattern (already refused by the config check) fails here, never on a call.
    this.argumentRules = compileArgumentRules(server.tools as Record<string, unknown>)
    this.lists = {
      tool: compileList<ToolRule>(server.tools as { deny: string[] } & Record<string, unknown>),
      prompt: compileList<NamedRule>(server.prompts as { deny: string[] } & Record<string, unknown>),
      resource: compileList<NamedRule>(server.resources as { deny: string[] } & Record<string, unknown>),
    }
  }

  /** Whether any resource rule exists (allow, deny or per-URI): then only URIs in their plain form are judged. */
  private get judgesResources (): boolean {
    const list = this.lists.resource
    return list.allow !== undefined || list.deny.length > 0 || list.exact.size > 0 || list.patterns.length > 0
  }

  /** May this caller reach the server at all? (`access`: any listed user, group or machine client.) */
  reach (caller: Caller): Verdict {
    const access = this.access
    if (access === undefined || isInAudience(access, caller)) return ALLOWED_UNTARGETED
    return { allowed: false, reason: 'denied', message: `${caller.isClient ? 'client' : 'user'} "${caller.name}" is not in the access list of server "${this.server.name}"` }
  }

  /** The verdict on one message (a request, or a request method sent as a notification): only tools/call, prompts/get and resources/* name a target. */
  judge (message: McpMessage, caller: Caller): Verdict {
    if (!isJudged(message) || message.method === undefined) return ALLOWED_UNTARGETED
    const target = message.method === 'completion/complete' ? completionTarget(message.params) : targetOf(message.method, message.target)
    if (target === undefined) return ALLOWED_UNTARGETED
    const { kind, name } = target
    if (kind === 'resource' && this.judgesResources && !isPlainUri(name)) {
      return { allowed: false, reason: 'denied', message: `resource "${recordableTarget(kind, name)}" has a dot segment, user info or a percent-encoded letter, digit, "-._~" or slash; resource rules of server "${this.server.name}" judge URIs as written: send its plain form` }
    }
    const refusal = this.refusal(kind, name, caller)
    if (refusal !== undefined) return { allowed: false, reason: 'denied', message: refusal }
    const rule = this.ruleFor(kind, name)?.rule
    const needed = rule?.scopes ?? []
    if (caller.scopes !== undefined && needed.some((s) => !caller.scopes?.has(s))) {
      const required = [...new Set([...this.server.scopes, ...needed])]
      return { allowed: false, reason: 'scope', requiredScopes: required, message: `${kind} "${recordableTarget(kind, name)}" needs the scope(s): ${needed.join(' ')}` }
    }
    const argumentDenial = kind === 'tool' ? this.argumentDenial(rule as ToolRule | undefined, message.params?.arguments, name) : undefined
    if (argumentDenial !== undefined) return { allowed: false, reason: 'denied', message: argumentDenial }
    return { allowed: true, kind, name, tool: kind === 'tool' ? rule as ToolRule | undefined : undefined }
  }

  /** A tool rule's argument deny patterns (compiled in the constructor) matched against one call's arguments. */
  private argumentDenial (rule: ToolRule | undefined, args: unknown, tool: string): string | undefined {
    if (rule?.arguments === undefined) return undefined
    const compiled = this.argumentRules.get(rule)
    // Fail closed: a rule with deny patterns that was not compiled (a copied rule object) must never let a call through unchecked.
    if (compiled === undefined) throw new Error(`argument rules of tool "${tool}" were not compiled`)
    return argumentRefusal(compiled, args, tool)
  }

  /** Whether a listed entry stays visible to this caller (scope-gated entries do: they can be stepped up to). */
  isVisible (kind: TargetKind, name: string, caller: Caller): boolean {
    return this.refusal(kind, name, caller) === undefined
  }

  /** The rule for a name and the key it is written under: an exact key first, then the first matching pattern key. */
  ruleFor (kind: TargetKind, name: string): { readonly key: string, readonly rule: ToolRule | NamedRule } | undefined {
    const list = this.lists[kind]
    const exact = list.exact.get(name)
    if (exact !== undefined) return { key: name, rule: exact }
    const pattern = list.patterns.find((p) => p.matches(name))
    return pattern === undefined ? undefined : { key: pattern.pattern, rule: pattern.rule }
  }

  /** Scopes any tool, prompt or resource rule can require (the authorization server must be able to grant them). */
  ruleScopes (): string[] {
    return ruleScopesOf(this.server)
  }

  /**
   * Filters a list result in place of the upstream's; undefined when nothing
   * had to go (the caller then forwards the original bytes).
   */
  filterList (method: string, result: unknown, caller: Caller): Record<string, unknown> | undefined {
    const list = LIST_METHODS[method]
    if (list === undefined || result === null || typeof result !== 'object') return undefined
    const entries = (result as Record<string, unknown>)[list.field]
    if (!Array.isArray(entries)) return undefined
    const kept = entries.filter((entry: unknown) => {
      const name = (entry as Record<string, unknown> | null)?.[list.key]
      return typeof name !== 'string' || this.isVisible(list.kind, name, caller)
    })
    return kept.length === entries.length ? undefined : { ...(result as Record<string, unknown>), [list.field]: kept }
  }

  /**
   * A list result recognised by its shape, for answers whose request the gateway did not see
   * (replayed on a GET stream after Last-Event-ID): filtered like the live answer would be.
   */
  filterAnyList (result: unknown, caller: Caller): Record<string, unknown> | undefined {
    if (result === null || typeof result !== 'object') return undefined
    let filtered: Record<string, unknown> | undefined
    for (const [method, list] of Object.entries(LIST_METHODS)) {
      if (Array.isArray((result as Record<string, unknown>)[list.field])) filtered = this.filterList(method, filtered ?? result, caller) ?? filtered
    }
    return filtered
  }

  /** Whether any list needs filtering at all (most servers have no allow/deny and no user or group rules: their lists pass untouched). */
  get filtersLists (): boolean {
    return Object.values(this.lists).some((l) => l.allow !== undefined || l.deny.length > 0 || l.hasAudiences)
  }

  /** Why this caller may not use the name (deny, allow, then the rule's users/groups/clients); undefined when they may. */
  private refusal (kind: TargetKind, name: string, caller: Caller): string | undefined {
    const list = this.lists[kind]
    const plural = KIND_PLURAL[kind]
    const denied = list.deny.find((p) => p.matches(name))
    const shown = recordableTarget(kind, name)
    if (denied !== undefined) return `${kind} "${shown}" is denied by ${plural}.deny "${denied.pattern}" of server "${this.server.name}"`
    if (list.allow !== undefined && !list.allow.some((p) => p.matches(name))) {
      return `${kind} "${shown}" is not in ${plural}.allow of server "${this.server.name}"`
    }
    const found = this.ruleFor(kind, name)
    if (found !== undefined && hasAudience(found.rule) && !isInAudience(found.rule, caller)) {
      return `${kind} "${shown}" requires ${describeAudience(found.rule)} (rule ${plural}.${found.key} of server "${this.server.name}")`
    }
    return undefined
  }
}

/** A dot segment (`.` or `..` between separators, `\` counted as one as Windows paths do). */
const DOT_SEGMENT_RE = /(?:^|[/\\:])\.{1,2}(?:[/\\?#]|$)/
/** Userinfo in the authority (`https://bob@host/`): a rule on `https://host/*` would not see the host. */
const USERINFO_RE = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i
/** Percent-encoded octets, each checked below. */
const PERCENT_RE = /%([0-9a-f]{2})/gi

/**
 * Whether a resource URI reads as what it names. Rules match the URI as written (`*` matches
 * any characters), but an upstream that resolves it (`new URL`, `fileURLToPath`, a path join)
 * reads `file:///srv/public/x/../hr/pay.csv` and `file:///srv/public/%68r/pay.csv` as
 * `/srv/public/hr/pay.csv`: past a rule on `file:///srv/public/hr/*`. RFC 3986 6.2.2 normal
 * form has neither dot segments nor encoded unreserved characters; an encoded `/` or `\` is
 * refused too (decoded, it moves the path).
 */
export function isPlainUri (uri: string): boolean {
  if (DOT_SEGMENT_RE.test(uri) || USERINFO_RE.test(uri)) return false
  for (const match of uri.matchAll(PERCENT_RE)) {
    const c = Number.parseInt(match[1] ?? '', 16)
    const isUnreserved = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e
    if (isUnreserved || c === 0x2f || c === 0x5c) return false
  }
  return true
}

function targetOf (method: string, name: string | undefined): { kind: TargetKind, name: string } | undefined {
  const kind = METHOD_TARGETS[method]?.kind
  return kind === undefined || name === undefined ? undefined : { kind, name }
}

/**
 * completion/complete names a prompt (ref/prompt) or a resource template (ref/resource):
 * completing the arguments of something the caller may not use would show its values.
 */
function completionTarget (params: Readonly<Record<string, unknown>> | undefined): { kind: TargetKind, name: string } | undefined {
  const ref = params?.ref
  if (ref === null || typeof ref !== 'object') return undefined
  const { type, name, uri } = ref as Record<string, unknown>
  if (type === 'ref/prompt' && typeof name === 'string') return { kind: 'prompt', name }
  if (type === 'ref/resource' && typeof uri === 'string') return { kind: 'resource', name: uri }
  return undefined
}

/** Tool names the server's policy spells out: rule keys and allow/deny entries that are not patterns. */
export function namedToolsOf (server: ServerConfig): string[] {
  const { allow, deny, ...rules } = server.tools as { allow?: string[], deny: string[] } & Record<string, unknown>
  const names = [...Object.keys(rules), ...(allow ?? []), ...deny]
  return [...new Set(names.filter((name) => !name.includes('*') && !name.includes('?')))]
}

/** Scopes the tool, prompt and resource rules of a server can require. */
export function ruleScopesOf (server: ServerConfig): string[] {
  const scopes = new Set<string>()
  for (const list of [server.tools, server.prompts, server.resources] as Array<Record<string, unknown>>) {
    for (const [key, rule] of Object.entries(list)) {
      if (key !== 'allow' && key !== 'deny') for (const s of (rule as NamedRule).scopes) scopes.add(s)
    }
  }
  return [...scopes]
}
