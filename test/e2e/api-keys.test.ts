// Personal API keys end to end: real users sign in on /account/keys through the real OAuth flow
// (the gateway as a client of its own authorization server), create keys on the real page, and the
// official MCP SDK client uses them against real Streamable HTTP upstreams. Clock injected.
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { hashPassword } from '../../src/auth-server/password.js'
import { ExternalAccounts } from '../../src/auth-server/external-accounts.js'
import { ApiKeys } from '../../src/account/api-keys.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { API_KEY_CACHE_MS } from '../../src/account/api-keys.js'
import { connectClient, eventually, INIT_BODY, postJson, startGateway, startOwnRedis, startUpstream, textOf, uniquePrefix, type RunningGateway } from '../helpers.js'
import { createKeyOnPage, revokeOnPage, signInToAccount } from '../account-helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const ALICE = { username: 'alice', passwordHash, groups: ['eng'], email: 'alice@example.com' }
const BOB = { username: 'bob', passwordHash }

async function twoServers (t: Test): Promise<Array<Record<string, unknown>>> {
  const a = await startUpstream(t, { name: 'upstream-a' })
  const b = await startUpstream(t, { name: 'upstream-b' })
  return [
    { name: 'a', transport: 'http', url: a.url, tools: { deny: ['slow'], whoami: { scopes: ['a:admin'] } } },
    { name: 'b', transport: 'http', url: b.url, access: { users: ['alice'] } },
  ]
}

function bearer (secret: string): Record<string, string> {
  return { authorization: `Bearer ${secret}` }
}

function auditOf (gw: RunningGateway): Array<Record<string, unknown>> {
  return gw.audit.lines.map((line) => JSON.parse(line) as Record<string, unknown>)
}

t.test('a key made on the account page acts as its user: SDK client, policy, scopes, servers, audit, sessions, revocation', async (t) => {
  let clock = Date.now()
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-keys-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const gw = await startGateway(t, { auth: { users: [ALICE, BOB] }, store: { sqlite: join(dir, 'portcullis.db') }, servers: await twoServers(t) }, {}, { now: () => clock })

  const alicePage = await signInToAccount(gw.baseUrl, 'alice', PASSWORD)
  t.match(alicePage.html, /Signed in as <strong>alice<\/strong>/)
  t.match(alicePage.html, /You have no API keys/)
  const created = await createKeyOnPage(alicePage, { name: 'ci job', servers: ['a'], scopes: ['mcp'] })
  t.equal(created.status, 201, 'created')
  const secret = created.secret ?? ''
  const keyId = created.keyId ?? ''
  t.match(secret, /^pcs_[0-9A-Za-z]{43}$/, 'shown once: pcs_ + 43 base62 characters')
  t.match(keyId, /^[0-9a-f]{16}$/)

  // The official SDK client with the key as its bearer.
  const { client, transport } = await connectClient(t, gw.mcpUrl('a'), { headers: bearer(secret) })
  const tools = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(tools.includes('echo') && !tools.includes('slow'), 'tools/list filtered by policy')
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'hi' } })), 'hi', 'a tool call with the key')
  await t.rejects(client.callTool({ name: 'slow', arguments: { ms: 1 } }), /Forbidden by policy/, 'a denied tool stays denied')
  await t.rejects(client.callTool({ name: 'whoami', arguments: {} }), /403|insufficient|scope/i, 'a tool needing a scope the key lacks is refused')

  const records = auditOf(gw).filter((r) => r.keyId === keyId)
  t.ok(records.length >= 3, 'audit records carry the keyId')
  t.ok(records.every((r) => (r.user as { username?: string }).username === 'alice' && r.clientId === `api-key:${keyId}`), 'as alice, through the key')
  t.ok(records.some((r) => (r.target as { name?: string } | undefined)?.name === 'slow' && r.decision === 'denied'), 'the refusal is audited with the key')

  const toB = await postJson(gw.mcpUrl('b'), INIT_BODY, bearer(secret))
  t.equal(toB.status, 403, 'a key for server a cannot reach b')
  t.match(toB.json, { error: { data: { code: 'PORTCULLIS_ERR_API_KEY_SERVER' }, message: /reaches a, not "b"/ } })

  // The key text is nowhere in the store's files (only its SHA-256 is).
  const raw = readdirSync(dir).map((f) => readFileSync(join(dir, f)).toString('latin1')).join('')
  t.ok(raw.includes(keyId), 'the store holds the key (by id)')
  t.notOk(raw.includes(secret.slice(4)), 'but never the key text')

  // Bob: cannot give himself server b; his key for a cannot enter Alice's session.
  const bobPage = await signInToAccount(gw.baseUrl, 'bob', PASSWORD)
  t.notMatch(bobPage.html, /value="b"/, 'server b is not offered to bob')
  const refusedB = await createKeyOnPage(bobPage, { name: 'sneaky', servers: ['b'] })
  t.equal(refusedB.status, 400)
  t.match(refusedB.html, /may not reach server &#34;b&#34;/)
  const bobKey = (await createKeyOnPage(bobPage, { name: 'bob ci', servers: ['a'] })).secret ?? ''
  const intoAlice = await postJson(gw.mcpUrl('a'), { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, { ...bearer(bobKey), 'mcp-session-id': transport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25' })
  t.equal(intoAlice.status, 404, 'bob\'s key cannot reach alice\'s session')
  t.equal(await revokeOnPage(bobPage, keyId), 404, 'nor revoke alice\'s key')

  // CSRF: a forged form, or bob's token with alice's cookie, changes nothing.
  const forged = await createKeyOnPage(alicePage, { name: 'forged', servers: ['a'], csrf: 'forged' })
  t.equal(forged.status, 403, 'create without the page\'s CSRF token: refused')
  t.equal(await revokeOnPage(alicePage, keyId, bobPage.csrf()), 403, 'revoke with another session\'s CSRF token: refused')
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'still' } })), 'still', 'the key still works')

  // Listed on the page, then revoked there: refused on every request after the cache bound.
  const listed = await alicePage.browser.request(`${gw.baseUrl}/account/keys`)
  const listedHtml = await listed.text()
  t.match(listedHtml, new RegExp(`<code>${keyId}</code>`))
  t.notMatch(listedHtml, /forged/, 'the forged create made nothing')
  t.equal(await revokeOnPage(alicePage, keyId), 303, 'revoked on the page')
  clock += API_KEY_CACHE_MS
  const after = await postJson(gw.mcpUrl('a'), INIT_BODY, bearer(secret))
  t.equal(after.status, 401, 'a revoked key is refused within the cache bound')
  t.match(after.headers.get('www-authenticate') ?? '', /error="invalid_token", error_description="the API key is not valid"/)
  const afterPage = await (await alicePage.browser.request(`${gw.baseUrl}/account/keys`)).text()
  t.notMatch(afterPage, new RegExp(keyId), 'and gone from the list')
})

