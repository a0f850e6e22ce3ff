// The official MCP SDK client, through the gateway, to real Streamable HTTP MCP servers.
import t from 'tap'
import { CreateMessageRequestSchema, ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { connectClient, INIT_BODY, postJson, startGateway, startUpstream, within } from '../helpers.js'

t.test('initialize, tools/list, tools/call through the gateway', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client, transport } = await connectClient(t, gw.mcpUrl('fx'))
  t.ok(transport.sessionId, 'the upstream session id reaches the client')
  t.equal(client.getServerVersion()?.name, 'fixture')
  const tools = await client.listTools()
  t.ok(tools.tools.some((tool) => tool.name === 'echo'))
  t.same(await client.callTool({ name: 'echo', arguments: { text: 'through the gate' } }), { content: [{ type: 'text', text: 'through the gate' }] })
})

t.test('progress notifications arrive as SSE events, in order, before the result', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  const events: string[] = []
  const result = await client.callTool({ name: 'progress', arguments: { n: 4 } }, undefined, {
    onprogress: (p) => events.push(`progress ${p.progress}/${p.total ?? '?'}`),
  })
  events.push('result')
  t.same(events, ['progress 1/4', 'progress 2/4', 'progress 3/4', 'progress 4/4', 'result'])
  t.same(result.content, [{ type: 'text', text: 'done 4' }])
})

t.test('an SSE event is relayed while the upstream is still working (no buffering)', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  let isUpstreamReleasedAtFirstEvent: boolean | undefined
  let resolveFirst: () => void = () => {}
  const firstEvent = new Promise<void>((resolve) => { resolveFirst = resolve })
  const call = client.callTool({ name: 'gate', arguments: { key: 'g1' } }, undefined, {
    onprogress: () => {
      isUpstreamReleasedAtFirstEvent ??= upstream.isReleased('g1')
      resolveFirst()
    },
  })
  await firstEvent
  t.equal(isUpstreamReleasedAtFirstEvent, false, 'the client saw the event while the tool was still blocked upstream')
  upstream.release('g1')
  t.same((await call).content, [{ type: 'text', text: 'released g1' }])
})

t.test('server-to-client requests round-trip: elicitation and sampling', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'), { capabilities: { elicitation: { form: {} }, sampling: {} } })
  const asked: string[] = []
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    asked.push(req.params.message)
    return { action: 'accept', content: { name: 'Ada' } }
  })
  client.setRequestHandler(CreateMessageRequestSchema, async () => ({ role: 'assistant', model: 'test-llm', content: { type: 'text', text: 'sampled' } }))
  t.same((await client.callTool({ name: 'ask', arguments: {} })).content, [{ type: 'text', text: 'accept:Ada' }])
  t.same(asked, ['What is your name?'])
  t.same((await client.callTool({ name: 'sample', arguments: { prompt: 'hi' } })).content, [{ type: 'text', text: 'test-llm:sampled' }])
})

t.test('DELETE ends the session; the old session id then gets 404 (so clients re-initialise)', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { transport } = await connectClient(t, gw.mcpUrl('fx'))
  const sessionId = transport.sessionId ?? ''
  t.equal(upstream.sessions.size, 1)
  await transport.terminateSession()
  t.equal(upstream.sessions.size, 0, 'the upstream session is gone')
  t.ok(upstream.seen.some((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === sessionId), 'DELETE reached the upstream with the session id')
  const after = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 5, method: 'tools/list' }, { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' })
  t.equal(after.status, 404)
})

t.test('two upstreams in one config are routed by name; an unknown name is 404', async (t) => {
  const alpha = await startUpstream(t, { name: 'alpha' })
  const beta = await startUpstream(t, { name: 'beta' })
  const gw = await startGateway(t, {
    servers: [
      { name: 'alpha', transport: 'http', url: alpha.url },
      { name: 'beta', transport: 'http', url: beta.url },
    ],
  })
  const a = await connectClient(t, gw.mcpUrl('alpha'))
  const b = await connectClient(t, gw.mcpUrl('beta'))
  t.same((await a.client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'alpha' }])
  t.same((await b.client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'beta' }])
  const unknown = await postJson(gw.mcpUrl('gamma'), INIT_BODY)
  t.equal(unknown.status, 404)
  t.same(unknown.json, {
    jsonrpc: '2.0',
    id: null,
    error: { code: -32600, message: 'Not found: no MCP server has this name: "gamma"', data: { code: 'PORTCULLIS_ERR_UNKNOWN_SERVER' } },
  })
})

