// Client registration the ways real clients do it, the sign-in and consent pages' rules, and what a
// client that names no resource gets.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, HeadlessBrowser, REDIRECT_URL, TestOAuthClient } from '../oauth-helpers.js'
import { eventually, startGateway, startUpstream, type RunningGateway, type Teardown } from '../helpers.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { startDocumentServer, type DocumentServer } from '../outbound-helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)

async function gateway (t: Teardown, auth: Record<string, unknown> = {}, servers?: Array<Record<string, unknown>>, options: Parameters<typeof startGateway>[3] = {}): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash }], ...auth },
    servers: servers ?? [
      { name: 'alpha', transport: 'http', url: upstream.url, scopes: ['alpha:read'] },
      { name: 'beta', transport: 'http', url: upstream.url, scopes: ['beta:read'] },
    ],
  }, {}, options)
}

async function register (gw: RunningGateway, body: Record<string, unknown>): Promise<{ status: number, json: Record<string, unknown> }> {
  const res = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json', origin: 'https://claude.ai' }, body: JSON.stringify(body) })
  return { status: res.status, json: await res.json() as Record<string, unknown> }
}

/** Registration bodies as real clients send them (see docs/client-registration.md). */
const ACCEPTED: Array<[string, Record<string, unknown>]> = [
  ['MCP SDK (loopback, challenged scope copied in)', { client_name: 'MCP SDK client', redirect_uris: ['http://127.0.0.1:45789/callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'mcp alpha:read' }],
  ['mcp-remote style (localhost, any port)', { client_name: 'MCP CLI Proxy', redirect_uris: ['http://localhost:3334/oauth/callback'], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' }],
  ['IPv6 loopback', { redirect_uris: ['http://[::1]:9000/cb'], token_endpoint_auth_method: 'none' }],
  ['claude.ai (https, its own scope name)', { client_name: 'claudeai', redirect_uris: ['https://claude.ai/api/mcp/auth_callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'claudeai' }],
  ['Cursor (custom scheme)', { client_name: 'Cursor', redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback'], token_endpoint_auth_method: 'none' }],
  ['VS Code (custom scheme and loopback)', { client_name: 'Visual Studio Code', redirect_uris: ['vscode://vscode.github-authentication/did-authenticate', 'http://127.0.0.1:33418/'], token_endpoint_auth_method: 'none', application_type: 'native' }],
  ['a client claiming application_type web with a loopback redirect', { redirect_uris: ['http://127.0.0.1:7777/cb'], application_type: 'web', token_endpoint_auth_method: 'none' }],
]

const REFUSED: Array<[string, Record<string, unknown>, string]> = [
  ['plain http on a public host', { redirect_uris: ['http://evil.example/cb'], token_endpoint_auth_method: 'none' }, 'invalid_redirect_uri'],
  ['https on a loopback host', { redirect_uris: ['https://localhost:5555/cb'], token_endpoint_auth_method: 'none' }, 'invalid_redirect_uri'],
  ['a javascript: redirect', { redirect_uris: ['javascript://alert(1)'], token_endpoint_auth_method: 'none' }, 'invalid_redirect_uri'],
  ['no redirect URIs', { client_name: 'x', token_endpoint_auth_method: 'none' }, 'invalid_redirect_uri'],
  ['client_credentials (machine clients are the operator\'s to register)', { redirect_uris: ['http://127.0.0.1/cb'], grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }, 'invalid_client_metadata'],
  ['not JSON-shaped metadata', { redirect_uris: 'http://127.0.0.1/cb' }, 'invalid_redirect_uri'],
]

t.test('Dynamic Client Registration accepts what real clients send', async (t) => {
  const gw = await gateway(t)
  for (const [label, body] of ACCEPTED) {
    const res = await register(gw, body)
    t.equal(res.status, 201, label)
    t.type(res.json.client_id, 'string', label)
    t.match(res.json.registration_client_uri, new RegExp(`^${gw.baseUrl}/oauth/register/`), `${label}: registration_client_uri`)
    t.notOk('scope' in res.json, `${label}: no scope is registered (scopes are decided per request)`)
  }
})

t.test('and refuses what it must', async (t) => {
  const gw = await gateway(t)
  for (const [label, body, error] of REFUSED) {
    const res = await register(gw, body)
    t.equal(res.status, 400, label)
    t.equal(res.json.error, error, label)
  }
})

t.test('the registration endpoint answers browser-based clients (CORS)', async (t) => {
  const gw = await gateway(t)
  const preflight = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers.get('access-control-allow-origin'), 'https://app.example')
  t.match(preflight.headers.get('access-control-allow-methods'), /POST/)
  const res = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { origin: 'https://app.example', 'content-type': 'application/json' }, body: JSON.stringify(ACCEPTED[0]?.[1]) })
  t.equal(res.headers.get('access-control-allow-origin'), 'https://app.example')
})

t.test('Client ID Metadata Documents: a URL client_id, fetched and used without registration', async (t) => {
  // The document is served over https on 127.0.0.1 (a self-signed certificate); the gateway reaches
  // a loopback address only through the test-only allowance (BuildOptions.outboundTestAllowance).
  const document = (id: string): Record<string, unknown> => ({
    client_id: id, client_name: 'Metadata Document Client', redirect_uris: [REDIRECT_URL], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none',
  })
  const docs = await startDocumentServer(t, (_req, res, selfUrl) => {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' })
    res.end(JSON.stringify(document(selfUrl)))
  })
  const port = docs.port
  const gw = await gateway(t, {}, undefined, { outboundTestAllowance: docs.allowance })
  const oauth = new TestOAuthClient({ clientMetadataUrl: `https://127.0.0.1:${port}/client.json` })
  const connected = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth })
  t.equal(oauth.info?.client_id, `https://127.0.0.1:${port}/client.json`, 'the URL is the client id; no DCR happened')
  t.ok(docs.requests() >= 1, 'the gateway fetched the document')
  t.match(connected.browser.lastHtml, /Metadata Document Client|client\.json/)
  t.same((await connected.client.callTool({ name: 'echo', arguments: { text: 'cimd' } })).content, [{ type: 'text', text: 'cimd' }])
})

t.test('metadata documents can be limited to listed hosts', async (t) => {
  const gw = await gateway(t, { clientMetadataDocuments: { allowedHosts: ['clients.example.com'] } })
  const url = new URL(`${gw.baseUrl}/oauth/authorize`)
  url.search = new URLSearchParams({ client_id: 'https://other.example.org/client.json', response_type: 'code', redirect_uri: REDIRECT_URL, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256', resource: gw.mcpUrl('alpha') }).toString()
  const res = await fetch(url, { redirect: 'manual' })
  t.equal(res.status, 400)
  t.match(await res.text(), /invalid_client/)
})

t.test('consent is remembered per user and client; sign-in is still asked in a new browser', async (t) => {
  const gw = await gateway(t)
  // A confidential client: a public one returning to a loopback port consents every time (RFC 8252 8.6, below).
  const oauth = new TestOAuthClient({ authMethod: 'client_secret_basic' })
  const first = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth })
  t.same(first.browser.pages, ['login', 'consent'])
  t.match(first.browser.lastHtml, /Allow access\?/)
  t.type(oauth.info?.client_secret, 'string', 'a confidential client')
  const again = new TestOAuthClient({ authMethod: 'client_secret_basic' })
  again.info = oauth.info // the same registered client, a fresh browser
  const second = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth: again })
  t.same(second.browser.pages, ['login'], 'no consent page the second time')
  const publicClient = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth: publicClient })
  const publicAgain = new TestOAuthClient()
  publicAgain.info = publicClient.info
  const third = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth: publicAgain })
  t.same(third.browser.pages, ['login', 'consent'], 'a public client returning to a loopback port is asked again')
})

