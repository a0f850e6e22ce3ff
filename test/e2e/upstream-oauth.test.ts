// Issue 14 section 2: the gateway as each user's OAuth client to an upstream. Everything is real:
// the OAuth-protected upstream is a second Portcullis (its own authorization server with dynamic
// registration and protected resource metadata) on `localhost`, in front of the fixture MCP
// server; the first gateway is on 127.0.0.1 (two sites, as a browser sees them). Users link their
// account headlessly through both gateways' real pages; MCP calls go through the official SDK.
import t, { type Test } from 'tap'
import { McpError } from '@modelcontextprotocol/sdk/types.js'
import { SecretBox } from '../../src/auth-server/secret-box.js'
import { connectWithOAuth, HeadlessBrowser, signInForTokens, TestOAuthClient, type AuthorizedClient } from '../oauth-helpers.js'
import { signInToAccount } from '../account-helpers.js'
import { createHash } from 'node:crypto'
import type { Store } from '../../src/store/types.js'
import { connectClient, freePort, INIT_BODY, postJson, startGateway, startUpstream, stdioServer, textOf, type RunningGateway } from '../helpers.js'
import { nginxBinary, startNginx } from '../nginx.js'
import { auditedUsers, linkAccount, PASSWORD, USERS, rpcErrorOf, type RpcError } from '../upstream-oauth-helpers.js'

const SERVER = 'linear'
const ROW_OF_ALICE = `upstream-token:${SERVER}:alice`
const TOOLS = 'gh-tools'

interface Setup {
  gw: RunningGateway
  /** The OAuth-protected upstream: a second Portcullis on localhost. */
  upstream: RunningGateway
  upstreamBase: string
  clock: { ms: number }
  box: SecretBox
}

async function setUp (t: Test, upstreamAuthConfig: Record<string, unknown> = {}, gatewayConfig: Record<string, unknown> = {}): Promise<Setup> {
  const fixture = await startUpstream(t, { name: 'fx' })
  const port = await freePort()
  const upstreamBase = `http://localhost:${port}`
  const upstream = await startGateway(t, {
    publicUrl: upstreamBase,
    listen: { host: '127.0.0.1', port },
    auth: { users: USERS, accessTokenTtl: '5m', ...upstreamAuthConfig },
    servers: [{ name: 'fx', transport: 'http', url: fixture.url }],
  })
  const clock = { ms: Date.now() }
  const gw = await startGateway(t, {
    auth: { users: USERS },
    servers: gatewayServers(upstreamBase),
    ...gatewayConfig,
  }, {}, { now: () => clock.ms })
  // The box's key was generated into the store at start (no encryptionKeyFile): the test opens rows with it.
  const box = await SecretBox.load(gw.app.portcullis.store, undefined)
  return { gw, upstream, upstreamBase, clock, box }
}

function gatewayServers (upstreamBase: string): Array<Record<string, unknown>> {
  return [
    { name: SERVER, transport: 'http', url: `${upstreamBase}/fx/mcp`, upstreamAuth: { type: 'oauth' } },
    // A stdio server started with the caller's linked token.
    stdioServer(TOOLS, { env: { UPSTREAM_TOKEN: `\${user.credentials.${SERVER}}` }, isolation: 'session' }),
  ]
}

/** Alice (or Bob) links her account at SERVER through both gateways' real pages. */
async function link (gw: RunningGateway, username: string, via?: { base: string, fetch?: typeof fetch }): Promise<{ browser: HeadlessBrowser, html: string }> {
  return await linkAccount(gw, SERVER, username, PASSWORD, via)
}

async function signIn (t: Test, gw: RunningGateway, username: string): Promise<AuthorizedClient> {
  return connectWithOAuth(t, gw.mcpUrl(SERVER), { username, password: PASSWORD, issuer: gw.baseUrl, oauth: new TestOAuthClient({ name: `${username}'s client` }) })
}

/** The JSON-RPC error of a raw POST to SERVER with the user's gateway token. */
async function rawError (gw: RunningGateway, token: string, body: unknown = INIT_BODY): Promise<{ status: number, error: RpcError | undefined }> {
  return await rpcErrorOf(gw.mcpUrl(SERVER), token, body)
}

function openRow (box: SecretBox, row: string | undefined, key = ROW_OF_ALICE): { accessToken: string, refreshToken?: string, expiresAtMs?: number, linkedAtMs: number } {
  return JSON.parse(box.open(row ?? '', key)) as { accessToken: string, refreshToken?: string, expiresAtMs?: number, linkedAtMs: number }
}

