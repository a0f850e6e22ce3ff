// Issue 14 section 2, the first of the gateway's client identities at an upstream's authorization
// server: a client the operator registered there by hand (`upstreamAuth.clientId` and
// `clientSecret`, README "Upstream credentials", the GitHub recipe). The upstream is a second,
// real Portcullis on `localhost` whose authorization server knows the gateway only as a
// configured confidential client: dynamic registration is off, and the gateway's publicUrl is
// http (a Client ID Metadata Document needs https), so the configured client is the only way
// in. Users link headlessly through both gateways' real pages, as in upstream-oauth.test.ts.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { connectWithOAuth, signInForTokens } from '../oauth-helpers.js'
import { freePort, INIT_BODY, postJson, startGateway, startUpstream, textOf, type RunningGateway } from '../helpers.js'
import { auditedUsers, linkAccount, PASSWORD, USERS, LinkStopped, rpcErrorOf } from '../upstream-oauth-helpers.js'

const SERVER = 'github'
const CLIENT_ID = 'portcullis-gateway'
// Per run, and recognisable anywhere it might leak.
const CLIENT_SECRET = `registered-${randomBytes(24).toString('hex')}`
const WRONG_SECRET = `mistyped-${randomBytes(24).toString('hex')}`

const ROW_OF_ALICE = `upstream-token:${SERVER}:alice`

interface Setup {
  gw: RunningGateway
  /** The OAuth-protected upstream: a second Portcullis on localhost. */
  upstream: RunningGateway
  upstreamBase: string
  /** The gateway's clock (the upstream's is the real one). */
  clock: { ms: number }
}

/** The gateway's server, its secret from the environment as README's GitHub recipe has it. */
function gatewayServer (upstreamBase: string): Record<string, unknown> {
  return {
    name: SERVER,
    transport: 'http',
    url: `${upstreamBase}/fx/mcp`,
    upstreamAuth: { type: 'oauth', clientId: CLIENT_ID, clientSecret: '${UPSTREAM_CLIENT_SECRET}' },
  }
}

/** The upstream knows the gateway as CLIENT_ID with CLIENT_SECRET; the gateway is given `secret` from its environment. */
async function setUp (t: Test, secret: string): Promise<Setup> {
  const fixture = await startUpstream(t, { name: 'fx' })
  const upstreamPort = await freePort()
  const upstreamBase = `http://localhost:${upstreamPort}`
  // The gateway's address is needed first: it is the registered redirect URI.
  const gatewayPort = await freePort()
  const upstream = await startGateway(t, {
    publicUrl: upstreamBase,
    listen: { host: '127.0.0.1', port: upstreamPort },
    log: { level: 'debug', requests: true },
    auth: {
      users: USERS,
      accessTokenTtl: '5m',
      dynamicRegistration: false,
      clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, name: 'Portcullis', redirectUris: [`http://127.0.0.1:${gatewayPort}/account/links/${SERVER}/callback`] }],
    },
    servers: [{ name: 'fx', transport: 'http', url: fixture.url }],
  })
  const clock = { ms: Date.now() }
  const gw = await startGateway(t, {
    listen: { host: '127.0.0.1', port: gatewayPort },
    log: { level: 'debug', requests: true },
    auth: { users: USERS },
    servers: [gatewayServer(upstreamBase)],
  }, { UPSTREAM_CLIENT_SECRET: secret }, { now: () => clock.ms })
  return { gw, upstream, upstreamBase, clock }
}

function requestLines (gw: RunningGateway, url: string): string[] {
  return gw.logs.text().split('\n').filter((l) => l.includes('request completed') && l.includes(`"url":"${url}`))
}

function leaks (text: string, secret: string): boolean {
  return text.includes(secret) || text.includes(Buffer.from(`${CLIENT_ID}:${secret}`).toString('base64'))
}

