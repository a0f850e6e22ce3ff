// Policy reaches the answers that do not come from a live list request: completion/complete names a
// prompt or resource template, and a GET stream resumed with Last-Event-ID replays earlier answers.
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { INIT_BODY, MCP_HEADERS, postJson, startGateway, startRawServer, type RunningGateway } from '../helpers.js'

const RULES = {
  tools: { deny: ['delete_*'] },
  prompts: { deny: ['secret-*'] },
  resources: { deny: ['file:///etc/*'] },
}

const LIST_REPLAY = [
  { jsonrpc: '2.0', id: 7, result: { tools: [{ name: 'search', inputSchema: { type: 'object' } }, { name: 'delete_all', inputSchema: { type: 'object' } }] } },
  { jsonrpc: '2.0', id: 8, result: { prompts: [{ name: 'greeting' }, { name: 'secret-plan' }] } },
  { jsonrpc: '2.0', id: 9, result: { resourceTemplates: [{ uriTemplate: 'file:///etc/{name}', name: 'etc' }, { uriTemplate: 'file:///home/{name}', name: 'home' }] } },
  { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'delete_all' } },
]

/** The raw upstreams below hand out this session on initialize (the gateway then knows its owner). */
async function openSession (gw: RunningGateway): Promise<string> {
  const init = await postJson(gw.mcpUrl('fx'), INIT_BODY)
  return init.headers.get('mcp-session-id') ?? ''
}

function answerInitialize (res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 's-1' })
  res.end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { protocolVersion: '2025-11-25', capabilities: {}, serverInfo: { name: 'raw', version: '1' } } }))
}

function readBody (req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
  })
}

t.test('completion/complete for a denied prompt or resource template is refused like prompts/get', async (t) => {
  const bodies: string[] = []
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then((body) => {
      if (body.includes('"initialize"')) return answerInitialize(res)
      bodies.push(body)
      const id = (JSON.parse(body) as { id: number }).id
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ jsonrpc: '2.0', id, result: { completion: { values: ['a', 'b'] } } }))
    })
  })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, ...RULES }] })
  const sessionId = await openSession(gw)
  const complete = (id: number, ref: Record<string, string>): ReturnType<typeof postJson> =>
    postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id, method: 'completion/complete', params: { ref, argument: { name: 'x', value: '' } } }, { 'mcp-session-id': sessionId })

  const prompt = await complete(1, { type: 'ref/prompt', name: 'secret-plan' })
  t.equal(prompt.status, 403)
  t.same(prompt.json, { jsonrpc: '2.0', id: 1, error: { code: -32600, message: 'Forbidden by policy: prompt "secret-plan" is denied by prompts.deny "secret-*" of server "fx"', data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
  const template = await complete(2, { type: 'ref/resource', uri: 'file:///etc/{name}' })
  t.equal(template.status, 403)
  t.match(template.json, { id: 2, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
  t.equal(bodies.length, 0, 'neither reached the upstream')

  const allowed = await complete(3, { type: 'ref/prompt', name: 'greeting' })
  t.equal(allowed.status, 200)
  t.match(allowed.json, { id: 3, result: { completion: { values: ['a', 'b'] } } })
  t.equal(bodies.length, 1, 'an allowed completion is forwarded')
})

t.test('list answers replayed on a GET stream after Last-Event-ID are filtered like live ones', async (t) => {
  const upstream = await startRawServer(t, (req, res) => {
    if (req.method === 'POST') return void readBody(req).then(() => answerInitialize(res))
    t.equal(req.headers['last-event-id'], 'evt-6', 'the resumption point is passed on')
    // An upstream that also (wrongly) declares a length: the gateway edits, so it must not repeat it.
    const events = LIST_REPLAY.map((m, i) => `id: evt-${7 + i}\nevent: message\ndata: ${JSON.stringify(m)}\n\n`).join('')
    res.writeHead(200, { 'content-type': 'text/event-stream', 'content-length': String(Buffer.byteLength(events)) })
    res.end(events)
  })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, ...RULES }] })
  const sessionId = await openSession(gw)
  const res = await fetch(gw.mcpUrl('fx'), { headers: { ...MCP_HEADERS, accept: 'text/event-stream', 'mcp-session-id': sessionId, 'last-event-id': 'evt-6' } })
  t.equal(res.status, 200)
  const text = await res.text()
  const events = text.split('\n\n').filter((e) => e.includes('data:'))
  t.equal(events.length, 4, 'every event arrives')
  t.match(events[0], /^id: evt-7\n/, 'event ids are kept (the client resumes from them)')
  const messages = events.map((e) => JSON.parse(e.slice(e.indexOf('data:') + 5)) as { result?: Record<string, Array<{ name?: string, uriTemplate?: string }>> })
  t.same(messages[0]?.result?.tools?.map((x) => x.name), ['search'], 'denied tools are gone from a replayed tools/list')
  t.same(messages[1]?.result?.prompts?.map((x) => x.name), ['greeting'], 'and denied prompts')
  t.same(messages[2]?.result?.resourceTemplates?.map((x) => x.uriTemplate), ['file:///home/{name}'], 'and denied resource templates')
  t.same(messages[3], LIST_REPLAY[3], 'other messages pass untouched')
})
