// Per-tool policy against real upstreams: allow/deny/glob rules, per-tool scopes, access lists,
// and filtered lists over JSON and SSE responses, in batches, and through the stdio bridge.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, HeadlessBrowser, REDIRECT_URL } from '../oauth-helpers.js'
import { connectClient, INIT_BODY, MCP_HEADERS, postJson, startGateway, startUpstream, stdioServer, textOf } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const TOOL_RULES = { allow: ['echo', 'whoami', 'progress', 'big*', 'slow'], deny: ['big*'] }

async function session (url: string, headers: Record<string, string> = {}): Promise<Record<string, string>> {
  const init = await postJson(url, INIT_BODY, headers)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  const withSession = { ...headers, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, withSession)
  return withSession
}

for (const responses of ['SSE', 'JSON'] as const) {
  t.test(`HTTP upstream (${responses} responses): denied calls name the rule; lists are filtered`, async (t) => {
    const upstream = await startUpstream(t, { jsonResponse: responses === 'JSON' })
    const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: TOOL_RULES }] })
    const { client } = await connectClient(t, gw.mcpUrl('fx'))
    const names = (await client.listTools()).tools.map((tool) => tool.name).sort()
    t.same(names, ['echo', 'progress', 'slow', 'whoami'], 'denied and unlisted tools are not listed (ask, sample, gate, broadcast, big)')
    t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'ok' } })), 'ok')

    const headers = await session(gw.mcpUrl('fx'))
    const denied = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 'd-1', method: 'tools/call', params: { name: 'big', arguments: { bytes: 1 } } }, headers)
    t.equal(denied.status, 403)
    t.same(denied.json, { jsonrpc: '2.0', id: 'd-1', error: { code: -32600, message: 'Forbidden by policy: tool "big" is denied by tools.deny "big*" of server "fx"', data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
    const unlisted = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'ask', arguments: {} } }, headers)
    t.equal(unlisted.status, 403)
    t.match(unlisted.json, { id: 2, error: { message: 'Forbidden by policy: tool "ask" is not in tools.allow of server "fx"' } })
    t.ok(upstream.seen.some((r) => JSON.stringify(r.body ?? null).includes('"echo"')), 'allowed calls reached the upstream (bodies are recorded)')
    t.notOk(upstream.seen.some((r) => JSON.stringify(r.body ?? null).includes('d-1')), 'denied calls never reach the upstream')
  })
}

t.test('a 2025-03-26 batch: each member judged on its own, lists filtered inside it', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: TOOL_RULES }] })
  const headers = await session(gw.mcpUrl('fx'))
  const res = await postJson(gw.mcpUrl('fx'), [
    { jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'big', arguments: { bytes: 1 } } },
    { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { text: 'in a batch' } } },
  ], { ...headers, 'mcp-protocol-version': '2025-03-26' })
  t.equal(res.status, 200)
  const messages = res.text.includes('event:')
    ? res.text.split('\n\n').filter((e) => e.includes('data:')).flatMap((e) => { const m = JSON.parse(e.slice(e.indexOf('data:') + 5)) as unknown; return Array.isArray(m) ? m : [m] })
    : res.json as unknown[]
  const byId = new Map((messages as Array<{ id: number }>).map((m) => [m.id, m]))
  t.same([...byId.keys()].sort(), [1, 2, 3], 'one answer per request')
  t.match(byId.get(2), { error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
  t.match(byId.get(3), { result: { content: [{ text: 'in a batch' }] } })
  const listed = (byId.get(1) as unknown as { result: { tools: Array<{ name: string }> } }).result.tools.map((x) => x.name).sort()
  t.same(listed, ['echo', 'progress', 'slow', 'whoami'], 'the list inside the batch is filtered too')
  const forwarded = upstream.seen.findLast((r) => Array.isArray(r.body))?.body as Array<{ id: number }> | undefined
  t.same(forwarded?.map((m) => m.id), [1, 3], 'the upstream got the batch without its refused member')
})

