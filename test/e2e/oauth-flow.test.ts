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
