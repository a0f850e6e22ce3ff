// trustProxy: whose X-Forwarded-For counts (rate limits, audit), and the authorization server
// always presenting publicUrl — never an origin a client's headers suggest.
import t from 'tap'
import { INIT_BODY, postJson, startGateway, startUpstream } from '../helpers.js'
import { REDIRECT_URL } from '../oauth-helpers.js'

const call = (id: number): unknown => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } })

async function session (url: string, headers: Record<string, string>): Promise<Record<string, string>> {
  const init = await postJson(url, INIT_BODY, headers)
  return { ...headers, 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
}

t.test('X-Forwarded-For is ignored unless the proxy is trusted; then anonymous callers are told apart by it', async (t) => {
  const upstream = await startUpstream(t)
  const servers = [{ name: 'fx', transport: 'http', url: upstream.url }]
  const limits = { perUserPerTool: '2/min' }

  const direct = await startGateway(t, { rateLimits: limits, servers })
  const spoof = async (ip: string, id: number): Promise<number> => (await postJson(direct.mcpUrl('fx'), call(id), await session(direct.mcpUrl('fx'), { 'x-forwarded-for': ip }))).status
  t.same([await spoof('198.51.100.1', 1), await spoof('198.51.100.2', 2), await spoof('198.51.100.3', 3)], [200, 200, 429],
    'untrusted: a client cannot dodge its limit by inventing addresses')
  t.ok(direct.audit.lines.every((line) => (JSON.parse(line) as { ip: string }).ip === '127.0.0.1'), 'the audit trail has the socket address')

  const behind = await startGateway(t, { trustProxy: ['127.0.0.1'], rateLimits: limits, servers })
  const via = async (ip: string, id: number): Promise<number> => (await postJson(behind.mcpUrl('fx'), call(id), await session(behind.mcpUrl('fx'), { 'x-forwarded-for': ip }))).status
  t.same([await via('198.51.100.1', 1), await via('198.51.100.1', 2), await via('198.51.100.1', 3), await via('198.51.100.2', 4)], [200, 200, 429, 200],
    'trusted: each client address has its own bucket')
  const ips = behind.audit.lines.map((line) => JSON.parse(line) as { ip: string, method: string }).filter((r) => r.method === 'tools/call').map((r) => r.ip)
  t.same(ips, ['198.51.100.1', '198.51.100.1', '198.51.100.1', '198.51.100.2'], 'and the audit trail has the client\'s address')

  const oneHop = await startGateway(t, { trustProxy: 1, servers })
  await postJson(oneHop.mcpUrl('fx'), call(1), await session(oneHop.mcpUrl('fx'), { 'x-forwarded-for': '203.0.113.66, 198.51.100.9' }))
  const record = oneHop.audit.lines.map((line) => JSON.parse(line) as { ip: string, method: string }).find((r) => r.method === 'tools/call')
  t.equal(record?.ip, '198.51.100.9', 'a hop count trusts that many proxies: the address the nearest one saw, not what the client wrote')
})

t.test('the authorization server always presents publicUrl: https endpoints and Secure cookies, whatever the request says', async (t) => {
  const upstream = await startUpstream(t)
  const publicUrl = 'https://mcp.example.test'
  const gw = await startGateway(t, { publicUrl, auth: {}, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const forged = { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http', host: 'evil.example' }
  const metadata = await (await fetch(`${gw.baseUrl}/.well-known/oauth-authorization-server`, { headers: forged })).json() as Record<string, string>
  t.same([metadata.issuer, metadata.authorization_endpoint, metadata.token_endpoint, metadata.registration_endpoint],
    [publicUrl, `${publicUrl}/oauth/authorize`, `${publicUrl}/oauth/token`, `${publicUrl}/oauth/register`], 'forged forwarding headers change nothing')

  const registered = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  t.equal(registered.status, 201)
  const { client_id: clientId } = await registered.json() as { client_id: string }
  const query = new URLSearchParams({
    client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 's',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: `${publicUrl}/fx/mcp`,
  })
  const authorize = await fetch(`${gw.baseUrl}/oauth/authorize?${query.toString()}`, { redirect: 'manual', headers: forged })
  t.equal(authorize.status, 303)
  t.match(authorize.headers.get('location'), /^\/interaction\//)
  const cookies = authorize.headers.getSetCookie()
  t.ok(cookies.length > 0)
  t.same(cookies.filter((c) => !/;\s*secure/i.test(c)), [], 'Secure cookies: the browser only ever talks to the https origin')
})
