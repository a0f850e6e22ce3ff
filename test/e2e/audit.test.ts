// The audit trail: one record per MCP request that reaches policy, field by field, in its own
// stream; arguments and results only when asked; never a token.
import t from 'tap'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { hashPassword } from '../../src/auth-server/password.js'
import { connectWithOAuth } from '../oauth-helpers.js'
import { eventually, MCP_HEADERS, startGateway, startUpstream, textOf } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)

type Record_ = Record<string, unknown>
const records = (lines: string[]): Record_[] => lines.map((l) => JSON.parse(l) as Record_)

t.test('allowed, denied and rate-limited calls, each recorded with who, what, why and how it ended', async (t) => {
  const upstream = await startUpstream(t, { jsonResponse: true })
  const gw = await startGateway(t, {
    log: { level: 'trace', requests: true },
    auth: { users: [{ username: 'alice', passwordHash, groups: ['eng'] }] },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['big'], echo: { rateLimit: '1/min' } } }],
  })
  const alice = await connectWithOAuth(t, gw.mcpUrl('fx'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl })
  const token = alice.oauth.savedTokens?.access_token ?? ''
  const sub = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { sub: string }
  const clientId = alice.oauth.info?.client_id
  t.equal(textOf(await alice.client.callTool({ name: 'echo', arguments: { text: 'secret argument' } })), 'secret argument')
  await alice.client.callTool({ name: 'big', arguments: { bytes: 1 } }).catch(() => {})
  await alice.client.callTool({ name: 'echo', arguments: { text: 'again' } }).catch(() => {})
  // Each record is written when its response closes.
  await eventually(() => records(gw.audit.lines).filter((r) => r.method === 'tools/call').length >= 3)

  const calls = records(gw.audit.lines).filter((r) => r.method === 'tools/call')
  t.equal(calls.length, 3)
  const [allowed, denied, limited] = calls
  const common = { type: 'mcp_audit', event: 'mcp_request', server: 'fx', transport: 'http', method: 'tools/call', user: { sub: sub.sub, username: 'alice' }, clientId, ip: '127.0.0.1' }
  t.match(allowed, { ...common, target: { kind: 'tool', name: 'echo' }, decision: 'allowed', status: 200, outcome: 'answered' })
  t.type(allowed?.time, 'number')
  t.type(allowed?.requestId, 'string')
  t.type(allowed?.jsonrpcId, 'number')
  t.ok(typeof allowed?.latencyMs === 'number' && allowed.latencyMs >= 0, 'latency recorded')
  t.notOk('reason' in (allowed ?? {}), 'no reason when allowed')
  t.match(denied, { ...common, target: { kind: 'tool', name: 'big' }, decision: 'denied', reason: 'tool "big" is denied by tools.deny "big" of server "fx"', status: 403 })
  t.match(limited, { ...common, target: { kind: 'tool', name: 'echo' }, decision: 'rate_limited', reason: 'user-tool', status: 429 })
  t.notOk('outcome' in (denied ?? {}) || 'outcome' in (limited ?? {}), 'a refusal has its decision, no outcome')
  for (const record of calls) {
    t.notOk('arguments' in record, 'no arguments by default')
    t.notOk('result' in record, 'no results by default')
  }
  t.ok(records(gw.audit.lines).some((r) => r.method === 'initialize' && r.decision === 'allowed'), 'the handshake is recorded too')
  t.notOk(records(gw.audit.lines).some((r) => String(r.method).startsWith('notifications/')), 'notifications are not requests')

  const everything = `${gw.logs.text()}\n${gw.audit.text()}`
  t.ok(token.length > 100)
  t.notOk(everything.includes(token), 'the bearer token appears in no log')
  t.notOk(everything.includes(token.split('.')[2] ?? '-'), 'not even its signature')
  t.notOk(everything.includes('secret argument'), 'tool arguments are not logged by default')
  t.notMatch(gw.logs.text(), /mcp_request/, 'audit records stay out of the operational log')
})

