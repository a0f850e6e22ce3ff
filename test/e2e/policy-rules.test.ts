// Per-tool rules by user and group (issue 13): two real users, in different groups, signed in
// through the real OAuth flow with the SDK client. A group rule admits one and refuses the other
// naming the rule; a users rule likewise; tools/list differs per caller — over an HTTP upstream
// (SSE and JSON answers), a stdio upstream, and a paginated list whose pages and replayed
// answers are filtered for whoever asks.
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, type AuthorizedClient } from '../oauth-helpers.js'
import { connectClient, eventually, MCP_HEADERS, postJson, startGateway, startRawServer, startUpstream, stdioServer, textOf, type RunningGateway, type Teardown } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash, groups: ['sre'] }, { username: 'bob', passwordHash, groups: ['eng'] }]

async function signIn (t: Teardown, gw: RunningGateway, server: string, username: string): Promise<AuthorizedClient> {
  return await connectWithOAuth(t, gw.mcpUrl(server), { username, password: PASSWORD, issuer: gw.baseUrl })
}

async function toolNames (who: AuthorizedClient): Promise<string[]> {
  return (await who.client.listTools()).tools.map((tool) => tool.name).sort()
}

/** What the SDK client reports when the gateway refuses a call (the 403 body is in its message). */
async function refusal (who: AuthorizedClient, name: string, args: Record<string, unknown> = {}): Promise<string> {
  return await who.client.callTool({ name, arguments: args }).then(() => 'called', (err: Error) => err.message)
}

for (const responses of ['SSE', 'JSON'] as const) {
  t.test(`HTTP upstream (${responses} answers): a group rule and a users rule, per caller`, async (t) => {
    const upstream = await startUpstream(t, { jsonResponse: responses === 'JSON' })
    const gw = await startGateway(t, {
      auth: { users: USERS },
      servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { groups: ['sre'] }, whoami: { users: ['bob'] } } }],
    })
    const alice = await signIn(t, gw, 'fx', 'alice')
    const bob = await signIn(t, gw, 'fx', 'bob')

    const aliceTools = await toolNames(alice)
    const bobTools = await toolNames(bob)
    t.ok(aliceTools.includes('echo') && !aliceTools.includes('whoami'), `alice (sre) sees echo, not bob's whoami: ${aliceTools.join(' ')}`)
    t.ok(bobTools.includes('whoami') && !bobTools.includes('echo'), `bob (eng) sees whoami, not the sre echo: ${bobTools.join(' ')}`)
    t.same(aliceTools.filter((n) => n !== 'echo'), bobTools.filter((n) => n !== 'whoami'), 'everything else is listed to both')

    t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'for sre' } })), 'for sre', 'the group rule admits a member')
    t.equal(textOf(await bob.client.callTool({ name: 'whoami', arguments: {} })), 'fixture', 'the users rule admits the user')
    t.match(await refusal(bob, 'echo', { text: 'x' }), /tool \\"echo\\" requires group sre \(rule tools\.echo of server \\"fx\\"\).*PORTCULLIS_ERR_POLICY_DENIED/)
    t.match(await refusal(alice, 'whoami'), /tool \\"whoami\\" requires user bob \(rule tools\.whoami of server \\"fx\\"\).*PORTCULLIS_ERR_POLICY_DENIED/)

    // The wire form, exactly: 403, the request id, the rule named.
    const headers = { authorization: `Bearer ${bob.oauth.savedTokens?.access_token ?? ''}`, 'mcp-session-id': bob.transport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25' }
    const denied = await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 'deny-1', method: 'tools/call', params: { name: 'echo', arguments: { text: 'never' } } }, headers)
    t.equal(denied.status, 403)
    t.same(denied.json, { jsonrpc: '2.0', id: 'deny-1', error: { code: -32600, message: 'Forbidden by policy: tool "echo" requires group sre (rule tools.echo of server "fx")', data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
    t.notOk(upstream.seen.some((r) => JSON.stringify(r.body ?? null).includes('never')), 'a refused call never reaches the upstream')

    await eventually(() => gw.audit.lines.some((l) => l.includes('deny-1')))
    const record = gw.audit.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.jsonrpcId === 'deny-1')
    t.match(record, { method: 'tools/call', target: { kind: 'tool', name: 'echo' }, user: { username: 'bob' }, decision: 'denied', reason: 'tool "echo" requires group sre (rule tools.echo of server "fx")', status: 403 }, 'the audit record names the rule')
  })
}

t.test('stdio upstream: the same rules through the bridge, each user in their own process', async (t) => {
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: [stdioServer('local', { tools: { echo: { groups: ['sre'] }, 'incr*': { users: ['bob'] } } })],
  })
  const alice = await signIn(t, gw, 'local', 'alice')
  const bob = await signIn(t, gw, 'local', 'bob')
  const aliceTools = await toolNames(alice)
  const bobTools = await toolNames(bob)
  t.ok(aliceTools.includes('echo') && !aliceTools.includes('increment'), `alice: ${aliceTools.join(' ')}`)
  t.ok(bobTools.includes('increment') && !bobTools.includes('echo'), `bob: ${bobTools.join(' ')}`)
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'via stdio' } })), 'via stdio')
  t.equal(textOf(await bob.client.callTool({ name: 'increment', arguments: {} })), '1', 'a pattern key admits its user')
  t.match(await refusal(bob, 'echo', { text: 'x' }), /tool \\"echo\\" requires group sre \(rule tools\.echo of server \\"local\\"\).*PORTCULLIS_ERR_POLICY_DENIED/)
  t.match(await refusal(alice, 'increment'), /tool \\"increment\\" requires user bob \(rule tools\.incr\* of server \\"local\\"\)/)
})

