// Dynamic Client Registration is anonymous: what one registration may store, and how many one
// address may make, are capped. So are authorization requests: each stores an interaction.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { REDIRECT_URL } from '../oauth-helpers.js'
import { startGateway, startUpstream, type RunningGateway, type Teardown } from '../helpers.js'

const passwordHash = await hashPassword('correct horse battery staple')

async function gateway (t: Teardown, extra: Record<string, unknown> = {}, store?: MemoryStore): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash }] },
    servers: [{ name: 'alpha', transport: 'http', url: upstream.url }],
    ...extra,
  }, {}, store === undefined ? {} : { store })
}

async function register (gw: RunningGateway, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, json: Record<string, unknown>, headers: Headers }> {
  const res = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  return { status: res.status, json: await res.json() as Record<string, unknown>, headers: res.headers }
}

const client = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none', ...extra })

t.test('what one registration may store is capped', async (t) => {
  const gw = await gateway(t)
  const uris = (n: number): string[] => Array.from({ length: n }, (_, i) => `http://127.0.0.1:${9000 + i}/cb`)
  t.equal((await register(gw, client({ redirect_uris: uris(10) }))).status, 201, '10 redirect URIs')
  const eleven = await register(gw, client({ redirect_uris: uris(11) }))
  t.equal(eleven.status, 400, '11 redirect URIs: refused')
  t.equal(eleven.json.error, 'invalid_redirect_uri', 'RFC 7591 3.2.2: the redirect URI error')
  t.match(eleven.json.error_description, /redirect_uris may list at most 10/)

  t.equal((await register(gw, client({ client_name: 'n'.repeat(200) }))).status, 201, 'a 200-character client_name')
  const longName = await register(gw, client({ client_name: 'n'.repeat(201) }))
  t.equal(longName.status, 400, 'a 201-character client_name: refused')
  t.match(longName.json, { error: 'invalid_client_metadata', error_description: /client_name may be at most 200 characters/ })
  const longUri = await register(gw, client({ client_uri: `https://example.com/${'a'.repeat(2000)}` }))
  t.match(longUri, { status: 400, json: { error: 'invalid_client_metadata', error_description: /client_uri may be at most 2000 characters/ } }, 'any other string field is capped too')

  const big = JSON.stringify(client({ client_name: 'ok', software_statement_extra: 'x'.repeat(17 * 1024) }))
  const tooBig = await register(gw, big)
  t.equal(tooBig.status, 413, 'a body over 16 KiB: 413')
  t.equal(tooBig.json.error, 'invalid_client_metadata')
  t.match(tooBig.json.error_description, /larger than 16 KiB/)
  const chunked = await fetch(`${gw.baseUrl}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: new ReadableStream({ start (controller) { controller.enqueue(new TextEncoder().encode(big)); controller.close() } }),
    duplex: 'half',
  } as RequestInit)
  t.equal(chunked.status, 413, 'so is a chunked one (no Content-Length)')
})

t.test('registrations per client IP: rateLimits.registration (default 20/hour)', async (t) => {
  const gw = await gateway(t, { trustProxy: true })
  const from = (ip: string): Record<string, string> => ({ 'x-forwarded-for': ip })
  for (let i = 0; i < 20; i++) {
    const res = await register(gw, client(), from('203.0.113.7'))
    if (res.status !== 201) t.fail(`registration ${i + 1} got ${res.status}`)
  }
  const over = await register(gw, client(), from('203.0.113.7'))
  t.equal(over.status, 429, 'the 21st registration from one address within the hour')
  t.equal(over.json.error, 'temporarily_unavailable')
  t.match(over.json.error_description, /client registrations from your address: 20 per hour/)
  t.ok(Number(over.headers.get('retry-after')) > 60, 'Retry-After says when')
  t.equal((await register(gw, client(), from('198.51.100.9'))).status, 201, 'another address still registers')
  const token = await fetch(`${gw.baseUrl}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...from('203.0.113.7') }, body: 'grant_type=authorization_code&code=x' })
  t.not(token.status, 429, 'the token endpoint is not affected by the registration budget')
})

t.test('rateLimits.registration is configurable', async (t) => {
  const gw = await gateway(t, { rateLimits: { registration: '2/hour' } })
  t.equal((await register(gw, client())).status, 201)
  t.equal((await register(gw, client())).status, 201)
  t.equal((await register(gw, client())).status, 429)
})

t.test('authorization requests per client IP count against rateLimits.token: each one stores an interaction', async (t) => {
  // Anyone can send GET /oauth/authorize for any registered client, and each request (a URL of up
  // to 16 KiB) is kept as an Interaction record for 10 minutes: unlimited, a loop fills the store.
  const store = new MemoryStore()
  const gw = await gateway(t, { trustProxy: true, rateLimits: { token: '5/min' } }, store)
  const registered = await register(gw, client(), { 'x-forwarded-for': '198.51.100.20' })
  const authorize = async (ip: string): Promise<Response> => {
    const params = new URLSearchParams({ client_id: String(registered.json.client_id), response_type: 'code', redirect_uri: REDIRECT_URL, code_challenge: 'a'.repeat(43), code_challenge_method: 'S256', resource: `${gw.baseUrl}/alpha/mcp`, state: 'x'.repeat(4000) })
    return fetch(`${gw.baseUrl}/oauth/authorize?${params.toString()}`, { redirect: 'manual', headers: { 'x-forwarded-for': ip } })
  }
  const interactions = async (): Promise<number> => {
    let n = 0
    for await (const entry of store.entries()) if ((entry as { model?: string }).model === 'Interaction') n++
    return n
  }
  for (let i = 0; i < 5; i++) {
    const res = await authorize('203.0.113.7')
    if (res.status !== 303) t.fail(`authorization ${i + 1} got ${res.status}`)
  }
  const over = await authorize('203.0.113.7')
  t.equal(over.status, 429, 'the 6th authorization request from one address within the minute')
  t.ok(Number(over.headers.get('retry-after')) > 0, 'Retry-After says when')
  t.equal(over.headers.get('x-frame-options'), 'DENY', 'a page for the browser, with the pages\' headers')
  t.match(await over.text(), /authorization, token and registration requests from your address: 5 per minute/)
  t.equal(await interactions(), 5, 'nothing stored for the refused request')
  t.equal((await authorize('198.51.100.9')).status, 303, 'another address still signs in')
})