t.test('arguments and results only when the debug options say so', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    audit: { includeArguments: true, includeResults: true },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  const { connectClient } = await import('../helpers.js')
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  await client.callTool({ name: 'echo', arguments: { text: 'visible when debugging' } })
  await eventually(() => records(gw.audit.lines).some((r) => r.method === 'tools/call'))
  const call = records(gw.audit.lines).find((r) => r.method === 'tools/call')
  t.same(call?.arguments, { text: 'visible when debugging' })
  t.equal(call?.result, '{"content":[{"type":"text","text":"visible when debugging"}]}', 'the result, as the client got it (an SSE answer parsed)')
  t.equal(call?.user, null, 'no user when authorization is off')
})

t.test('by default the trail goes to its own file in the data directory', async (t) => {
  const upstream = await startUpstream(t)
  const dataDir = t.testdir({})
  const { buildApp } = await import('../../src/app.js')
  const { makeConfig, freePort } = await import('../helpers.js')
  const { createLogger } = await import('../../src/observability/logger.js')
  const port = await freePort()
  const config = makeConfig({ publicUrl: `http://127.0.0.1:${port}`, listen: { port }, dataDir, store: { memory: true }, auth: { enabled: false }, servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  t.equal(config.audit.destination, join(dataDir, 'audit.log'))
  const app = await buildApp(config, { logger: createLogger('silent') })
  await app.listen({ host: '127.0.0.1', port })
  const res = await fetch(`http://127.0.0.1:${port}/fx/mcp`, { method: 'POST', headers: MCP_HEADERS, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }) })
  await res.text()
  await app.close()
  const file = join(dataDir, 'audit.log')
  t.ok(statSync(file).size > 0)
  const line = JSON.parse(readFileSync(file, 'utf8').trim().split('\n')[0] ?? '{}') as Record_
  t.match(line, { type: 'mcp_audit', server: 'fx', method: 'initialize', decision: 'allowed', status: 200 })
})

t.test('an allowed call says how it ended: answered, cancelled (by notifications/cancelled or by leaving) or failed', async (t) => {
  const { connectClient, stdioServer } = await import('../helpers.js')
  const gw = await startGateway(t, { servers: [stdioServer('st')] })
  const { client, transport } = await connectClient(t, gw.mcpUrl('st'))
  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'hi' } })), 'hi')

  // The client cancels: the stream already open (progress 0 was sent on it) ends without an answer.
  const abort = new AbortController()
  const cancelled = await client.callTool({ name: 'wait-for-cancel', arguments: {} }, undefined, { signal: abort.signal, onprogress: () => { abort.abort('changed my mind') } }).then(() => 'completed', () => 'rejected')
  t.equal(cancelled, 'rejected')

  // The client leaves mid-call.
  const leaving = new AbortController()
  const headers = { ...MCP_HEADERS, 'mcp-session-id': transport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25' }
  const left = fetch(gw.mcpUrl('st'), { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 'left', method: 'tools/call', params: { name: 'slow', arguments: { ms: 3000 } } }), signal: leaving.signal })
  setTimeout(() => { leaving.abort() }, 200)
  await left.then(async (res) => await res.text()).catch(() => {})

  // The upstream dies mid-call: the gateway answers for it.
  await client.callTool({ name: 'crash', arguments: {} }).catch(() => {})

  const ofTool = (name: string): Record_ | undefined => records(gw.audit.lines).find((r) => r.method === 'tools/call' && (r.target as { name: string }).name === name)
  t.ok(await eventually(() => ['echo', 'wait-for-cancel', 'slow', 'crash'].every((name) => ofTool(name) !== undefined)), 'every call recorded')
  t.match(ofTool('echo'), { decision: 'allowed', status: 200, outcome: 'answered' })
  t.match(ofTool('wait-for-cancel'), { decision: 'allowed', status: 200, outcome: 'cancelled' }, 'a 200 stream that ended without the answer')
  t.match(ofTool('slow'), { decision: 'allowed', jsonrpcId: 'left', outcome: 'cancelled' })
  t.match(ofTool('crash'), { decision: 'allowed', outcome: 'failed' })
  t.notOk(records(gw.audit.lines).some((r) => r.jsonrpcId === null && 'outcome' in r), 'notifications carry no outcome')
})
