/**
 * A Channel is the gateway's JSON-RPC conversation with one stdio child, and
 * the routing of that conversation to the clients attached to it.
 *
 * Exclusive channels (isolation: session) have one client: messages pass
 * through verbatim, ids untouched. Shared channels (isolation: user, shared,
 * and stateless 2026-07-28 traffic) carry many clients: the gateway gives every
 * request its own child-side id and progress token and maps answers back, so
 * concurrent clients never see each other's responses.
 *
 * Server-to-client traffic is routed by what identifies it: responses by id,
 * progress by token, 2026 listen notifications by subscription id, list
 * changes to everyone. What cannot be attributed (a sampling request while two
 * clients have calls in flight on a shared child) is refused rather than
 * guessed: sending one user's elicitation to another would leak data.
 */
import type { FastifyBaseLogger } from 'fastify'
import { jsonRpcError, PortcullisError, type JsonRpcId } from '../../errors.js'
import type { McpChild } from './child-process.js'
import { InFlightMap } from '../../in-flight.js'
import { memberAt, replaced, valueText, withValueAt } from './readdress.js'

/** Where the messages related to one POST go. */
export interface ReplySink {
  readonly isOpen: boolean
  /** A message for request `clientId`; `isFinal` when it is that request's response. */
  deliver: (json: string, clientId: JsonRpcId, isFinal: boolean) => void
  /** The gateway's own failure for request `clientId` (its HTTP status is used if nothing was sent yet). */
  fail: (err: PortcullisError, clientId: JsonRpcId) => void
  /** The client cancelled `clientId`: no answer is coming. */
  abandon: (clientId: JsonRpcId) => void
}

export type DeliveryKind = 'related' | 'broadcast'

/** A client attached to a channel: a 2025-era session, or one 2026-era request. */
export interface ChannelClient {
  readonly label: string
  /**
   * A message not answering one of this client's requests: a server-to-client
   * request or notification. `hint` is the sink of the client's latest
   * request still in flight, where related messages belong.
   */
  deliver: (json: string, kind: DeliveryKind, hint: ReplySink | undefined) => void
  /** The child is gone; the client's session cannot continue. */
  onChannelClosed: () => void
}

interface Pending {
  readonly childId: JsonRpcId
  readonly client: ChannelClient
  readonly clientId: JsonRpcId
  readonly sink: ReplySink
  readonly clientProgressToken: string | number | undefined
  readonly childProgressToken: string | number | undefined
  /** Re-addressed requests: the client's id and progress token as it wrote them (readdress.ts says why). */
  readonly clientIdText: string | undefined
  readonly clientTokenText: string | undefined
  readonly timeoutMs: number
  timer: NodeJS.Timeout | undefined
}

type Message = Record<string, unknown>

const META_SUBSCRIPTION_ID = 'io.modelcontextprotocol/subscriptionId'
const ID_PATH = ['id'] as const
const REQUEST_TOKEN_PATH = ['params', '_meta', 'progressToken'] as const
const PROGRESS_TOKEN_PATH = ['params', 'progressToken'] as const
const SUBSCRIPTION_PATH = ['params', '_meta', META_SUBSCRIPTION_ID] as const
/**
 * How long a request given up by its client counts as possibly still running at the child,
 * when the child never answers it (a tool that ignores cancellation), and how many are kept.
 */
const ABANDONED_KEPT_MS = 60 * 60_000
const MAX_ABANDONED = 10_000
const LIST_CHANGED = new Set(['notifications/tools/list_changed', 'notifications/prompts/list_changed', 'notifications/resources/list_changed'])

function isProgressToken (value: unknown): value is string | number {
  return typeof value === 'string' || typeof value === 'number'
}

function paramsOf (message: Message): Record<string, unknown> | undefined {
  const params = message.params
  return params !== null && typeof params === 'object' && !Array.isArray(params) ? params as Record<string, unknown> : undefined
}

function metaOf (params: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  const meta = params?._meta
  return meta !== null && typeof meta === 'object' && !Array.isArray(meta) ? meta as Record<string, unknown> : undefined
}

export interface ChannelOptions {
  readonly server: string
  readonly isExclusive: boolean
  readonly requestTimeoutMs: number
  readonly log: FastifyBaseLogger
  /** The upstream's clock (injectable for idle expiry). */
  readonly now: () => number
}

