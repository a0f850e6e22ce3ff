import type { FastifyReply, FastifyRequest } from 'fastify'
import { writeJson } from '../../upstreams/respond.js'
import type { InProcessResponse } from '../../virtual/in-process-response.js'
import type { MemberEntry } from '../../virtual/member-link.js'
import { McpCall, runSteps, type McpRoute, type Step } from './call.js'
import { errorAnswer } from './error-answer.js'

/**
 * A virtual server's request to this server's route, in process (../../virtual/member-link.ts):
 * `steps` are the route's after admission and the token check, which the virtual route ran for
 * its own resource. The request and reply the steps see are light stand-ins for Fastify's, with
 * what the steps, the error answer and the upstream adapters read; the adapters write on `res`.
 */
export function memberEntry (route: McpRoute, steps: readonly Step[]): MemberEntry {
  return async (request, res) => {
    const call = new McpCall(route, request as unknown as FastifyRequest, new InProcessReply(res) as unknown as FastifyReply)
    call.identity = request.caller.identity
    call.virtualServer = request.caller.virtualServer
    call.inspection = request.inspection ?? null
    try {
      await runSteps(call, steps)
    } catch (err) {
      const answer = errorAnswer(err as Error, call, request.log)
      // An answer already begun is dropped, not continued with an error (a cut-short body must not look complete).
      if (res.headersSent) res.destroy()
      else writeJson(res as unknown as Parameters<typeof writeJson>[0], answer.status, JSON.stringify(answer.payload), answer.headers)
    }
  }
}

/** The part of FastifyReply the steps use (planResponse's own answers, relay's hijack, record's latency). */
class InProcessReply {
  private status = 200
  private readonly fields: Record<string, string> = {}
  private readonly startedAtMs = performance.now()

  constructor (readonly raw: InProcessResponse) {}

  code (status: number): this {
    this.status = status
    return this
  }

  type (contentType: string): this {
    this.fields['content-type'] = contentType
    return this
  }

  /** A JSON answer, or none. */
  send (payload?: object): this {
    const body = payload === undefined ? '' : JSON.stringify(payload)
    this.raw.writeHead(this.status, { ...this.fields, 'content-length': Buffer.byteLength(body) })
    this.raw.end(body)
    return this
  }

  /** The steps hand the response over to the upstream adapter: this reply never writes by itself anyway. */
  hijack (): void {}

  /** Milliseconds since the request reached the route (the audit's latency). */
  get elapsedTime (): number {
    return performance.now() - this.startedAtMs
  }
}