t.test('an expired key and an unknown key get the same 401 (clock injected)', async (t) => {
  let clock = Date.now()
  const gw = await startGateway(t, { auth: { users: [ALICE] }, servers: await twoServers(t) }, {}, { now: () => clock })
  const page = await signInToAccount(gw.baseUrl, 'alice', PASSWORD)
  const tooLong = await createKeyOnPage(page, { name: 'forever', servers: ['a'], expires: '400d' })
  t.equal(tooLong.status, 400)
  t.match(tooLong.html, /longer than auth.apiKeys.maxTtl allows \(365d\)/)
  const { secret = '' } = await createKeyOnPage(page, { name: 'short', servers: ['a', 'b'], expires: '1h' })
  t.equal((await postJson(gw.mcpUrl('b'), INIT_BODY, bearer(secret))).status, 200, 'works while valid')
  clock += 3600_000
  const expired = await postJson(gw.mcpUrl('b'), INIT_BODY, bearer(secret))
  const unknown = await postJson(gw.mcpUrl('b'), INIT_BODY, bearer(`pcs_${'A'.repeat(43)}`))
  t.equal(expired.status, 401, 'expired: 401')
  t.equal(unknown.status, 401)
  t.equal(expired.headers.get('www-authenticate'), unknown.headers.get('www-authenticate'), 'the same challenge as an unknown key')
  t.same(expired.json, unknown.json, 'and the same body')
})

