// Every request the gateway makes to a URL someone else chose goes through the guarded fetch:
// https only, public addresses only (every redirect hop), allowedHosts for all, size and time caps.
// A listener on 127.0.0.1 that counts connections proves nothing local is contacted.
import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hashPassword } from '../../src/auth-server/password.js'
import { createGuardedFetch, isPublicAddress } from '../../src/net/guarded-fetch.js'
import { REDIRECT_URL } from '../oauth-helpers.js'
import { startGateway, startUpstream, type RunningGateway, type Teardown } from '../helpers.js'
import { startConnectionRecorder, startDocumentServer } from '../outbound-helpers.js'

const passwordHash = await hashPassword('correct horse battery staple')

async function gateway (t: Teardown, auth: Record<string, unknown> = {}, options: Parameters<typeof startGateway>[3] = {}): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash }], ...auth },
    servers: [{ name: 'alpha', transport: 'http', url: upstream.url }],
  }, {}, options)
}

async function register (gw: RunningGateway, body: Record<string, unknown>): Promise<{ status: number, json: Record<string, unknown> }> {
  const res = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, json: await res.json() as Record<string, unknown> }
}

async function authorizeStatus (gw: RunningGateway, clientId: string): Promise<{ status: number, text: string }> {
  const query = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: gw.mcpUrl('alpha') })
  const res = await fetch(`${gw.baseUrl}/oauth/authorize?${query.toString()}`, { redirect: 'manual' })
  return { status: res.status, text: await res.text() }
}

t.test('without the test allowance, nothing on 127.0.0.1 is contacted: CIMD, sector_identifier_uri, jwks_uri', async (t) => {
  const recorder = await startConnectionRecorder(t)
  const local = `https://127.0.0.1:${recorder.port}`
  for (const [label, auth] of [['default settings', {}], ['CIMD disabled', { clientMetadataDocuments: { enabled: false } }], ['allowedHosts set', { clientMetadataDocuments: { allowedHosts: ['clients.example.com'] } }]] as const) {
    const gw = await gateway(t, auth)
    const cimd = await authorizeStatus(gw, `${local}/client.json`)
    t.equal(cimd.status, 400, `${label}: a CIMD client_id on 127.0.0.1 is refused`)
    const sector = await register(gw, { redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none', sector_identifier_uri: `${local}/sector.json`, subject_type: 'pairwise' })
    t.equal(sector.status, 400, `${label}: sector_identifier_uri refused`)
    t.equal(sector.json.error, 'invalid_client_metadata', `${label}: as invalid_client_metadata`)
    const jwks = await register(gw, { redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: `${local}/jwks.json` })
    t.equal(jwks.status, 400, `${label}: jwks_uri refused`)
    t.equal(jwks.json.error, 'invalid_client_metadata', `${label}: as invalid_client_metadata`)
  }
  t.equal(recorder.connections(), 0, 'the local listener saw no connection at all')
})

t.test('with the test allowance, metadata documents are fetched from 127.0.0.1 over https', async (t) => {
  const docs = await startDocumentServer(t, (_req, res, selfUrl) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ client_id: selfUrl, client_name: 'Doc', redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }))
  })
  const gw = await gateway(t, {}, { outboundTestAllowance: docs.allowance })
  t.equal((await authorizeStatus(gw, docs.urlOf('/client.json'))).status, 303, 'the document was fetched and the client accepted')
  t.equal(docs.requests(), 1)
})

