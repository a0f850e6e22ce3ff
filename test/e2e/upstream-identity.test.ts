// Issue 14 section 1: a verifiable identity on every upstream request. Two real users sign in
// through the real OAuth flow; real Streamable HTTP upstreams verify the gateway's identity
// header with jose against the gateway's own /oauth/jwks (over HTTP) and report who called.
import t, { type Test } from 'tap'
import { createLocalJWKSet, createRemoteJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, TestOAuthClient, type AuthorizedClient } from '../oauth-helpers.js'
import { freePort, INIT_BODY, postJson, startGateway, startUpstream, textOf, type HttpFixture, type RunningGateway } from '../helpers.js'
import { verifyIdentity } from '../fixtures/http-mcp-server.mjs'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [
  { username: 'alice', passwordHash, email: 'alice@example.com', groups: ['eng'] },
  { username: 'bob', passwordHash, groups: ['ops'] },
]
const HEADER = 'X-Portcullis-Identity'
const BOT_SECRET = 'a-machine-client-secret-of-32-chars-or-more'

interface Setup {
  gw: RunningGateway
  issuer: string
  /** Verifies identity headers (both servers). */
  fx: HttpFixture
  other: HttpFixture
  /** Static and per-user headers, no identity. */
  plain: HttpFixture
  /** The gateway's clock (and the verifying upstreams'). */
  clock: { ms: number }
}

async function setUp (t: Test): Promise<Setup> {
  const clock = { ms: Date.now() }
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const identity = { header: HEADER, issuer, jwksUrl: `${issuer}/oauth/jwks`, currentDate: () => new Date(clock.ms) }
  const fx = await startUpstream(t, { name: 'fx', identity })
  const other = await startUpstream(t, { name: 'other', identity })
  const plain = await startUpstream(t, { name: 'plain' })
  const gw = await startGateway(t, {
    listen: { host: '127.0.0.1', port },
    auth: { users: USERS, clients: [{ clientId: 'bot', clientSecret: BOT_SECRET, grantTypes: ['client_credentials'] }] },
    servers: [
      { name: 'fx', transport: 'http', url: fx.url, identity: { header: HEADER } },
      { name: 'other', transport: 'http', url: other.url, identity: { header: HEADER } },
      { name: 'plain', transport: 'http', url: plain.url, headers: { 'X-Api-Key': 'static-key', 'X-User': 'name=${user.name} id=${user.id}', 'X-Mail': 'mailto:${user.email}' } },
    ],
  }, {}, { now: () => clock.ms })
  return { gw, issuer, fx, other, plain, clock }
}

async function signIn (t: Test, gw: RunningGateway, server: string, username: string): Promise<AuthorizedClient> {
  return connectWithOAuth(t, gw.mcpUrl(server), { username, password: PASSWORD, issuer: gw.baseUrl, oauth: new TestOAuthClient({ name: `${username}'s client` }) })
}

/** What the upstream's `caller` tool verified for this request. */
async function caller (client: AuthorizedClient): Promise<{ claims?: Record<string, unknown>, error?: string }> {
  return JSON.parse(textOf(await client.client.callTool({ name: 'caller', arguments: {} }))) as { claims?: Record<string, unknown>, error?: string }
}

async function signatures (gw: RunningGateway, server: string): Promise<number> {
  const text = await (await fetch(`${gw.baseUrl}/metrics`)).text()
  const found = new RegExp(`^portcullis_identity_tokens_signed_total\\{server="${server}"\\} (\\d+)$`, 'm').exec(text)
  return Number(found?.[1] ?? 0)
}

function identityHeaders (upstream: HttpFixture): string[] {
  return upstream.seen.map((r) => r.headers[HEADER.toLowerCase()]).filter((h): h is string => typeof h === 'string')
}

t.test('each user reaches the upstream as themselves, verified against the gateway\'s JWKS', async (t) => {
  const { gw, issuer, fx } = await setUp(t)
  const alice = await signIn(t, gw, 'fx', 'alice')
  const bob = await signIn(t, gw, 'fx', 'bob')

  const seenByAlice = await caller(alice)
  t.match(seenByAlice.claims, { iss: issuer, aud: fx.url, sub: 'alice', preferred_username: 'alice', email: 'alice@example.com', groups: ['eng'], client_id: alice.oauth.clientInformation()?.client_id })
  const aliceClaims = seenByAlice.claims ?? {}
  t.equal(Number(aliceClaims.exp) - Number(aliceClaims.iat), 60, 'lives 60 s')
  t.type(aliceClaims.jti, 'string')

  const seenByBob = await caller(bob)
  t.match(seenByBob.claims, { iss: issuer, aud: fx.url, sub: 'bob', preferred_username: 'bob', groups: ['ops'], client_id: bob.oauth.clientInformation()?.client_id })
  t.notOk('email' in (seenByBob.claims ?? {}), 'no email claim for an account without one')

  t.ok(fx.seen.length >= 6, 'initialize, notifications and calls of both users')
  t.same(fx.seen.filter((r) => r.identity?.claims === undefined), [], 'every request carried an identity the upstream verified')
})

