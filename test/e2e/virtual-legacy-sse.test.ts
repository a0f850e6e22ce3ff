// 2024-11-05 clients (the MCP SDK's SSEClientTransport) through a virtual server's /<name>/sse:
// members an HTTP server and a stdio server, authorization on, users signed in through the real
// OAuth flow that the SDK's SSE client starts from the /sse challenge. Each legacy session is a
// session of the virtual route /<name>/mcp: merged lists, routing, ownership and member sessions are that route's.
import t, { type Test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { decodeJwt } from 'jose'
import { hashPassword } from '../../src/auth-server/password.js'
import { openRaw } from '../legacy-sse-helpers.js'
import { HeadlessBrowser, TestOAuthClient } from '../oauth-helpers.js'
import { eventually, INIT_BODY, isProcessAlive, postJson, startGateway, startUpstream, stdioServer, textOf, type HttpFixture, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]
const LEGACY_INIT = { ...INIT_BODY, params: { ...INIT_BODY.params, protocolVersion: '2024-11-05' } }

async function virtualGateway (t: Test, upstream: HttpFixture): Promise<RunningGateway> {
  return startGateway(t, {
    auth: { users: USERS },
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['slow'] } },
      stdioServer('st', { tools: { deny: ['increment'] } }),
    ],
    virtualServers: [{ name: 'work', members: ['fx', 'st'], tools: { deny: ['whoami'] } }],
  })
}

/** The SDK's SSE client signs in by itself: its first connect meets the /sse challenge, the browser consents, the second connects. */
async function signInLegacy (t: Test, gw: RunningGateway, username: string): Promise<{ client: Client, oauth: TestOAuthClient }> {
  const url = new URL(`${gw.baseUrl}/work/sse`)
  const oauth = new TestOAuthClient({ name: `${username}'s client` })
  await t.rejects(new Client({ name: 'virtual-legacy-test', version: '1.0.0' }).connect(new SSEClientTransport(url, { authProvider: oauth })), /Unauthorized/, 'the first connect: 401, and the SDK starts the flow')
  if (oauth.authorizationUrl === undefined) throw new Error('no authorization URL')
  t.equal(oauth.authorizationUrl.searchParams.get('resource'), url.href, 'the client asks for the resource its URL names')
  const callback = await new HeadlessBrowser().authorize(oauth.authorizationUrl, { username, password: PASSWORD })
  t.equal(callback.searchParams.get('state'), oauth.stateValue)
  const first = new SSEClientTransport(url, { authProvider: oauth })
  await first.finishAuth(callback.searchParams.get('code') ?? '')
  const client = new Client({ name: 'virtual-legacy-test', version: '1.0.0' })
  await client.connect(new SSEClientTransport(url, { authProvider: oauth }))
  t.teardown(() => client.close())
  return { client, oauth }
}

t.test('the /sse challenge and metadata name the virtual server\'s resource', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await virtualGateway(t, upstream)
  const [bareSse, bareMcp] = await Promise.all([
    fetch(`${gw.baseUrl}/work/sse`, { headers: { accept: 'text/event-stream' } }),
    fetch(gw.mcpUrl('work'), { headers: { accept: 'text/event-stream' } }),
  ])
  t.equal(bareSse.status, 401, 'no token: 401')
  const legacyMetadata = `${gw.baseUrl}/.well-known/oauth-protected-resource/work/sse`
  t.match(bareSse.headers.get('www-authenticate'), `resource_metadata="${legacyMetadata}"`, 'the challenge names the virtual server\'s /sse metadata')
  t.equal(bareSse.headers.get('www-authenticate'), bareMcp.headers.get('www-authenticate')?.replace('/work/mcp"', '/work/sse"'), 'the challenge of the virtual /mcp, with the /sse metadata')
  await bareSse.arrayBuffer()
  await bareMcp.arrayBuffer()
  const [sseDoc, mcpDoc] = await Promise.all([legacyMetadata, `${gw.baseUrl}/.well-known/oauth-protected-resource/work/mcp`].map(async (url) => {
    const res = await fetch(url)
    t.equal(res.status, 200, url)
    return res.json() as Promise<Record<string, unknown>>
  }))
  t.equal(sseDoc?.resource, `${gw.baseUrl}/work/sse`, 'named by the URL its clients connect to')
  t.same({ ...sseDoc, resource: undefined }, { ...mcpDoc, resource: undefined }, 'the same protected resource as the virtual /mcp (its members\' scopes)')
})