t.test('the guarded fetch: credentials go to the origin asked, not across a redirect to another', async (t) => {
  const seen = (req: { headers: Record<string, unknown> }, res: { writeHead: (s: number, h: Record<string, string>) => { end: (b: string) => void } }): void => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ authorization: req.headers.authorization ?? null, cookie: req.headers.cookie ?? null }))
  }
  const other = await startDocumentServer(t, (req, res) => { seen(req, res) })
  const asked = await startDocumentServer(t, (req, res) => {
    if (req.url === '/to-other') { res.writeHead(302, { location: other.urlOf('/seen') }).end(); return }
    if (req.url === '/to-self') { res.writeHead(302, { location: '/seen' }).end(); return }
    seen(req, res)
  })
  const guarded = createGuardedFetch({ allowedHosts: [], testAllowance: { privateHosts: ['127.0.0.1'], ca: `${asked.allowance.ca}\n${other.allowance.ca}` } })
  t.teardown(() => guarded.close())
  const headers = { authorization: 'Bearer secret-of-the-asked-origin', cookie: 'session=1', accept: 'application/json' }
  t.same(await (await guarded.fetch(asked.urlOf('/to-self'), { headers })).json(), { authorization: 'Bearer secret-of-the-asked-origin', cookie: 'session=1' }, 'a redirect within the origin keeps them')
  t.same(await (await guarded.fetch(asked.urlOf('/to-other'), { headers })).json(), { authorization: null, cookie: null }, 'a redirect to another origin drops them')
})

t.test('the guarded fetch itself', async (t) => {
  const docs = await startDocumentServer(t, (req, res) => {
    if (req.url === '/big') { res.writeHead(200); res.end('x'.repeat(64 * 1024 + 1)); return }
    if (req.url === '/big-chunked') { res.writeHead(200); res.write('x'.repeat(40_000)); res.end('x'.repeat(40_000)); return }
    if (req.url === '/slow') { res.writeHead(200); res.write('{'); return }
    if (req.url === '/to-http') { res.writeHead(302, { location: `http://127.0.0.1:${(req.socket.localPort ?? 0)}/ok` }).end(); return }
    if (req.url?.startsWith('/to-local')) { res.writeHead(302, { location: req.url.slice('/to-local?'.length) }).end(); return }
    if (req.url === '/loop') { res.writeHead(302, { location: '/loop' }).end(); return }
    if (req.url === '/hop') { res.writeHead(302, { location: '/ok' }).end(); return }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"ok":true}')
  })
  const recorder = await startConnectionRecorder(t)
  const plainHttp = createServer((_req, res) => res.end('plain'))
  await new Promise<void>((resolve) => plainHttp.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => plainHttp.close(() => resolve())))
  const refusals: string[] = []
  const allowed = createGuardedFetch({ allowedHosts: [], testAllowance: docs.allowance, timeoutMs: 500, onRefused: (_host, reason) => refusals.push(reason) })
  const strict = createGuardedFetch({ allowedHosts: [] })
  const listed = createGuardedFetch({ allowedHosts: ['clients.example.com'], testAllowance: docs.allowance })
  t.teardown(async () => { await Promise.all([allowed.close(), strict.close(), listed.close()]) })

  t.same(await (await allowed.fetch(docs.urlOf('/ok'))).json(), { ok: true }, 'allowed host: fetched')
  t.same(await (await allowed.fetch(docs.urlOf('/hop'))).json(), { ok: true }, 'a redirect to https on an allowed host is followed')
  t.equal((await allowed.fetch(docs.urlOf('/hop'), { redirect: 'manual' })).status, 302, 'redirect: manual is honoured')
  await t.rejects(allowed.fetch(docs.urlOf('/big')), { code: 'ERR_OUTBOUND_TOO_LARGE' }, 'a declared size over 64 KiB is refused')
  await t.rejects(allowed.fetch(docs.urlOf('/big-chunked')), { code: 'ERR_OUTBOUND_TOO_LARGE' }, 'so is a streamed one')
  const started = Date.now()
  await t.rejects(allowed.fetch(docs.urlOf('/slow')), { name: /TimeoutError|AbortError/ }, 'a body that never ends is cut at the total time cap')
  t.ok(Date.now() - started < 3000, 'within the cap')
  await t.rejects(allowed.fetch(docs.urlOf('/to-http')), { code: 'ERR_OUTBOUND_NOT_HTTPS' }, 'a redirect to http is refused')
  await t.rejects(allowed.fetch(docs.urlOf('/loop')), { code: 'ERR_OUTBOUND_TOO_MANY_REDIRECTS' })
  await t.rejects(allowed.fetch(`http://127.0.0.1:${(plainHttp.address() as AddressInfo).port}/`), { code: 'ERR_OUTBOUND_NOT_HTTPS' }, 'http is never fetched')

  for (const target of [`https://127.0.0.1:${recorder.port}/`, `https://localhost:${recorder.port}/`, `https://[::1]:${recorder.port}/`, `https://0x7f.1:${recorder.port}/`, `https://2130706433:${recorder.port}/`]) {
    await t.rejects(strict.fetch(target), { cause: { code: 'ERR_OUTBOUND_ADDRESS_NOT_PUBLIC' } }, `${target}: refused before connecting`)
  }
  await t.rejects(strict.fetch(docs.urlOf('/ok')), { cause: { code: 'ERR_OUTBOUND_ADDRESS_NOT_PUBLIC' } }, 'the document server itself, without the allowance')
  await t.rejects(allowed.fetch(docs.urlOf(`/to-local?https://localhost:${recorder.port}/`)), { cause: { code: 'ERR_OUTBOUND_ADDRESS_NOT_PUBLIC' } }, 'a redirect hop to another loopback name is checked too')
  await t.rejects(listed.fetch(docs.urlOf('/ok')), { code: 'ERR_OUTBOUND_HOST_NOT_ALLOWED' }, 'allowedHosts: any other host is refused')
  t.equal(recorder.connections(), 0, 'nothing reached the local listener')
  t.ok(refusals.includes('ERR_OUTBOUND_TOO_LARGE'), 'refusals are reported for the log')
})

