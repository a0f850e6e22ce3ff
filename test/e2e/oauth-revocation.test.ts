// Access tokens die with their grant: after a code replay, a refresh-token reuse, or /oauth/revoke
// (refresh token or access token), every access token of that grant is refused within 2 s on every
// replica — two gateways on one real Redis — and on one gateway with the default SQLite store.
// Tokens come from the real flow (SDK client, sign-in and consent pages); nothing sleeps: each check
// polls until a deadline.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, REDIRECT_URL, type AuthorizedClient } from '../oauth-helpers.js'
import { INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startGateway, startUpstream, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'bob', passwordHash }]
const MACHINE_SECRET = 'machine-secret-with-at-least-32-characters!'
/** The promise: refused everywhere within this long after the revoking request returned. */
const DEADLINE_MS = 2_000

interface Signed { readonly session: AuthorizedClient, readonly clientId: string, readonly accessToken: string, readonly refreshToken: string }

async function signIn (t: Test, gw: RunningGateway, username = 'alice'): Promise<Signed> {
  const session = await connectWithOAuth(t, gw.mcpUrl('fx'), { username, password: PASSWORD, issuer: gw.baseUrl })
  // Only the tokens are used from here on (raw requests); an SDK session left open would keep
  // reconnecting its stream with a token this test revokes.
  await session.client.close()
  return { session, clientId: session.oauth.info?.client_id ?? '', accessToken: session.oauth.savedTokens?.access_token ?? '', refreshToken: session.oauth.savedTokens?.refresh_token ?? '' }
}

/** initialize with a bearer token at a gateway (any replica: the resource URL is the public one). */
async function call (gw: RunningGateway, token: string): Promise<{ status: number, challenge: string | null }> {
  const res = await postJson(`${gw.baseUrl}/fx/mcp`, INIT_BODY, { authorization: `Bearer ${token}` })
  return { status: res.status, challenge: res.headers.get('www-authenticate') }
}

