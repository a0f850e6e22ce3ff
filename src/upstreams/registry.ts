/** The upstream adapter of a configured server. */
import type { FastifyBaseLogger } from 'fastify'
import type { ServerConfig } from '../config/schema.js'
import { HttpUpstream } from './http-upstream.js'
import { SseUpstream } from './sse-upstream.js'
import { StdioUpstream, type SessionHooks } from './stdio/stdio-upstream.js'
import type { Upstream } from './types.js'
import type { SessionOwners } from './session-owners.js'
import type { StreamKeeper } from './stream-keeper.js'
import type { IdentitySigner } from './identity-token.js'
import type { LinkedTokenSource, UpstreamCredentialsFactory } from './upstream-credentials.js'

export interface UpstreamOptions {
  readonly log: FastifyBaseLogger
  readonly version: string
  /** Clock for idle expiry; tests inject one. */
  readonly now?: () => number
  /** A stdio server's process exited without being asked to. */
  readonly onStdioExit?: (server: string) => void
  /** Told about stdio sessions opening and closing (replicas' session directory). */
  readonly sessionHooks?: SessionHooks
  /** Who opened each HTTP upstream session. */
  readonly httpSessionOwners: SessionOwners
  /** Keep-alive comments on idle client event streams. */
  readonly streamKeeper: StreamKeeper
  /** Signs servers[].identity tokens (auth on: the authorization server's key). */
  readonly identitySigner?: IdentitySigner
  /** servers[].upstreamAuth: each caller's own credential at an HTTP upstream. */
  readonly credentialsFor?: UpstreamCredentialsFactory
  /** How often a stdio handshake still pending logs "still starting" (tests shorten it). */
  readonly stdioStartingLogIntervalMs?: number
  /** `${user.credentials.<server>}` in stdio env: the caller's linked token at that server. */
  readonly linkedToken?: LinkedTokenSource
}

/** The adapter for one server (a reload makes them one at a time: src/reload/upstream-pool.ts). */
export function createUpstream (server: ServerConfig, options: UpstreamOptions): Upstream {
  return server.transport === 'http'
    ? new HttpUpstream(server, options.httpSessionOwners, options.streamKeeper, options.identitySigner, server.upstreamAuth === undefined ? undefined : options.credentialsFor?.(server.name))
    : server.transport === 'sse' ? new SseUpstream(server, options.httpSessionOwners, options.streamKeeper, options.log, options.identitySigner, options.now)
    : new StdioUpstream({
      config: server,
      log: options.log,
      version: options.version,
      ...(options.now === undefined ? {} : { now: options.now }),
      ...(options.onStdioExit === undefined ? {} : { onUnexpectedExit: () => options.onStdioExit?.(server.name) }),
      ...(options.sessionHooks === undefined ? {} : { sessionHooks: options.sessionHooks }),
      streamKeeper: options.streamKeeper,
      ...(options.stdioStartingLogIntervalMs === undefined ? {} : { startingLogIntervalMs: options.stdioStartingLogIntervalMs }),
      ...(options.linkedToken === undefined ? {} : { linkedToken: options.linkedToken }),
    })
}
