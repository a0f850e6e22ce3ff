// servers[].upstreamAuth oauth: a linked account's tokens are bound to the upstream and the
// authorization server that issued them (F1), and a 403 insufficient_scope is a valid token's
// missing scope, not a refused credential (F2). The OAuth-protected upstream is a second
// Portcullis on `localhost` (as in upstream-oauth.test.ts); "another" upstream, with its own
// authorization server, is a raw server that records everything sent to it.
import t, { type Test } from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { SecretBox } from '../../src/auth-server/secret-box.js'
import { signInForTokens } from '../oauth-helpers.js'
import { freePort, INIT_BODY, postJson, startGateway, startRawServer, startUpstream, type RunningGateway } from '../helpers.js'
import { auditedUsers, linkAccount, PASSWORD, USERS } from '../upstream-oauth-helpers.js'

const SERVER = 'linear'
const ROW_OF_ALICE = `upstream-token:${SERVER}:alice`
const ADMIN_TOKEN = 'admin-token-for-the-upstream-bindings-test'

interface Row { accessToken: string, refreshToken?: string, expiresAtMs?: number, linkedAtMs: number, issuer?: string, resource?: string }

async function body (req: IncomingMessage): Promise<string> {
  let text = ''
  for await (const chunk of req) text += String(chunk)
  return text
}

function json (res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value))
}

/**
 * An upstream at `<base>/mcp` that is its own authorization server (issuer `<base>`), answering
 * the unauthenticated discovery requests; `mcp` answers what an authenticated MCP request gets.
 * Every request is recorded in `seen`, with its Authorization and body.
 */
async function startOwnAuthorizationUpstream (t: Test, mcp: (req: IncomingMessage, res: ServerResponse, text: string) => void): Promise<{ url: string, base: string, issuer: string, seen: string[] }> {
  const seen: string[] = []
  const state = { base: '' }
  const upstream = await startRawServer(t, (req, res) => {
    void body(req).then((text) => {
      seen.push(`${req.method ?? ''} ${req.url ?? ''} auth=${req.headers.authorization ?? ''} body=${text}`)
      const base = state.base
      if (req.url === '/mcp' && req.headers.authorization !== undefined) mcp(req, res, text)
      else if (req.url === '/mcp') res.writeHead(401, { 'www-authenticate': `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` }).end()
      else if (req.url === '/.well-known/oauth-protected-resource/mcp') json(res, 200, { resource: `${base}/mcp`, authorization_servers: [base] })
      else if (req.url?.startsWith('/.well-known/') === true) {
        json(res, 200, { issuer: base, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token`, registration_endpoint: `${base}/register`, revocation_endpoint: `${base}/revoke`, code_challenge_methods_supported: ['S256'], response_types_supported: ['code'] })
      } else if (req.url === '/register') json(res, 201, { client_id: 'other-client', redirect_uris: [`http://127.0.0.1/account/links/${SERVER}/callback`], token_endpoint_auth_method: 'none' })
      else if (req.url === '/token') json(res, 400, { error: 'invalid_grant' })
      else if (req.url === '/revoke') res.writeHead(200).end()
      else json(res, 404, {})
    })
  })
  state.base = new URL(upstream.url).origin
  return { url: upstream.url, base: state.base, issuer: state.base, seen }
}

/** The second Portcullis on localhost as the upstream, and a gateway with upstreamAuth oauth in front of it. */
async function setUp (t: Test): Promise<{ gw: RunningGateway, upstream: RunningGateway, box: SecretBox }> {
  const fixture = await startUpstream(t, { name: 'fx' })
  const port = await freePort()
  const upstreamBase = `http://localhost:${port}`
  const upstream = await startGateway(t, { publicUrl: upstreamBase, listen: { host: '127.0.0.1', port }, auth: { users: USERS, accessTokenTtl: '5m' }, servers: [{ name: 'fx', transport: 'http', url: fixture.url }] })
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: SERVER, transport: 'http', url: `${upstreamBase}/fx/mcp`, upstreamAuth: { type: 'oauth' } }] })
  const box = await SecretBox.load(gw.app.portcullis.store, undefined)
  return { gw, upstream, box }
}

