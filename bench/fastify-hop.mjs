// The reference hop (bench/reference-hop.mjs) inside a Fastify route: the same work — body read,
// MCP headers passed on, undici Pool out, the response piped back — with Fastify's routing,
// hooks, body parsing and per-request logger (the gateway's own, at warn) around it. Beside
// the reference hop it shows what the framework costs; beside the gateway, what the gateway's
// own work costs (docs/benchmarks.md, 2026-12-02). Needs the build (dist/).
// Usage: node bench/fastify-hop.mjs <upstream url> <port>
import { createLogger } from '../dist/observability/logger.js'
import { hopApp } from './hop-app.mjs'

const [upstreamUrl, port] = process.argv.slice(2)
const app = hopApp(createLogger('warn'), upstreamUrl)
await app.listen({ port: Number(port), host: '127.0.0.1' })
process.stdout.write('ready\n')
