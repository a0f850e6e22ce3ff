// Offboarding, end to end: two real users sign in through a real IdP (test/idp.ts, a second
// oidc-provider) with the official MCP SDK client; the IdP then disables one, or takes a group
// away, and the gateway follows at the next refresh of its own tokens (revalidation with the IdP
// refresh token it kept): tokens, grants and stdio processes of that user end, the other user
// carries on. revalidateEvery is 1s here, so the tests wait just past it before each refresh.
// Back-channel logout: the IdP's logout token, signed with its own key, does the same at once.
import t from 'tap'
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { decodeJwt, generateKeyPair, SignJWT } from 'jose'
import { HeadlessBrowser, REDIRECT_URL, refreshTokens, signInForTokens, type SignedInTokens } from '../oauth-helpers.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { eventually, INIT_BODY, isProcessAlive, postJson, startUpstream, stdioServer, STDIO_MODERN_FIXTURE, textOf, type RunningGateway, type Teardown } from '../helpers.js'
import { idpEntry, startGatewayWithIdp, type IdpAccount } from '../idp.js'
import { createKeyOnPage, signInToAccountWithIdp } from '../account-helpers.js'
import { API_KEY_CACHE_MS } from '../../src/account/api-keys.js'
import { SecretBox } from '../../src/auth-server/secret-box.js'

const ALICE: IdpAccount = { sub: 'a-100', password: 'alice-at-corp', email: 'alice@example.com', email_verified: true, preferred_username: 'alice', groups: ['staff', 'eng'] }
const BOB: IdpAccount = { sub: 'b-200', password: 'bob-at-corp', email: 'bob@example.com', email_verified: true, preferred_username: 'bob', groups: ['staff', 'eng'] }
const REVALIDATE_EVERY_MS = 1_000
const META = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' } }

/** Just past revalidateEvery: the next refresh re-checks the user with the IdP. */
const pastRevalidation = async (): Promise<void> => new Promise((resolve) => setTimeout(resolve, REVALIDATE_EVERY_MS + 100))

type Signed = SignedInTokens

async function signIn (t: Teardown, gw: RunningGateway, server: string, account: IdpAccount): Promise<Signed> {
  return await signInForTokens(t, gw.mcpUrl(server), { username: account.preferred_username ?? account.sub, password: account.password, idp: 'corp', issuer: gw.baseUrl })
}

async function refresh (gw: RunningGateway, user: Signed, server: string, path?: string): Promise<{ status: number, body: Record<string, unknown> }> {
  return await refreshTokens(gw.baseUrl, user, gw.mcpUrl(server), path)
}