t.test('machine clients: admitted by clients, never as a user of the same name nor by a group rule', async (t) => {
  const secret = 'a-machine-secret-long-enough-for-the-check-1234'
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: USERS, clients: [{ clientId: 'ci-bot', clientSecret: secret, grantTypes: ['client_credentials'] }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { groups: ['sre'], clients: ['ci-bot'] }, whoami: { users: ['ci-bot'] }, progress: { groups: ['sre'] } } }],
  })
  const issued = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`ci-bot:${secret}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: gw.mcpUrl('fx'), scope: 'mcp' }).toString(),
  })
  t.equal(issued.status, 200)
  const token = String((await issued.json() as Record<string, unknown>).access_token)
  const { client } = await connectClient(t, gw.mcpUrl('fx'), { headers: { authorization: `Bearer ${token}` } })
  const names = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(names.includes('echo') && !names.includes('whoami') && !names.includes('progress'), `listed: ${names.join(' ')}`)
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'from a machine' } })), 'from a machine')
  t.match(await client.callTool({ name: 'whoami', arguments: {} }).then(() => 'called', (err: Error) => err.message), /tool \\"whoami\\" requires user ci-bot \(rule tools\.whoami of server \\"fx\\"\)/)
  t.match(await client.callTool({ name: 'progress', arguments: {} }).then(() => 'called', (err: Error) => err.message), /tool \\"progress\\" requires group sre/)
})

/** A bare upstream: two tools/list pages (the first JSON, the second SSE) and a GET replay. */
function pagingUpstream (req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET') {
    if (req.headers['last-event-id'] === undefined) return void res.writeHead(405).end()
    const replayed = { jsonrpc: '2.0', id: 41, result: { tools: [{ name: 'deploy', inputSchema: { type: 'object' } }, { name: 'admin_reset', inputSchema: { type: 'object' } }, { name: 'read', inputSchema: { type: 'object' } }] } }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    return void res.end(`id: e-42\nevent: message\ndata: ${JSON.stringify(replayed)}\n\n`)
  }
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    const message = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: number, method: string, params?: { cursor?: string } }
    if (message.id === undefined) return void res.writeHead(202).end()
    if (message.method === 'initialize') {
      res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': `s-${Math.random().toString(36).slice(2)}` })
      return void res.end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 'pages', version: '1' } } }))
    }
    const tool = (name: string): Record<string, unknown> => ({ name, inputSchema: { type: 'object' } })
    if (message.params?.cursor === undefined) {
      res.writeHead(200, { 'content-type': 'application/json' })
      return void res.end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: { tools: [tool('read'), tool('deploy')], nextCursor: 'page-2' } }))
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: message.id, result: { tools: [tool('admin_reset'), tool('write')] } })}\n\n`)
  })
}

t.test('paginated and replayed lists are filtered for the caller who asks', async (t) => {
  const upstream = await startRawServer(t, pagingUpstream)
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: [{ name: 'pages', transport: 'http', url: upstream.url, tools: { deploy: { groups: ['sre'] }, 'admin_*': { users: ['bob'] } } }],
  })
  const alice = await signIn(t, gw, 'pages', 'alice')
  const bob = await signIn(t, gw, 'pages', 'bob')
  const pages = async (who: AuthorizedClient): Promise<string[][]> => {
    const first = await who.client.listTools()
    t.equal(first.nextCursor, 'page-2', 'the cursor survives the filter')
    const second = await who.client.listTools({ cursor: first.nextCursor ?? '' })
    return [first.tools.map((x) => x.name), second.tools.map((x) => x.name)]
  }
  t.same(await pages(alice), [['read', 'deploy'], ['write']], 'alice: page 1 (JSON) keeps deploy, page 2 (SSE) loses admin_reset')
  t.same(await pages(bob), [['read'], ['admin_reset', 'write']], 'bob: the other way round')

  const replay = async (who: AuthorizedClient): Promise<string[]> => {
    const res = await fetch(gw.mcpUrl('pages'), { headers: { ...MCP_HEADERS, accept: 'text/event-stream', authorization: `Bearer ${who.oauth.savedTokens?.access_token ?? ''}`, 'mcp-session-id': who.transport.sessionId ?? '', 'last-event-id': 'e-41' } })
    const text = await res.text()
    const data = JSON.parse(text.slice(text.indexOf('data:') + 5)) as { result: { tools: Array<{ name: string }> } }
    return data.result.tools.map((x) => x.name)
  }
  t.same(await replay(alice), ['deploy', 'read'], 'a list replayed after Last-Event-ID is filtered for alice')
  t.same(await replay(bob), ['admin_reset', 'read'], 'and for bob')
})