t.test('a client\'s own identity header is never forwarded: the upstream sees only the gateway\'s', async (t) => {
  const { gw, fx, plain } = await setUp(t)
  const alice = await signIn(t, gw, 'fx', 'alice')
  const token = alice.oauth.savedTokens?.access_token ?? ''
  // A forged token naming Bob, signed with a key of the client's own.
  const { privateKey } = await generateKeyPair('ES256')
  const forged = await new SignJWT({ preferred_username: 'bob' }).setProtectedHeader({ alg: 'ES256', typ: 'portcullis-identity+jwt' })
    .setSubject('bob').setIssuedAt().setExpirationTime('1m').sign(privateKey)

  const res = await postJson(gw.mcpUrl('fx'), { ...INIT_BODY, id: 'forged' }, { authorization: `Bearer ${token}`, [HEADER]: forged })
  t.equal(res.status, 200)
  const last = fx.seen.at(-1)
  t.not(last?.headers[HEADER.toLowerCase()], forged, 'the forged header was replaced')
  t.match(last?.identity, { claims: { sub: 'alice' } }, 'the upstream verified Alice, not the forgery')
  t.notOk(identityHeaders(fx).includes(forged), 'the forgery never reached the upstream')

  // Where identity is off, a client's identity header is not forwarded either.
  const plainAlice = await signIn(t, gw, 'plain', 'alice')
  const plainToken = plainAlice.oauth.savedTokens?.access_token ?? ''
  const plainRes = await postJson(gw.mcpUrl('plain'), { ...INIT_BODY, id: 'forged-plain' }, { authorization: `Bearer ${plainToken}`, [HEADER]: forged })
  t.equal(plainRes.status, 200)
  t.same(identityHeaders(plain), [], 'no identity header at all')
})

