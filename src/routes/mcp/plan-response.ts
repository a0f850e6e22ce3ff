import { jsonRpcError, type JsonRpcErrorBody, type JsonRpcId, type PortcullisError } from '../../errors.js'
import { MAX_AUDIT_RESULT_CHARS } from '../../observability/audit.js'
import type { RedactionCounts } from '../../guardrails/redactor.js'
import { LIST_METHODS, type Caller } from '../../policy/policy.js'
import type { MessageOutcome } from '../../policy/gate.js'
import type { MessageTransform, ResponseEdit } from '../../upstreams/response-edit.js'
import type { McpCall, McpRoute } from './call.js'

/**
 * Answers whose text reaches the model: where servers[].redactResults masks. tasks/result is a
 * task-augmented tool call's result (MCP 2025-11-25 tasks), the same content as tools/call's.
 */
const REDACTED_METHODS: ReadonlySet<string> = new Set(['tools/call', 'tasks/result', 'resources/read', 'prompts/get'])

/**
 * What the client gets besides the upstream's answer. A refused single request is answered
 * here (the gate's error: 403, 429, -32602), a refused notification with the 202 any
 * notification gets; a batch goes on without its refused members, their errors added to the
 * answer. Lists are filtered by policy, tool definitions pinned, results masked and captured
 * for the audit: only when needed, so most answers pass as bytes.
 */
export async function planResponse (call: McpCall): Promise<void> {
  const inspection = call.inspection
  if (inspection === null) {
    if (call.request.method === 'GET') await planReplay(call)
    return
  }
  const { outcomes, reply } = call
  const refused = outcomes.filter((o) => o.error !== undefined)
  // A refused notification is dropped, not answered: JSON-RPC 2.0 section 4.1 gives a
  // notification no response, and its client gets the 202 any notification gets.
  const refusedRequests = refused.filter((o) => o.message.kind === 'request')
  if (!inspection.isBatch) {
    const only = refused[0]
    if (only !== undefined && refusedRequests.length === 0) {
      reply.code(202).send()
      call.isAnswered = true
      return
    }
    if (only?.error !== undefined) throw only.error
  }
  const extra: JsonRpcErrorBody[] = refusedRequests.map((o) => jsonRpcError(o.error as PortcullisError, o.message.id ?? null))
  if (refused.length > 0) {
    const kept = outcomes.filter((o) => o.error === undefined).map((o) => o.message)
    if (kept.length === 0) {
      if (extra.length === 0) reply.code(202).send()
      else reply.code(200).type('application/json').send(extra)
      call.isAnswered = true
      return
    }
    const keptIds = kept.filter((m) => m.kind === 'request').map((m) => m.id ?? null)
    call.forward = { body: Buffer.from(JSON.stringify(kept.map((m) => m.value))), inspection: { ...inspection, messages: kept, requestIds: keptIds } }
  }
  const session = call.request.headers['mcp-session-id']
  call.edit = responseEdit(call.route, outcomes, extra, call.caller, typeof session === 'string' ? session : undefined)
}

/**
 * A GET with Last-Event-ID replays earlier answers, lists and results among them: edited as
 * they were live, for the caller resuming the stream.
 */
async function planReplay (call: McpCall): Promise<void> {
  const { policy, redactor, guard } = call.route
  if (!(policy.filtersLists || redactor !== undefined || guard?.hidesTools === true)) return
  await guard?.refresh()
  call.edit = { watch: new Map(), extra: [], any: replayEdit(call.route, call.caller) }
}

/** A replayed answer's request is unknown: lists and results are told apart by their shape. Lists differ per caller (user and group rules). */
function replayEdit (route: McpRoute, caller: Caller): MessageTransform {
  const { guard, policy } = route
  return (message) => {
    const pinned = guard?.onReplayedList(message.result)
    const filtered = policy.filtersLists ? policy.filterAnyList(pinned ?? message.result, caller) ?? pinned : pinned
    const listed = filtered === undefined ? message : { ...message, result: filtered }
    const masked = maskResult(route, listed) ?? listed
    return masked === message ? undefined : masked
  }
}

/** Secrets and personal data masked in a result; the counts go to the metric (and the caller), never the values. */
function maskResult (route: McpRoute, message: Record<string, unknown>, onMasked?: (counts: RedactionCounts) => void): Record<string, unknown> | undefined {
  const { redactor, metrics, server } = route
  if (redactor === undefined || !('result' in message)) return undefined
  const counts: RedactionCounts = {}
  const result = redactor.redactResult(message.result, counts)
  if (result === message.result) return undefined
  for (const [kind, n] of Object.entries(counts)) metrics.resultsRedacted.inc({ server: server.name, kind }, n)
  onMasked?.(counts)
  return { ...message, result }
}

/** List results to filter, results to record: only when needed, so most answers pass as bytes. */
function responseEdit (route: McpRoute, outcomes: readonly MessageOutcome[], extra: JsonRpcErrorBody[], caller: Caller, session: string | undefined): ResponseEdit | null {
  const { metrics, server, paramHeaders, guardsCalls, policy, redactor, audit, redactions, captured } = route
  const watch = new Map<JsonRpcId, MessageTransform>()
  for (const o of outcomes) {
    if (o.error !== undefined || o.message.kind !== 'request') continue
    const method = o.message.method ?? ''
    const id = o.message.id ?? null
    // The upstream's own list (before filtering) says which tool names are real: metric labels.
    const learn: MessageTransform | undefined = method === 'tools/list'
      ? (message) => {
          const tools = (message.result as { tools?: unknown } | undefined)?.tools
          if (Array.isArray(tools)) metrics.learnTools(server.name, tools.map((tool: unknown) => (tool as { name?: unknown } | null)?.name))
          // A stdio server's list also teaches which arguments its tools mirror in Mcp-Param-* headers.
          paramHeaders?.learn(message.result)
          return undefined
        }
      : undefined
    // Pinned definitions: the upstream's own list is compared with the approved set (the guard hides what changed).
    const pin: MessageTransform | undefined = method === 'tools/list' && guardsCalls !== undefined
      ? (message) => {
          const pinned = guardsCalls.onList(message.result, { cursor: o.message.params?.cursor, session })
          return pinned === undefined ? undefined : { ...message, result: pinned }
        }
      : undefined
    const filter: MessageTransform | undefined = LIST_METHODS[method] !== undefined && policy.filtersLists
      ? (message) => {
          const filtered = policy.filterList(method, message.result, caller)
          return filtered === undefined ? undefined : { ...message, result: filtered }
        }
      : undefined
    const mask: MessageTransform | undefined = redactor !== undefined && REDACTED_METHODS.has(method)
      ? (message) => maskResult(route, message, (counts) => redactions.set(o, counts))
      : undefined
    const capture: MessageTransform | undefined = audit?.includeResults === true
      ? (message) => {
          captured.set(o, JSON.stringify(message.result ?? message.error ?? null).slice(0, MAX_AUDIT_RESULT_CHARS))
          return undefined
        }
      : undefined
    if (learn !== undefined || pin !== undefined || filter !== undefined || mask !== undefined || capture !== undefined) {
      watch.set(id, (message) => {
        learn?.(message)
        const pinned = pin?.(message) ?? message
        const filtered = filter?.(pinned) ?? pinned
        // Masked before it is recorded: a debugging audit never holds what the client was spared.
        const edited = mask?.(filtered) ?? filtered
        capture?.(edited)
        return edited === message ? undefined : edited
      })
    }
  }
  return watch.size === 0 && extra.length === 0 ? null : { watch, extra }
}