t.test('the consent page names the client, where it returns to, the server and the permissions', async (t) => {
  const gw = await gateway(t)
  const oauth = new TestOAuthClient({ name: 'Acme <Agent>' })
  const browser = new HeadlessBrowser()
  await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth, browser })
  const html = browser.lastHtml
  t.match(html, /<strong>Acme &#60;Agent&#62;<\/strong> wants to act on your behalf, <strong>alice<\/strong>/, 'client name, escaped')
  t.match(html, /sent back to <strong>http:\/\/127\.0\.0\.1:9<\/strong>/)
  t.match(html, /<strong>alpha<\/strong>/)
  t.match(html, /<code>alpha:read<\/code>/)
})

t.test('denying consent sends the client access_denied', async (t) => {
  const gw = await gateway(t)
  const oauth = new TestOAuthClient()
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js')
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js')
  await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('alpha')), { authProvider: oauth })).catch(() => {})
  const callback = await new HeadlessBrowser().authorize(oauth.authorizationUrl ?? '', { username: 'alice', password: PASSWORD, consent: 'deny' })
  t.equal(callback.searchParams.get('error'), 'access_denied')
  t.equal(callback.searchParams.get('state'), oauth.stateValue)
  t.equal(callback.searchParams.get('iss'), gw.baseUrl)
  t.equal(callback.searchParams.get('code'), null)
})