t.test('the verifier refuses a captured header replayed after expiry, at another upstream, or an access token in its place', async (t) => {
  const { gw, issuer, fx, other, clock } = await setUp(t)
  const alice = await signIn(t, gw, 'fx', 'alice')
  t.match(await caller(alice), { claims: { sub: 'alice' } })
  const captured = identityHeaders(fx).at(-1) ?? ''
  const jwks = createRemoteJWKSet(new URL(`${issuer}/oauth/jwks`))

  t.match(await verifyIdentity(captured, { jwks, issuer, audience: fx.url, currentDate: new Date(clock.ms + 59_000) }), { sub: 'alice' }, 'valid for its 60 s')
  await t.rejects(verifyIdentity(captured, { jwks, issuer, audience: fx.url, currentDate: new Date(clock.ms + 61_000) }), { code: 'ERR_JWT_EXPIRED' }, 'replayed after 60 s: expired')
  await t.rejects(verifyIdentity(captured, { jwks, issuer, audience: other.url }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' }, 'another upstream is not its audience')
  await t.rejects(verifyIdentity(captured, { jwks: createLocalJWKSet({ keys: [{ ...await exportJWK((await generateKeyPair('ES256')).publicKey), kid: 'x' }] }), issuer, audience: fx.url }), 'refused against keys other than the gateway\'s')

  // fx replays what it received to the other upstream, as a client of it: refused there.
  const replay = await fetch(other.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', [HEADER]: captured }, body: JSON.stringify(INIT_BODY) })
  t.equal(replay.status, 401, 'the other upstream refuses it')
  await replay.arrayBuffer()
  t.match(other.seen.at(-1)?.identity, { error: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })

  // The access token (same keys) is no identity token: its typ is at+jwt and its aud the gateway's.
  const accessToken = alice.oauth.savedTokens?.access_token ?? ''
  await t.rejects(verifyIdentity(accessToken, { jwks, issuer, audience: gw.mcpUrl('fx') }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'typ' })
})

t.test('signed once per caller and server per 30 s, then reused: counted by a metric', async (t) => {
  const { gw, fx, other, clock } = await setUp(t)
  const alice = await signIn(t, gw, 'fx', 'alice')
  const signedAtStart = await signatures(gw, 'fx')
  t.equal(signedAtStart, 1, 'Alice\'s sign-in and session opening: one signature')
  for (let i = 0; i < 5; i++) t.match(await caller(alice), { claims: { sub: 'alice' } })
  t.equal(await signatures(gw, 'fx'), 1, 'five more requests: no new signature')
  t.equal(new Set(identityHeaders(fx)).size, 1, 'the same token each time')

  const bob = await signIn(t, gw, 'fx', 'bob')
  t.match(await caller(bob), { claims: { sub: 'bob' } })
  t.equal(await signatures(gw, 'fx'), 2, 'another user: a token of their own')
  const aliceAtOther = await signIn(t, gw, 'other', 'alice')
  t.match(await caller(aliceAtOther), { claims: { sub: 'alice', aud: other.url } })
  t.equal(await signatures(gw, 'other'), 1, 'another server: a token of its own (its audience)')

  clock.ms += 29_000
  t.match(await caller(alice), { claims: { sub: 'alice' } })
  t.equal(await signatures(gw, 'fx'), 2, 'at 29 s the token is still reused')
  clock.ms += 2_000
  const fresh = await caller(alice)
  t.match(fresh, { claims: { sub: 'alice' } }, 'at 31 s a fresh token, still verified')
  t.equal(await signatures(gw, 'fx'), 3, 'signed again after 30 s')
  const aliceTokens = fx.seen.filter((r) => r.identity?.claims?.sub === 'alice').map((r) => r.headers[HEADER.toLowerCase()])
  t.equal(new Set(aliceTokens).size, 2, 'Alice has had two tokens')
})

t.test('${user.*} in an HTTP upstream\'s headers: rendered per caller; a caller lacking a field is refused', async (t) => {
  const { gw, plain } = await setUp(t)
  const alice = await signIn(t, gw, 'plain', 'alice')
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'hi' } })), 'hi')
  t.ok(plain.seen.length > 0)
  for (const r of plain.seen) {
    t.equal(r.headers['x-user'], 'name=alice id=alice')
    t.equal(r.headers['x-mail'], 'mailto:alice@example.com')
    t.equal(r.headers['x-api-key'], 'static-key', 'static headers as they were')
  }

  const bobOauth = new TestOAuthClient()
  await connectWithOAuth(t, gw.mcpUrl('plain'), { username: 'bob', password: PASSWORD, issuer: gw.baseUrl, oauth: bobOauth }).catch(() => undefined)
  const bobToken = bobOauth.savedTokens?.access_token ?? ''
  const seenBefore = plain.seen.length
  const refused = await postJson(gw.mcpUrl('plain'), { ...INIT_BODY, id: 'bob-init' }, { authorization: `Bearer ${bobToken}` })
  t.equal(refused.status, 403)
  t.same(refused.json, {
    jsonrpc: '2.0',
    id: 'bob-init',
    error: {
      code: -32600,
      message: 'Forbidden: your account lacks a value this MCP server needs: MCP server "plain" needs your account\'s email (${user.email}), and your account has none; ask an administrator to add it',
      data: { code: 'PORTCULLIS_ERR_USER_FIELD_MISSING', field: 'email' },
    },
  })
  t.equal(plain.seen.length, seenBefore, 'nothing of Bob\'s reached the upstream: no empty or half-rendered header')
})

t.test('a machine client is named as itself: sub client:<id>, its client_id, no username, email or groups', async (t) => {
  const { gw, fx } = await setUp(t)
  const tokenRes = await fetch(`${gw.baseUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`bot:${BOT_SECRET}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: gw.mcpUrl('fx') }).toString(),
  })
  t.equal(tokenRes.status, 200)
  const { access_token: token } = await tokenRes.json() as { access_token: string }
  const res = await postJson(gw.mcpUrl('fx'), { ...INIT_BODY, id: 'bot-init' }, { authorization: `Bearer ${token}` })
  t.equal(res.status, 200)
  const claims = fx.seen.at(-1)?.identity?.claims ?? {}
  t.match(claims, { sub: 'client:bot', client_id: 'bot' }, 'verified by the upstream')
  for (const claim of ['preferred_username', 'email', 'groups']) t.notOk(claim in claims, `no ${claim}`)
})