t.test('a batch whose requests share an id is refused: a second list under the tools/list id would unfilter it', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: TOOL_RULES }] })
  const headers = await session(gw.mcpUrl('fx'))
  const before = upstream.seen.length
  const res = await postJson(gw.mcpUrl('fx'), [
    { jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { jsonrpc: '2.0', id: 1, method: 'prompts/list' },
  ], { ...headers, 'mcp-protocol-version': '2025-03-26' })
  t.equal(res.status, 400)
  t.match(res.json, { jsonrpc: '2.0', id: null, error: { code: -32600, message: /batch item 1: has the id 1 of batch item 0/, data: { code: 'PORTCULLIS_ERR_INVALID_REQUEST' } } })
  t.notOk(res.text.includes('"big"'), 'no tool list, let alone an unfiltered one')
  t.equal(upstream.seen.length, before, 'nothing went upstream')
})

t.test('a resource URI carrying credentials reaches the audit trail and the refusal without them', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, resources: { deny: ['https://internal.example/*'] } }] })
  const headers = await session(gw.mcpUrl('fx'))
  const secretUri = (host: string): string => `https://bob:hunter2@${host}/report?X-Amz-Signature=SECRETSIG&token=tok123`
  const denied = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 'r1', method: 'resources/read', params: { uri: secretUri('internal.example') } }, headers)
  t.equal(denied.status, 403)
  await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 'r2', method: 'resources/read', params: { uri: secretUri('public.example') } }, headers)
  const records = gw.audit.lines.filter((line) => line.includes('resources/read'))
  t.equal(records.length, 2, 'both reads are audited')
  for (const text of [...records, denied.text]) {
    t.notOk(/hunter2|SECRETSIG|tok123/.test(text), 'no credential of the URI')
  }
  t.match(JSON.parse(records[0] ?? '{}'), { decision: 'denied', target: { kind: 'resource', name: 'https://REDACTED:REDACTED@internal.example/report?X-Amz-Signature=REDACTED&token=REDACTED' } })
})

t.test('a batch whose every request is refused is answered by the gateway alone', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['*'] } }] })
  const headers = await session(gw.mcpUrl('fx'))
  const before = upstream.seen.length
  const res = await postJson(gw.mcpUrl('fx'), [
    { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: {} } },
    { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'whoami', arguments: {} } },
  ], { ...headers, 'mcp-protocol-version': '2025-03-26' })
  t.equal(res.status, 200)
  t.same((res.json as Array<{ id: number }>).map((m) => m.id), [7, 8])
  t.equal(upstream.seen.length, before, 'nothing went upstream')
})

t.test('stdio upstream: lists filtered and calls denied through the bridge (session and shared)', async (t) => {
  for (const isolation of ['session', 'shared'] as const) {
    const gw = await startGateway(t, { servers: [stdioServer('local', { isolation, tools: { deny: ['crash', 'big', 'env'], allow: ['*'] } })] })
    const { client } = await connectClient(t, gw.mcpUrl('local'))
    const names = (await client.listTools()).tools.map((tool) => tool.name)
    t.notOk(names.some((n) => ['crash', 'big', 'env'].includes(n)), `${isolation}: denied tools are not listed`)
    t.ok(names.includes('echo'), `${isolation}: allowed tools are`)
    const outcome = await client.callTool({ name: 'crash', arguments: {} }).then(() => 'called', (err: Error) => err.message)
    t.match(outcome, /tool \\"crash\\" is denied by tools\.deny.*PORTCULLIS_ERR_POLICY_DENIED/, `${isolation}: the process was never asked to crash`)
    t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'still fine' } })), 'still fine')
  }
})

