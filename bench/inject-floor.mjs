#!/usr/bin/env node
// The floor of a virtual server's in-process hop (src/virtual/member-link.ts): CPU per Fastify
// `app.inject` to a route that does nothing but answer one SSE event, as a member route answers
// a tools/call, with the answer read back — no gateway code at all. Whatever a virtual server's
// tools/call costs beyond its member's URL (`BENCH_ONLY=virtual npm run bench`) is at least this.
//
//   node bench/inject-floor.mjs        # BENCH_INJECTS per round (default 20000), 4 rounds, the first is warm-up
import Fastify from 'fastify'

const N = Number(process.env.BENCH_INJECTS ?? 20000)
const EVENT = 'event: message\ndata: {"result":{"content":[{"type":"text","text":"hello"}]},"jsonrpc":"2.0","id":1}\n\n'
const BODY = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hello' } } })
const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-portcullis-virtual': 'A'.repeat(43), 'mcp-session-id': 'session' }

const app = Fastify({ logger: false })
app.post('/member/mcp', async (_request, reply) => {
  reply.hijack()
  reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
  reply.raw.write(EVENT)
  reply.raw.end()
})
await app.ready()

const modes = {
  'payloadAsStream (as member-link.ts)': async () => {
    const res = await app.inject({ method: 'POST', url: '/member/mcp', headers: HEADERS, payload: BODY, payloadAsStream: true, remoteAddress: '127.0.0.1' })
    const chunks = []
    for await (const chunk of res.stream()) chunks.push(chunk)
    return Buffer.concat(chunks).length
  },
  buffered: async () => (await app.inject({ method: 'POST', url: '/member/mcp', headers: HEADERS, payload: BODY, remoteAddress: '127.0.0.1' })).rawPayload.length,
}
for (const [mode, once] of Object.entries(modes)) {
  const rounds = []
  for (let round = 0; round < 4; round++) {
    const before = process.cpuUsage()
    for (let i = 0; i < N; i++) if (await once() !== EVENT.length) throw new Error('unexpected answer')
    const used = process.cpuUsage(before)
    rounds.push((used.user + used.system) / N)
  }
  const measured = rounds.slice(1).sort((a, b) => a - b)
  process.stdout.write(`app.inject, ${mode}: ${measured[1].toFixed(1)} µs CPU each (median of 3 rounds of ${N}; warm-up round ${rounds[0].toFixed(1)})\n`)
}