async function form (gw: RunningGateway, path: string, params: Record<string, string>): Promise<{ status: number, json: Record<string, unknown> }> {
  const res = await fetch(`${gw.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() })
  const text = await res.text()
  return { status: res.status, json: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
}

/** Polls each gateway until it refuses the token as revoked; asserts it happened within DEADLINE_MS of `since`. */
async function refusedEverywhere (t: Test, gateways: readonly RunningGateway[], token: string, since: number, label: string): Promise<number[]> {
  const took: number[] = []
  for (const [i, gw] of gateways.entries()) {
    let last = await call(gw, token)
    while (last.status !== 401 && Date.now() - since < DEADLINE_MS) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      last = await call(gw, token)
    }
    took.push(Date.now() - since)
    t.equal(last.status, 401, `${label}: refused by gateway ${i + 1} within ${DEADLINE_MS} ms (after ${Date.now() - since} ms)`)
    t.equal(last.challenge, `Bearer error="invalid_token", error_description="the access token has been revoked", resource_metadata="${gw.config.publicUrl}/.well-known/oauth-protected-resource/fx/mcp", scope="mcp"`, `${label}: the normal invalid_token challenge (gateway ${i + 1})`)
  }
  return took
}

async function worksEverywhere (t: Test, gateways: readonly RunningGateway[], token: string, label: string): Promise<void> {
  for (const [i, gw] of gateways.entries()) t.equal((await call(gw, token)).status, 200, `${label}: accepted by gateway ${i + 1}`)
}

/** Every revocation path, revoked on `on`, checked on all of `gateways`. */
function revocationPaths (t: Test, gateways: () => readonly RunningGateway[]): void {
  const [first, second] = [() => gateways()[0] as RunningGateway, () => gateways()[gateways().length - 1] as RunningGateway]

  t.test('a replayed authorization code revokes the grant: its access token dies everywhere', async (t) => {
    const alice = await signIn(t, first())
    const bob = await signIn(t, first(), 'bob')
    await worksEverywhere(t, gateways(), alice.accessToken, 'before')
    const code = alice.session.callback.searchParams.get('code') ?? ''
    const since = Date.now()
    const replay = await form(second(), '/oauth/token', { grant_type: 'authorization_code', code, code_verifier: alice.session.oauth.codeVerifier(), redirect_uri: REDIRECT_URL, client_id: alice.clientId, resource: `${first().config.publicUrl}/fx/mcp` })
    t.equal(replay.json.error, 'invalid_grant', 'the replay is refused')
    await refusedEverywhere(t, gateways(), alice.accessToken, since, 'code replay')
    t.equal((await form(first(), '/oauth/token', { grant_type: 'refresh_token', refresh_token: alice.refreshToken, client_id: alice.clientId })).json.error, 'invalid_grant', 'and its refresh token')
    await worksEverywhere(t, gateways(), bob.accessToken, 'bob\'s grant is untouched')
  })

  t.test('a reused refresh token (outside the grace window) revokes the family: old and new access tokens die', async (t) => {
    const alice = await signIn(t, first())
    const rotated = await form(first(), '/oauth/token', { grant_type: 'refresh_token', refresh_token: alice.refreshToken, client_id: alice.clientId })
    t.equal(rotated.status, 200)
    const fresh = String(rotated.json.access_token)
    await worksEverywhere(t, gateways(), fresh, 'the refreshed token')
    const since = Date.now()
    const reuse = await form(second(), '/oauth/token', { grant_type: 'refresh_token', refresh_token: alice.refreshToken, client_id: alice.clientId })
    t.equal(reuse.json.error, 'invalid_grant', 'the reuse is refused')
    await refusedEverywhere(t, gateways(), alice.accessToken, since, 'refresh reuse (first access token)')
    await refusedEverywhere(t, gateways(), fresh, since, 'refresh reuse (refreshed access token)')
  })

  t.test('revoking the refresh token at /oauth/revoke kills the grant\'s access tokens', async (t) => {
    const alice = await signIn(t, first())
    const since = Date.now()
    const revoked = await form(second(), '/oauth/revoke', { token: alice.refreshToken, token_type_hint: 'refresh_token', client_id: alice.clientId })
    t.equal(revoked.status, 200)
    await refusedEverywhere(t, gateways(), alice.accessToken, since, 'refresh token revoked')
  })

  t.test('revoking the access token itself at /oauth/revoke: the token and its grant die (refresh token too)', async (t) => {
    const alice = await signIn(t, first())
    const bob = await signIn(t, first(), 'bob')
    const notHers = await form(second(), '/oauth/revoke', { token: bob.accessToken, client_id: alice.clientId })
    t.equal(notHers.status, 200, 'another client\'s token: RFC 7009 200, nothing revoked')
    await worksEverywhere(t, gateways(), bob.accessToken, 'bob\'s token, presented by alice\'s client')
    const since = Date.now()
    const revoked = await form(second(), '/oauth/revoke', { token: alice.accessToken, token_type_hint: 'access_token', client_id: alice.clientId })
    t.equal(revoked.status, 200, 'a JWT access token is accepted for revocation')
    await refusedEverywhere(t, gateways(), alice.accessToken, since, 'access token revoked')
    t.equal((await form(first(), '/oauth/token', { grant_type: 'refresh_token', refresh_token: alice.refreshToken, client_id: alice.clientId })).json.error, 'invalid_grant', 'the grant went: its refresh token is dead too')
    t.equal((await form(first(), '/oauth/revoke', { token: alice.accessToken, client_id: alice.clientId })).status, 200, 'revoking it again: 200')
    await worksEverywhere(t, gateways(), bob.accessToken, 'bob is still signed in')
    // Signing in again gives a new grant (the revoked one is not reused through the remembered consent).
    const again = await signIn(t, first())
    await worksEverywhere(t, gateways(), again.accessToken, 'signed in again')
  })
}

t.test('two replicas on one Redis', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix, redis } = await scratchRedis(t)
  const upstream = await startUpstream(t)
  const config = { auth: { users: USERS, refreshTokenReuseGrace: '0s' }, store: { redis: REDIS_URL, prefix }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] }
  const gw1 = await startGateway(t, config)
  // One issuer for both: the second replica serves the same public URL (and reads the signing keys from Redis).
  const gw2 = await startGateway(t, { ...config, publicUrl: gw1.baseUrl })
  revocationPaths(t, () => [gw1, gw2])

  t.test('the list lives in Redis, small and expiring; refresh is one read a second per replica', async (t) => {
    const key = `${prefix}revoked-grants`
    t.ok(await redis.zcard(key) >= 4, 'each revoked grant is listed')
    const ttl = await redis.pttl(key)
    t.ok(ttl > 0 && ttl <= (15 * 60 + 5) * 1000, `the list expires with its last entry (${ttl} ms)`)
    const monitor = await redis.monitor()
    t.teardown(() => monitor.disconnect())
    const reads: string[] = []
    monitor.on('monitor', (_time: string, args: string[]) => { if (args[1] === key) reads.push(String(args[0])) })
    await new Promise((resolve) => setTimeout(resolve, 3_000))
    t.ok(reads.length >= 4 && reads.length <= 8, `2 replicas polled ${reads.length} times in 3 s`)
    t.same([...new Set(reads.map((r) => r.toLowerCase()))], ['zrangebyscore'], 'with one ZRANGEBYSCORE each time')
  })
})

t.test('one gateway on SQLite (the default store)', async (t) => {
  const upstream = await startUpstream(t)
  const dir = t.testdir({})
  const gw = await startGateway(t, {
    auth: { users: USERS, refreshTokenReuseGrace: '0s', clients: [{ clientId: 'ci-bot', clientSecret: MACHINE_SECRET, grantTypes: ['client_credentials'] }] },
    store: { sqlite: join(dir, 'portcullis.db') },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  revocationPaths(t, () => [gw])

  t.test('machine (client_credentials) tokens have no grant: revocation says unsupported_token_type, and they live out their TTL', async (t) => {
    const basic = Buffer.from(`ci-bot:${MACHINE_SECRET}`).toString('base64')
    const res = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` }, body: new URLSearchParams({ grant_type: 'client_credentials', resource: gw.mcpUrl('fx') }).toString() })
    const token = String((await res.json() as Record<string, unknown>).access_token)
    t.equal((await call(gw, token)).status, 200)
    const revoked = await fetch(`${gw.baseUrl}/oauth/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` }, body: new URLSearchParams({ token }).toString() })
    t.equal(revoked.status, 400)
    t.match(await revoked.json(), { error: 'unsupported_token_type', error_description: /client_credentials access tokens cannot be revoked/ })
    t.equal((await call(gw, token)).status, 200, 'documented: still accepted until it expires')
  })
})
