// servers[].redactResults end to end: a real HTTP upstream (JSON and SSE answers), an SSE answer
// whose secret is cut between two network writes, batches, a GET stream's replayed answer, a real
// stdio child; the audit counts what was masked (never the value) and so does the metric; a
// server that does not ask for masking gets the upstream's bytes untouched.
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connectClient, eventually, MCP_HEADERS, postJson, startGateway, startRawServer, startUpstream, stdioServer, textOf, type RunningGateway } from '../helpers.js'
import { FAKE } from '../fixtures/fake-secrets.mjs'
import { assertNothingLogged, LEAK_COUNTS, MASKED_STRUCTURED, MASKED_TEXT, messagesOf, records, REDACT, session, type Json } from '../redaction-helpers.js'

async function metric (gw: RunningGateway, kind: string): Promise<number> {
  const text = await (await fetch(`${gw.baseUrl}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`portcullis_results_redacted_total{server="fx",kind="${kind}"} `))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

for (const responses of ['SSE', 'JSON'] as const) {
  t.test(`HTTP upstream (${responses} answers): tool, resource and prompt results masked; blobs untouched; audit and metric count`, async (t) => {
    const upstream = await startUpstream(t, { jsonResponse: responses === 'JSON' })
    const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, redactResults: REDACT }] })
    const { client } = await connectClient(t, gw.mcpUrl('fx'))

    const call = await client.callTool({ name: 'leak', arguments: {} })
    t.same(call.content, [{ type: 'text', text: MASKED_TEXT }, { type: 'image', data: FAKE.aws, mimeType: 'image/png' }], 'text masked, the Luhn-invalid number and the image blob kept')
    t.same(call.structuredContent, MASKED_STRUCTURED, 'structured content masked at every depth')
    const read = await client.readResource({ uri: 'leak://config' })
    t.same(read.contents, [{ uri: 'leak://config', text: 'token=[redacted:gitlab-tokens]' }, { uri: 'leak://config.bin', blob: FAKE.aws }], 'resource text masked, blob kept')
    const prompt = await client.getPrompt({ name: 'leaky-prompt' })
    t.same(prompt.messages, [{ role: 'user', content: { type: 'text', text: 'use [redacted:cloud-keys]' } }])
    t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'plain' } })), 'plain', 'clean results pass')

    await eventually(() => records(gw).filter((r) => r.method === 'prompts/get').length === 1)
    const byMethod = (method: string): Json[] => records(gw).filter((r) => r.method === method)
    t.same(byMethod('tools/call').map((r) => r.redacted), [LEAK_COUNTS, undefined], 'the audit counts what was masked, by kind; nothing for a clean result')
    t.same(byMethod('resources/read')[0]?.redacted, { 'gitlab-tokens': 1 })
    t.same(byMethod('prompts/get')[0]?.redacted, { 'cloud-keys': 1 })
    t.equal(await metric(gw, 'github-tokens'), 2)
    t.equal(await metric(gw, 'cloud-keys'), 2, 'one in the prompt; the blob is not counted')
    t.equal(await metric(gw, 'employee-id'), 1)
    assertNothingLogged(t, gw)
  })
}

function readBody (req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
  })
}

function answerInitialize (res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 's-1' })
  res.end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { protocolVersion: '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 'raw', version: '1' } } }))
}

t.test('an SSE answer whose secret is cut between two network writes is masked whole', async (t) => {
  const writes: string[] = []
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then(async (body) => {
      if (body.includes('"initialize"')) return answerInitialize(res)
      const { id } = JSON.parse(body) as { id?: number }
      if (id === undefined) return void res.writeHead(202).end()
      const event = `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: `your token is ${FAKE.github} keep it safe` }] } })}\n\n`
      const cut = event.indexOf(FAKE.github) + 12
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.flushHeaders()
      // Two writes with a pause: two TCP segments, so the gateway reads the token in two pieces.
      for (const piece of [event.slice(0, cut), event.slice(cut)]) {
        res.write(piece)
        writes.push(piece)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      res.end()
    })
  })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, redactResults: ['github-tokens'] }] })
  const headers = await session(gw.mcpUrl('fx'))
  const res = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'anything', arguments: {} } }, headers)
  t.equal(writes.length, 2, 'the upstream wrote the answer in two pieces')
  t.ok(writes[0]?.includes(FAKE.github.slice(0, 12)) && !writes[0].includes(FAKE.github), 'the first piece ends inside the token')
  t.equal(res.headers.get('content-type'), 'text/event-stream')
  t.same(messagesOf(res), [{ jsonrpc: '2.0', id: 5, result: { content: [{ type: 'text', text: 'your token is [redacted:github-tokens] keep it safe' } ] } }])
  t.notOk(res.text.includes(FAKE.github.slice(12)), 'neither half of the token reached the client')
  t.notOk(res.text.includes(FAKE.github.slice(0, 12)))
})

t.test('a task\'s result (tasks/result), an answer after a byte-order mark and SSE lines ending in CR alone: masked too', async (t) => {
  // Each a way an upstream answers that clients read; each once passed unmasked.
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then((body) => {
      if (body.includes('"initialize"')) return answerInitialize(res)
      const { id, method } = JSON.parse(body) as { id?: number, method?: string }
      if (id === undefined) return void res.writeHead(202).end()
      const answer = JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: `your token is ${FAKE.github}` }] } })
      if (method === 'tools/call') {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.end(`event: message\rdata: ${answer}\r\r`)
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(method === 'prompts/get' ? `\uFEFF${answer}` : answer)
    })
  })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, redactResults: ['github-tokens'] }] })
  const headers = await session(gw.mcpUrl('fx'))
  for (const [id, method, params] of [[1, 'tasks/result', { taskId: 't-1' }], [2, 'prompts/get', { name: 'p' }], [3, 'tools/call', { name: 'x', arguments: {} }]] as const) {
    const res = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id, method, params }, headers)
    t.notOk(res.text.includes(FAKE.github), `${method}: the token did not reach the client`)
    t.match(res.text, /\[redacted:github-tokens\]/, `${method}: masked`)
  }
})

for (const responses of ['SSE', 'JSON'] as const) {
  t.test(`a batch (${responses} answers): each response masked on its own`, async (t) => {
    const upstream = await startUpstream(t, { jsonResponse: responses === 'JSON' })
    const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, redactResults: REDACT }] })
    const headers = await session(gw.mcpUrl('fx'))
    const res = await postJson(gw.mcpUrl('fx'), [
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'leak', arguments: {} } },
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: `pay with ${FAKE.card}, not ${FAKE.notCard}` } } },
      { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { text: 'nothing secret' } } },
    ], { ...headers, 'mcp-protocol-version': '2025-03-26' })
    t.equal(res.status, 200)
    const byId = new Map(messagesOf(res).map((m) => [m.id, m.result as Json]))
    t.same(byId.get(1)?.content, [{ type: 'text', text: MASKED_TEXT }, { type: 'image', data: FAKE.aws, mimeType: 'image/png' }])
    t.same(byId.get(1)?.structuredContent, MASKED_STRUCTURED)
    t.same(byId.get(2)?.content, [{ type: 'text', text: `pay with [redacted:credit-cards], not ${FAKE.notCard}` }])
    t.same(byId.get(3)?.content, [{ type: 'text', text: 'nothing secret' }])
    await eventually(() => records(gw).filter((r) => r.method === 'tools/call').length === 3)
    const audited = new Map(records(gw).filter((r) => r.method === 'tools/call').map((r) => [r.jsonrpcId, r.redacted]))
    t.same(audited.get(1), LEAK_COUNTS)
    t.same(audited.get(2), { 'credit-cards': 1 })
    t.equal(audited.get(3), undefined)
    assertNothingLogged(t, gw)
  })
}

t.test('stdio upstream: results masked through the bridge', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('fx', { redactResults: REDACT })] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  const call = await client.callTool({ name: 'leak', arguments: {} })
  t.same(call.content, [{ type: 'text', text: MASKED_TEXT }, { type: 'image', data: FAKE.aws, mimeType: 'image/png' }])
  t.same(call.structuredContent, MASKED_STRUCTURED)
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: FAKE.jwt } })), '[redacted:jwts]')
  await eventually(() => records(gw).filter((r) => r.method === 'tools/call').length === 2)
  t.same(records(gw).filter((r) => r.method === 'tools/call').map((r) => r.redacted), [LEAK_COUNTS, { jwts: 1 }])
  assertNothingLogged(t, gw)
})

t.test('a GET stream replaying an earlier answer after Last-Event-ID: masked like a live one', async (t) => {
  const replayed = { jsonrpc: '2.0', id: 9, result: { content: [{ type: 'text', text: `key ${FAKE.aws}` }] } }
  const upstream = await startRawServer(t, (req, res) => {
    if (req.method === 'POST') return void readBody(req).then(() => answerInitialize(res))
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end(`id: evt-9\nevent: message\ndata: ${JSON.stringify(replayed)}\n\n`)
  })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, redactResults: ['cloud-keys'] }] })
  const headers = await session(gw.mcpUrl('fx'))
  const res = await fetch(gw.mcpUrl('fx'), { headers: { ...MCP_HEADERS, accept: 'text/event-stream', ...headers, 'last-event-id': 'evt-8' } })
  const text = await res.text()
  t.equal(text, `id: evt-9\nevent: message\ndata: ${JSON.stringify({ ...replayed, result: { content: [{ type: 'text', text: 'key [redacted:cloud-keys]' }] } })}\n\n`, 'event id and name kept, text masked')
  t.equal(await metric(gw, 'cloud-keys'), 1, 'counted in the metric (a replay has no audit record of its own)')
})

t.test('bytes untouched: masking off by default, and on but nothing matched', async (t) => {
  // Spacing JSON.stringify would never produce: any re-serialisation shows.
  const answerFor = (id: number, text: string): string => `{ "jsonrpc" : "2.0", "id" : ${id},\n  "result" : { "content" : [ { "type" : "text", "text" : "${text}" } ] } }`
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then((body) => {
      if (body.includes('"initialize"')) return answerInitialize(res)
      if (!body.includes('"id"')) return void res.writeHead(202).end()
      const { id, params } = JSON.parse(body) as { id: number, params: { arguments: { text: string, sse?: boolean } } }
      const answer = answerFor(id, params.arguments.text)
      if (params.arguments.sse === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.end(`event: message\ndata: ${answer.replace(/\n/g, '')}\n\n`)
      } else {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(answer)
      }
    })
  })
  const gw = await startGateway(t, {
    servers: [
      { name: 'off', transport: 'http', url: upstream.url },
      { name: 'on', transport: 'http', url: upstream.url, redactResults: ['secrets', 'emails'] },
    ],
  })
  const call = (id: number, text: string, sse = false): unknown => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text, sse } } })
  const off = await session(gw.mcpUrl('off'))
  const secretJson = await postJson(gw.mcpUrl('off'), call(1, FAKE.github), off)
  t.equal(secretJson.text, answerFor(1, FAKE.github), 'off: a JSON answer with a secret passes byte for byte')
  const secretSse = await postJson(gw.mcpUrl('off'), call(2, FAKE.github, true), off)
  t.equal(secretSse.text, `event: message\ndata: ${answerFor(2, FAKE.github).replace(/\n/g, '')}\n\n`, 'off: an SSE answer too')

  const on = await session(gw.mcpUrl('on'))
  const cleanJson = await postJson(gw.mcpUrl('on'), call(3, 'nothing to see'), on)
  t.equal(cleanJson.text, answerFor(3, 'nothing to see'), 'on, nothing matched: the JSON answer is the upstream\'s bytes')
  const cleanSse = await postJson(gw.mcpUrl('on'), call(4, 'nothing to see', true), on)
  t.equal(cleanSse.text, `event: message\ndata: ${answerFor(4, 'nothing to see').replace(/\n/g, '')}\n\n`, 'and the SSE event too')
  const masked = await postJson(gw.mcpUrl('on'), call(5, FAKE.github), on)
  t.same(masked.json, { jsonrpc: '2.0', id: 5, result: { content: [{ type: 'text', text: '[redacted:github-tokens]' }] } }, 'on, a match: masked')
  t.equal(masked.headers.get('content-length'), String(Buffer.byteLength(masked.text)), 'with the edited body\'s own length')
})
