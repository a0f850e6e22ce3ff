// The whole MCP authorization flow with the official SDK client, through the gateway's embedded
// authorization server, to one HTTP and one stdio upstream.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { startGateway, startUpstream, stdioServer, textOf } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'

t.test('DCR, sign-in, consent, then tools/call on an HTTP and a stdio upstream', async (t) => {
  const upstream = await startUpstream(t)
  const passwordHash = await hashPassword(PASSWORD)
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash, groups: ['eng'] }] },
    servers: [
      { name: 'remote', transport: 'http', url: upstream.url },
      stdioServer('local'),
    ],
  })
  const remote = await connectWithOAuth(t, gw.mcpUrl('remote'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  t.same(remote.browser.pages, ['login', 'consent'])
  t.ok(remote.oauth.info?.client_id, 'registered dynamically')
  t.same((await remote.client.callTool({ name: 'echo', arguments: { text: 'authorized' } })).content, [{ type: 'text', text: 'authorized' }])
  const token = remote.oauth.savedTokens?.access_token ?? ''
  for (const request of upstream.seen) {
    t.equal(request.headers.authorization, undefined, `${request.method}: the client's token never reaches the upstream`)
  }
  t.notMatch(JSON.stringify(upstream.seen), token.slice(-20))

  const local = await connectWithOAuth(t, gw.mcpUrl('local'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  t.equal(textOf(await local.client.callTool({ name: 'echo', arguments: { text: 'stdio too' } })), 'stdio too')
  const env = JSON.parse(textOf(await local.client.callTool({ name: 'env', arguments: {} }))) as { names: string[] }
  t.ok(env.names.length > 0)
})

t.test('nothing secret reaches the log: tokens, codes, verifiers, passwords, client secrets', async (t) => {
  const upstream = await startUpstream(t)
  const secret = 'machine-secret-with-at-least-32-characters!'
  const gw = await startGateway(t, {
    log: { level: 'trace', requests: true },
    auth: {
      users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }],
      clients: [{ clientId: 'bot', clientSecret: secret, grantTypes: ['client_credentials'] }],
    },
    servers: [{ name: 'remote', transport: 'http', url: upstream.url }],
  })
  const connected = await connectWithOAuth(t, gw.mcpUrl('remote'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  await connected.client.callTool({ name: 'echo', arguments: { text: 'x' } })
  const machine = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`bot:${secret}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: gw.mcpUrl('remote') }).toString(),
  })
  const machineToken = String((await machine.json() as Record<string, unknown>).access_token)
  await fetch(`${gw.mcpUrl('remote')}?access_token=${machineToken}`, { method: 'POST', headers: { authorization: `Bearer ${machineToken}` }, body: '{' })
  const logs = gw.logs.text()
  t.ok(gw.logs.lines.length > 10, `logged ${gw.logs.lines.length} lines`)
  const secrets = {
    'access token': connected.oauth.savedTokens?.access_token,
    'refresh token': connected.oauth.savedTokens?.refresh_token,
    'authorization code': connected.callback.searchParams.get('code'),
    'PKCE verifier': connected.oauth.verifier,
    password: PASSWORD,
    'client secret': secret,
    'machine token': machineToken,
  }
  for (const [what, value] of Object.entries(secrets)) {
    t.ok(value !== undefined && value !== null && value.length > 8, `have a ${what} to look for`)
    t.notOk(logs.includes(String(value)), `no ${what} in the log`)
  }
})
