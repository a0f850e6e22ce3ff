/** One upstream adapter per configured server, by name. */
import type { Config } from '../config/schema.js'
import { HttpUpstream } from './http-upstream.js'
import type { Upstream } from './types.js'

export function createUpstreams (config: Config): Map<string, Upstream> {
  const upstreams = new Map<string, Upstream>()
  for (const server of config.servers) {
    upstreams.set(server.name, new HttpUpstream(server))
  }
  return upstreams
}