export class Channel {
  readonly clients = new Set<ChannelClient>()
  /** Cached InitializeResult (shared channels answer later sessions' `initialize` from it). */
  initializeResult: Message | undefined
  lastActivityAt: number
  private nextId = 1
  /** Requests in flight by the child's id, and by their progress token (src/in-flight.ts says why not Maps). */
  private readonly pending = new InFlightMap<JsonRpcId, Pending>()
  private readonly progressRoutes = new InFlightMap<string | number, Pending>()
  /** Server-to-client requests awaiting a client's answer, by the child's request id. */
  private readonly outgoing = new InFlightMap<JsonRpcId, ChannelClient>()
  private readonly subscriptions = new Map<ChannelClient, Set<string>>()
  /**
   * Shared channels: requests a client gave up (cancelled, timed out, left) that the child has
   * not answered yet, by the child's id. The child may still be working on one, and what it
   * sends meanwhile (an elicitation, a log line) may be that work's: it is not given to another
   * client as if it were theirs.
   */
  private readonly abandoned = new Map<JsonRpcId, { readonly client: ChannelClient, readonly atMs: number }>()
  private isClosed = false

  constructor (readonly child: McpChild, private readonly options: ChannelOptions) {
    this.lastActivityAt = options.now()
    child.onMessage = (message, line) => this.onChildMessage(message, line)
    child.onExit((exit) => {
      const detail = exit.error !== undefined ? `MCP server "${options.server}" failed to start` : `MCP server "${options.server}" exited`
      this.failAll(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', detail))
      this.isClosed = true
      for (const client of [...this.clients]) client.onChannelClosed()
      this.clients.clear()
    })
  }

  get isAlive (): boolean {
    return !this.isClosed && this.child.isRunning
  }

  get inFlight (): number {
    return this.pending.size
  }

  attach (client: ChannelClient): void {
    this.clients.add(client)
  }

  /**
   * Forgets a client; its requests still in flight are cancelled at the child, and answered
   * with `ended` when given (a session that ends: no answer will reach its client otherwise).
   */
  detach (client: ChannelClient, ended?: PortcullisError): void {
    this.clients.delete(client)
    const held = this.subscriptions.get(client)
    this.subscriptions.delete(client)
    // A shared process has one subscription per resource for all its clients: the last to go ends it.
    if (held !== undefined && !this.options.isExclusive && this.isAlive) {
      for (const uri of held) {
        if (!this.isSubscribedByAnother(client, uri)) this.child.send(JSON.stringify({ jsonrpc: '2.0', id: this.nextId++, method: 'resources/unsubscribe', params: { uri } }))
      }
    }
    for (const [childId, p] of this.pending.entries()) {
      if (p.client === client) {
        this.giveUp(childId, p)
        this.sendCancelled(childId, 'client went away')
        if (ended !== undefined) p.sink.fail(ended, p.clientId)
      }
    }
    for (const [id, c] of this.outgoing.entries()) if (c === client) this.outgoing.delete(id)
  }

  /**
   * Forwards a client request; `raw` is its exact JSON text when it may pass
   * verbatim. `timeoutMs` bounds its silence (0: the caller keeps the time,
   * as handshakes do with the start-up timeout).
   */
  forwardRequest (client: ChannelClient, message: Message, raw: string | undefined, sink: ReplySink, timeoutMs = this.options.requestTimeoutMs): void {
    const clientId = message.id as JsonRpcId
    if (!this.isAlive) {
      sink.fail(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE', `MCP server "${this.options.server}" is not running`), clientId)
      return
    }
    const params = paramsOf(message)
    if (!this.options.isExclusive && this.answersSubscriptionItself(client, message, clientId, sink)) return
    const meta = metaOf(params)
    const clientToken = isProgressToken(meta?.progressToken) ? meta.progressToken : undefined
    let childId: JsonRpcId = clientId
    let childToken = clientToken
    let json = raw
    let clientIdText: string | undefined
    let clientTokenText: string | undefined
    if (this.options.isExclusive) {
      if (this.pending.has(clientId)) {
        sink.fail(new PortcullisError('PORTCULLIS_ERR_INVALID_REQUEST', `request id ${JSON.stringify(clientId)} is already in use in this session`), clientId)
        return
      }
      json ??= JSON.stringify(message)
    } else {
      childId = this.nextId++
      childToken = clientToken === undefined ? undefined : childId
      // The client's text with the child's id and token put in, when it came as text (not a batch).
      const idAt = raw === undefined ? undefined : memberAt(raw, ID_PATH)
      const tokenAt = raw === undefined || clientToken === undefined ? undefined : memberAt(raw, REQUEST_TOKEN_PATH)
      if (raw !== undefined && idAt !== undefined && (clientToken === undefined || tokenAt !== undefined)) {
        clientIdText = valueText(raw, idAt)
        clientTokenText = tokenAt === undefined ? undefined : valueText(raw, tokenAt)
        json = replaced(raw, tokenAt === undefined ? [[idAt, String(childId)]] : [[idAt, String(childId)], [tokenAt, String(childToken)]])
      } else {
        const rewrittenParams = clientToken === undefined ? params : { ...params, _meta: { ...meta, progressToken: childToken } }
        json = JSON.stringify({ ...message, id: childId, ...(rewrittenParams === undefined ? {} : { params: rewrittenParams }) })
      }
    }
    const entry: Pending = { childId, client, clientId, sink, clientProgressToken: clientToken, childProgressToken: childToken, clientIdText, clientTokenText, timeoutMs, timer: undefined }
    this.pending.set(childId, entry)
    if (childToken !== undefined) this.progressRoutes.set(childToken, entry)
    this.armTimer(entry)
    this.trackSubscription(client, message)
    this.lastActivityAt = this.options.now()
    this.child.send(json)
  }

  /** Forwards a client notification (cancellations are re-addressed to the child's id). */
  forwardNotification (client: ChannelClient, message: Message, raw: string | undefined): void {
    if (!this.isAlive) return
    if (message.method === 'notifications/cancelled') {
      const params = paramsOf(message)
      const target = this.findPending(client, params?.requestId as JsonRpcId)
      if (target === undefined) return
      const [childId, p] = target
      this.giveUp(childId, p)
      p.sink.abandon(p.clientId)
      this.child.send(JSON.stringify({ ...message, params: { ...params, requestId: childId } }))
      return
    }
    this.child.send(raw ?? JSON.stringify(message))
  }

  /** A client's answer to a server-to-client request: accepted only from the client it was sent to. */
  forwardResponse (client: ChannelClient, message: Message, raw: string | undefined): void {
    const id = message.id as JsonRpcId
    if (this.outgoing.get(id) !== client) {
      this.options.log.warn({ server: this.options.server, client: client.label, id }, 'dropped a response to a request this client was not sent')
      return
    }
    this.outgoing.delete(id)
    this.rearmTimersOf(client)
    if (this.isAlive) this.child.send(raw ?? JSON.stringify(message))
  }

  /** The client closed a 2026-07-28 request's stream: that is its cancellation. */
  cancel (client: ChannelClient, clientId: JsonRpcId): void {
    const target = this.findPending(client, clientId)
    if (target === undefined) return
    this.giveUp(target[0], target[1])
    this.sendCancelled(target[0], 'client closed the stream')
  }

  /**
   * A request the gateway itself makes (era probe, shared initialize). Only on
   * rewriting channels, so the gateway's ids never collide with a client's.
   */
  call (message: Message, timeoutMs: number): Promise<Message> {
    if (this.options.isExclusive) throw new Error('Channel.call needs a rewriting (non-exclusive) channel')
    return new Promise((resolve, reject) => {
      const self: ChannelClient = { label: 'gateway', deliver: () => {}, onChannelClosed: () => {} }
      const timer = setTimeout(() => {
        this.detach(self)
        reject(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT', `MCP server "${this.options.server}" did not answer ${String(message.method)}`))
      }, timeoutMs)
      const sink: ReplySink = {
        isOpen: true,
        deliver: (json, _id, isFinal) => {
          if (!isFinal) return
          clearTimeout(timer)
          this.detach(self)
          resolve(JSON.parse(json) as Message)
        },
        fail: (err) => {
          clearTimeout(timer)
          this.detach(self)
          reject(err)
        },
        abandon: () => {},
      }
      this.attach(self)
      this.forwardRequest(self, message, undefined, sink, 0)
    })
  }

  /** Fails every request in flight (child gone, shutdown). */
  failAll (err: PortcullisError): void {
    for (const [childId, p] of this.pending.entries()) {
      this.drop(childId, p)
      p.sink.fail(err, p.clientId)
    }
    this.outgoing.clear()
    this.abandoned.clear()
  }

  private findPending (client: ChannelClient, clientId: JsonRpcId | undefined): [JsonRpcId, Pending] | undefined {
    if (clientId === undefined) return undefined
    for (const entry of this.pending.entries()) if (entry[1].client === client && entry[1].clientId === clientId) return entry
    return undefined
  }

  private drop (childId: JsonRpcId, p: Pending): void {
    this.pending.delete(childId)
    if (p.childProgressToken !== undefined) this.progressRoutes.delete(p.childProgressToken)
    clearTimeout(p.timer)
  }

  /** A request its client gave up before the child answered: dropped, and remembered as still running (shared channels). */
  private giveUp (childId: JsonRpcId, p: Pending): void {
    this.drop(childId, p)
    if (this.options.isExclusive) return
    if (this.abandoned.size >= MAX_ABANDONED) {
      const oldest = this.abandoned.keys().next()
      if (oldest.done !== true) this.abandoned.delete(oldest.value)
    }
    this.abandoned.set(childId, { client: p.client, atMs: this.options.now() })
  }

  private sendCancelled (childId: JsonRpcId, reason: string): void {
    if (this.isAlive) this.child.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: childId, reason } }))
  }

  private armTimer (p: Pending): void {
    clearTimeout(p.timer)
    if (p.timeoutMs === 0) return
    p.timer = setTimeout(() => {
      if (this.pending.get(p.childId) !== p) return
      this.giveUp(p.childId, p)
      this.sendCancelled(p.childId, 'timed out at the gateway')
      this.options.log.warn({ server: this.options.server, client: p.client.label, timeoutMs: p.timeoutMs }, 'stdio request timed out')
      p.sink.fail(new PortcullisError('PORTCULLIS_ERR_UPSTREAM_TIMEOUT'), p.clientId)
    }, p.timeoutMs)
    p.timer.unref()
  }

  /**
   * A server-to-client request, and the client's answer, are signs of life of that client's calls
   * in flight, as progress is: the server is waiting on the client (an elicitation a person
   * answers), not silent. Their silence timers start again.
   */
  private rearmTimersOf (client: ChannelClient): void {
    for (const p of this.pending.values()) if (p.client === client) this.armTimer(p)
  }

  /**
   * A shared process holds one subscription per resource, whoever asked: a client subscribing to
   * a resource another client already follows, or leaving one another client still follows, is
   * answered here, so no client's unsubscribe ends another's updates.
   */
  private answersSubscriptionItself (client: ChannelClient, message: Message, clientId: JsonRpcId, sink: ReplySink): boolean {
    const method = message.method
    if (method !== 'resources/subscribe' && method !== 'resources/unsubscribe') return false
    const uri = paramsOf(message)?.uri
    if (typeof uri !== 'string' || !this.isSubscribedByAnother(client, uri)) return false
    this.trackSubscription(client, message)
    sink.deliver(JSON.stringify({ jsonrpc: '2.0', id: clientId, result: {} }), clientId, true)
    return true
  }

  private isSubscribedByAnother (client: ChannelClient, uri: string): boolean {
    for (const [other, uris] of this.subscriptions) if (other !== client && uris.has(uri)) return true
    return false
  }

  private trackSubscription (client: ChannelClient, message: Message): void {
    const method = message.method
    if (method !== 'resources/subscribe' && method !== 'resources/unsubscribe') return
    const uri = paramsOf(message)?.uri
    if (typeof uri !== 'string') return
    let set = this.subscriptions.get(client)
    if (set === undefined) {
      set = new Set()
      this.subscriptions.set(client, set)
    }
    if (method === 'resources/subscribe') set.add(uri)
    else set.delete(uri)
  }

  private latestSinkOf (client: ChannelClient): ReplySink | undefined {
    let sink: ReplySink | undefined
    for (const p of this.pending.values()) if (p.client === client && p.sink.isOpen) sink = p.sink
    return sink
  }

  /**
   * The one client a server-originated message can be attributed to, if there is exactly one:
   * the only client with requests in flight (or, none in flight, the only client), and no
   * request another client gave up may still be running at the child.
   */
  private soleClient (): ChannelClient | undefined {
    const busy = new Set<ChannelClient>()
    for (const p of this.pending.values()) busy.add(p.client)
    const sole: ChannelClient | undefined = busy.size === 1
      ? busy.values().next().value
      : busy.size === 0 && this.clients.size === 1 ? this.clients.values().next().value : undefined
    if (sole === undefined) return undefined
    const now = this.options.now()
    for (const [childId, given] of this.abandoned) {
      if (now - given.atMs >= ABANDONED_KEPT_MS) this.abandoned.delete(childId)
      else if (given.client !== sole) return undefined
    }
    return sole
  }

  private onChildMessage (message: Message, line: string): void {
    this.lastActivityAt = this.options.now()
    const hasMethod = typeof message.method === 'string'
    if (!hasMethod && 'id' in message) return this.onChildResponse(message, line)
    if (hasMethod && 'id' in message) return this.onChildRequest(message, line)
    if (hasMethod) return this.onChildNotification(message, line)
    this.options.log.warn({ server: this.options.server }, 'stdio server sent a JSON-RPC message of no known kind; skipped')
  }

  private onChildResponse (message: Message, line: string): void {
    const childId = message.id as JsonRpcId
    const p = this.pending.get(childId)
    if (p === undefined) {
      // The child is done with a request its client gave up: what it sends next is not that work's.
      this.abandoned.delete(childId)
      // Answer to a cancelled or timed-out request: the client no longer waits for it.
      this.options.log.debug({ server: this.options.server, id: childId }, 'response for a request no longer pending; dropped')
      return
    }
    this.drop(childId, p)
    const json = this.options.isExclusive && childId === p.clientId
      ? line
      : withValueAt(line, ID_PATH, p.clientIdText ?? JSON.stringify(p.clientId)) ?? JSON.stringify({ ...message, id: p.clientId })
    p.sink.deliver(json, p.clientId, true)
  }

  private onChildRequest (message: Message, line: string): void {
    const client = this.options.isExclusive ? this.clients.values().next().value : this.soleClient()
    if (client === undefined) {
      this.options.log.warn({ server: this.options.server, method: message.method }, 'server-to-client request could not be attributed to one client; refused')
      this.child.send(JSON.stringify({
        jsonrpc: '2.0',
        id: message.id,
        error: { code: -32603, message: `Portcullis cannot route ${String(message.method)} on a shared process while several clients are active` },
      }))
      return
    }
    this.outgoing.set(message.id as JsonRpcId, client)
    this.rearmTimersOf(client)
    client.deliver(line, 'related', this.latestSinkOf(client))
  }

  private onChildNotification (message: Message, line: string): void {
    const params = paramsOf(message)
    if (message.method === 'notifications/progress' && isProgressToken(params?.progressToken)) {
      const p = this.progressRoutes.get(params.progressToken)
      if (p === undefined) return
      // Progress is a sign of life: the request's silence timer starts again.
      this.armTimer(p)
      const json = p.clientProgressToken === p.childProgressToken
        ? line
        : withValueAt(line, PROGRESS_TOKEN_PATH, p.clientTokenText ?? JSON.stringify(p.clientProgressToken)) ?? JSON.stringify({ ...message, params: { ...params, progressToken: p.clientProgressToken } })
      p.sink.deliver(json, p.clientId, false)
      return
    }
    const subscriptionId = metaOf(params)?.[META_SUBSCRIPTION_ID]
    if (subscriptionId !== undefined) {
      // MCP 2026-07-28 subscriptions/listen: the listen request's id names the stream.
      const p = this.pending.get(subscriptionId as JsonRpcId)
      if (p === undefined) return
      const json = p.clientId === subscriptionId
        ? line
        : withValueAt(line, SUBSCRIPTION_PATH, p.clientIdText ?? JSON.stringify(p.clientId)) ?? JSON.stringify({ ...message, params: { ...params, _meta: { ...metaOf(params), [META_SUBSCRIPTION_ID]: p.clientId } } })
      p.sink.deliver(json, p.clientId, false)
      return
    }
    if (message.method === 'notifications/cancelled') {
      const client = this.outgoing.get(params?.requestId as JsonRpcId)
      if (client !== undefined) {
        this.outgoing.delete(params?.requestId as JsonRpcId)
        client.deliver(line, 'related', this.latestSinkOf(client))
      }
      return
    }
    if (LIST_CHANGED.has(message.method as string)) {
      for (const client of this.clients) client.deliver(line, 'broadcast', undefined)
      return
    }
    if (message.method === 'notifications/resources/updated') {
      const uri = params?.uri
      for (const client of this.clients) {
        if (this.options.isExclusive || (typeof uri === 'string' && this.subscriptions.get(client)?.has(uri) === true)) client.deliver(line, 'broadcast', undefined)
      }
      return
    }
    // Logging and other notifications: to the one client they can belong to.
    const client = this.options.isExclusive ? this.clients.values().next().value : this.soleClient()
    if (client === undefined) {
      this.options.log.debug({ server: this.options.server, method: message.method }, 'notification could not be attributed to one client; dropped')
      return
    }
    client.deliver(line, 'related', this.latestSinkOf(client))
  }
}

/** A JSON-RPC error response as a line, for sinks. */
export function errorLine (err: PortcullisError, id: JsonRpcId): string {
  return JSON.stringify(jsonRpcError(err, id))
}