t.test('headers: the client\'s Authorization and Cookie never reach the upstream; configured headers do', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    servers: [{
      name: 'fx',
      transport: 'http',
      url: upstream.url,
      headers: { 'X-Api-Key': '${FX_KEY}', Authorization: 'Bearer gateway-own-credential' },
      forwardHeaders: ['x-request-id'],
    }],
  }, { FX_KEY: 'k-123' })
  const { client, transport } = await connectClient(t, gw.mcpUrl('fx'), {
    headers: { authorization: 'Bearer client-token-must-not-leak', cookie: 'session=client-cookie', 'x-request-id': 'r-1', 'x-other': 'dropped' },
  })
  await client.callTool({ name: 'echo', arguments: { text: 'x' } })
  t.ok(upstream.seen.length >= 3)
  for (const request of upstream.seen) {
    t.equal(request.headers.authorization, 'Bearer gateway-own-credential', `${request.method}: only the configured Authorization`)
    t.equal(request.headers.cookie, undefined, `${request.method}: no cookie`)
    t.equal(request.headers['x-api-key'], 'k-123', `${request.method}: configured header added`)
    t.equal(request.headers['x-request-id'], 'r-1', `${request.method}: forwardHeaders passed on`)
    t.equal(request.headers['x-other'], undefined, `${request.method}: headers outside the allow-list dropped`)
  }
  const call = upstream.seen.find((r) => r.method === 'POST' && r.headers['mcp-session-id'] !== undefined)
  t.equal(call?.headers['mcp-session-id'], transport.sessionId, 'Mcp-Session-Id passes through')
  t.equal(call?.headers['mcp-protocol-version'], '2025-11-25', 'MCP-Protocol-Version passes through')

  // Last-Event-ID and Mcp-Param-* pass through on a raw GET.
  const controller = new AbortController()
  const res = await fetch(gw.mcpUrl('fx'), {
    headers: { accept: 'text/event-stream', 'mcp-session-id': transport.sessionId ?? '', 'last-event-id': 'evt-42', 'mcp-param-region': 'eu', 'mcp-protocol-version': '2025-11-25' },
    signal: controller.signal,
  })
  controller.abort()
  await res.body?.cancel().catch(() => {})
  const get = upstream.seen.findLast((r) => r.method === 'GET')
  t.equal(get?.headers['last-event-id'], 'evt-42')
  t.equal(get?.headers['mcp-param-region'], 'eu')
})

t.test('a long-lived GET stream is not cut by the upstream timeout', async (t) => {
  const upstream = await startUpstream(t)
  const TIMEOUT_MS = 200
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, timeoutMs: TIMEOUT_MS }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  const notified = new Promise<string>((resolve) => {
    client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => resolve(n.method))
  })
  // Let the idle GET stream outlive the timeout several times over (undici's body timeout would cut it).
  await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS * 5))
  await client.callTool({ name: 'broadcast', arguments: {} })
  const outcome = await within(notified, 5000, 'no notification within 5 s')
  t.equal(outcome, 'notifications/tools/list_changed', 'a notification still arrives on the GET stream')
  t.equal(upstream.seen.filter((r) => r.method === 'GET').length, 1, 'the one GET stream stayed open: the client never had to reconnect')
})

t.test('SSE responses carry X-Accel-Buffering: no', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const res = await fetch(gw.mcpUrl('fx'), { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify(INIT_BODY) })
  t.equal(res.headers.get('content-type'), 'text/event-stream')
  t.equal(res.headers.get('x-accel-buffering'), 'no')
  t.ok(res.headers.get('mcp-session-id'))
  t.match(await res.text(), /"protocolVersion":"2025-11-25"/)
})

t.test('large results pass intact (10 MiB)', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  const bytes = 10 * 1024 * 1024
  const result = await client.callTool({ name: 'big', arguments: { bytes } })
  const content = result.content as Array<{ type: string, text: string }>
  t.equal(content[0]?.text.length, bytes)
})