t.test('Alice links her account and reaches the upstream as herself; Bob, unlinked, gets the link error', async (t) => {
  const { gw, upstream, box } = await setUp(t)
  const connectUrl = `${gw.baseUrl}/connect/${SERVER}`

  // Before linking: the error names the page that links the account, in the message and in data.
  const bob = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl })
  const refused = await rawError(gw, bob.accessToken)
  t.equal(refused.status, 200, 'not a 401: the client must not start a new sign-in with the gateway')
  t.match(refused.error, { code: -32600, data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', url: connectUrl, server: SERVER } })
  t.match(refused.error?.message, connectUrl, 'the link is in the message a model reads')
  t.same(auditedUsers(upstream, 'initialize'), [], 'nothing reached the upstream without a credential')

  const { html } = await link(gw, 'alice')
  t.match(html, /Linked accounts/)
  t.match(html, /linked \d{4}-/, 'the account page lists the link')
  t.match(html, /action="\/account\/links\/linear\/unlink"/, 'with an unlink button')

  const alice = await signIn(t, gw, 'alice')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'hello' } })), 'hello')
  t.same(auditedUsers(upstream, 'tools/call'), ['alice'], 'the upstream\'s own audit names Alice')
  t.ok(auditedUsers(upstream, 'initialize').every((u) => u === 'alice'))

  // Bob is still not linked: Alice's link is hers only.
  t.match((await rawError(gw, bob.accessToken)).error, { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } })

  // At rest: sealed, nothing readable; the tokens are in no log line.
  const row = await gw.app.portcullis.store.kvGet(ROW_OF_ALICE)
  const tokens = openRow(box, row)
  t.match(row, /^v1\.[^.]+\.[^.]+\.[^.]+\.[^.]+$/, 'a sealed value')
  t.notOk(row?.includes(tokens.accessToken), 'no plaintext access token in the row')
  t.notOk(row?.includes(tokens.refreshToken ?? 'no refresh token'), 'no plaintext refresh token in the row')
  t.notOk(row?.includes('eyJ'), 'no JWT at all in the row')
  t.notOk(gw.logs.text().includes(tokens.accessToken), 'the access token is never logged')
  t.notOk(gw.logs.text().includes(tokens.refreshToken ?? 'no refresh token'), 'the refresh token is never logged')

  // Alice's row copied into Bob's slot does not open there (the slot is authenticated data).
  await gw.app.portcullis.store.kvSet(`upstream-token:${SERVER}:bob`, row ?? '')
  t.match((await rawError(gw, bob.accessToken)).error, { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } }, 'a copied row gives Bob nothing')
  t.same(auditedUsers(upstream, 'tools/call'), ['alice'])
})

t.test('tokens are refreshed before expiry, and once more when the upstream refuses one', async (t) => {
  const { gw, upstream, clock, box } = await setUp(t)
  await link(gw, 'alice')
  const alice = await signIn(t, gw, 'alice')
  const store = gw.app.portcullis.store
  const first = openRow(box, await store.kvGet(ROW_OF_ALICE))
  t.ok(first.refreshToken !== undefined, 'a refresh token was issued')
  t.ok(first.expiresAtMs !== undefined && first.expiresAtMs - clock.ms <= 5 * 60_000, 'the upstream\'s 5 min access token lifetime is known')

  // The gateway's clock passes the access token's expiry: it refreshes before sending.
  clock.ms += 5 * 60_000
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'after expiry' } })), 'after expiry')
  const second = openRow(box, await store.kvGet(ROW_OF_ALICE))
  t.not(second.accessToken, first.accessToken, 'a new access token')
  t.equal(second.linkedAtMs, first.linkedAtMs, 'the same link')

  // The upstream refuses a token the gateway still thinks good (here: one it never issued):
  // 401, one refresh, and the request is sent again — the client sees only its answer.
  await store.kvSet(ROW_OF_ALICE, box.seal(JSON.stringify({ ...second, accessToken: 'not-a-token-the-upstream-knows' }), ROW_OF_ALICE))
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'after 401' } })), 'after 401')
  const third = openRow(box, await store.kvGet(ROW_OF_ALICE))
  t.not(third.accessToken, 'not-a-token-the-upstream-knows', 'renewed after the 401')
  t.same(auditedUsers(upstream, 'tools/call'), ['alice', 'alice'], 'both calls reached the upstream as Alice')
})

t.test('the upstream\'s authorization server unreachable for a refresh: 502, and the link stays', async (t) => {
  const { gw, upstream, clock, box } = await setUp(t)
  await link(gw, 'alice')
  const alice = await signIn(t, gw, 'alice')
  const before = await gw.app.portcullis.store.kvGet(ROW_OF_ALICE)
  await upstream.app.close()
  clock.ms += 5 * 60_000
  const res = await postJson(gw.mcpUrl(SERVER), INIT_BODY, { authorization: `Bearer ${alice.oauth.savedTokens?.access_token ?? ''}` })
  t.equal(res.status, 502, 'not the link error: linking again would not help')
  t.match(res.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  t.equal(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE), before, 'the link is kept')
  t.ok(openRow(box, before).refreshToken !== undefined)
  t.match(gw.logs.text(), /could not refresh an upstream token/)
})

t.test('two replicas refreshing at once: one refresh at the upstream, both requests served', async (t) => {
  // No reuse grace at the upstream: a rotated refresh token used a second time is refused.
  const { gw, upstreamBase, clock, box } = await setUp(t, { refreshTokenReuseGrace: '0s' })
  await link(gw, 'alice')
  // A second replica: the same store (keys, links, locks), the same publicUrl, its own port.
  const replica = await startGateway(t, { publicUrl: gw.baseUrl, auth: { users: USERS }, servers: gatewayServers(upstreamBase) }, {}, { store: gw.app.portcullis.store, now: () => clock.ms })
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const linked = openRow(box, await gw.app.portcullis.store.kvGet(ROW_OF_ALICE))
  clock.ms += 5 * 60_000
  const [a, b] = await Promise.all([gw, replica].map(async (g) => await postJson(`${g.baseUrl}/${SERVER}/mcp`, INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })))
  t.match(a?.text, /"serverInfo"/, 'the first replica\'s request is served')
  t.match(b?.text, /"serverInfo"/, 'and the second\'s')
  const after = openRow(box, await gw.app.portcullis.store.kvGet(ROW_OF_ALICE))
  t.not(after.accessToken, linked.accessToken, 'refreshed')
  t.notMatch(gw.logs.text() + replica.logs.text(), /upstream refused the refresh token/, 'the refresh token was never used twice')
})