t.test('a key stops with its user: a local user removed from YAML, an identity-provider user disabled', async (t) => {
  let clock = Date.now()
  const store = new MemoryStore(() => clock)
  const servers = await twoServers(t)
  const first = await startGateway(t, { auth: { users: [ALICE, BOB] }, servers }, {}, { now: () => clock, store })
  const page = await signInToAccount(first.baseUrl, 'bob', PASSWORD)
  const { secret: bobKey = '' } = await createKeyOnPage(page, { name: 'bob', servers: ['a'] })
  t.equal((await postJson(first.mcpUrl('a'), INIT_BODY, bearer(bobKey))).status, 200)
  // The same store, bob gone from auth.users (a restart with the new YAML).
  const second = await startGateway(t, { auth: { users: [ALICE] }, servers }, {}, { now: () => clock, store })
  t.equal((await postJson(second.mcpUrl('a'), INIT_BODY, bearer(bobKey))).status, 401, 'removed from YAML: the key stops')

  // An IdP user as the identity-provider sign-in records them (that sign-in is another module's; the
  // record is what it leaves in the store). Groups come from that record: eng reaches b.
  await new ExternalAccounts(store).save({ id: 'corp:u-42', provider: 'corp', subject: 'u-42', name: 'carol', email: 'carol@corp.example', emailVerified: true, groups: ['eng'] }, clock)
  const corp = { name: 'corp', type: 'oidc', issuer: 'https://idp.example.com', clientId: 'gw', clientSecret: 'a-client-secret-of-some-length' }
  const idpServers = [servers[0], { ...servers[1], access: { groups: ['eng'] } }]
  const gwIdp = await startGateway(t, { auth: { users: [ALICE], identityProviders: [corp] }, servers: idpServers }, {}, { now: () => clock, store })
  const { secret } = await new ApiKeys(store, 20, () => clock).create({ userId: 'corp:u-42', name: 'carol ci', servers: ['b'], scopes: ['mcp'], expiresAtMs: clock + 86_400_000 })
  const ok = await postJson(gwIdp.mcpUrl('b'), INIT_BODY, bearer(secret))
  t.equal(ok.status, 200, 'an IdP user\'s key reaches b through the group on their record')
  // The same store, the provider gone from auth.identityProviders: it vouches for nobody, keys included.
  const withoutIdp = await startGateway(t, { auth: { users: [ALICE] }, servers: idpServers }, {}, { now: () => clock, store })
  t.equal((await postJson(withoutIdp.mcpUrl('b'), INIT_BODY, bearer(secret))).status, 401, 'its provider removed: the key stops')
  await new ExternalAccounts(store).disable('corp:u-42', 'refused at revalidation', clock)
  clock += API_KEY_CACHE_MS
  t.equal((await postJson(gwIdp.mcpUrl('b'), INIT_BODY, bearer(secret))).status, 401, 'disabled at the IdP: the key stops within the cache bound')
  const audited = auditOf(gwIdp).find((r) => r.method === 'initialize')
  t.match(audited, { user: { sub: 'corp:u-42', username: 'carol' } }, 'audited as the IdP user')
})

t.test('auth.apiKeys.enabled: false refuses pcs_ keys and says so on the page', async (t) => {
  const store = new MemoryStore()
  const servers = await twoServers(t)
  const on = await startGateway(t, { auth: { users: [ALICE] }, servers }, {}, { store })
  const { secret = '' } = await createKeyOnPage(await signInToAccount(on.baseUrl, 'alice', PASSWORD), { name: 'k', servers: ['a'] })
  const off = await startGateway(t, { auth: { users: [ALICE], apiKeys: { enabled: false } }, servers }, {}, { store })
  const refused = await postJson(off.mcpUrl('a'), INIT_BODY, bearer(secret))
  t.equal(refused.status, 401)
  t.match(refused.headers.get('www-authenticate') ?? '', /API keys are disabled on this gateway/)
  const page = await fetch(`${off.baseUrl}/account/keys`, { redirect: 'manual' })
  t.equal(page.status, 404)
  t.match(await page.text(), /API keys are disabled/)
})

t.test('Redis down: a key that needs a lookup gets 503 "retry shortly", never a 401 that looks like a bad key', async (t) => {
  const redis = await startOwnRedis(t)
  if (redis === undefined) return
  let clock = Date.now()
  const gw = await startGateway(t, { auth: { users: [ALICE] }, store: { redis: redis.url, prefix: uniquePrefix() }, servers: await twoServers(t) }, {}, { now: () => clock })
  const { secret = '' } = await createKeyOnPage(await signInToAccount(gw.baseUrl, 'alice', PASSWORD), { name: 'k', servers: ['a'] })
  t.equal((await postJson(gw.mcpUrl('a'), INIT_BODY, bearer(secret))).status, 200)
  await redis.stop()
  clock += API_KEY_CACHE_MS
  const down = await postJson(gw.mcpUrl('a'), INIT_BODY, bearer(secret))
  t.equal(down.status, 503)
  t.match(down.json, { error: { data: { code: 'PORTCULLIS_ERR_STORE_UNAVAILABLE' } } })
  t.equal(down.headers.get('retry-after'), '5')
  await redis.start()
  t.ok(await eventually(async () => (await postJson(gw.mcpUrl('a'), INIT_BODY, bearer(secret))).status === 200, 15_000), 'back when Redis is')
})

t.test('a gateway with one server: the account sign-in asks for no consent and its token reaches no server', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { auth: { users: [ALICE] }, servers: [{ name: 'only', transport: 'http', url: upstream.url }] })
  const page = await signInToAccount(gw.baseUrl, 'alice', PASSWORD)
  t.match(page.html, /Signed in as <strong>alice<\/strong>/, 'straight back to the keys page (no "Allow access?")')
  t.notOk(page.browser.visited.some((url) => /[?&]resource=/.test(url)), 'the account\'s authorization request names no MCP server')
})