t.test('prompts and resources by name and URI pattern', async (t) => {
  const { EVERYTHING_SERVER } = await import('../helpers.js')
  const gw = await startGateway(t, {
    servers: [{
      name: 'everything',
      transport: 'stdio',
      command: process.execPath,
      args: [EVERYTHING_SERVER, 'stdio'],
      prompts: { deny: ['args-*'] },
      resources: { allow: ['demo://resource/static/document/*'], deny: ['demo://resource/static/document/instructions.md'] },
    }],
  })
  const { client } = await connectClient(t, gw.mcpUrl('everything'))
  const prompts = (await client.listPrompts()).prompts.map((p) => p.name)
  t.ok(prompts.includes('simple-prompt'))
  t.notOk(prompts.includes('args-prompt'), 'a denied prompt is not listed')
  t.match(await client.getPrompt({ name: 'args-prompt', arguments: { city: 'x' } }).then(() => 'got', (e: Error) => e.message), /prompts\.deny \\"args-\*\\".*PORTCULLIS_ERR_POLICY_DENIED/)
  const uris = (await client.listResources()).resources.map((r) => r.uri)
  t.ok(uris.length > 0 && uris.every((u) => u.startsWith('demo://resource/static/document/') && !u.endsWith('instructions.md')), `only allowed resources listed (${uris.length})`)
  t.match(await client.readResource({ uri: 'demo://resource/static/document/instructions.md' }).then(() => 'read', (e: Error) => e.message), /resources\.deny.*PORTCULLIS_ERR_POLICY_DENIED/)
  t.ok((await client.readResource({ uri: uris[0] ?? '' })).contents.length > 0)
})

t.test('access lists and per-tool scopes with real tokens', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash, groups: ['eng'] }, { username: 'mallory', passwordHash, groups: ['sales'] }] },
    servers: [{ name: 'gh', transport: 'http', url: upstream.url, access: { groups: ['eng'] }, tools: { echo: { scopes: ['gh:write'] } } }],
  })
  const alice = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const tools = (await alice.client.listTools()).tools.map((tool) => tool.name)
  t.ok(tools.includes('echo'), 'a scope-gated tool stays listed: calling it starts the step-up')
  t.equal(textOf(await alice.client.callTool({ name: 'whoami', arguments: {} })), 'fixture')

  const token = alice.oauth.savedTokens?.access_token ?? ''
  const headers = await session(gw.mcpUrl('gh'), { authorization: `Bearer ${token}` })
  const needsScope = await fetch(gw.mcpUrl('gh'), { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body: JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }) })
  t.equal(needsScope.status, 403)
  t.equal(needsScope.headers.get('www-authenticate'), `Bearer error="insufficient_scope", error_description="tool echo needs the scope(s): gh:write", resource_metadata="${gw.baseUrl}/.well-known/oauth-protected-resource/gh/mcp", scope="gh:write"`)
  t.match(await needsScope.json(), { id: 5, error: { data: { code: 'PORTCULLIS_ERR_INSUFFICIENT_SCOPE' } } })

  // The step-up: authorize again asking for the tool's scope; the new token calls the tool.
  const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'
  const clientId = alice.oauth.info?.client_id ?? ''
  const url = new URL(`${gw.baseUrl}/oauth/authorize`)
  url.search = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', scope: 'mcp gh:write', resource: gw.mcpUrl('gh') }).toString()
  const browser = new HeadlessBrowser()
  const callback = await browser.authorize(url, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, ['login', 'consent'], 'the new scope is consented to')
  t.match(browser.lastHtml, /<code>gh:write<\/code>/)
  const exchanged = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', client_id: clientId, redirect_uri: REDIRECT_URL, code_verifier: VERIFIER }).toString() })
  const stepped = String((await exchanged.json() as Record<string, unknown>).access_token)
  const allowed = await fetch(gw.mcpUrl('gh'), { method: 'POST', headers: { ...MCP_HEADERS, ...headers, authorization: `Bearer ${stepped}` }, body: JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 'echo', arguments: { text: 'stepped up' } } }) })
  t.equal(allowed.status, 200)
  t.match(await allowed.text(), /stepped up/)

  const mallory = await connectWithOAuth(t, gw.mcpUrl('gh'), { username: 'mallory', password: PASSWORD, issuer: gw.baseUrl }).then(() => 'connected', (err: Error) => err.message)
  t.match(mallory, /user \\"mallory\\" is not in the access list of server \\"gh\\".*PORTCULLIS_ERR_ACCESS_DENIED/, 'a user outside the access list is refused at the door')
  // And audited: who tried, what, and why it was refused.
  const refused = gw.audit.lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((r) => r.decision === 'denied' && r.reason === 'access')
  t.match(refused, [{ server: 'gh', method: 'initialize', user: { username: 'mallory' }, status: 403 }], 'the refusal is in the audit trail')
})