t.test('a pre-registered confidential client: Alice links and reaches the upstream as herself; Bob gets the link error', async (t) => {
  const { gw, upstream, upstreamBase } = await setUp(t, CLIENT_SECRET)
  const asMetadata = await (await fetch(`${upstreamBase}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>
  t.equal(asMetadata.registration_endpoint, undefined, 'the upstream offers no dynamic registration')
  t.match(asMetadata.token_endpoint_auth_methods_supported, ['client_secret_basic'])

  const { browser, html } = await linkAccount(gw, SERVER, 'alice', PASSWORD)
  t.match(html, /linked \d{4}-/, 'the account page lists the link')
  const authorizeRequests = browser.visited.filter((u) => u.startsWith(`${upstreamBase}/oauth/authorize?`))
  t.ok(authorizeRequests.length > 0, 'the browser went to the upstream\'s authorization endpoint')
  t.same(authorizeRequests.map((u) => new URL(u).searchParams.get('client_id')), authorizeRequests.map(() => CLIENT_ID), 'as the configured client')
  const tokenRequests = requestLines(upstream, '/oauth/token')
  t.ok(tokenRequests.length >= 1, 'the code was redeemed at the upstream\'s token endpoint')
  t.ok(tokenRequests.every((l) => l.includes('"statusCode":200')), 'which took the client secret (the client is confidential there)')
  t.same(requestLines(upstream, '/oauth/register'), [], 'never asked for a registration')
  t.equal(await gw.app.portcullis.store.kvGet(`upstream-oauth-client:${SERVER}:${new URL(upstreamBase).href}`), undefined, 'no dynamic registration stored')

  const alice = await connectWithOAuth(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'as alice' } })), 'as alice')
  t.same(auditedUsers(upstream, 'tools/call'), ['alice'], 'the upstream\'s own audit names Alice')
  const calls = upstream.audit.lines.map((l) => JSON.parse(l) as { method?: string, clientId?: unknown }).filter((r) => r.method === 'tools/call')
  t.match(calls, [{ clientId: CLIENT_ID }], 'with a token issued to the configured client')

  const bob = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl })
  const refused = await rpcErrorOf(gw.mcpUrl(SERVER), bob.accessToken)
  t.equal(refused.status, 200, 'not a 401: the client must not start a new sign-in with the gateway')
  t.match(refused.error, { code: -32600, data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', server: SERVER, url: `${gw.baseUrl}/connect/${SERVER}` } })
  t.same(auditedUsers(upstream, 'tools/call'), ['alice'], 'nothing of Bob\'s reached the upstream')

  t.notOk(leaks(gw.logs.text(), CLIENT_SECRET), 'the client secret is in no log line of the gateway')
  t.notOk(leaks(gw.audit.text(), CLIENT_SECRET), 'nor in its audit')
  t.notOk(leaks(upstream.logs.text(), CLIENT_SECRET), 'nor in the upstream\'s log')
})

t.test('a wrong client secret: the link fails with a page saying an administrator must fix it, and the secret is in no log line', async (t) => {
  const { gw, upstream } = await setUp(t, WRONG_SECRET)
  const failed = await linkAccount(gw, SERVER, 'alice', PASSWORD).then(() => undefined, (e: unknown) => e)
  t.ok(failed instanceof LinkStopped, 'the link did not reach the linked accounts page')
  t.equal((failed as LinkStopped).status, 400, 'the callback page is an error')
  t.match((failed as LinkStopped).page, /The provider refused this gateway.+s own credentials, so no account can be linked at .+github.+ until an administrator corrects them\./, 'not "try again": only the operator can fix it')
  t.match(requestLines(upstream, '/oauth/token'), [/"statusCode":401/], 'the upstream refused the gateway\'s client authentication')
  t.equal(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE), undefined, 'nothing linked')
  t.match(gw.logs.text(), new RegExp(`"level":50.*refused the configured client \\\\"${CLIENT_ID}\\\\" \\(invalid_client\\): check upstreamAuth.clientId and clientSecret.*"msg":"upstream refused the gateway client credentials"`), 'the operator\'s log line names the client and what to check')

  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  t.match((await rpcErrorOf(gw.mcpUrl(SERVER), alice.accessToken)).error, { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } }, 'her calls still get the link error')
  t.notOk(leaks(gw.logs.text(), WRONG_SECRET), 'the secret the gateway sent is in no log line')
  t.notOk(leaks(gw.audit.text(), WRONG_SECRET), 'nor in its audit')
})

t.test('a secret that goes wrong after users linked: a refresh is a 502 naming the client, and the links stay', async (t) => {
  const { gw, upstreamBase, clock } = await setUp(t, CLIENT_SECRET)
  // Tokens first, while unlinked: the sign-in's client then stays connected to nothing (a live
  // one's reconnecting GET stream would refresh at the first gateway, with the right secret).
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  await linkAccount(gw, SERVER, 'alice', PASSWORD)
  const auth = { authorization: `Bearer ${alice.accessToken}` }
  const store = gw.app.portcullis.store
  const linked = await store.kvGet(ROW_OF_ALICE)
  // The gateway started again with a mistyped secret: a replica on the same store and publicUrl.
  const mistyped = await startGateway(t, { publicUrl: gw.baseUrl, log: { level: 'debug', requests: true }, auth: { users: USERS }, servers: [gatewayServer(upstreamBase)] }, { UPSTREAM_CLIENT_SECRET: WRONG_SECRET }, { store, now: () => clock.ms })
  clock.ms += 5 * 60_000
  const refused = await postJson(`${mistyped.baseUrl}/${SERVER}/mcp`, INIT_BODY, auth)
  t.equal(refused.status, 502, 'the gateway\'s own credential failed: not the link error, which linking again would not fix')
  t.match(refused.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  t.equal(await store.kvGet(ROW_OF_ALICE), linked, 'Alice\'s link is kept')
  t.match(mistyped.logs.text(), new RegExp(`refused the configured client \\\\"${CLIENT_ID}\\\\" \\(invalid_client\\).*"msg":"could not refresh an upstream token"`))
  t.notOk(leaks(mistyped.logs.text(), WRONG_SECRET), 'the secret is in no log line')

  // With the right secret the kept link is refreshed and serves her again.
  const served = await postJson(gw.mcpUrl(SERVER), INIT_BODY, auth)
  t.match(served.text, /"serverInfo"/)
  t.not(await store.kvGet(ROW_OF_ALICE), linked, 'refreshed')
})