/**
 * The shared store as one replica sees it, with `before` run just before that replica's first
 * store call matching `when` — to put another replica's work exactly inside a race window. The
 * store itself is real; only the timing is arranged.
 */
function storeWithHook (store: Store, when: (method: string, key: string) => boolean, before: () => Promise<void>): Store {
  let fired = false
  return new Proxy(store, {
    get (target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver)
      if (typeof value !== 'function') return value
      return async (...args: unknown[]) => {
      if (!fired && typeof args[0] === 'string' && when(String(prop), args[0])) {
          fired = true
          await before()
        }
        return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
      }
    },
  })
}

t.test('a replica that read the row before another rotated the refresh token uses the new row, never the spent token', async (t) => {
  // No reuse grace at the upstream: a rotated refresh token used a second time is refused.
  const { gw, upstreamBase, clock, box } = await setUp(t, { refreshTokenReuseGrace: '0s' })
  // Tokens first, while unlinked: no client of Alice's stays connected to refresh by itself.
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  await link(gw, 'alice')
  const store = gw.app.portcullis.store
  const linked = openRow(box, await store.kvGet(ROW_OF_ALICE))
  let first: { text: string } | undefined
  // The late replica has read the expiring row; just before it takes the refresh lock, the
  // first replica refreshes (rotating the refresh token) and releases the lock.
  const late = await startGateway(t, { publicUrl: gw.baseUrl, auth: { users: USERS }, servers: gatewayServers(upstreamBase) }, {}, {
    store: storeWithHook(store, (method, key) => method === 'kvSetIfAbsent' && key.startsWith('upstream-refresh-lock:'), async () => {
      first = await postJson(`${gw.baseUrl}/${SERVER}/mcp`, INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })
    }),
    now: () => clock.ms,
  })
  clock.ms += 5 * 60_000
  const second = await postJson(`${late.baseUrl}/${SERVER}/mcp`, INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })
  t.match(first?.text, /"serverInfo"/, 'the first replica refreshed and was served')
  t.match(second.text, /"serverInfo"/, 'the late replica is served with the first one\'s token')
  const after = openRow(box, await store.kvGet(ROW_OF_ALICE))
  t.not(after.accessToken, linked.accessToken, 'the link holds the refreshed token')
  t.notMatch(gw.logs.text() + late.logs.text(), /upstream refused the refresh token/, 'the spent refresh token was never sent')
})

t.test('an unlink while a refresh is out is not undone by that refresh', async (t) => {
  const { gw, upstreamBase, clock } = await setUp(t)
  // Tokens first, while unlinked: the sign-in's client then stays connected to nothing (a live
  // one's reconnecting GET stream would refresh at the first replica too).
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const { browser, html } = await link(gw, 'alice')
  const store = gw.app.portcullis.store
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? ''
  let unlinked = 0
  // The replica got new tokens from the upstream; just before it writes them, Alice unlinks.
  const replica = await startGateway(t, { publicUrl: gw.baseUrl, auth: { users: USERS }, servers: gatewayServers(upstreamBase) }, {}, {
    store: storeWithHook(store, (method, key) => method !== 'kvGet' && key === ROW_OF_ALICE, async () => {
      const res = await browser.request(`${gw.baseUrl}/account/links/${SERVER}/unlink`, { method: 'POST', form: { csrf } })
      unlinked = res.status
      await res.arrayBuffer()
    }),
    now: () => clock.ms,
  })
  clock.ms += 5 * 60_000
  // At the replica's own address (its mcpUrl is the shared publicUrl, the first replica's).
  const res = await postJson(`${replica.baseUrl}/${SERVER}/mcp`, INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })
  t.equal(unlinked, 303, 'Alice unlinked while the refresh was out')
  t.equal(await store.kvGet(ROW_OF_ALICE), undefined, 'the link stays gone')
  t.match((res.json as { error?: { data?: unknown } } | undefined)?.error?.data, { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' }, 'and the request gets the link error')
  t.match(replica.logs.text(), /upstream link changed during a refresh; refreshed token discarded/)
  // Before the fix the refreshed row was written back over the unlink and sent upstream, where
  // only the unlink's revocation of the grant stopped it (an upstream that revokes the refresh
  // token alone would have kept serving it).
  t.notMatch(replica.logs.text(), /upstream refused the refresh token/, 'the unlinked token was never used')
})

t.test('a token revoked at the upstream\'s authorization server: the refresh is refused, and Alice gets the link error again', async (t) => {
  const { gw, upstreamBase, box } = await setUp(t)
  await link(gw, 'alice')
  const alice = await signIn(t, gw, 'alice')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'linked' } })), 'linked')
  const store = gw.app.portcullis.store
  const tokens = openRow(box, await store.kvGet(ROW_OF_ALICE))
  const registrationKey = `upstream-oauth-client:${SERVER}:${new URL(upstreamBase).href}`
  const { client_id: clientId } = JSON.parse(box.open(await store.kvGet(registrationKey) ?? '', registrationKey)) as { client_id: string }

  // At the upstream (RFC 7009): revoking the access token revokes its whole grant there.
  const revoked = await fetch(`${upstreamBase}/oauth/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: tokens.accessToken, client_id: clientId }).toString() })
  t.equal(revoked.status, 200)

  const err = await alice.client.callTool({ name: 'echo', arguments: { text: 'after revocation' } }).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof McpError, 'a JSON-RPC error')
  t.match((err as McpError).data, { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', url: `${gw.baseUrl}/connect/${SERVER}` })
  t.equal(await store.kvGet(ROW_OF_ALICE), undefined, 'the dead link is gone')
  t.match(gw.logs.text(), /upstream refused the refresh token; link removed/)

  // Linking again makes her calls work again.
  await link(gw, 'alice')
  const again = await signIn(t, gw, 'alice')
  t.equal(textOf(await again.client.callTool({ name: 'echo', arguments: { text: 'relinked' } })), 'relinked')
})

t.test('unlink: the link is gone here, its tokens are revoked upstream, and calls get the link error', async (t) => {
  const { gw, upstreamBase, box } = await setUp(t)
  const { browser, html } = await link(gw, 'alice')
  const alice = await signIn(t, gw, 'alice')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'linked' } })), 'linked')
  const store = gw.app.portcullis.store
  const tokens = openRow(box, await store.kvGet(ROW_OF_ALICE))
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? ''

  const forged = await browser.request(`${gw.baseUrl}/account/links/${SERVER}/unlink`, { method: 'POST', form: { csrf: 'not-the-token' } })
  t.equal(forged.status, 403, 'CSRF checked')
  await forged.arrayBuffer()
  t.not(await store.kvGet(ROW_OF_ALICE), undefined, 'still linked')

  const res = await browser.request(`${gw.baseUrl}/account/links/${SERVER}/unlink`, { method: 'POST', form: { csrf } })
  t.equal(res.status, 303)
  await res.arrayBuffer()
  t.equal(await store.kvGet(ROW_OF_ALICE), undefined, 'unlinked')
  const page = await browser.request(`${gw.baseUrl}/account/links`)
  t.match(await page.text(), /not linked/)

  const err = await alice.client.callTool({ name: 'echo', arguments: { text: 'after unlink' } }).then(() => undefined, (e: unknown) => e)
  t.match((err as McpError).data, { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' })

  // The refresh token was revoked at the upstream's authorization server.
  const registrationKey = `upstream-oauth-client:${SERVER}:${new URL(upstreamBase).href}`
  const { client_id: clientId } = JSON.parse(box.open(await store.kvGet(registrationKey) ?? '', registrationKey)) as { client_id: string }
  const refresh = await fetch(`${upstreamBase}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refreshToken ?? '', client_id: clientId, resource: `${upstreamBase}/fx/mcp` }).toString(),
  })
  t.equal(refresh.status, 400)
  t.match(await refresh.json(), { error: 'invalid_grant' })
})

