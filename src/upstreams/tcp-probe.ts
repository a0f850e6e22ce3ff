/** /readyz for a remote upstream: a TCP connect to its host and port, nothing more (no MCP traffic, no credentials). */
import { connect } from 'node:net'
import { READY_PROBE_TIMEOUT_MS } from '../config/defaults.js'
import type { UpstreamHealth } from './types.js'

export function probeTcp (name: string, transport: string, target: string): Promise<UpstreamHealth> {
  const url = new URL(target)
  const port = Number(url.port !== '' ? url.port : url.protocol === 'https:' ? 443 : 80)
  const started = performance.now()
  return new Promise((resolve) => {
    const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port, timeout: READY_PROBE_TIMEOUT_MS })
    const settle = (error?: string): void => {
      socket.destroy()
      resolve(error === undefined
        ? { name, transport, isReachable: true, latencyMs: Math.round(performance.now() - started) }
        : { name, transport, isReachable: false, error })
    }
    socket.once('connect', () => settle())
    socket.once('timeout', () => settle('connect timeout'))
    socket.once('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message))
  })
}