/** tools/call env on the 2026-07-28 stdio server: the status, and the pid of the user's process. */
async function callEnv (gw: RunningGateway, accessToken: string): Promise<{ status: number, pid?: number }> {
  const res = await postJson(gw.mcpUrl('modern'), { jsonrpc: '2.0', id: 'e1', method: 'tools/call', params: { name: 'env', arguments: {}, _meta: META } },
    { authorization: `Bearer ${accessToken}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'env' })
  if (res.status !== 200) return { status: res.status }
  return { status: res.status, pid: (JSON.parse(textOf((res.json as { result?: unknown }).result)) as { pid: number }).pid }
}

/** A personal API key for the `tools` server, made on the account page after signing in through the IdP. */
async function keyOnAccountPage (gw: RunningGateway, account: IdpAccount): Promise<string> {
  const page = await signInToAccountWithIdp(gw.baseUrl, 'corp', account.preferred_username ?? account.sub, account.password)
  const created = await createKeyOnPage(page, { name: 'ci job', servers: ['tools'] })
  if (created.status !== 201 || created.secret === undefined) throw new Error(`${account.sub}: no key (${created.status})`)
  return created.secret
}

t.test('revalidation at refresh: a user disabled at the IdP loses tokens, grants and stdio processes; the other user carries on', async (t) => {
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { requiredGroups: ['staff'], revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' })],
  }))
  const alice = await signIn(t, gw, 'modern', ALICE)
  const bob = await signIn(t, gw, 'modern', BOB)
  const alicePid = (await callEnv(gw, alice.accessToken)).pid ?? 0
  const bobPid = (await callEnv(gw, bob.accessToken)).pid ?? 0
  t.ok(alicePid > 0 && bobPid > 0 && alicePid !== bobPid, 'each user has a stdio process of their own')

  // Still enabled: the IdP vouches again (its refresh grant and userinfo), the refresh goes on.
  await pastRevalidation()
  t.equal((await refresh(gw, alice, 'modern')).status, 200, 'an enabled user refreshes after revalidateEvery')
  t.match(gw.logs.text(), /"user":"corp:a-100".*"msg":"identity provider re-checked the user"/, 'the IdP was asked')

  idp.update(ALICE.sub, { disabled: true })
  const staleAccessToken = alice.accessToken
  t.equal((await callEnv(gw, staleAccessToken)).status, 200, 'until the next revalidation the access token still works')
  await pastRevalidation()
  // At another spelling of the token endpoint (oidc-provider's router ignores case and a trailing slash).
  const refused = await refresh(gw, alice, 'modern', '/oauth/TOKEN/')
  t.equal(refused.status, 400, 'the disabled user\'s refresh is refused')
  t.match(refused.body, { error: 'invalid_grant', error_description: /refused the account at revalidation/ })
  t.ok(await eventually(async () => (await callEnv(gw, staleAccessToken)).status === 401), 'the disabled user\'s access token is refused')
  t.ok(await eventually(() => !isProcessAlive(alicePid)), 'the disabled user\'s stdio process is gone')
  t.equal((await refresh(gw, alice, 'modern')).status, 400, 'and stays refused')
  const account = JSON.parse(await gw.app.portcullis.store.kvGet('idp-account:corp:a-100') ?? '{}') as { disabled?: { reason: string } }
  t.match(account.disabled, { reason: /refused the account at revalidation/ }, 'the account is disabled at the gateway')
  t.equal(await gw.app.portcullis.idpSessions?.idpSession('corp:a-100'), undefined, 'the IdP session (and its refresh token) is forgotten')

  t.equal((await refresh(gw, bob, 'modern')).status, 200, 'the other user refreshes (re-checked too)')
  t.equal((await callEnv(gw, bob.accessToken)).status, 200, 'the other user\'s new access token works')
  t.ok(isProcessAlive(bobPid), 'the other user\'s process is untouched')
  t.notOk(gw.logs.text().includes(idp.refreshTokens.at(-1) ?? 'none'), 'no IdP refresh token is logged')
})

t.test('revalidation at refresh uses the IdP refresh token as it is under the lock, not as first read', async (t) => {
  // A token exchange (or another replica) may rotate the user's IdP refresh token between the
  // revalidation's first read and its lock; the spent token would be refused by an IdP that
  // rotates them, and the user offboarded for nothing.
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE], rotateRefreshTokens: true }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' })],
  }))
  const alice = await signIn(t, gw, 'modern', ALICE)
  const sessions = gw.app.portcullis.idpSessions
  if (sessions === undefined) throw new Error('no IdP sessions')
  const { token_endpoint: tokenEndpoint } = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json() as { token_endpoint: string }
  /** What a token exchange does when it refreshes: a real refresh at the IdP, the rotated token saved. */
  const rotateAtIdp = async (): Promise<void> => {
    const session = await sessions.idpSession('corp:a-100')
    const res = await fetch(tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${idp.clientId}:${idp.clientSecret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: session?.refreshToken ?? '' }).toString(),
    })
    const body = await res.json() as { refresh_token?: string }
    if (res.status !== 200 || session === undefined || body.refresh_token === undefined || body.refresh_token === session.refreshToken) throw new Error(`the IdP did not rotate: ${res.status}`)
    await sessions.save('corp:a-100', { ...session, refreshToken: body.refresh_token })
  }
  // The rotation lands during the revalidation's read of the account record, after its first read of the session.
  const store = gw.app.portcullis.store
  const kvGet = store.kvGet.bind(store)
  let rotations = 0
  store.kvGet = async (key: string) => {
    if (key === 'idp-account:corp:a-100' && rotations === 0) {
      rotations++
      await rotateAtIdp()
    }
    return await kvGet(key)
  }
  await pastRevalidation()
  const refreshed = await refresh(gw, alice, 'modern')
  t.equal(rotations, 1, 'the rotation happened inside the revalidation')
  t.equal(refreshed.status, 200, 'the user refreshes: the IdP was asked with the current refresh token')
  t.notOk(gw.logs.text().includes('no longer vouches'), 'nobody was offboarded')
  t.equal((await callEnv(gw, alice.accessToken)).status, 200)
})

t.test('revalidation at refresh: group changes at the IdP reach the next token and policy; leaving requiredGroups offboards', async (t) => {
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { requiredGroups: ['staff'], revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [
      { name: 'gh', transport: 'http', url: upstream.url, access: { groups: ['eng'] } },
      stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' }),
    ],
  }))
  const bob = await signIn(t, gw, 'gh', BOB)
  t.match(decodeJwt(bob.accessToken), { groups: ['eng', 'staff'] })

  idp.update(BOB.sub, { groups: ['staff'] })
  await pastRevalidation()
  t.equal((await refresh(gw, bob, 'gh')).status, 200, 'still in staff: the refresh goes on')
  t.same(decodeJwt(bob.accessToken).groups, ['staff'], 'the removed group is gone from the new access token')
  const denied = await postJson(gw.mcpUrl('gh'), { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }, { authorization: `Bearer ${bob.accessToken}` })
  t.equal(denied.status, 403, 'the group-gated server refuses the new token')
  t.match(denied.text, /PORTCULLIS_ERR_ACCESS_DENIED/)

  const bobStdio = await signIn(t, gw, 'modern', BOB)
  const pid = (await callEnv(gw, bobStdio.accessToken)).pid ?? 0
  t.ok(pid > 0)
  idp.update(BOB.sub, { groups: [] })
  await pastRevalidation()
  const refused = await refresh(gw, bobStdio, 'modern')
  t.match(refused, { status: 400, body: { error: 'invalid_grant', error_description: /not in a group allowed to use this gateway/ } }, 'out of requiredGroups: refused')
  t.ok(await eventually(async () => (await callEnv(gw, bobStdio.accessToken)).status === 401), 'the access token of the same grant is refused')
  t.equal((await refresh(gw, bob, 'gh')).status, 400, 'his other grant (another client) is revoked too')
  t.ok(await eventually(() => !isProcessAlive(pid)), 'his stdio process is gone')
})

t.test('revalidation at refresh: an unreachable IdP refuses the refresh for now and disables nobody', async (t) => {
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' })],
  }))
  const alice = await signIn(t, gw, 'modern', ALICE)
  await idp.stop()
  await pastRevalidation()
  const res = await refresh(gw, alice, 'modern')
  t.match(res, { status: 503, body: { error: 'temporarily_unavailable', error_description: /cannot be reached to re-check your account; retry shortly/ } }, 'no new tokens without the IdP\'s word')
  t.equal((await callEnv(gw, alice.accessToken)).status, 200, 'the current access token keeps working')
  const account = JSON.parse(await gw.app.portcullis.store.kvGet('idp-account:corp:a-100') ?? '{}') as { disabled?: unknown }
  t.equal(account.disabled, undefined, 'the account is not disabled')
  t.ok((await gw.app.portcullis.idpSessions?.idpSession('corp:a-100'))?.refreshToken !== undefined, 'the IdP refresh token is kept for the next try')
  t.match(gw.logs.text(), /"msg":"identity provider unreachable at revalidation: refresh refused for now, account kept"/)
})

t.test('revalidation at refresh: the personal API key of a user disabled at the IdP stops working within the key cache bound', async (t) => {
  let clock = Date.now()
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }), { now: () => clock })
  const keyOf = async (account: IdpAccount): Promise<string> => await keyOnAccountPage(gw, account)
  const initializeWithKey = async (secret: string): Promise<number> => (await postJson(gw.mcpUrl('tools'), INIT_BODY, { authorization: `Bearer ${secret}` })).status
  const aliceKey = await keyOf(ALICE)
  const bobKey = await keyOf(BOB)
  const alice = await signIn(t, gw, 'tools', ALICE)
  t.equal(await initializeWithKey(aliceKey), 200, 'the key made on the account page works')

  idp.update(ALICE.sub, { disabled: true })
  clock += REVALIDATE_EVERY_MS + 1
  t.match(await refresh(gw, alice, 'tools'), { status: 400, body: { error: 'invalid_grant', error_description: /refused the account at revalidation/ } }, 'the IdP refuses her: offboarded')
  // Key lookups are cached for API_KEY_CACHE_MS (the documented revocation bound): the clock moves past it.
  clock += API_KEY_CACHE_MS
  t.equal(await initializeWithKey(aliceKey), 401, 'past the key cache bound her key is refused')
  t.equal(await initializeWithKey(bobKey), 200, 'the other user\'s key works')
})

/** The IdP's POST to the gateway's back-channel logout endpoint. */
async function postLogout (gw: RunningGateway, logoutToken: string): Promise<{ status: number, body: string }> {
  const res = await fetch(`${gw.baseUrl}/oauth/idp/corp/backchannel-logout`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ logout_token: logoutToken }).toString() })
  return { status: res.status, body: await res.text() }
}

t.test('back-channel logout: a logout token from the IdP offboards the user at once; forged, replayed and malformed tokens are refused', async (t) => {
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB], sessionIds: true }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp)] },
    servers: [stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' })],
  }))
  const alice = await signIn(t, gw, 'modern', ALICE)
  const bob = await signIn(t, gw, 'modern', BOB)
  const alicePid = (await callEnv(gw, alice.accessToken)).pid ?? 0
  t.ok(alicePid > 0)

  // Signed with another key under the IdP's kid: a forgery.
  const { privateKey: otherKey } = await generateKeyPair('RS256')
  const forged = await new SignJWT({ iss: idp.issuer, aud: idp.clientId, sub: ALICE.sub, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: { 'http://schemas.openid.net/event/backchannel-logout': {} } })
    .setProtectedHeader({ alg: 'RS256', kid: 'test-idp', typ: 'logout+jwt' }).sign(otherKey)
  const refusals: Array<[string, string, RegExp]> = [
    ['forged signature', forged, /not valid \(ERR_JWS_SIGNATURE_VERIFICATION_FAILED\)/],
    ['another audience', await idp.logoutToken(ALICE.sub, { aud: 'someone-else' }), /not valid \(ERR_JWT_CLAIM_VALIDATION_FAILED\)/],
    ['another issuer', await idp.logoutToken(ALICE.sub, { iss: 'http://localhost:1' }), /not valid/],
    ['no logout event', await idp.logoutToken(ALICE.sub, { events: { 'http://example.com/other': {} } }), /lacks http:\/\/schemas.openid.net\/event\/backchannel-logout/],
    ['a nonce', await idp.logoutToken(ALICE.sub, { nonce: 'n' }), /must not carry a nonce/],
    ['neither sub nor sid', await idp.logoutToken(ALICE.sub, { sub: undefined }), /neither sub nor sid/],
    ['no jti', await idp.logoutToken(ALICE.sub, { jti: undefined }), /not valid \(ERR_JWT_CLAIM_VALIDATION_FAILED\)/],
    ['too old', await idp.logoutToken(ALICE.sub, { iat: Math.floor(Date.now() / 1000) - 3600 }), /not valid/],
  ]
  for (const [what, token, reason] of refusals) {
    const res = await postLogout(gw, token)
    t.equal(res.status, 400, `${what}: 400`)
    t.match(JSON.parse(res.body), { error: 'invalid_request', error_description: reason }, `${what}: says why`)
  }
  t.equal((await callEnv(gw, alice.accessToken)).status, 200, 'refused logout tokens change nothing')

  const token = await idp.logoutToken(ALICE.sub)
  t.equal((await postLogout(gw, token)).status, 200, 'a valid logout token: 200')
  t.ok(await eventually(async () => (await callEnv(gw, alice.accessToken)).status === 401), 'the user\'s access token is refused at once (no refresh needed)')
  t.ok(await eventually(() => !isProcessAlive(alicePid)), 'the user\'s stdio process is gone')
  t.equal((await refresh(gw, alice, 'modern')).status, 400, 'the user\'s refresh token is revoked')
  const replay = await postLogout(gw, token)
  t.equal(replay.status, 400, 'the same logout token again is refused')
  t.match(replay.body, /already used/)

  t.equal((await callEnv(gw, bob.accessToken)).status, 200, 'the other user is untouched')
  t.equal((await postLogout(gw, await idp.logoutToken('nobody-here'))).status, 200, 'a user the gateway never saw: 200, nothing to end')
  t.notOk(gw.logs.text().includes(token), 'the logout token is not logged')

  // OIDC Back-Channel Logout 1.0, 2.4: a logout token may name only the IdP session (sid). The
  // sid the IdP put in Bob's ID token is what the gateway recorded at his sign-in.
  let bobSid: string | undefined
  for await (const entry of gw.app.portcullis.store.entries()) {
    if (entry.kind === 'kv' && entry.key.startsWith('idp-sid:corp:') && entry.value === `corp:${BOB.sub}`) bobSid = entry.key.slice('idp-sid:corp:'.length)
  }
  t.ok(bobSid !== undefined && bobSid !== '', 'the IdP session of Bob\'s sign-in is known by its sid')
  t.equal((await postLogout(gw, await idp.logoutToken(BOB.sub, { sub: undefined, sid: bobSid }))).status, 200, 'a logout token naming only the sid: 200')
  t.ok(await eventually(async () => (await callEnv(gw, bob.accessToken)).status === 401), 'the user of that IdP session is offboarded: his access token is refused')
  t.equal((await postLogout(gw, await idp.logoutToken(BOB.sub, { sub: undefined, sid: 'unknown-session' }))).status, 200, 'an IdP session the gateway never saw: 200, nothing to end')
})

t.test('back-channel logout: the offboarded user\'s linked upstream tokens are deleted; the other user\'s stay', async (t) => {
  // The links are written as the link flow leaves them (sealed rows; upstream-oauth.test.ts runs
  // that flow). The upstream here does not answer (port 1): revoking there is best effort, and
  // the rows must go regardless.
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB], sessionIds: true }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp)] },
    servers: [
      stdioServer('modern', { script: STDIO_MODERN_FIXTURE, isolation: 'user' }),
      { name: 'linear', transport: 'http', url: 'http://127.0.0.1:1/mcp', upstreamAuth: { type: 'oauth' } },
    ],
  }))
  const alice = await signIn(t, gw, 'modern', ALICE)
  await signIn(t, gw, 'modern', BOB)
  const store = gw.app.portcullis.store
  const box = await SecretBox.load(store, undefined)
  const rowOf = (userId: string): string => `upstream-token:linear:${userId}`
  for (const userId of [`corp:${ALICE.sub}`, `corp:${BOB.sub}`]) {
    await store.kvSet(rowOf(userId), box.seal(JSON.stringify({ accessToken: `at-${userId}`, refreshToken: `rt-${userId}`, linkedAtMs: Date.now() }), rowOf(userId)))
  }
  t.equal((await postLogout(gw, await idp.logoutToken(ALICE.sub))).status, 200)
  t.ok(await eventually(async () => (await callEnv(gw, alice.accessToken)).status === 401), 'Alice is offboarded')
  t.equal(await store.kvGet(rowOf(`corp:${ALICE.sub}`)), undefined, 'her linked upstream tokens are gone')
  t.not(await store.kvGet(rowOf(`corp:${BOB.sub}`)), undefined, 'Bob\'s link stays')
  t.match(gw.logs.text(), /upstream links removed for an ended account/)
  t.notOk(gw.logs.text().includes(`rt-corp:${ALICE.sub}`), 'the tokens are not logged')
})

t.test('back-channel logout of a user linked by email (linkByEmail) ends the sign-in and the page sessions that IdP sign-in began', async (t) => {
  // The linked user is the local account: offboarding revokes its grants but cannot disable it.
  // The browser that signed in through the IdP stayed signed in at the gateway's authorization
  // server and its account page: a new authorization went through with a consent click (none at
  // all for a client consented before), new tokens without the IdP's word.
  const passwordHash = await hashPassword('alice-local-password')
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB], sessionIds: true }, (idp) => ({
    auth: {
      users: [{ username: 'alice', passwordHash, email: ALICE.email }, { username: 'bob', passwordHash, email: BOB.email }],
      identityProviders: [idpEntry(idp, { linkByEmail: true })],
    },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }))
  const alice = await signInToAccountWithIdp(gw.baseUrl, 'corp', ALICE.preferred_username ?? '', ALICE.password)
  const bob = await signInToAccountWithIdp(gw.baseUrl, 'corp', BOB.preferred_username ?? '', BOB.password)
  t.equal((await alice.browser.request(`${gw.baseUrl}/account/keys`)).status, 200, 'signed in to the account page as the local user')
  t.same(await authorizeNewClient(gw, alice.browser, ALICE), ['consent'], 'signed in at the authorization server: a new client needs only consent')

  t.equal((await postLogout(gw, await idp.logoutToken(ALICE.sub))).status, 200)
  t.match(gw.logs.text(), /"user":"alice".*"msg":"identity provider no longer vouches for the user/, 'the linked local account was offboarded')
  t.equal((await alice.browser.request(`${gw.baseUrl}/account/keys`)).status, 303, 'her account page session is ended: back to sign-in')
  t.same((await authorizeNewClient(gw, alice.browser, ALICE)).slice(0, 1), ['provider'], 'the next authorization in her browser asks who she is again')

  t.equal((await bob.browser.request(`${gw.baseUrl}/account/keys`)).status, 200, 'the other user keeps his page session')
  t.same(await authorizeNewClient(gw, bob.browser, BOB), ['consent'], 'and his sign-in')
})

/** The pages a newly registered client's authorization for `tools` shows this browser (signing in through the IdP when asked). */
async function authorizeNewClient (gw: RunningGateway, browser: HeadlessBrowser, account: IdpAccount): Promise<string[]> {
  const registered = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  const clientId = (await registered.json() as { client_id: string }).client_id
  const verifier = randomBytes(32).toString('base64url')
  const params = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 'st', code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', resource: gw.mcpUrl('tools'), scope: 'mcp' })
  await browser.authorize(`${gw.baseUrl}/oauth/authorize?${params.toString()}`, { username: account.preferred_username ?? account.sub, password: account.password, idp: 'corp' })
  return [...browser.pages]
}

t.test('an API key used with no OAuth refresh re-checks its user with the IdP every revalidateEvery', async (t) => {
  // Revalidation ran only at a refresh of the gateway's OAuth tokens: a CI job using nothing but
  // an IdP user's personal key was never re-checked, and the key outlived the user's
  // disablement at an IdP that sends no back-channel logout (Okta, Entra ID) until it expired.
  let clock = Date.now()
  const upstream = await startUpstream(t)
  const passwordHash = await hashPassword('bob-local-password')
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: {
      // Bob is a local user linked by email: his key is the local account's.
      users: [{ username: 'bob', passwordHash, email: BOB.email }],
      identityProviders: [idpEntry(idp, { revalidateEvery: `${REVALIDATE_EVERY_MS}ms`, linkByEmail: true })],
    },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }), { now: () => clock })
  const keyOf = async (account: IdpAccount): Promise<string> => await keyOnAccountPage(gw, account)
  const initializeWithKey = async (secret: string): Promise<{ status: number, text: string }> => {
    const res = await postJson(gw.mcpUrl('tools'), INIT_BODY, { authorization: `Bearer ${secret}` })
    return { status: res.status, text: res.text }
  }
  const aliceKey = await keyOf(ALICE)
  const bobKey = await keyOf(BOB)
  t.equal((await initializeWithKey(aliceKey)).status, 200)
  t.equal((await initializeWithKey(bobKey)).status, 200)

  clock += REVALIDATE_EVERY_MS + API_KEY_CACHE_MS
  t.equal((await initializeWithKey(aliceKey)).status, 200, 'still enabled at the IdP: the key works after revalidateEvery')
  t.match(gw.logs.text(), /"user":"corp:a-100".*"msg":"identity provider re-checked the user"/, 'the key\'s use asked the IdP')

  idp.update(ALICE.sub, { disabled: true })
  idp.update(BOB.sub, { disabled: true })
  clock += REVALIDATE_EVERY_MS + API_KEY_CACHE_MS
  t.equal((await initializeWithKey(aliceKey)).status, 401, 'disabled at the IdP: her key is refused, without any OAuth refresh')
  t.equal((await initializeWithKey(bobKey)).status, 401, 'the linked local user\'s key too')
  t.match(gw.logs.text(), /"user":"corp:a-100".*"msg":"identity provider no longer vouches for the user/)
  clock += API_KEY_CACHE_MS
  // Offboarding forgot his IdP session and cannot disable the local account: his key must not
  // come back as a plain local user's once the lookup cache has passed.
  t.equal((await initializeWithKey(bobKey)).status, 401, 'and it stays refused')
  t.equal((await initializeWithKey(aliceKey)).status, 401)

  idp.update(BOB.sub, { disabled: false })
  const bobAgain = await keyOf(BOB)
  await idp.stop()
  clock += REVALIDATE_EVERY_MS + API_KEY_CACHE_MS
  const outage = await initializeWithKey(bobAgain)
  t.equal(outage.status, 503, 'the IdP unreachable: no request on an unchecked account, and nobody offboarded')
  t.match(outage.text, /PORTCULLIS_ERR_IDP_UNAVAILABLE/)
})

t.test('a new authorization on a kept sign-in re-checks the user with the IdP: a user disabled there gets no tokens by skipping refreshes', async (t) => {
  // Revalidation ran only at refresh_token grants. A user the IdP disabled (no back-channel
  // logout: Okta, Entra ID) whose browser was still signed in at the gateway's authorization
  // server could authorize again, silently (consent remembered), and exchange the code: new
  // tokens every time, never re-checked, for as long as that sign-in lasts.
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: { identityProviders: [idpEntry(idp, { revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }))
  const alice = new HeadlessBrowser()
  const bob = new HeadlessBrowser()
  t.equal((await codeGrantForNewClient(gw, alice, ALICE)).status, 200, 'signed in through the IdP: tokens')
  t.equal((await codeGrantForNewClient(gw, bob, BOB)).status, 200)
  await pastRevalidation()
  t.equal((await codeGrantForNewClient(gw, alice, ALICE)).status, 200, 'still enabled: a new authorization on the kept sign-in gets tokens')
  t.match(gw.logs.text(), /"user":"corp:a-100".*"msg":"identity provider re-checked the user"/, 'the IdP was asked')

  idp.update(ALICE.sub, { disabled: true })
  await pastRevalidation()
  const refused = await codeGrantForNewClient(gw, alice, ALICE)
  t.match(refused, { status: 400, body: { error: 'invalid_grant', error_description: /refused the account at revalidation/ } }, 'disabled at the IdP: the code gets no tokens')
  t.equal((await codeGrantForNewClient(gw, bob, BOB)).status, 200, 'the other user carries on')

  // Nothing to re-check him with (the IdP session record gone, as when an IdP issues no refresh
  // token): "sign in again" - and the next authorization must then really go to the IdP, not
  // back to the kept sign-in and the same refusal.
  await gw.app.portcullis.store.kvDelete(`idp-session:corp:${BOB.sub}`)
  await pastRevalidation()
  t.match(await codeGrantForNewClient(gw, bob, BOB), { status: 400, body: { error: 'invalid_grant', error_description: /sign in again/ } }, 'cannot be re-checked: no tokens')
  const visited = bob.visited.length
  t.equal((await codeGrantForNewClient(gw, bob, BOB)).status, 200, 'the next authorization signs in afresh')
  t.ok(bob.visited.slice(visited).some((url) => url.startsWith(`${idp.issuer}/`)), 'at the IdP')
})

/** A new client's authorization for `tools` in this browser (signing in through the IdP when asked), and its code exchange. */
async function codeGrantForNewClient (gw: RunningGateway, browser: HeadlessBrowser, account: IdpAccount): Promise<{ status: number, body: Record<string, unknown> }> {
  const registered = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  const clientId = (await registered.json() as { client_id: string }).client_id
  const verifier = randomBytes(32).toString('base64url')
  const params = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 'st', code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', resource: gw.mcpUrl('tools'), scope: 'mcp' })
  const callback = await browser.authorize(`${gw.baseUrl}/oauth/authorize?${params.toString()}`, { username: account.preferred_username ?? account.sub, password: account.password, idp: 'corp' })
  const res = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', client_id: clientId, redirect_uri: REDIRECT_URL, code_verifier: verifier }).toString() })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

t.test('revalidation of a user linked by email: an IdP account that no longer has the local user\'s email stops being that user', async (t) => {
  // linkByEmail signs an IdP account in as the local user with the same verified email. The
  // revalidation saved the IdP's new claims but never asked whether they still name that local
  // user: an account whose address the IdP changed (a rename, an address handed to someone else)
  // went on refreshing as the local user - their groups, admin rights, data - for good.
  const passwordHash = await hashPassword('alice-local-password')
  const upstream = await startUpstream(t)
  const { idp, gw } = await startGatewayWithIdp(t, { accounts: [ALICE, BOB] }, (idp) => ({
    auth: {
      users: [{ username: 'alice', passwordHash, email: ALICE.email, groups: ['finance'] }, { username: 'bob', passwordHash, email: BOB.email }],
      identityProviders: [idpEntry(idp, { linkByEmail: true, revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })],
    },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }))
  const alice = await signIn(t, gw, 'tools', ALICE)
  const bob = await signIn(t, gw, 'tools', BOB)
  t.match(decodeJwt(alice.accessToken), { sub: 'alice', groups: ['finance'] }, 'linked: the local user')

  idp.update(ALICE.sub, { email: 'carol@example.com' })
  await pastRevalidation()
  const refused = await refresh(gw, alice, 'tools')
  t.match(refused, { status: 400, body: { error: 'invalid_grant', error_description: /no longer linked to the local user "alice"/ } }, 'no longer alice@example.com at the IdP: no more tokens as the local alice')
  t.equal((await refresh(gw, bob, 'tools')).status, 200, 'the other linked user carries on')
  t.equal(decodeJwt(bob.accessToken).sub, 'bob')
})
