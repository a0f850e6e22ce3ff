/**
 * What every upstream adapter implements. Adapters see raw Node objects and
 * the inspected request, never Fastify: the route does auth, policy and
 * limits first, then hands the exchange over.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type { McpInspection } from '../mcp/jsonrpc.js'
import type { UserIdentity } from '../identity.js'
import type { ResponseEdit } from './response-edit.js'
import type { SessionOwner } from './session-owners.js'
import type { FailureRecord } from './respond.js'

export interface McpExchange {
  readonly method: 'GET' | 'POST' | 'DELETE'
  readonly headers: IncomingHttpHeaders
  /** The POST body exactly as received; forwarded verbatim. */
  readonly body: Buffer | undefined
  /** Present for POST. */
  readonly inspection: McpInspection | undefined
  /** Who is calling; sessions and per-user processes are bound to it. */
  readonly user: UserIdentity
  /** The caller and the client it uses: sessions belong to both (a user's other client is another owner). */
  readonly owner: SessionOwner
  /** Changes to the answer (filtered lists, batch errors); absent for almost every request. */
  readonly edit?: ResponseEdit
  /** With tracing on: traceparent/tracestate of the gateway's span, sent to an HTTP upstream in place of the client's. */
  readonly traceHeaders?: Readonly<Record<string, string>>
  /** Where the adapter notes requests the gateway answered with its own error (metrics: failed calls). */
  readonly failures: FailureRecord
  readonly res: ServerResponse
  /**
   * `res` is a virtual server's in-process response (src/virtual): the virtual route keeps its
   * own client's stream alive, so this answer gets no keep-alive comments (it is still counted).
   */
  readonly isInProcess?: boolean
  readonly log: FastifyBaseLogger
}

export interface UpstreamHealth {
  readonly name: string
  readonly transport: string
  readonly isReachable: boolean
  readonly latencyMs?: number
  readonly error?: string
  readonly [detail: string]: unknown
}

/** What an upstream carries right now (metrics, /readyz). */
export interface UpstreamLoad {
  /** Event streams open to clients (GET streams, streamed answers). */
  readonly streams: number
  /** Exchanges in flight (over HTTP/1.1, one upstream connection each). */
  readonly exchanges: number
}

/** One live MCP session this replica holds, as the admin API lists it. */
export interface UpstreamSession {
  readonly sessionId: string
  /** The user and client that opened it. */
  readonly user: string
  readonly client: string
  readonly openedAtMs: number
  readonly lastUsedAtMs: number
  /** stdio: the process serving it. */
  readonly pid?: number
}

export interface Upstream {
  readonly name: string
  readonly transport: string
  /** Answers the exchange completely (writes and ends `res`); never throws for upstream faults. */
  handle: (exchange: McpExchange) => Promise<void>
  load: () => UpstreamLoad
  /** A cheap reachability check for /readyz. */
  probe: () => Promise<UpstreamHealth>
  /**
   * Ends the long-lived server->client streams (GET), which never finish on
   * their own, so that shutdown can wait for the remaining requests.
   */
  closeStreams: () => void
  /** Fails whatever is still in flight (JSON-RPC errors, not hangs) and frees resources. */
  close: () => Promise<void>
  /**
   * Ends one user's sessions and the processes started for them (offboarding: the identity
   * provider no longer vouches for the user). Upstreams that keep nothing per user have none.
   */
  endUser?: (userId: string) => Promise<void>
  /**
   * Whether this replica holds the session (its process lives here, whoever owns it). Undefined
   * for upstreams whose sessions live at the upstream: any replica can serve them.
   */
  holdsSession?: (sessionId: string) => boolean
  /** Processes alive for this server (metrics); undefined for upstreams that run none. */
  readonly processCount?: number
  /** The live sessions this replica holds (the admin API's session list). */
  liveSessions?: () => UpstreamSession[]
  /** Ends one session as if its client had deleted it; false when this replica holds no such session. */
  endSession?: (sessionId: string, reason: string) => Promise<boolean>
}