t.test('a user revoked through the admin API keeps no linked upstream token: the row is gone and the token revoked upstream', async (t) => {
  const adminToken = 'admin-token-for-the-upstream-links-test'
  const { gw, upstreamBase, box } = await setUp(t, {}, { admin: { bearerToken: adminToken } })
  await link(gw, 'alice')
  await link(gw, 'bob')
  const store = gw.app.portcullis.store
  const tokens = openRow(box, await store.kvGet(ROW_OF_ALICE))
  const res = await fetch(`${gw.baseUrl}/admin/api/v1/users/alice/revoke`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}` } })
  t.equal(res.status, 200)
  await res.arrayBuffer()
  t.equal(await store.kvGet(ROW_OF_ALICE), undefined, 'Alice\'s link is gone')
  t.not(await store.kvGet(`upstream-token:${SERVER}:bob`), undefined, 'Bob\'s stays')
  t.match(gw.logs.text(), /upstream links removed for an ended account/)
  const registrationKey = `upstream-oauth-client:${SERVER}:${new URL(upstreamBase).href}`
  const { client_id: clientId } = JSON.parse(box.open(await store.kvGet(registrationKey) ?? '', registrationKey)) as { client_id: string }
  const refresh = await fetch(`${upstreamBase}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refreshToken ?? '', client_id: clientId, resource: `${upstreamBase}/fx/mcp` }).toString(),
  })
  t.equal(refresh.status, 400, 'her refresh token was revoked at the upstream')
  t.match(await refresh.json(), { error: 'invalid_grant' })
})

t.test('an operator sees a user\'s linked accounts and unlinks one through the admin API', async (t) => {
  const adminToken = 'admin-token-for-the-linked-accounts-test'
  const { gw } = await setUp(t, {}, { admin: { bearerToken: adminToken } })
  const admin = { authorization: `Bearer ${adminToken}` }
  await link(gw, 'alice')
  const listed = await fetch(`${gw.baseUrl}/admin/api/v1/linked-accounts?user=alice`, { headers: admin })
  t.equal(listed.status, 200)
  const { items } = await listed.json() as { items: Array<{ server: string, isLinked: boolean, linkedAt?: string }> }
  t.match(items, [{ server: SERVER, isLinked: true, linkedAt: /^\d{4}-\d\d-\d\dT/ }], 'Alice\'s link at the oauth server, with when she linked')
  t.notMatch(JSON.stringify(items), /access|refresh|token/i, 'never a token')
  const bobs = await (await fetch(`${gw.baseUrl}/admin/api/v1/linked-accounts?user=bob`, { headers: admin })).json() as { items: Array<{ isLinked: boolean }> }
  t.same(bobs.items.map((i) => i.isLinked), [false], 'Bob has none')
  t.equal((await fetch(`${gw.baseUrl}/admin/api/v1/linked-accounts?user=alice`)).status, 401, 'no admin credential, no list')

  const unlink = async (user: string, server: string): Promise<number> => {
    const res = await fetch(`${gw.baseUrl}/admin/api/v1/users/${user}/linked-accounts/${server}/unlink`, { method: 'POST', headers: admin })
    await res.arrayBuffer()
    return res.status
  }
  const alice = await signIn(t, gw, 'alice')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'linked' } })), 'linked', 'linked, her calls reach the upstream')
  t.equal(await unlink('alice', SERVER), 200, 'unlinked by the operator')
  t.equal(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE), undefined, 'her row is gone')
  const refused = await rawError(gw, alice.oauth.savedTokens?.access_token ?? '')
  t.equal(refused.error?.data.code, 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', 'her next call gets the link error')
  t.equal(await unlink('alice', SERVER), 404, 'nothing left to unlink')
  t.equal(await unlink('alice', TOOLS), 404, 'a server without upstreamAuth: oauth')
  const audited = gw.audit.lines.map((l) => JSON.parse(l) as { event?: string, action?: string, target?: { id: string }, outcome?: string })
  t.ok(audited.some((r) => r.action === 'linked-accounts.unlink' && r.target?.id === `${SERVER}/alice` && r.outcome === 'ok'), 'the unlink is audited with its target')
})

