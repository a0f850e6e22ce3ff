// Three gateway processes sharing one Redis behave as one: a client registered on one replica,
// signed in on a second, given tokens by a third; calls through each; refresh and replay
// detection across replicas; limits counted once; stdio sessions stay where their process is.
// Then nginx in front (hash on Mcp-Session-Id) and the official SDK client doing it all.
import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth, HeadlessBrowser, REDIRECT_URL } from '../oauth-helpers.js'
import { freePort, INIT_BODY, postJson, redisAvailable, REDIS_URL, scratchRedis, startCliGateway, startUpstream, stdioServer, textOf } from '../helpers.js'
import { nginxBinary, startNginx } from '../nginx.js'

const PASSWORD = 'correct horse battery staple'

if (await redisAvailable(t)) {
  const { prefix, redis } = await scratchRedis(t)
  const upstream = await startUpstream(t)
  const tlsPort = await freePort()
  // One issuer for all: the public origin (nginx, in the last test).
  const publicUrl = `https://127.0.0.1:${tlsPort}`
  const dir = t.testdir({})
  const config = {
    publicUrl,
    trustProxy: ['127.0.0.1'],
    store: { redis: REDIS_URL, prefix },
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }], refreshTokenReuseGrace: '0s' },
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url, tools: { echo: { rateLimit: '3/min' } } },
      stdioServer('local', { prestart: 0 }),
    ],
  }
  // Started together: they race to create the signing keys, and must agree on them.
  const replicas = await Promise.all([1, 2, 3].map(async (n) => {
    const port = await freePort()
    const configPath = join(dir, `replica-${n}.yaml`)
    writeFileSync(configPath, stringify({ ...config, listen: { host: '127.0.0.1', port }, dataDir: join(dir, `data-${n}`), cluster: { advertiseUrl: `http://127.0.0.1:${port}` } }))
    await startCliGateway(t, configPath)
    return { n, base: `http://127.0.0.1:${port}` }
  }))
  const [r1, r2, r3] = replicas as [typeof replicas[0], typeof replicas[0], typeof replicas[0]]
  /** The replica's own address for a URL the gateway wrote with the public origin. */
  const on = (replica: { base: string }, url: string): string => url.replace(publicUrl, replica.base)

  const token = async (replica: { base: string }, clientId: string, resource: string, params: Record<string, string>): Promise<{ status: number, json: Record<string, string> }> => {
    const res = await fetch(`${replica.base}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ client_id: clientId, resource: `${publicUrl}/${resource}/mcp`, ...params }).toString() })
    return { status: res.status, json: await res.json() as Record<string, string> }
  }

  /** Registers on replica 1, signs in on replica 2 (every page), exchanges the code on replica 3. */
  const signIn = async (t: Test, server: string): Promise<{ clientId: string, code: string, verifier: string, pages: string[], iss: string | null, issued: { status: number, json: Record<string, string> } }> => {
    const registered = await fetch(`${r1.base}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] }) })
    t.equal(registered.status, 201, 'registered on replica 1')
    const clientId = (await registered.json() as { client_id: string }).client_id
    const verifier = randomBytes(32).toString('base64url')
    const authorizationUrl = `${publicUrl}/oauth/authorize?${new URLSearchParams({
      client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 'st', scope: 'mcp',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', resource: `${publicUrl}/${server}/mcp`,
    }).toString()}`
    const browser = new HeadlessBrowser((input, init) => fetch(on(r2, String(input)), init))
    const callback = await browser.authorize(authorizationUrl, { username: 'alice', password: PASSWORD })
    const code = callback.searchParams.get('code') ?? ''
    const issued = await token(r3, clientId, server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT_URL })
    return { clientId, code, verifier, pages: browser.pages, iss: callback.searchParams.get('iss'), issued }
  }

  t.test('registered on 1, signed in on 2, tokens from 3; calls through each; refresh and replay across; limits shared', async (t) => {
    const { clientId, code, verifier, pages, iss, issued } = await signIn(t, 'fx')
    t.same(pages, ['login', 'consent'], 'signed in on replica 2 (login and consent pages)')
    t.equal(iss, publicUrl)
    t.equal(issued.status, 200, 'tokens from replica 3')
    const bearer = { authorization: `Bearer ${issued.json.access_token ?? ''}` }

    // The HTTP upstream's session is the upstream's: any replica carries it.
    const init = await postJson(on(r1, `${publicUrl}/fx/mcp`), INIT_BODY, bearer)
    t.equal(init.status, 200)
    const session = { ...bearer, 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
    const echo = async (replica: { base: string }, id: number): Promise<{ status: number, text: string }> =>
      postJson(`${replica.base}/fx/mcp`, { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text: `via ${replica.base}` } } }, session)
    for (const [i, replica] of replicas.entries()) {
      const res = await echo(replica, i + 1)
      t.equal(res.status, 200, `tools/call through replica ${replica.n}`)
      t.match(res.text, `via ${replica.base}`)
    }
    const fourth = await echo(r1, 4)
    t.equal(fourth.status, 429, 'echo allows 3 a minute per user, counted across the replicas')
    t.match(fourth.text, /rate limit for tool \\"echo\\": 3 per minute/)

    const refreshed = await token(r1, clientId, 'fx', { grant_type: 'refresh_token', refresh_token: issued.json.refresh_token ?? '' })
    t.equal(refreshed.status, 200, 'refreshed on replica 1 (issued on 3)')
    t.not(refreshed.json.refresh_token, issued.json.refresh_token, 'rotated')
    const replay = await token(r2, clientId, 'fx', { grant_type: 'refresh_token', refresh_token: issued.json.refresh_token ?? '' })
    t.equal(replay.json.error, 'invalid_grant', 'the old refresh token, replayed on replica 2, is caught')
    const family = await token(r3, clientId, 'fx', { grant_type: 'refresh_token', refresh_token: refreshed.json.refresh_token ?? '' })
    t.equal(family.json.error, 'invalid_grant', 'and the replay revoked the whole family, as seen from replica 3')
    t.equal((await token(r1, clientId, 'fx', { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT_URL })).json.error, 'invalid_grant', 'the code, replayed on replica 1, is spent')
  })

  t.test('two replicas redeeming one refresh token at the same moment: exactly one wins', async (t) => {
    const { clientId, issued } = await signIn(t, 'fx')
    const refreshToken = issued.json.refresh_token ?? ''
    const results = await Promise.all([r1, r2, r3].map(async (replica) => token(replica, clientId, 'fx', { grant_type: 'refresh_token', refresh_token: refreshToken })))
    t.same(results.map((r) => r.status).sort(), [200, 400, 400], 'one new token pair; the others are refused')
    for (const loser of results.filter((r) => r.status === 400)) t.equal(loser.json.error, 'invalid_grant')
  })

  t.test('a stdio session is reachable through every replica: the others forward to the one holding its process', async (t) => {
    const { issued } = await signIn(t, 'local')
    const bearer = { authorization: `Bearer ${issued.json.access_token ?? ''}` }
    const init = await postJson(`${r1.base}/local/mcp`, INIT_BODY, bearer)
    const session = { ...bearer, 'mcp-session-id': init.headers.get('mcp-session-id') ?? '', 'mcp-protocol-version': '2025-11-25' }
    t.equal((await postJson(`${r2.base}/local/mcp`, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)).status, 202)
    const call = async (replica: { base: string }, id: number, name: string): Promise<{ status: number, text: string }> =>
      postJson(`${replica.base}/local/mcp`, { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } }, session)
    const counts = []
    for (const [i, replica] of [r2, r3, r1, r2].entries()) counts.push(JSON.parse((await call(replica, i + 1, 'increment')).text) as unknown)
    t.same(counts.map((c) => (c as { result: { content: Array<{ text: string }> } }).result.content[0]?.text), ['1', '2', '3', '4'], 'one process counted every call, whichever replica took it')

    // A GET stream through replica 2 carries what the process on replica 1 sends.
    const stream = await fetch(`${r2.base}/local/mcp`, { headers: { ...session, accept: 'text/event-stream' } })
    t.equal(stream.status, 200)
    t.match(stream.headers.get('content-type'), /^text\/event-stream/)
    const reader = stream.body?.getReader()
    t.equal((await call(r3, 10, 'broadcast')).status, 200)
    let seen = ''
    while (!seen.includes('notifications/tools/list_changed')) {
      const chunk = await reader?.read()
      if (chunk === undefined || chunk.done) break
      seen += Buffer.from(chunk.value).toString()
    }
    t.match(seen, /notifications\/tools\/list_changed/, 'a server notification arrived over the forwarded stream')
    await reader?.cancel()

    // Past bodyLimit (4 MB default): refused by the relaying replica too, nothing lost on the owner.
    const huge = await postJson(`${r2.base}/local/mcp`, { jsonrpc: '2.0', id: 13, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x'.repeat(5 * 1024 * 1024) } } }, session)
    t.equal(huge.status, 413, 'an oversized body through a relaying replica: 413')
    t.equal(JSON.parse((await call(r2, 14, 'increment')).text).result.content[0].text, '5', 'and the session goes on')

    const bob = await postJson(`${r2.base}/local/mcp`, { jsonrpc: '2.0', id: 11, method: 'tools/list' }, { ...session, authorization: 'Bearer not-a-token' })
    t.equal(bob.status, 401, 'the owner still checks the token of a forwarded request')
    const deleted = await fetch(`${r3.base}/local/mcp`, { method: 'DELETE', headers: session })
    t.equal(deleted.status, 200, 'ended through replica 3')
    const after = await postJson(`${r2.base}/local/mcp`, { jsonrpc: '2.0', id: 12, method: 'tools/list' }, session)
    t.equal(after.status, 404, 'gone everywhere')
    t.match(after.json, { error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
  })

  t.test('a session whose replica died: 404 at once from the others (initialize again), never a hang or a 500', async (t) => {
    const port = await freePort()
    const configPath = join(dir, 'replica-4.yaml')
    writeFileSync(configPath, stringify({ ...config, listen: { host: '127.0.0.1', port }, dataDir: join(dir, 'data-4'), cluster: { advertiseUrl: `http://127.0.0.1:${port}` } }))
    const r4 = await startCliGateway(t, configPath)
    const { issued } = await signIn(t, 'local')
    const bearer = { authorization: `Bearer ${issued.json.access_token ?? ''}` }
    const init = await postJson(`http://127.0.0.1:${port}/local/mcp`, INIT_BODY, bearer)
    const sessionId = init.headers.get('mcp-session-id') ?? ''
    t.equal(await redis.get(`${prefix}kv:session:local:${sessionId}`), `http://127.0.0.1:${port}`, 'the session is on record with its owner')
    const exited = new Promise((resolve) => r4.child.once('exit', resolve))
    r4.child.kill('SIGKILL')
    await exited
    const orphan = await postJson(`${r1.base}/local/mcp`, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { ...bearer, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' })
    t.equal(orphan.status, 404)
    t.match(orphan.json, { error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } })
    t.equal(await redis.get(`${prefix}kv:session:local:${sessionId}`), null, 'and the dead owner\'s record is dropped')
  })

  const nginx = nginxBinary(t)
  if (nginx !== undefined) {
    t.test('through nginx (hash on Mcp-Session-Id): the SDK client signs in and keeps its stdio session on one replica', async (t) => {
      const front = await startNginx(t, nginx, { upstreamPorts: replicas.map((r) => Number(new URL(r.base).port)), tlsPort })
      const oauthRequests = async (): Promise<number[]> => Promise.all(replicas.map(async (r) => {
        const text = await (await fetch(`${r.base}/metrics`)).text()
        return [...text.matchAll(/^portcullis_http_requests_total\{server="oauth"[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0)
      }))
      const before = await oauthRequests()
      const alice = await connectWithOAuth(t, `${publicUrl}/local/mcp`, { username: 'alice', password: PASSWORD, issuer: publicUrl, fetch: front.fetch })
      const after = await oauthRequests()
      const served = after.map((count, i) => count - (before[i] ?? 0))
      t.ok(served.filter((count) => count > 0).length >= 2, `the sign-in's requests (no session id yet) were spread over replicas: ${served.join(', ')}`)
      // increment counts per process: 1..10 in order means every call reached the same child.
      const counts: string[] = []
      for (let i = 0; i < 10; i++) counts.push(textOf(await alice.client.callTool({ name: 'increment', arguments: {} })))
      t.same(counts, ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'], 'every call of the session reached the replica (and process) that holds it')
      const fx = await connectWithOAuth(t, `${publicUrl}/fx/mcp`, { username: 'alice', password: PASSWORD, issuer: publicUrl, fetch: front.fetch })
      t.equal(textOf(await fx.client.callTool({ name: 'whoami', arguments: {} })), 'fixture')
    })
  }

  t.test('after all of that, every key in Redis expires but the keys themselves (no unbounded growth)', async (t) => {
    const keys = (await redis.keys(`${prefix}*`)).map((key) => key.slice(prefix.length)).sort()
    const models = new Set(keys.map((key) => key.split(':').slice(0, 2).join(':')))
    for (const expected of ['oidc:Client', 'oidc:RegistrationAccessToken', 'oidc:Grant', 'oidc:RefreshToken', 'oidc:Session', 'oidc:grant', 'oidc:uid', 'kv:auth', 'kv:session']) t.ok(models.has(expected), `the flows left ${expected} keys (${[...models].join(", ")})`)
    t.ok(keys.some((key) => key.startsWith('rl:') && key.includes('user-tool')), 'and rate-limit counters')
    // The keys themselves: cookie signing, token signing, and the key that encrypts secrets at rest
    // (IdP tokens); and one number, the longest accessTokenTtl ever in force (how long a revoked
    // grant is listed: resource-server/revoked-grants.ts). Fixed keys: nothing that grows.
    const permanent = ['kv:auth:cookie-keys', 'kv:auth:encryption-keys', 'kv:auth:signing-keys', 'kv:revoked-grants:retention-ms']
    const withoutExpiry = []
    for (const key of keys) if (await redis.pttl(`${prefix}${key}`) === -1) withoutExpiry.push(key)
    t.same(withoutExpiry, permanent, `of ${keys.length} keys, only the signing, cookie and encryption keys and the revoked-grant retention live forever`)
  })
}
