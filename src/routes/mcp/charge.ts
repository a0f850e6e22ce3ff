import { charge as chargeOutcomes } from '../../rate-limit/charge.js'
import type { McpCall } from './call.js'

/** What the allowed calls cost: rate limits and concurrency caps (429; 503 with the store down and onStoreError deny). */
export async function charge (call: McpCall): Promise<void> {
  const options = call.route.chargeOptions
  if (options === undefined || call.outcomes.length === 0) return
  const trace = call.trace
  call.outcomes = await chargeOutcomes(trace === null ? options : { ...options, step: (name, fn) => trace.step(name, fn) }, call.callerKey, call.outcomes)
}
