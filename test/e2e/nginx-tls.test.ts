// deploy/nginx/portcullis.conf under a real nginx with a self-signed certificate: the official
// MCP SDK client discovers, registers, signs in and streams a tool call over https through it.
import t from 'tap'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { eventually, freePort, startGateway, startUpstream, textOf } from '../helpers.js'
import { nginxBinary, startNginx } from '../nginx.js'

const PASSWORD = 'correct horse battery staple'
const nginx = nginxBinary(t)

if (nginx !== undefined) {
  t.test('OAuth sign-in and a streaming tool call over https through nginx; progress arrives before the result', async (t) => {
    const upstream = await startUpstream(t)
    const tlsPort = await freePort()
    const publicUrl = `https://127.0.0.1:${tlsPort}`
    const gw = await startGateway(t, {
      publicUrl,
      trustProxy: ['127.0.0.1'],
      auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
      servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
    })
    const front = await startNginx(t, nginx, { upstreamPorts: [Number(new URL(gw.baseUrl).port)], tlsPort })
    t.teardown(() => { if (t.passing() === false) t.comment(front.errorLog()) })
    const tls = front.fetch

    const plain = await fetch(`${front.httpUrl}/fx/mcp`, { redirect: 'manual' })
    t.equal(plain.status, 308, 'plain http only redirects')
    t.match(plain.headers.get('location'), /^https:\/\/127\.0\.0\.1(:\d+)?\/fx\/mcp$/)

    const resource = await (await tls(`${publicUrl}/.well-known/oauth-protected-resource/fx/mcp`)).json() as { resource: string, authorization_servers: string[] }
    t.same([resource.resource, resource.authorization_servers], [`${publicUrl}/fx/mcp`, [publicUrl]], 'resource metadata through nginx names the public https origin')
    const as = await (await tls(`${publicUrl}/.well-known/oauth-authorization-server`)).json() as Record<string, string>
    t.equal(as.issuer, publicUrl)
    t.equal(as.token_endpoint, `${publicUrl}/oauth/token`, 'endpoints carry the public port, not nginx\'s view of the host')

    const alice = await connectWithOAuth(t, `${publicUrl}/fx/mcp`, { username: 'alice', password: PASSWORD, issuer: publicUrl, fetch: tls })
    t.same(alice.browser.pages, ['login', 'consent'])
    t.ok(alice.browser.setCookies.length > 0, 'the sign-in set cookies')
    t.same(alice.browser.setCookies.filter((c) => !/;\s*secure/i.test(c)), [], 'every cookie is Secure (the public origin is https)')
    t.equal(textOf(await alice.client.callTool({ name: 'whoami', arguments: {} })), 'fixture')

    // The gate tool sends one progress event, then blocks until released: the event must
    // reach the client through nginx while the call is still open (no proxy buffering).
    const progress: string[] = []
    const call = alice.client.callTool({ name: 'gate', arguments: { key: 'through-nginx' } }, undefined, { onprogress: (p) => { progress.push(p.message ?? '') } })
    await upstream.entered('through-nginx')
    t.ok(await eventually(() => progress.length === 1), 'the progress event arrived while the call was still running')
    t.same(progress, ['waiting'])
    upstream.release('through-nginx')
    t.equal(textOf(await call), 'released through-nginx', 'then the result')

    const metrics = await tls(`${publicUrl}/metrics`)
    t.equal(metrics.status, 404, 'nginx keeps /metrics inside')
    for (const path of ['/metrics/', '/readyz', '/readyz/']) t.equal((await tls(`${publicUrl}${path}`)).status, 404, `and ${path} (the gateway answers a trailing slash too)`)
    t.equal((await fetch(`${gw.baseUrl}/metrics`)).status, 200, 'the gateway serves it to the scraper directly')
    t.equal((await fetch(`${gw.baseUrl}/readyz`)).status, 200, 'and its readiness to the probe')

    // A client's own X-Forwarded-For is not its address: nginx, the edge, says who connected.
    const token = alice.oauth.savedTokens?.access_token ?? ''
    await tls(`${publicUrl}/fx/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}`, 'x-forwarded-for': '203.0.113.9' }, body: JSON.stringify({ jsonrpc: '2.0', id: 'spoof', method: 'tools/list' }) })
    const spoofed = gw.audit.lines.map((line) => JSON.parse(line) as { jsonrpcId: unknown, ip: string }).find((r) => r.jsonrpcId === 'spoof')
    t.match(spoofed, { ip: '127.0.0.1' }, 'the audit has the address nginx saw, not the one the client wrote')

    const tooBig = await tls(`${publicUrl}/fx/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(5 * 1024 * 1024) })
    t.equal(tooBig.status, 413, 'nginx enforces the same 4 MiB body limit as the gateway')
    const audit = gw.audit.lines.map((line) => JSON.parse(line) as { method: string, ip: string, user: { username: string } | null })
    t.match(audit.find((r) => r.method === 'tools/call'), { ip: '127.0.0.1', user: { username: 'alice' } }, 'the audit trail has the client address nginx forwarded')
  })
}