t.test('sign-in: wrong passwords are refused, then throttled even with the right one; CSRF-less posts refused', async (t) => {
  const gw = await gateway(t, { login: { maxFailures: 3, window: '15m' } })
  const oauth = new TestOAuthClient()
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js')
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js')
  await new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl('alpha')), { authProvider: oauth })).catch(() => {})
  const browser = new HeadlessBrowser()
  const first = await browser.request(String(oauth.authorizationUrl))
  const interaction = new URL(first.headers.get('location') ?? '', gw.baseUrl).href
  const page = await (await browser.request(interaction)).text()
  const csrf = /name="csrf" value="([^"]+)"/.exec(page)?.[1] ?? ''
  t.match(page, /<label for="username">Username<\/label>/, 'labelled fields')

  const noCsrf = await browser.request(`${interaction}/login`, { method: 'POST', form: { username: 'alice', password: PASSWORD } })
  t.equal(noCsrf.status, 403, 'a post without the form\'s CSRF token is refused')
  const strangerCsrf = await new HeadlessBrowser().request(`${interaction}/login`, { method: 'POST', form: { csrf, username: 'alice', password: PASSWORD } })
  t.equal(strangerCsrf.status, 400, 'another browser (no interaction cookie) cannot continue this sign-in')

  for (let i = 1; i <= 3; i++) {
    const wrong = await browser.request(`${interaction}/login`, { method: 'POST', form: { csrf, username: 'alice', password: `wrong-${i}` } })
    t.equal(wrong.status, 401, `wrong password ${i}`)
    const html = await wrong.text()
    t.match(html, /role="alert" id="error">Incorrect username or password\./)
    t.match(html, /value="alice"/, 'the username is kept')
  }
  const throttled = await browser.request(`${interaction}/login`, { method: 'POST', form: { csrf, username: 'alice', password: PASSWORD } })
  t.equal(throttled.status, 429, 'the right password is not even checked while throttled')
  t.match(throttled.headers.get('retry-after'), /^\d+$/)
  // Issue 12: no 15-minute account lockout any more; this address waits, growing 1 s, 2 s, 4 s ….
  t.match(await throttled.text(), /Too many failed sign-in attempts for this account from your network\. Try again in 1 second\./)
  t.notMatch(gw.logs.text(), PASSWORD, 'passwords never reach the log')
  t.notMatch(gw.logs.text(), /wrong-1/)
})

