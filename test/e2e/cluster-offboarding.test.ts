// Offboarding across replicas: two gateways on one Redis (one publicUrl, as behind a load
// balancer) and a real IdP (test/idp.ts). A user has a stdio process on each replica; the IdP's
// back-channel logout reaches one replica, and the user's processes end on both (a notice over
// Redis pub/sub, src/cluster/notices.ts), while another user's process carries on.
import t from 'tap'
import { signInForTokens } from '../oauth-helpers.js'
import { eventually, isProcessAlive, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, stdioServer, STDIO_MODERN_FIXTURE, textOf, type RunningGateway } from '../helpers.js'
import { idpEntry, startGatewayWithIdp, type IdpAccount } from '../idp.js'

const ALICE: IdpAccount = { sub: 'a-100', password: 'alice-at-corp', email: 'alice@example.com', email_verified: true, preferred_username: 'alice' }
const BOB: IdpAccount = { sub: 'b-200', password: 'bob-at-corp', email: 'bob@example.com', email_verified: true, preferred_username: 'bob' }
const META = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' } }

/** tools/call env on the 2026-07-28 stdio server of one replica: the pid of the caller's process there. */
async function pidOn (gw: RunningGateway, accessToken: string): Promise<number | undefined> {
  const res = await postJson(gw.mcpUrl('modern'), { jsonrpc: '2.0', id: 'e1', method: 'tools/call', params: { name: 'env', arguments: {}, _meta: META } },
    { authorization: `Bearer ${accessToken}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'env' })
  if (res.status !== 200) return undefined
  return (JSON.parse(textOf((res.json as { result?: unknown }).result)) as { pid: number }).pid
}

t.test('a user offboarded at one replica loses their stdio processes on every replica', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const config = (idpUrl: Parameters<typeof idpEntry>[0]): Record<string, unknown> => ({
    store: { redis: REDIS_URL, prefix },
    auth: { identityProviders: [idpEntry(idpUrl)] },
    servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' })],
  })
  const { idp, gw: gw1 } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, config)
  const gw2 = await startGateway(t, { ...config(idp), publicUrl: gw1.baseUrl })

  const sign = async (account: IdpAccount): Promise<string> => (await signInForTokens(t, gw1.mcpUrl('modern'), { username: account.preferred_username ?? '', password: account.password, idp: 'corp', issuer: gw1.baseUrl })).accessToken
  const alice = await sign(ALICE)
  const bob = await sign(BOB)
  const alice1 = await pidOn(gw1, alice)
  const alice2 = await pidOn(gw2, alice)
  const bob2 = await pidOn(gw2, bob)
  t.ok(alice1 !== undefined && alice2 !== undefined && bob2 !== undefined, 'Alice has a process on each replica, Bob one on the second')
  t.not(alice1, alice2, 'two processes, one per replica')

  const logout = await fetch(`${gw1.baseUrl}/oauth/idp/corp/backchannel-logout`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ logout_token: await idp.logoutToken(ALICE.sub) }).toString(),
  })
  t.equal(logout.status, 200, 'the IdP\'s logout token reaches the first replica')
  t.ok(await eventually(() => !isProcessAlive(alice1 ?? 0)), 'Alice\'s process on that replica ends')
  t.ok(await eventually(() => !isProcessAlive(alice2 ?? 0)), 'and her process on the other replica ends too')
  t.ok(isProcessAlive(bob2 ?? 0), 'Bob\'s process on the other replica carries on')
  t.equal(await pidOn(gw2, bob), bob2, 'and answers him')
})
