// Discovery against real HTTP servers on 127.0.0.1 (plain fetch in place of the guarded one,
// whose own rules have their tests in test/net).
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { discoverUpstreamAuthorization } from '../../src/upstream-auth/discovery.js'
import { startRawServer } from '../helpers.js'

type Handler = (req: IncomingMessage, res: ServerResponse, base: string) => void

async function serve (t: Parameters<typeof startRawServer>[0], handler: Handler): Promise<{ url: string, seen: string[] }> {
  const seen: string[] = []
  const server = await startRawServer(t, (req, res) => {
    seen.push(`${req.method ?? ''} ${req.url ?? ''}`)
    handler(req, res, new URL(server.url).origin)
  })
  return { url: server.url, seen }
}

function json (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
}

t.test('the 401\'s resource_metadata is followed; its scope is kept', async (t) => {
  const server = await serve(t, (req, res, base) => {
    if (req.method === 'POST') return json(res, 401, {}, { 'www-authenticate': `Bearer resource_metadata="${base}/meta/custom", scope="files:read"` })
    if (req.url === '/meta/custom') return json(res, 200, { resource: `${base}/mcp`, authorization_servers: ['https://as.example/tenant'], scopes_supported: ['files:read', 'files:write'] })
    json(res, 404, {})
  })
  const found = await discoverUpstreamAuthorization(server.url, fetch)
  t.same(found, { resource: server.url, issuer: 'https://as.example/tenant', scopesSupported: ['files:read', 'files:write'], challengeScope: 'files:read' })
  t.same(server.seen, ['POST /mcp', 'GET /meta/custom'], 'no well-known guessing when the challenge names the metadata')
})

t.test('without resource_metadata: the path-aware well-known URI, then the root one', async (t) => {
  const server = await serve(t, (req, res, base) => {
    if (req.method === 'POST') return json(res, 401, {}, { 'www-authenticate': 'Bearer' })
    if (req.url === '/.well-known/oauth-protected-resource') return json(res, 200, { resource: `${base}/mcp`, authorization_servers: ['https://as.example'] })
    json(res, 404, {})
  })
  const found = await discoverUpstreamAuthorization(server.url, fetch)
  t.equal(found.issuer, 'https://as.example')
  t.same(server.seen, ['POST /mcp', 'GET /.well-known/oauth-protected-resource/mcp', 'GET /.well-known/oauth-protected-resource'])
})

t.test('metadata for another resource is refused (RFC 9728 3.3)', async (t) => {
  const server = await serve(t, (req, res) => {
    if (req.method === 'POST') return json(res, 401, {})
    json(res, 200, { resource: 'https://elsewhere.example/mcp', authorization_servers: ['https://as.example'] })
  })
  await t.rejects(discoverUpstreamAuthorization(server.url, fetch), { name: 'DiscoveryError', message: /is for https:\/\/elsewhere\.example\/mcp/ })
})

t.test('no metadata, or metadata without an authorization server: a clear error', async (t) => {
  const none = await serve(t, (req, res) => json(res, req.method === 'POST' ? 401 : 404, {}))
  await t.rejects(discoverUpstreamAuthorization(none.url, fetch), { name: 'DiscoveryError', message: /publishes no protected resource metadata/ })
  const empty = await serve(t, (req, res, base) => json(res, req.method === 'POST' ? 401 : 200, { resource: `${base}/mcp`, authorization_servers: [] }))
  await t.rejects(discoverUpstreamAuthorization(empty.url, fetch), { name: 'DiscoveryError', message: /names no authorization server/ })
})
