// Slow and hostile clients: half-sent headers and bodies are cut at limits.* (OAuth routes, which
// oidc-provider reads itself, included), idle keep-alive connections are closed, and MCP streams
// in progress — responses, not requests — outlive every one of these timeouts.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectClient, startGateway, startUpstream, textOf, within } from '../helpers.js'

const LIMITS = { headersTimeoutMs: 300, bodyTimeoutMs: 800, keepAliveTimeoutMs: 500 }
const passwordHash = await hashPassword('correct horse battery staple')

interface Outcome { readonly closedAfterMs: number, readonly received: string }

/** Opens a socket, writes `data`, then stalls; resolves when the gateway closes it (or after `giveUpMs`). */
function stall (port: number, data: string, giveUpMs = 5000): Promise<Outcome | undefined> {
  return new Promise((resolve) => {
    const started = Date.now()
    const socket: Socket = connect(port, '127.0.0.1', () => { if (data !== '') socket.write(data) })
    let received = ''
    socket.on('data', (chunk) => { received += chunk.toString('utf8') })
    socket.on('error', () => {})
    const giveUp = setTimeout(() => { socket.destroy(); resolve(undefined) }, giveUpMs)
    socket.on('close', () => { clearTimeout(giveUp); resolve({ closedAfterMs: Date.now() - started, received }) })
  })
}

const request = (path: string, headers: Record<string, string>): string =>
  `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`

t.test('half-sent requests are cut at limits.*, unauthenticated OAuth routes included', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    limits: LIMITS,
    auth: { users: [{ username: 'alice', passwordHash }] },
    servers: [{ name: 'alpha', transport: 'http', url: upstream.url }],
  })
  const port = Number(new URL(gw.baseUrl).port)
  const form = { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '200' }
  const json = { 'content-type': 'application/json', 'content-length': '200' }
  const cases: Array<[string, string, number]> = [
    ['/oauth/token, half a body', `${request('/oauth/token', form)}grant_type=authorization_code&co`, LIMITS.bodyTimeoutMs],
    ['/oauth/register, half a body', `${request('/oauth/register', json)}{"redirect_uris":["http://127.0.0.1/cb"`, LIMITS.bodyTimeoutMs],
    ['/oauth/token, chunked, never ending', `${request('/oauth/token', { 'content-type': 'application/x-www-form-urlencoded', 'transfer-encoding': 'chunked' })}5\r\ngrant\r\n`, LIMITS.bodyTimeoutMs],
    ['an MCP POST, half a body', `${request('/alpha/mcp', { ...json, accept: 'application/json, text/event-stream' })}{"jsonrpc":"2.0",`, LIMITS.bodyTimeoutMs],
    ['half the headers', 'POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty', LIMITS.headersTimeoutMs],
    ['a connection that sends nothing', '', LIMITS.headersTimeoutMs],
  ]
  const outcomes = await Promise.all(cases.map(async ([, data]) => stall(port, data)))
  cases.forEach(([label, , deadlineMs], i) => {
    const outcome = outcomes[i]
    t.ok(outcome !== undefined, `${label}: the gateway closed the connection`)
    if (outcome === undefined) return
    t.ok(outcome.closedAfterMs >= deadlineMs - 50, `${label}: not before its deadline (${outcome.closedAfterMs} ms)`)
    t.ok(outcome.closedAfterMs < deadlineMs + 1500, `${label}: soon after it (${outcome.closedAfterMs} ms)`)
    // (The MCP POST is answered 401 at once, before its body: the 408 follows it.)
    if (cases[i]?.[1] !== '') t.match(outcome.received, /HTTP\/1\.1 408 Request Timeout/, `${label}: answered 408 Request Timeout`)
  })
})

t.test('an idle keep-alive connection is closed after limits.keepAliveTimeoutMs', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { limits: LIMITS, servers: [{ name: 'alpha', transport: 'http', url: upstream.url }] })
  const outcome = await stall(Number(new URL(gw.baseUrl).port), 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  t.ok(outcome !== undefined, 'closed')
  t.match(outcome?.received, /^HTTP\/1\.1 200 /, 'after answering the request')
  t.ok((outcome?.closedAfterMs ?? 0) >= LIMITS.keepAliveTimeoutMs - 50, `not before the keep-alive timeout (${outcome?.closedAfterMs ?? 0} ms)`)
})

t.test('MCP streams and long answers in progress outlive every timeout', async (t) => {
  const upstream = await startUpstream(t)
  // Keep-alive stays long here: the SDK client reuses its connections between requests.
  const gw = await startGateway(t, { limits: { ...LIMITS, keepAliveTimeoutMs: 10_000 }, servers: [{ name: 'alpha', transport: 'http', url: upstream.url }] })
  const { client } = await connectClient(t, gw.mcpUrl('alpha'))
  const notified = new Promise<string>((resolve) => {
    client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => resolve(n.method))
  })
  const slowMs = LIMITS.bodyTimeoutMs * 2
  const answer = await client.callTool({ name: 'slow', arguments: { ms: slowMs } })
  t.equal(textOf(answer), `slept ${slowMs}`, 'an answer that takes twice bodyTimeoutMs arrives')
  await client.callTool({ name: 'broadcast', arguments: {} })
  const outcome = await within(notified, 5000, 'no notification within 5 s')
  t.equal(outcome, 'notifications/tools/list_changed', 'the GET stream, open all along, still delivers')
  t.equal(upstream.seen.filter((r) => r.method === 'GET').length, 1, 'the one GET stream stayed open: the client never had to reconnect')
})

t.test('limits.* are checked at start', async (t) => {
  const upstream = await startUpstream(t)
  await t.rejects(startGateway(t, { limits: { headersTimeoutMs: 5000, bodyTimeoutMs: 1000 }, servers: [{ name: 'alpha', transport: 'http', url: upstream.url }] }), /headersTimeoutMs/)
})