t.test('a machine client is told it cannot reach an oauth server, not sent to a link it could never open', async (t) => {
  const secret = 'machine-secret-with-at-least-32-characters!'
  const { gw } = await setUp(t, {}, { auth: { users: USERS, clients: [{ clientId: 'robot', clientSecret: secret, grantTypes: ['client_credentials'] }] } })
  const issued = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`robot:${secret}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: gw.mcpUrl(SERVER) }).toString(),
  })
  t.equal(issued.status, 200)
  const machineToken = String((await issued.json() as Record<string, unknown>).access_token)
  const refused = await postJson(gw.mcpUrl(SERVER), INIT_BODY, { authorization: `Bearer ${machineToken}` })
  t.equal(refused.status, 403)
  t.match(refused.json, { error: { data: { code: 'PORTCULLIS_ERR_USER_FIELD_MISSING' }, message: /a machine client \(client_credentials\) has none/ } })
  t.notMatch(refused.text, /connect/, 'no link to open')
})

t.test('a link without a refresh token is used until its access token expires, not dropped a minute early', async (t) => {
  const { gw, clock, box } = await setUp(t)
  await link(gw, 'alice')
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const store = gw.app.portcullis.store
  // As an upstream that issues no refresh token leaves it (linked-tokens.ts: the row expires with the token).
  const linked = openRow(box, await store.kvGet(ROW_OF_ALICE))
  const expiresAtMs = clock.ms + 30_000
  const withoutRefresh = { ...linked, expiresAtMs, refreshToken: undefined }
  await store.kvSet(ROW_OF_ALICE, box.seal(JSON.stringify(withoutRefresh), ROW_OF_ALICE), expiresAtMs)
  const within = await postJson(`${gw.baseUrl}/${SERVER}/mcp`, INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })
  t.match(within.text, /"serverInfo"/, '30 s before expiry: served with it')
  t.not(await store.kvGet(ROW_OF_ALICE), undefined, 'and the link kept')
  clock.ms += 30_000
  const after = await rawError(gw, alice.accessToken)
  t.match(after.error?.data, { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' }, 'expired: the link error')
})

t.test('a GET stream or a notification without a link gets the link error as a 403, not as a 200 an SDK reads as an empty stream', async (t) => {
  const { gw } = await setUp(t)
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  await link(gw, 'alice')
  const auth = { authorization: `Bearer ${alice.accessToken}` }
  const init = await postJson(`${gw.baseUrl}/${SERVER}/mcp`, INIT_BODY, auth)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  t.not(sessionId, '', 'a session with the upstream')
  await gw.app.portcullis.store.kvDelete(ROW_OF_ALICE)
  const session = { ...auth, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' }

  const stream = await fetch(`${gw.baseUrl}/${SERVER}/mcp`, { headers: { ...session, accept: 'text/event-stream' } })
  t.equal(stream.status, 403, 'GET: an HTTP error the client reports, not a 200')
  t.match(await stream.json(), { jsonrpc: '2.0', error: { code: -32600, data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', url: `${gw.baseUrl}/connect/${SERVER}` } } }, 'with the link error\'s body')
  const notification = await postJson(`${gw.baseUrl}/${SERVER}/mcp`, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)
  t.equal(notification.status, 403, 'a notification-only POST: 403 too')
  t.match(notification.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } } })
  const request = await postJson(`${gw.baseUrl}/${SERVER}/mcp`, { jsonrpc: '2.0', id: 7, method: 'tools/list' }, session)
  t.equal(request.status, 200, 'a request still gets it as a 200 JSON-RPC answer, for the model')
  t.match(request.json, { id: 7, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } } })
})

t.test('linking starts only from the confirmation page\'s POST: a GET names the server and account, a forged POST is refused', async (t) => {
  const { gw } = await setUp(t)
  const { browser } = await link(gw, 'alice')
  await gw.app.portcullis.store.kvDelete(ROW_OF_ALICE)
  // A link on another site, opened by signed-in Alice: a page, not a trip to the upstream.
  const opened = await browser.request(`${gw.baseUrl}/account/links/${SERVER}/connect`)
  t.equal(opened.status, 200, 'no redirect to the upstream\'s authorization server')
  const html = await opened.text()
  t.match(html, new RegExp(`MCP server <strong>${SERVER}</strong> to <strong>alice</strong>`), 'it names the server and the account')
  t.match(html, /<button type="submit">Link account<\/button>/)
  t.equal(opened.headers.get('cache-control'), 'no-store')
  const forged = await browser.request(`${gw.baseUrl}/account/links/${SERVER}/connect`, { method: 'POST', form: { csrf: 'not-the-token' } })
  t.equal(forged.status, 403, 'a POST without the page\'s CSRF token is refused')
  await forged.arrayBuffer()
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? ''
  const confirmed = await browser.request(`${gw.baseUrl}/account/links/${SERVER}/connect`, { method: 'POST', form: { csrf } })
  t.equal(confirmed.status, 303, 'the confirmed POST starts the link')
  t.ok(confirmed.headers.get('location')?.startsWith(`${new URL(gw.baseUrl).protocol}//localhost:`), 'at the upstream\'s authorization server')
  await confirmed.arrayBuffer()
})