t.test('the address check', async (t) => {
  for (const address of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.100.100.200', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00:ec2::254', '::ffff:127.0.0.1', '::ffff:7f00:1', '64:ff9b::7f00:1', '2002:7f00:1::', 'ff02::1', '224.0.0.1', 'not-an-ip']) {
    t.notOk(isPublicAddress(address), `${address} is not public`)
  }
  for (const address of ['93.184.215.14', '1.1.1.1', '2606:4700:4700::1111', '::ffff:1.1.1.1']) {
    t.ok(isPublicAddress(address), `${address} is public`)
  }
})

t.test('refusals are logged with the host and the rule, at warn', async (t) => {
  const recorder = await startConnectionRecorder(t)
  const gw = await gateway(t)
  t.equal((await authorizeStatus(gw, `https://127.0.0.1:${recorder.port}/client.json`)).status, 400)
  const line = gw.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'outbound request refused')
  t.match(line, { level: 40, host: '127.0.0.1', reason: 'ERR_OUTBOUND_ADDRESS_NOT_PUBLIC' })
  t.equal(recorder.connections(), 0)
})

t.test('operator-named hosts (identity provider issuers): private addresses, http only on loopback, bodies sent', async (t) => {
  const seen: Array<{ method: string, body: string }> = []
  const plainHttp = createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => { seen.push({ method: req.method ?? '', body }); res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}') })
  })
  await new Promise<void>((resolve) => plainHttp.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => plainHttp.close(() => resolve())))
  const port = (plainHttp.address() as AddressInfo).port
  const idp = createGuardedFetch({ allowedHosts: [], operatorHosts: ['localhost'] })
  t.teardown(() => idp.close())
  const token = await idp.fetch(`http://localhost:${port}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=authorization_code&code=c' })
  t.same(await token.json(), { ok: true }, 'a loopback issuer the operator configured is reached over http')
  t.same(seen, [{ method: 'POST', body: 'grant_type=authorization_code&code=c' }], 'the form body is sent (token endpoints need it)')
  await t.rejects(idp.fetch(`http://127.0.0.1:${port}/`), { code: 'ERR_OUTBOUND_NOT_HTTPS' }, 'another loopback name the operator did not write: refused')
  const unnamed = createGuardedFetch({ allowedHosts: [], operatorHosts: ['sso.internal.example'] })
  t.teardown(() => unnamed.close())
  await t.rejects(unnamed.fetch(`http://localhost:${port}/`), { code: 'ERR_OUTBOUND_NOT_HTTPS' }, 'not operator-named: http refused')
  t.equal(seen.length, 1, 'nothing else reached the server')
})