async function readRow (gw: RunningGateway, box: SecretBox): Promise<Row> {
  return JSON.parse(box.open(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE) ?? '', ROW_OF_ALICE)) as Row
}

async function writeRow (gw: RunningGateway, box: SecretBox, row: Row): Promise<void> {
  await gw.app.portcullis.store.kvSet(ROW_OF_ALICE, box.seal(JSON.stringify(row), ROW_OF_ALICE))
}

function sentAnywhere (seen: readonly string[], row: Row): boolean {
  const all = seen.join('\n')
  const refresh = row.refreshToken
  return all.includes(row.accessToken) || (refresh !== undefined && (all.includes(refresh) || all.includes(encodeURIComponent(refresh))))
}

t.test('a link made at one upstream and authorization server is sent to neither another upstream nor another authorization server after servers[].url changes', async (t) => {
  const { gw, box } = await setUp(t)
  await linkAccount(gw, SERVER, 'alice', PASSWORD)
  const linked = await readRow(gw, box)
  t.ok(linked.refreshToken !== undefined, 'a refresh token was issued')
  t.match(linked, { issuer: /^http:\/\/localhost:\d+\/?$/, resource: /^http:\/\/localhost:\d+\/fx\/mcp$/ }, 'the row names the issuer and the resource it was linked for')

  // The same store, servers[].url now another upstream with another authorization server (a restart or a reload).
  const other = await startOwnAuthorizationUpstream(t, (_req, res) => res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' }).end())
  const moved = await startGateway(t, { publicUrl: gw.baseUrl, auth: { users: USERS }, admin: { bearerToken: ADMIN_TOKEN }, servers: [{ name: SERVER, transport: 'http', url: other.url, upstreamAuth: { type: 'oauth' } }] }, {}, { store: gw.app.portcullis.store })
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const res = await postJson(`${moved.baseUrl}/${SERVER}/mcp`, INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })
  t.match(res.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } } }, 'Alice is asked to link her account at the new upstream')
  t.notOk(sentAnywhere(other.seen, linked), 'neither her access token nor her refresh token reached the other upstream or its authorization server')
  t.match(moved.logs.text(), /treated as not linked/)

  // Listed as not linked, and unlinking deletes the row without revoking anywhere.
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }
  const listed = await (await fetch(`${moved.baseUrl}/admin/api/v1/linked-accounts?user=alice`, { headers: admin })).json() as { items: unknown[] }
  t.match(listed.items, [{ server: SERVER, isLinked: false }], 'listed as not linked')
  const unlinked = await fetch(`${moved.baseUrl}/admin/api/v1/users/alice/linked-accounts/${SERVER}/unlink`, { method: 'POST', headers: admin })
  await unlinked.arrayBuffer()
  t.equal(unlinked.status, 200, 'unlink finds the row')
  t.equal(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE), undefined, 'and deletes it')
  t.notOk(sentAnywhere(other.seen, linked), 'revocation did not send the tokens to the other authorization server either')
  t.notOk(other.seen.some((line) => line.startsWith('POST /revoke')), 'nothing was revoked there')
  for (const text of [moved.logs.text(), gw.logs.text()]) t.notOk(sentAnywhere([text], linked), 'no token in the logs')
})

t.test('a row written before links were bound is not linked: its tokens are not sent, and linking again works', async (t) => {
  const { gw, upstream, box } = await setUp(t)
  await linkAccount(gw, SERVER, 'alice', PASSWORD)
  const linked = await readRow(gw, box)
  // JSON.stringify leaves the undefined members out: the row as the old code wrote it.
  await writeRow(gw, box, { ...linked, issuer: undefined, resource: undefined })
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const auth = { authorization: `Bearer ${alice.accessToken}` }
  const refused = await postJson(gw.mcpUrl(SERVER), INIT_BODY, auth)
  t.match(refused.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } } }, 'the link error: Alice links once more')
  t.same(auditedUsers(upstream, 'initialize'), [], 'the unbound token did not reach the upstream')

  await linkAccount(gw, SERVER, 'alice', PASSWORD)
  const served = await postJson(gw.mcpUrl(SERVER), INIT_BODY, auth)
  t.match(served.text, /"serverInfo"/, 'linked again, her calls reach the upstream')
  t.same(auditedUsers(upstream, 'initialize'), ['alice'])
})