t.test('a client that names no resource: the one server, the server its scopes point to, or a clear refusal', async (t) => {
  const upstream = await startUpstream(t)
  const single = await startGateway(t, { auth: { users: [{ username: 'alice', passwordHash }] }, servers: [{ name: 'only', transport: 'http', url: upstream.url }] })
  const two = await gateway(t)
  const wide = await gateway(t, { defaultResource: 'all' })

  // RFC 7636 appendix B's verifier and challenge.
  const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'
  const CHALLENGE = 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
  async function authorizeWithout (gw: RunningGateway, scope: string): Promise<{ callback: URL, audience?: unknown }> {
    const reg = await register(gw, { redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' })
    const clientId = String(reg.json.client_id)
    const url = new URL(`${gw.baseUrl}/oauth/authorize`)
    url.search = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, code_challenge: CHALLENGE, code_challenge_method: 'S256', state: 's', ...(scope === '' ? {} : { scope }) }).toString()
    const callback = await new HeadlessBrowser().authorize(url, { username: 'alice', password: PASSWORD })
    const code = callback.searchParams.get('code')
    if (code === null) return { callback }
    const token = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', code, client_id: clientId, redirect_uri: REDIRECT_URL, code_verifier: VERIFIER }).toString() })
    const accessToken = String((await token.json() as Record<string, unknown>).access_token)
    const claims = JSON.parse(Buffer.from(accessToken.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
    return { callback, audience: claims.aud }
  }

  t.equal((await authorizeWithout(single, '')).audience, single.mcpUrl('only'), 'one server: its resource is assumed')
  t.equal((await authorizeWithout(two, 'beta:read')).audience, two.mcpUrl('beta'), 'several servers: the scope names the server')
  const ambiguous = (await authorizeWithout(two, 'mcp')).callback
  t.equal(ambiguous.searchParams.get('error'), 'invalid_target', 'several servers and nothing to tell them apart: refused, never a token for everything')
  t.match(ambiguous.searchParams.get('error_description'), /send the resource parameter/)
  t.equal((await authorizeWithout(wide, '')).audience, wide.baseUrl, 'defaultResource: all — the operator allowed a gateway-wide token')
})

t.test('registered clients (and their registration access tokens) expire after registeredClientTtl without use; each use moves the expiry', async (t) => {
  let clock = Date.now()
  const store = new MemoryStore(() => clock)
  t.teardown(() => store.close())
  // Both lifetimes alike: this test is about the sliding rule itself (the unused-client rule has its own test below).
  const gw = await gateway(t, { registeredClientTtl: '10d', unusedClientTtl: '10d' }, undefined, { store, now: () => clock })
  const expiryOf = async (clientId: string, model = 'Client'): Promise<number | undefined> => {
    for await (const entry of store.entries()) {
      if (entry.kind === 'record' && entry.model === model && (model === 'Client' ? entry.id : entry.payload.clientId) === clientId) return entry.expiresAtMs
    }
    return undefined
  }
  const authorize = async (clientId: string): Promise<number> => {
    const query = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: gw.mcpUrl('alpha') })
    return (await fetch(`${gw.baseUrl}/oauth/authorize?${query.toString()}`, { redirect: 'manual' })).status
  }
  const registration = (await register(gw, { redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' })).json
  const used = String(registration.client_id)
  const abandoned = String((await register(gw, { redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' })).json.client_id)
  const day = 24 * 3600_000
  t.equal(await expiryOf(used), clock + 10 * day, 'a registration lives registeredClientTtl')
  t.equal(await expiryOf(used, 'RegistrationAccessToken'), clock + 10 * day, 'and so does its registration access token (oidc-provider would keep it forever)')

  clock += 2 * day
  t.equal(await authorize(used), 303)
  t.ok(await eventually(async () => await expiryOf(used) === clock + 10 * day), 'using it moves the expiry')
  const read = await fetch(String(registration.registration_client_uri), { headers: { authorization: `Bearer ${String(registration.registration_access_token)}` } })
  t.equal(read.status, 200, 'RFC 7592: the client reads its registration')
  t.ok(await eventually(async () => await expiryOf(used, 'RegistrationAccessToken') === clock + 10 * day), 'which moves the token\'s expiry')
  clock += 1000
  t.equal(await authorize(used), 303)
  t.equal(await expiryOf(used), clock - 1000 + 10 * day, 'at most once a day: a second use the same day writes nothing')

  clock += 9 * day
  t.equal(await expiryOf(abandoned), undefined, 'the abandoned registration is gone')
  t.equal(await expiryOf(abandoned, 'RegistrationAccessToken'), undefined, '...with its registration access token')
  t.ok(await expiryOf(used, 'RegistrationAccessToken') !== undefined, 'the used one\'s token is still there')
  t.equal(await authorize(used), 303, 'the used one still signs in')
  clock += 11 * day
  t.equal(await authorize(used), 400, 'and once unused past the TTL, it is gone too (the client registers again)')
})

t.test('a registered client nobody signs in with is gone after unusedClientTtl (24 h); one a user signed in with lives registeredClientTtl', async (t) => {
  let clock = Date.now()
  const store = new MemoryStore(() => clock)
  t.teardown(() => store.close())
  const gw = await gateway(t, {}, undefined, { store, now: () => clock })
  const expiryOf = async (clientId: string): Promise<number | undefined> => {
    for await (const entry of store.entries()) if (entry.kind === 'record' && entry.model === 'Client' && entry.id === clientId) return entry.expiresAtMs
    return undefined
  }
  const hour = 3600_000
  const scripted = String((await register(gw, { redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' })).json.client_id)
  t.equal(await expiryOf(scripted), clock + 24 * hour, 'a new registration lives 24 h until someone signs in with it')
  const signedIn = await connectWithOAuth(t, gw.mcpUrl('alpha'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const used = String(signedIn.oauth.info?.client_id)
  t.ok(await eventually(async () => await expiryOf(used) === clock + 90 * 24 * hour), 'after a sign-in it lives registeredClientTtl (90 d)')
  clock += 25 * hour
  t.equal(await expiryOf(scripted), undefined, 'the registration nobody signed in with is gone after a day')
  t.ok(await expiryOf(used) !== undefined, 'the one in use is still there')
  const reauthorize = new URLSearchParams({ client_id: used, response_type: 'code', redirect_uri: REDIRECT_URL, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: gw.mcpUrl('alpha') })
  t.equal((await fetch(`${gw.baseUrl}/oauth/authorize?${reauthorize.toString()}`, { redirect: 'manual' })).status, 303, 'and still signs in')
})

/** A metadata-document server on 127.0.0.1 (documents by path, over https; see the CIMD test above). */
async function documentServer (t: Teardown, documents: Record<string, (id: string) => Record<string, unknown>>): Promise<DocumentServer> {
  return startDocumentServer(t, (req, res, selfUrl) => {
    const make = documents[req.url ?? '']
    if (make === undefined) { res.writeHead(404).end(); return }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' })
    res.end(JSON.stringify(make(selfUrl)))
  })
}

/** An authorization request with PKCE, as a client would send it. */
function authorizeUrl (gw: RunningGateway, clientId: string, redirectUri: string): { url: string, verifier: string } {
  const verifier = randomBytes(32).toString('base64url')
  const params = new URLSearchParams({
    client_id: clientId, response_type: 'code', redirect_uri: redirectUri, state: 'st', scope: 'alpha:read',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', resource: gw.mcpUrl('alpha'),
  })
  return { url: `${gw.baseUrl}/oauth/authorize?${params.toString()}`, verifier }
}

t.test('Client ID Metadata Documents follow the same redirect rule: http only to loopback', async (t) => {
  const docs = await documentServer(t, {
    '/evil.json': (id) => ({ client_id: id, client_name: 'Evil', redirect_uris: ['http://evil.example/cb'], token_endpoint_auth_method: 'none' }),
    '/mixed.json': (id) => ({ client_id: id, client_name: 'Mixed', redirect_uris: [REDIRECT_URL, 'http://evil.example/cb'], token_endpoint_auth_method: 'none' }),
  })
  const gw = await gateway(t, {}, undefined, { outboundTestAllowance: docs.allowance })
  for (const [path, redirect] of [['/evil.json', 'http://evil.example/cb'], ['/mixed.json', REDIRECT_URL]] as const) {
    const res = await fetch(authorizeUrl(gw, docs.urlOf(path), redirect).url, { redirect: 'manual' })
    t.equal(res.status, 400, `${path}: refused before any sign-in page`)
    t.equal(res.headers.get('location'), null, `${path}: no redirect (to the sign-in page or to the client)`)
    t.match(await res.text(), /invalid_redirect_uri: redirect_uris using http: must use a loopback host/, `${path}: the page says why`)
  }
})

t.test('a metadata document listing client_credentials gets no machine token', async (t) => {
  // Anyone who can host a JSON file could otherwise sign a client assertion with their own key
  // (private_key_jwt, jwks in the document) and get a token with no user behind it, once any
  // YAML client has turned the grant on.
  const { publicKey, privateKey } = await generateKeyPair('ES256')
  const jwk = { ...await exportJWK(publicKey), kid: 'k1', alg: 'ES256', use: 'sig' }
  const docs = await documentServer(t, {
    '/machine.json': (id) => ({ client_id: id, client_name: 'Machine', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'ES256', jwks: { keys: [jwk] } }),
  })
  const gw = await gateway(t, { clients: [{ clientId: 'ops-bot', clientSecret: 'ops-bot-secret-with-at-least-32-characters', grantTypes: ['client_credentials'] }] }, undefined, { outboundTestAllowance: docs.allowance })
  const clientId = docs.urlOf('/machine.json')
  const assertion = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(clientId).setSubject(clientId).setAudience(`${gw.baseUrl}/oauth/token`)
    .setJti(randomBytes(16).toString('hex')).setIssuedAt().setExpirationTime('1m').sign(privateKey)
  const res = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, resource: gw.mcpUrl('alpha'), client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }).toString(),
  })
  const body = await res.json() as Record<string, unknown>
  t.equal(res.status, 400, 'refused')
  t.equal(body.access_token, undefined, 'no token')
  t.ok(docs.requests() >= 1, 'the document was fetched and judged')
  // The operator's own machine client still gets its token.
  const basic = Buffer.from('ops-bot:ops-bot-secret-with-at-least-32-characters').toString('base64')
  const ops = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` }, body: `grant_type=client_credentials&resource=${encodeURIComponent(gw.mcpUrl('alpha'))}` })
  t.equal(ops.status, 200, 'a listed machine client is unaffected')
})

t.test('the consent page warns when every redirect URI of the client is a loopback address', async (t) => {
  const docs = await documentServer(t, {
    '/cli.json': (id) => ({ client_id: id, client_name: 'Loopback CLI', redirect_uris: [REDIRECT_URL, 'http://localhost:9/callback'], token_endpoint_auth_method: 'none' }),
    '/app.json': (id) => ({ client_id: id, client_name: 'Hosted app', redirect_uris: ['https://app.example.com/cb', REDIRECT_URL], token_endpoint_auth_method: 'none' }),
  })
  const gw = await gateway(t, {}, undefined, { outboundTestAllowance: docs.allowance })
  const consentOf = async (clientId: string, redirect: string): Promise<string> => {
    const browser = new HeadlessBrowser()
    const callback = await browser.authorize(authorizeUrl(gw, clientId, redirect).url, { username: 'alice', password: PASSWORD })
    t.ok(callback.searchParams.get('code'), 'signed in and approved')
    t.same(browser.pages, ['login', 'consent'])
    return browser.lastHtml
  }
  const warning = /id="loopback-warning"><strong>Check that you started this yourself\.<\/strong> This application receives your approval through a port on this computer\./
  t.match(await consentOf(docs.urlOf('/cli.json'), REDIRECT_URL), warning, 'a metadata-document client with only loopback redirects')
  const registered = await register(gw, { client_name: 'DCR CLI', redirect_uris: ['http://[::1]:9/cb'], token_endpoint_auth_method: 'none' })
  t.match(await consentOf(String(registered.json.client_id), 'http://[::1]:9/cb'), warning, 'a registered client with only loopback redirects')
  t.notMatch(await consentOf(docs.urlOf('/app.json'), REDIRECT_URL), /loopback-warning/, 'one https redirect URI: no warning (the page still names the host it returns to)')
  const custom = await register(gw, { client_name: 'Cursor', redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/callback'], token_endpoint_auth_method: 'none' })
  t.notMatch(await consentOf(String(custom.json.client_id), 'cursor://anysphere.cursor-retrieval/oauth/callback'), /loopback-warning/, 'a custom scheme: no warning')
})

t.test('a public client returning to a loopback port or a custom scheme is asked to consent every time (RFC 8252 8.6)', async (t) => {
  // Whoever listens on a loopback port (another user's program, on a shared machine) or claims a
  // custom scheme gets the code, and redeems it with its own PKCE verifier; a web page can send a
  // signed-in browser to authorize any client whose id it knows (a metadata document's id is
  // public) with such a redirect. A remembered consent must not turn that into a code sent without a click.
  const docs = await documentServer(t, {
    '/cli.json': (id) => ({ client_id: id, client_name: 'Loopback CLI', redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }),
    '/app.json': (id) => ({ client_id: id, client_name: 'Hosted app', redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none' }),
  })
  const gw = await gateway(t, {}, undefined, { outboundTestAllowance: docs.allowance })
  const browser = new HeadlessBrowser()
  /** What the browser is sent to by an authorization request: the consent page's HTML, or the redirect to the client. */
  const forge = async (clientId: string, redirect: string, prompt?: string): Promise<{ toClient?: URL, page?: string }> => {
    const url = new URL(authorizeUrl(gw, clientId, redirect).url)
    if (prompt !== undefined) url.searchParams.set('prompt', prompt)
    const res = await browser.request(url.href)
    const location = new URL(res.headers.get('location') ?? '', gw.baseUrl)
    if (location.origin !== gw.baseUrl) return { toClient: location }
    return { page: await (await browser.request(location.href)).text() }
  }
  const cli = docs.urlOf('/cli.json')
  const approved = await browser.authorize(authorizeUrl(gw, cli, REDIRECT_URL).url, { username: 'alice', password: PASSWORD })
  t.ok(approved.searchParams.get('code'), 'the user signed in and approved the metadata-document client once')
  t.same(browser.pages, ['login', 'consent'])
  const forged = await forge(cli, REDIRECT_URL)
  t.equal(forged.toClient?.searchParams.get('code') ?? null, null, 'a request the user did not start sends no code to the port')
  t.match(forged.page, /Allow access\?/, 'the consent page is shown again')
  t.match(forged.page, /id="loopback-warning"/)
  t.match(forged.page, /<code>alpha:read<\/code>/, 'naming what the code would grant')
  const none = await forge(cli, REDIRECT_URL, 'none')
  t.equal(none.toClient?.searchParams.get('code') ?? null, null, 'prompt=none gets no code either')
  t.equal(none.toClient?.searchParams.get('error'), 'interaction_required')

  // A registered client's loopback redirect matches on any port (RFC 8252 7.3).
  const registered = await register(gw, { client_name: 'DCR CLI', redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' })
  const dcr = String(registered.json.client_id)
  await browser.authorize(authorizeUrl(gw, dcr, REDIRECT_URL).url, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, ['consent'])
  const otherPort = await forge(dcr, 'http://127.0.0.1:4444/callback')
  t.equal(otherPort.toClient?.searchParams.get('code') ?? null, null, 'no code to another port')
  t.match(otherPort.page, /sent back to <strong>http:\/\/127\.0\.0\.1:4444<\/strong>/, 'the page names the port the code would go to')

  const custom = await register(gw, { client_name: 'Cursor', redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/callback'], token_endpoint_auth_method: 'none' })
  const customUrl = authorizeUrl(gw, String(custom.json.client_id), 'cursor://anysphere.cursor-retrieval/oauth/callback').url
  await browser.authorize(customUrl, { username: 'alice', password: PASSWORD })
  await browser.authorize(customUrl, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, ['consent'], 'a custom scheme: consent again (any app can claim a scheme)')

  const app = docs.urlOf('/app.json')
  await browser.authorize(authorizeUrl(gw, app, 'https://app.example.com/cb').url, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, ['consent'])
  await browser.authorize(authorizeUrl(gw, app, 'https://app.example.com/cb').url, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, [], 'an https redirect proves where the code goes: the consent is remembered')
  const confidential = await register(gw, { client_name: 'Confidential CLI', redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'client_secret_basic' })
  const confidentialUrl = authorizeUrl(gw, String(confidential.json.client_id), REDIRECT_URL).url
  await browser.authorize(confidentialUrl, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, ['consent'])
  await browser.authorize(confidentialUrl, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, [], 'so does a client secret (the code is worthless without it): remembered')
})

t.test('registration without token_endpoint_auth_method: a public client, no secret, and the code exchange works without one', async (t) => {
  const gw = await gateway(t)
  const exchange = async (clientId: string, auth: { basic?: string, post?: string } = {}): Promise<{ status: number, json: Record<string, unknown> }> => {
    const { url, verifier } = authorizeUrl(gw, clientId, REDIRECT_URL)
    const callback = await new HeadlessBrowser().authorize(url, { username: 'alice', password: PASSWORD })
    const form = { grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', code_verifier: verifier, redirect_uri: REDIRECT_URL, client_id: clientId, ...(auth.post === undefined ? {} : { client_secret: auth.post }) }
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', ...(auth.basic === undefined ? {} : { authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(auth.basic)}`).toString('base64')}` }) }
    const res = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers, body: new URLSearchParams(form).toString() })
    return { status: res.status, json: await res.json() as Record<string, unknown> }
  }

  const bare = await register(gw, { client_name: 'No method', redirect_uris: [REDIRECT_URL] })
  t.equal(bare.status, 201)
  t.equal(bare.json.token_endpoint_auth_method, 'none', 'says none')
  t.notOk('client_secret' in bare.json, 'and has no client_secret')
  t.notOk('client_secret_expires_at' in bare.json)
  const read = await fetch(String(bare.json.registration_client_uri), { headers: { authorization: `Bearer ${String(bare.json.registration_access_token)}` } })
  t.notOk('client_secret' in (await read.json() as Record<string, unknown>), 'nor does reading the registration back (RFC 7592)')
  const publicExchange = await exchange(String(bare.json.client_id))
  t.equal(publicExchange.status, 200, 'the code is exchanged with client_id alone (PKCE)')
  t.type(publicExchange.json.access_token, 'string')

  // A client that asks for a secret gets one that works, with the method it asked for.
  for (const method of ['client_secret_basic', 'client_secret_post'] as const) {
    const confidential = await register(gw, { client_name: method, redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: method })
    t.equal(confidential.status, 201, method)
    t.equal(confidential.json.token_endpoint_auth_method, method)
    const secret = String(confidential.json.client_secret)
    t.ok(secret.length >= 32, `${method}: a secret is issued`)
    const clientId = String(confidential.json.client_id)
    t.equal((await exchange(clientId)).json.error, 'invalid_client', `${method}: without the secret, refused`)
    const withSecret = await exchange(clientId, method === 'client_secret_basic' ? { basic: secret } : { post: secret })
    t.equal(withSecret.status, 200, `${method}: with the secret, tokens`)
    t.type(withSecret.json.access_token, 'string')
  }
})
