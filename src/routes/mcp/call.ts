/**
 * One MCP request on its way through the gateway: what each step of the route (../mcp.ts)
 * reads and extends. A step is a small function of the call; the route's table orders them,
 * and `runSteps` runs them until one has answered.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { JsonRpcId } from '../../errors.js'
import type { Config, ServerConfig } from '../../config/schema.js'
import type { McpInspection } from '../../mcp/jsonrpc.js'
import type { ToolParamHeaders } from '../../mcp/param-headers.js'
import type { OriginPolicy } from '../../mcp/origin.js'
import type { Authenticator } from '../../resource-server/plugin.js'
import type { RequestIdentity } from '../../resource-server/verify-token.js'
import type { Caller, ServerPolicy } from '../../policy/policy.js'
import type { GateOptions, MessageOutcome } from '../../policy/gate.js'
import type { ChargeOptions } from '../../rate-limit/charge.js'
import type { ResponseEdit } from '../../upstreams/response-edit.js'
import type { FailureRecord } from '../../upstreams/respond.js'
import type { Upstream } from '../../upstreams/types.js'
import type { SessionOwner } from '../../upstreams/session-owners.js'
import type { AuditLog } from '../../observability/audit.js'
import type { Metrics } from '../../observability/metrics.js'
import type { TraceSettings } from '../../observability/request-trace.js'
import type { RequestTrace } from '../../observability/request-trace.js'
import type { RedactionCounts, Redactor } from '../../guardrails/redactor.js'
import type { ToolGuard } from '../../guardrails/tool-guard.js'
import type { SessionDirectory } from '../../cluster/sessions.js'
import type { ReplicaForwarder } from '../../cluster/forward.js'
import { ANONYMOUS, type UserIdentity } from '../../identity.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The MCP request's state, from the route's first step on (null on other routes). */
    mcpCall: McpCall | null
  }
}

/** What the steps of one server's route share: built once per server, read by every call. */
export interface McpRoute {
  readonly config: Config
  readonly server: ServerConfig
  readonly upstream: Upstream
  readonly policy: ServerPolicy
  readonly isClosing: () => boolean
  readonly isOriginAllowed: OriginPolicy
  /** Undefined when auth is disabled: every request is anonymous. */
  readonly authenticate: Authenticator | undefined
  readonly audit: AuditLog | undefined
  readonly metrics: Metrics
  /** What the gate needs to judge a message (policy, guardrails). */
  readonly gateOptions: GateOptions
  /** What charging an allowed call needs (rate limits on); undefined: calls cost nothing. */
  readonly chargeOptions: ChargeOptions | undefined
  /** Mcp-Param-* headers the gateway checks itself (stdio servers: it is their HTTP side). */
  readonly paramHeaders: ToolParamHeaders | undefined
  /** servers[].redactResults, when set. */
  readonly redactor: Redactor | undefined
  /** Pinned tool definitions and argument validation (README "Guardrails"). */
  readonly guard: ToolGuard | undefined
  /** The guard when it judges calls (pinning or argument checks on). */
  readonly guardsCalls: ToolGuard | undefined
  readonly tracing: TraceSettings | undefined
  readonly drainingHolder: ((server: string, sessionId: string) => Upstream | undefined) | undefined
  readonly replicas: { readonly directory: SessionDirectory, readonly forwarder: ReplicaForwarder } | undefined
  /** What was masked in each answer, for its audit record. */
  readonly redactions: WeakMap<MessageOutcome, RedactionCounts>
  /** Results recorded for a debugging audit (audit.includeResults), until the record is written. */
  readonly captured: WeakMap<MessageOutcome, string>
  /** A verified identity whose grant was revoked or whose user was blocked since: a virtual server's request for it is refused. */
  readonly isRevoked: ((identity: RequestIdentity) => boolean) | undefined
}

/** A step of the route: reads the call, extends it, or answers (throwing a PortcullisError is answering). */
export type Step = (call: McpCall) => void | Promise<void>

const NO_OUTCOMES: readonly MessageOutcome[] = []

export class McpCall implements FailureRecord {
  /** The request's spans (README "Tracing"); null with telemetry off. */
  trace: RequestTrace | null = null
  /** Who is calling, from the verified access token (null when auth is disabled). */
  identity: RequestIdentity | null = null
  /** The caller as policy sees it, and the key its rate limits are counted under. */
  caller: Caller = ANONYMOUS_CALLER
  callerKey = ''
  /** The virtual server this request came through (./member-entry.ts), for the audit. */
  virtualServer: string | undefined = undefined
  /** The inspected JSON-RPC body (POST only); what policy, limits and audit read. */
  inspection: McpInspection | null = null
  /** The gate's decision per message, in the body's order. */
  outcomes: readonly MessageOutcome[] = NO_OUTCOMES
  /** What goes upstream when the gate changed it (a batch without its refused members). */
  forward: { body: Buffer, inspection: McpInspection } | null = null
  /** Changes to the answer (filtered lists, masked results, batch errors); null for most. */
  edit: ResponseEdit | null = null
  /** A step answered (or handed the reply over): the steps after it do not run. */
  isAnswered = false
  /** Requests the gateway answered with its own error after letting them through: all, or by id (the upstream adapter notes them). */
  private failed: Set<JsonRpcId> | true | undefined = undefined
  /** Requests the client cancelled (notifications/cancelled) that the gateway stopped waiting for. */
  private cancelled: Set<JsonRpcId> | undefined = undefined
  constructor (readonly route: McpRoute, readonly request: FastifyRequest, readonly reply: FastifyReply) {}

  markFailed (id?: JsonRpcId): void {
    if (id === undefined) this.failed = true
    else if (this.failed === undefined) this.failed = new Set([id])
    else if (this.failed !== true) this.failed.add(id)
  }

  markCancelled (id: JsonRpcId): void {
    (this.cancelled ??= new Set()).add(id)
  }

  /** Did the client cancel this request (by JSON-RPC id) before its answer came? */
  wasCancelled (id: JsonRpcId): boolean {
    return this.cancelled?.has(id) === true
  }

  /** Did the gateway fail this request (by JSON-RPC id)? Metrics count such calls as failed. */
  hasFailed (id: JsonRpcId): boolean {
    return this.failed === true || (this.failed !== undefined && this.failed.has(id))
  }

  /** Whom sessions, processes and per-user values belong to. */
  get user (): UserIdentity {
    return userOf(this.identity)
  }

  /** A session belongs to the user and the client that opened it. */
  ownerOf (user: UserIdentity = this.user): SessionOwner {
    return { user: user.id, client: this.identity?.clientId ?? '' }
  }
}

const ANONYMOUS_CALLER: Caller = Object.freeze({ name: ANONYMOUS.name, groups: [], clientId: undefined, isClient: false, scopes: undefined })

/** Runs the steps in order until one has answered; a step's error is the route's answer. */
export async function runSteps (call: McpCall, steps: readonly Step[]): Promise<void> {
  for (const step of steps) {
    const pending = step(call)
    // Most steps are synchronous: no extra tick for them.
    if (pending !== undefined) await pending
    if (call.isAnswered) return
  }
}

/**
 * A machine client (client_credentials) is its own principal, kept apart from any user: its
 * `sub` is its client id, which must never make it a user of the same name.
 */
export function userOf (identity: RequestIdentity | null): UserIdentity {
  if (identity === null) return ANONYMOUS
  if (identity.isClient) return { id: `client:${identity.clientId}`, name: identity.clientId, groups: [], isClient: true }
  return { id: identity.id, name: identity.name, groups: identity.groups ?? [], ...(identity.email === undefined ? {} : { email: identity.email }) }
}
