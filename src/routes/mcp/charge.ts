import { charge as chargeOutcomes } from '../../rate-limit/charge.js'
import type { McpCall } from './call.js'

/** What the allowed calls cost: rate limits and concurrency caps (429; 503 with the store down and onStoreError deny). */
export function charge (call: McpCall): void | Promise<void> {
  const options = call.route.chargeOptions
  if (options === undefined || call.outcomes.length === 0) return
  const trace = call.trace
  const charged = chargeOutcomes(trace === null ? options : { ...options, step: (name, fn) => trace.step(name, fn) }, call.callerKey, call.outcomes)
  // No limit applies (the usual case): synchronous, so runSteps goes on without a tick.
  if (!(charged instanceof Promise)) {
    call.outcomes = charged
    return
  }
  return charged.then((outcomes) => { call.outcomes = outcomes })
}