t.test('a link the upstream\'s metadata no longer names the authorization server of is not used, nor refreshed there', async (t) => {
  const upstream = await startOwnAuthorizationUpstream(t, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: 1, result: {} })))
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: SERVER, transport: 'http', url: upstream.url, upstreamAuth: { type: 'oauth' } }] })
  const box = await SecretBox.load(gw.app.portcullis.store, undefined)
  // As a link made while the upstream named another authorization server, expiring now (so due a refresh).
  const row = { accessToken: 'at-from-the-old-server', refreshToken: 'rt-from-the-old-server', expiresAtMs: Date.now(), linkedAtMs: Date.now(), issuer: 'https://old-as.example/', resource: upstream.url }
  await writeRow(gw, box, row)
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const res = await postJson(gw.mcpUrl(SERVER), INIT_BODY, { authorization: `Bearer ${alice.accessToken}` })
  t.match(res.json, { error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_LINK_REQUIRED' } } })
  t.notOk(sentAnywhere(upstream.seen, row), 'neither token was sent to the upstream or to the authorization server it names now')
  t.not(await gw.app.portcullis.store.kvGet(ROW_OF_ALICE), undefined, 'the row is left for the user to replace (or unlink)')
})

t.test('a 403 insufficient_scope keeps the link, spends no refresh, and names the missing scope', async (t) => {
  const upstream = await startOwnAuthorizationUpstream(t, (req, res, text) => {
    if (req.headers.authorization !== 'Bearer good-token') {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' }).end()
      return
    }
    const message = JSON.parse(text) as { id: number, method: string }
    if (message.method === 'tools/call') {
      res.writeHead(403, { 'www-authenticate': 'Bearer error="insufficient_scope", scope="repo admin:org"' }).end('{"error":"insufficient_scope"}')
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: {} }))
  })
  const gw = await startGateway(t, { auth: { users: USERS }, servers: [{ name: SERVER, transport: 'http', url: upstream.url, upstreamAuth: { type: 'oauth' } }] })
  const store = gw.app.portcullis.store
  const box = await SecretBox.load(store, undefined)
  // As the link flow writes it, for an upstream that issued no refresh token (such a link is
  // dropped when the upstream refuses its token: a scope refusal must not count as one).
  await writeRow(gw, box, { accessToken: 'good-token', linkedAtMs: Date.now(), issuer: upstream.issuer, resource: upstream.url })
  const before = await store.kvGet(ROW_OF_ALICE)
  const alice = await signInForTokens(t, gw.mcpUrl(SERVER), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const auth = { authorization: `Bearer ${alice.accessToken}` }

  const refused = await postJson(gw.mcpUrl(SERVER), { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'admin_tool', arguments: {} } }, auth)
  t.equal(refused.status, 200, 'a JSON-RPC error the client hands to its user and model')
  t.match(refused.json, { id: 2, error: { code: -32600, message: /needs the scope "repo admin:org"/, data: { code: 'PORTCULLIS_ERR_UPSTREAM_INSUFFICIENT_SCOPE', server: SERVER, scope: 'repo admin:org' } } })
  t.notOk(refused.headers.has('www-authenticate'), 'no challenge for the gateway\'s own token, which is fine')
  t.equal(await store.kvGet(ROW_OF_ALICE), before, 'the link (a valid token) is kept, unchanged')
  t.equal(upstream.seen.filter((line) => line.startsWith('POST /mcp auth=Bearer good-token') && line.includes('tools/call')).length, 1, 'the call was not sent again')
  t.notOk(upstream.seen.some((line) => line.startsWith('POST /token')), 'no refresh was spent')

  const next = await postJson(gw.mcpUrl(SERVER), { jsonrpc: '2.0', id: 3, method: 'tools/list', params: {} }, auth)
  t.match(next.json, { id: 3, result: {} }, 'her next call still works')
})