t.test('a client that declared URL-mode elicitation gets -32042 with the link to open', async (t) => {
  const { gw } = await setUp(t)
  const bob = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl })
  const err = await connectClient(t, gw.mcpUrl(SERVER), { headers: { authorization: `Bearer ${bob.accessToken}` }, capabilities: { elicitation: { url: {} } } }).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof McpError, 'the SDK reads it as a JSON-RPC error')
  t.equal((err as McpError).code, -32042)
  const url = `${gw.baseUrl}/connect/${SERVER}`
  t.match((err as McpError).data, { elicitations: [{ mode: 'url', url, elicitationId: String, message: new RegExp(url) }] }, 'what the SDK hands its user: the URL to open')
  // On the wire: the gateway's code and the link beside the elicitation (clients without the SDK's parsing).
  const raw = await rawError(gw, bob.accessToken, { ...INIT_BODY, params: { ...INIT_BODY.params, capabilities: { elicitation: { url: {} } } } })
  t.equal(raw.status, 200)
  t.match(raw.error, { code: -32042, data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_ELICITATION', url, elicitations: [{ mode: 'url', url }] } })

  // Without the capability: the plain error.
  const plain = await connectClient(t, gw.mcpUrl(SERVER), { headers: { authorization: `Bearer ${bob.accessToken}` } }).then(() => undefined, (e: unknown) => e)
  t.equal((plain as McpError).code, -32600)
})

t.test('a session whose client declared URL-mode elicitation gets -32042 later, after an unlink', async (t) => {
  const { gw } = await setUp(t)
  const { browser, html } = await link(gw, 'alice')
  const tokens = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const { client } = await connectClient(t, gw.mcpUrl(SERVER), { headers: { authorization: `Bearer ${tokens.accessToken}` }, capabilities: { elicitation: { url: {} } } })
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'linked' } })), 'linked')
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? ''
  await (await browser.request(`${gw.baseUrl}/account/links/${SERVER}/unlink`, { method: 'POST', form: { csrf } })).arrayBuffer()
  const err = await client.callTool({ name: 'echo', arguments: { text: 'unlinked' } }).then(() => undefined, (e: unknown) => e)
  t.equal((err as McpError).code, -32042, 'the session\'s capability was remembered')
})

t.test('the client metadata document and the connect link are served for oauth servers only', async (t) => {
  const { gw } = await setUp(t)
  const doc = await gw.app.inject({ method: 'GET', url: `/oauth/client-metadata/${SERVER}.json` })
  t.equal(doc.statusCode, 200)
  t.match(doc.json(), { client_id: `${gw.baseUrl}/oauth/client-metadata/${SERVER}.json`, redirect_uris: [`${gw.baseUrl}/account/links/${SERVER}/callback`], token_endpoint_auth_method: 'none' })
  t.equal((await gw.app.inject({ method: 'GET', url: `/oauth/client-metadata/${TOOLS}.json` })).statusCode, 404, 'not for a server without upstreamAuth')
  t.equal((await gw.app.inject({ method: 'GET', url: '/connect/nope' })).statusCode, 404)
  const connect = await gw.app.inject({ method: 'GET', url: `/connect/${SERVER}` })
  t.equal(connect.statusCode, 303)
  t.equal(connect.headers.location, `/account/links/${SERVER}/connect`)
  const signedOut = await gw.app.inject({ method: 'GET', url: `/account/links/${SERVER}/connect` })
  t.equal(signedOut.headers.location, `/account/login?return=${encodeURIComponent(`/account/links/${SERVER}/connect`)}`, 'signed out: sign in first, then back')
  const returnOf = async (target: string): Promise<unknown> => {
    const login = await gw.app.inject({ method: 'GET', url: `/account/login?return=${encodeURIComponent(target)}` })
    const jwt = /portcullis_account_login=([^;]+)/.exec(String(login.headers['set-cookie']))?.[1] ?? ''
    return (JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString()) as { returnTo?: string }).returnTo
  }
  t.equal(await returnOf(`/account/links/${SERVER}/connect`), `/account/links/${SERVER}/connect`, 'back to the link after sign-in')
  t.equal(await returnOf('/account/links'), '/account/links')
  t.equal(await returnOf('https://evil.example/'), '/account/keys', 'never an open redirect')
  t.equal(await returnOf(`/account/links/${TOOLS}/connect`), '/account/keys', 'only servers that take a link')
})

const nginx = nginxBinary(t)