t.test('an SSE client on a virtual server: merged list, each member, ownership, and its stream\'s end ends the member sessions', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await virtualGateway(t, upstream)
  const { client, oauth } = await signInLegacy(t, gw, 'alice')
  const token = oauth.savedTokens?.access_token ?? ''
  t.equal(decodeJwt(token).aud, gw.mcpUrl('work'), 'the token is the virtual server\'s own (its /mcp resource)')
  t.equal(client.getServerVersion()?.name, 'portcullis/work', 'initialize answered by the virtual server')

  const names = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(names.includes('fx__echo') && names.includes('st__echo'), 'the merged list: a name both members list is prefixed')
  t.ok(names.includes('caller'), 'a name only one member lists is kept')
  t.notOk(names.includes('whoami'), 'the virtual server\'s own deny filters the list')
  t.ok(names.includes('slow') && !names.includes('fx__slow') && !names.includes('st__slow'), 'each member\'s policy filters its tools: the HTTP member\'s slow is denied, the stdio member\'s is the only one')
  t.notOk(names.includes('increment') || names.includes('st__increment'), 'the stdio member\'s denied tool is not listed')
  t.equal(textOf(await client.callTool({ name: 'fx__echo', arguments: { text: 'to http' } })), 'to http', 'a call reaches the HTTP member')
  t.equal(textOf(await client.callTool({ name: 'st__echo', arguments: { text: 'to stdio' } })), 'to stdio', 'a call reaches the stdio member')

  const upstreams = gw.app.portcullis.upstreams
  const pid = upstreams.get('st')?.liveSessions?.()[0]?.pid ?? 0
  t.ok(pid > 0 && isProcessAlive(pid), 'the stdio member runs a process for the session')
  t.equal(upstream.sessions.size, 1, 'the HTTP member holds one session')

  // Bob's valid token on a session of Alice's: answered as a session that does not exist.
  const bob = new TestOAuthClient({ name: 'bob\'s client' })
  const bobUrl = new URL(`${gw.baseUrl}/work/sse`)
  await new Client({ name: 'virtual-legacy-test', version: '1.0.0' }).connect(new SSEClientTransport(bobUrl, { authProvider: bob })).catch(() => undefined)
  if (bob.authorizationUrl === undefined) throw new Error('no authorization URL')
  const bobCallback = await new HeadlessBrowser().authorize(bob.authorizationUrl, { username: 'bob', password: PASSWORD })
  await new SSEClientTransport(bobUrl, { authProvider: bob }).finishAuth(bobCallback.searchParams.get('code') ?? '')
  const bobToken = bob.savedTokens?.access_token ?? ''
  const legacy = await openRaw(t, `${gw.baseUrl}/work/sse`, token)
  t.match(legacy.endpoint, new RegExp(`^${gw.baseUrl}/work/messages\\?sessionId=[0-9a-f-]{36}$`), 'the endpoint is /work/messages?sessionId=…')
  t.equal((await postJson(legacy.endpoint, LEGACY_INIT, { authorization: `Bearer ${token}` })).status, 202)
  t.match(await legacy.next(), { id: 1, result: { protocolVersion: '2024-11-05', serverInfo: { name: 'portcullis/work' } } }, 'initialize is answered on the stream')
  const denied = await postJson(legacy.endpoint, { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'whoami', arguments: {} } }, { authorization: `Bearer ${token}` })
  t.equal(denied.status, 403, 'a tool the virtual server denies: the POST gets the virtual route\'s 403')
  t.match(denied.json, { id: 9, error: { data: { code: 'PORTCULLIS_ERR_POLICY_DENIED' } } })
  const audited = gw.audit.lines.map((line) => JSON.parse(line) as { virtualServer?: string, target?: { name: string }, decision: string, user?: { username: string } | null })
  t.ok(audited.some((r) => r.virtualServer === 'work' && r.target?.name === 'whoami' && r.decision === 'denied' && r.user?.username === 'alice'), 'and is audited by the virtual route, as alice')
  const foreign = await postJson(legacy.endpoint, { jsonrpc: '2.0', id: 'b-1', method: 'tools/call', params: { name: 'fx__echo', arguments: { text: 'from bob' } } }, { authorization: `Bearer ${bobToken}` })
  t.equal(foreign.status, 404, 'another user\'s token on the session: 404')
  t.match(foreign.json, { id: 'b-1', error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
  t.equal(upstream.seen.filter((r) => JSON.stringify(r).includes('from bob')).length, 0, 'nothing of it reached a member')
  legacy.close()

  // The SDK client closes its event stream: the virtual session ends, and with it every member session.
  await client.close()
  t.ok(await eventually(() => !isProcessAlive(pid)), 'the stdio member\'s process ended')
  t.ok(await eventually(() => upstream.sessions.size === 0), 'the HTTP member\'s session ended')
  t.ok(await eventually(() => ['fx', 'st'].every((name) => (upstreams.get(name)?.liveSessions?.().length ?? 0) === 0)), 'no member session is left')
})