t.test('an https gateway is known at the upstream\'s authorization server by its Client ID Metadata Document, not by registration', { skip: nginx === undefined && 'no nginx' }, async (t) => {
  // Gateway 1 behind real nginx (TLS, a self-signed certificate): its publicUrl is https, which a
  // CIMD client_id must be. The upstream's authorization server (a second Portcullis, which
  // announces client_id_metadata_document_supported) fetches the document from gateway 1 through
  // nginx; it reaches 127.0.0.1 and trusts the certificate only by the test-only allowance.
  const fixture = await startUpstream(t, { name: 'fx' })
  const upstreamPort = await freePort()
  const upstreamBase = `http://localhost:${upstreamPort}`
  const tlsPort = await freePort()
  const publicUrl = `https://127.0.0.1:${tlsPort}`
  const gw = await startGateway(t, {
    publicUrl,
    trustProxy: ['127.0.0.1'],
    log: { level: 'debug', requests: true },
    auth: { users: USERS },
    servers: gatewayServers(upstreamBase),
  })
  const front = await startNginx(t, nginx ?? '', { upstreamPorts: [Number(new URL(gw.baseUrl).port)], tlsPort })
  const upstream = await startGateway(t, {
    publicUrl: upstreamBase,
    listen: { host: '127.0.0.1', port: upstreamPort },
    log: { level: 'debug', requests: true },
    auth: { users: USERS },
    servers: [{ name: 'fx', transport: 'http', url: fixture.url }],
  }, {}, { outboundTestAllowance: { privateHosts: ['127.0.0.1'], ca: front.certificate } })
  const asMetadata = await (await fetch(`${upstreamBase}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>
  t.equal(asMetadata.client_id_metadata_document_supported, true, 'the upstream\'s authorization server announces CIMD')

  const documentUrl = `${publicUrl}/oauth/client-metadata/${SERVER}.json`
  const { browser, html } = await link(gw, 'alice', { base: publicUrl, fetch: front.fetch })
  t.match(html, /linked \d{4}-/, 'the link completed: the account page lists it')
  const authorizeRequests = browser.visited.filter((u) => u.startsWith(`${upstreamBase}/oauth/authorize?`))
  t.ok(authorizeRequests.length > 0, 'the browser went to the upstream\'s authorization endpoint')
  t.same(authorizeRequests.map((u) => new URL(u).searchParams.get('client_id')), authorizeRequests.map(() => documentUrl), 'with the document\'s URL as client_id')
  t.equal(await gw.app.portcullis.store.kvGet(`upstream-oauth-client:${SERVER}:${new URL(upstreamBase).href}`), undefined, 'no dynamic registration stored at gateway 1')
  t.match(upstream.logs.text(), /"url":"\/oauth\/token"/, 'the upstream logs each request it completes')
  t.notMatch(upstream.logs.text(), /"url":"\/oauth\/register"/, 'and it was never asked for a registration')
  const fetched = gw.logs.text().split('\n').filter((l) => l.includes('request completed') && l.includes(`"url":"/oauth/client-metadata/${SERVER}.json"`))
  t.ok(fetched.length >= 1, 'the upstream fetched the document from gateway 1')
  t.ok(fetched.every((l) => l.includes('"statusCode":200')), 'and got it')

  // Alice's calls reach the upstream as her, with the token issued to that client_id.
  const alice = await connectWithOAuth(t, `${publicUrl}/${SERVER}/mcp`, { username: 'alice', password: PASSWORD, issuer: publicUrl, fetch: front.fetch })
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'over cimd' } })), 'over cimd')
  t.same(auditedUsers(upstream, 'tools/call'), ['alice'], 'the upstream\'s audit names Alice')
  const calls = upstream.audit.lines.map((l) => JSON.parse(l) as { method?: string, clientId?: unknown }).filter((r) => r.method === 'tools/call')
  t.match(calls, [{ clientId: documentUrl }], 'and the client she came through: the document\'s URL')
})

t.test('with API keys disabled, the account pages still sign users in for linking', async (t) => {
  const { upstreamBase } = await setUp(t)
  const gw = await startGateway(t, {
    auth: { users: USERS, apiKeys: { enabled: false } },
    servers: [
      { name: SERVER, transport: 'http', url: `${upstreamBase}/fx/mcp`, upstreamAuth: { type: 'oauth' } },
      stdioServer(TOOLS),
    ],
  })
  t.equal((await gw.app.inject({ method: 'GET', url: '/account' })).headers.location, '/account/links', 'the account home is the linked accounts')
  t.equal((await gw.app.inject({ method: 'GET', url: '/account/keys' })).statusCode, 404, 'no keys page')
  const { html } = await link(gw, 'alice')
  t.match(html, /linked \d{4}-/)
  t.notMatch(html, /API keys<\/a>/, 'no link to a disabled page')
})

t.test('the link is bound to the browser and account session that started it', async (t) => {
  const { gw } = await setUp(t)
  // Mallory (Bob) starts a link and stops at the upstream's authorization URL…
  const bobBrowser = new HeadlessBrowser()
  await signInToAccount(gw.baseUrl, 'bob', PASSWORD, bobBrowser)
  const confirm = await (await bobBrowser.request(`${gw.baseUrl}/account/links/${SERVER}/connect`)).text()
  const start = await bobBrowser.request(`${gw.baseUrl}/account/links/${SERVER}/connect`, { method: 'POST', form: { csrf: /name="csrf" value="([^"]+)"/.exec(confirm)?.[1] ?? '' } })
  const authorizationUrl = start.headers.get('location') ?? ''
  await start.arrayBuffer()
  t.match(authorizationUrl, /code_challenge_method=S256/)
  t.match(authorizationUrl, /resource=/, 'RFC 8707 resource sent')
  const callback = await bobBrowser.authorize(authorizationUrl, { username: 'bob', password: PASSWORD })
  // …and gets Alice to open the callback with his code: refused, nothing linked for her.
  const aliceBrowser = new HeadlessBrowser()
  await signInToAccount(gw.baseUrl, 'alice', PASSWORD, aliceBrowser)
  const res = await aliceBrowser.request(callback.href)
  t.equal(res.status, 400)
  t.match(await res.text(), /no longer valid, or was started in another browser/)
  t.equal(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE), undefined)

  // Bob's own callback, once: linked; a replay: refused.
  const own = await bobBrowser.request(callback.href)
  t.equal(own.status, 303)
  await own.arrayBuffer()
  const replay = await bobBrowser.request(callback.href)
  t.equal(replay.status, 400)
  await replay.arrayBuffer()
})

t.test('a stdio server gets the caller\'s linked token in its env; a refreshed token reaches the next process', async (t) => {
  const { gw, clock, box } = await setUp(t)
  const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')
  const tokenSeen = async (client: AuthorizedClient['client']): Promise<string | undefined> =>
    (JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))) as { UPSTREAM_TOKEN_SHA256?: string }).UPSTREAM_TOKEN_SHA256

  // Bob has no link: no process is started for him; he gets the link to the oauth server.
  const bob = await signInForTokens(t, gw.mcpUrl(TOOLS), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl })
  const res = await postJson(gw.mcpUrl(TOOLS), INIT_BODY, { authorization: `Bearer ${bob.accessToken}` })
  t.equal(res.status, 200)
  t.match(res.json, { error: { code: -32600, data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED', url: `${gw.baseUrl}/connect/${SERVER}` } } })
  const eliciting = await postJson(gw.mcpUrl(TOOLS), { ...INIT_BODY, params: { ...INIT_BODY.params, protocolVersion: '2025-11-25', capabilities: { elicitation: { url: {} } } } }, { authorization: `Bearer ${bob.accessToken}` })
  t.match(eliciting.json, { error: { code: -32042, data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_ELICITATION', elicitations: [{ mode: 'url', url: `${gw.baseUrl}/connect/${SERVER}` }] } } }, 'a client that declared URL-mode elicitation gets -32042 from the stdio server too')
  t.notMatch(gw.logs.text(), /stdio server started/, 'no process without a token')

  await link(gw, 'alice')
  const first = await connectWithOAuth(t, gw.mcpUrl(TOOLS), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const linked = openRow(box, await gw.app.portcullis.store.kvGet(ROW_OF_ALICE))
  t.equal(await tokenSeen(first.client), sha256(linked.accessToken), 'the child was started with Alice\'s current token')

  // Past expiry: a new session's process is started with a refreshed token; the running one keeps its own.
  clock.ms += 5 * 60_000
  const second = await connectWithOAuth(t, gw.mcpUrl(TOOLS), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const refreshed = openRow(box, await gw.app.portcullis.store.kvGet(ROW_OF_ALICE))
  t.not(refreshed.accessToken, linked.accessToken, 'refreshed before the start')
  t.equal(await tokenSeen(second.client), sha256(refreshed.accessToken), 'the new process has the new token')
  t.equal(await tokenSeen(first.client), sha256(linked.accessToken), 'the running process keeps the token it started with')
  t.notOk(gw.logs.text().includes(linked.accessToken) || gw.logs.text().includes(refreshed.accessToken), 'never logged')
})

t.test('an authorization server publishing RFC 8414 metadata only is registered with (no OpenID Connect discovery document)', async (t) => {
  // A raw upstream that is its own authorization server, as many MCP servers' are: its metadata
  // only at /.well-known/oauth-authorization-server, dynamic registration, and an /authorize
  // that sends the browser back refused (the link is not the point here: registering is).
  const seen: string[] = []
  const { startRawServer } = await import('../helpers.js')
  const upstream = await startRawServer(t, (req, res) => {
    seen.push(`${req.method ?? ''} ${(req.url ?? '').split('?')[0] ?? ''}`)
    const base = `http://${req.headers.host ?? ''}`
    const json = (status: number, value: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value)) }
    const path = (req.url ?? '').split('?')[0]
    if (path === '/mcp') res.writeHead(401, { 'www-authenticate': `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` }).end()
    else if (path === '/.well-known/oauth-protected-resource/mcp') json(200, { resource: `${base}/mcp`, authorization_servers: [base] })
    else if (path === '/.well-known/oauth-authorization-server') json(200, { issuer: base, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token`, registration_endpoint: `${base}/register`, code_challenge_methods_supported: ['S256'], response_types_supported: ['code'] })
    else if (path === '/register') {
      let body = ''
      req.on('data', (chunk: Buffer) => { body += chunk.toString() })
      req.on('end', () => { json(201, { ...JSON.parse(body) as object, client_id: 'registered-at-rfc8414-server' }) })
    } else if (path === '/authorize') {
      const query = new URL(req.url ?? '', base).searchParams
      const back = new URL(query.get('redirect_uri') ?? '')
      back.searchParams.set('error', 'access_denied')
      back.searchParams.set('state', query.get('state') ?? '')
      back.searchParams.set('iss', base)
      res.writeHead(303, { location: back.href }).end()
    } else json(404, {})
  })
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: SERVER, transport: 'http', url: upstream.url, upstreamAuth: { type: 'oauth' } }] })
  await linkAccount(gw, SERVER, 'alice', PASSWORD).catch(() => undefined)
  t.ok(seen.includes('POST /register'), 'the gateway registered from the RFC 8414 metadata')
  t.ok(seen.includes('GET /authorize'), 'and sent the browser to authorize with the registered client')
  t.notOk(seen.includes('GET /.well-known/openid-configuration'), 'no OpenID Connect document was needed')
})
