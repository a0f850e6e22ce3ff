// Forms of an HTTP upstream's answer that MCP clients read: each must be edited (masked, listed
// by policy) like the plain form, or refused, never passed unedited. The official SDK client is
// the reader: what it accepts is what reaches a model.
import t from 'tap'
import type { Test } from 'tap'
import { gzipSync } from 'node:zlib'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connectClient, eventually, INIT_BODY, postJson, startGateway, startRawServer, textOf, type RunningGateway } from '../helpers.js'
import { FAKE } from '../fixtures/fake-secrets.mjs'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { messagesOf, session } from '../redaction-helpers.js'

interface Form {
  /** The answer's Content-Type. */
  readonly type?: string
  /** Gzip the answer (Content-Encoding: gzip). */
  readonly isGzipped?: boolean
  /** The id the answer carries, from the request's. */
  readonly id?: (id: unknown) => unknown
  /** An event stream rather than one JSON body. */
  readonly isSse?: boolean
}

function readBody (req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
  })
}

/** A 2025-era server whose tools/call and tools/list answers take the given form; everything else is plain. */
function formServer (form: Form, seen: { acceptEncoding: Array<string | undefined> }): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (req.method !== 'POST') return void res.writeHead(405).end()
    void readBody(req).then((text) => {
      const body = JSON.parse(text) as { id?: unknown, method: string }
      if (body.id === undefined) return void res.writeHead(202).end()
      if (body.method === 'initialize') {
        res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'form-1' })
        res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'form', version: '1' } } }))
        return
      }
      seen.acceptEncoding.push(req.headers['accept-encoding'])
      const result = body.method === 'tools/list'
        ? { tools: [{ name: 'open', inputSchema: { type: 'object' } }, { name: 'secret_tool', inputSchema: { type: 'object' } }] }
        : { content: [{ type: 'text', text: `your token is ${FAKE.github}` }] }
      const message = JSON.stringify({ jsonrpc: '2.0', id: form.id?.(body.id) ?? body.id, result })
      const isSse = form.isSse === true
      const payload = Buffer.from(isSse ? `event: message\ndata: ${message}\n\n` : message)
      res.writeHead(200, {
        'content-type': form.type ?? (isSse ? 'text/event-stream' : 'application/json'),
        ...(form.isGzipped === true ? { 'content-encoding': 'gzip' } : {}),
      })
      res.end(form.isGzipped === true ? gzipSync(payload) : payload)
    })
  }
}

const SERVER = { redactResults: ['github-tokens'], tools: { deny: ['secret_tool'] } }

async function clientFor (t: Test, form: Form, server: Record<string, unknown> = SERVER): Promise<{ client: Awaited<ReturnType<typeof connectClient>>['client'], seen: { acceptEncoding: Array<string | undefined> }, gw: RunningGateway }> {
  const seen = { acceptEncoding: [] as Array<string | undefined> }
  const upstream = await startRawServer(t, formServer(form, seen))
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, ...server }] })
  const { client } = await connectClient(t, gw.mcpUrl('fx'))
  return { client, seen, gw }
}

/** What the client got: the text of the call and the tool names listed; or the error each raised. */
async function readBoth (client: Awaited<ReturnType<typeof connectClient>>['client']): Promise<{ call: string, tools: string }> {
  const call = await client.callTool({ name: 'open', arguments: {} }).then((r) => textOf(r), (err: Error) => `error: ${err.message}`)
  const tools = await client.listTools().then((r) => r.tools.map((tool) => tool.name).join(','), (err: Error) => `error: ${err.message}`)
  return { call, tools }
}

t.test('a Content-Type in capitals (media types are case-insensitive, RFC 9110 8.3.1): edited', async (t) => {
  for (const form of [{ type: 'Text/Event-Stream', isSse: true }, { type: 'Application/JSON' }]) {
    const { client } = await clientFor(t, form)
    const { call, tools } = await readBoth(client)
    t.notOk(call.includes(FAKE.github), `${form.type}: the token did not reach the client (${call})`)
    t.match(call, /\[redacted:github-tokens\]/, `${form.type}: masked`)
    t.equal(tools, 'open', `${form.type}: the denied tool is not listed`)
  }
})

t.test('a gzip-encoded answer (Content-Encoding, which clients decode): edited, or refused, never passed unedited', async (t) => {
  for (const form of [{ isGzipped: true }, { isGzipped: true, isSse: true }]) {
    const name = form.isSse === true ? 'SSE' : 'JSON'
    const { client, seen, gw } = await clientFor(t, form)
    const { call, tools } = await readBoth(client)
    t.notOk(call.includes(FAKE.github), `${name}: the token did not reach the client (${call})`)
    t.notOk(tools.includes('secret_tool'), `${name}: the denied tool is not listed (${tools})`)
    // Without Accept-Encoding any coding is acceptable (RFC 9110 12.5.3): the gateway asks for none.
    t.same(seen.acceptEncoding, ['identity', 'identity'], `${name}: the upstream was asked for an unencoded answer`)
    t.match(gw.logs.text(), /PORTCULLIS_UPSTREAM_ENCODED/, `${name}: the refusal is logged with its reason`)
  }
  // Nothing to edit: the coded answer passes as it came, and the client decodes it.
  const { client, seen } = await clientFor(t, { isGzipped: true }, {})
  t.equal(textOf(await client.callTool({ name: 'open', arguments: {} })), `your token is ${FAKE.github}`, 'no edit: the gzip answer passes')
  t.same(seen.acceptEncoding, [undefined], 'no edit: no Accept-Encoding added')
})

t.test('an answer whose id is the request\'s written another way (1 as "1"), which the SDK client matches: edited', async (t) => {
  for (const form of [{ id: (id: unknown) => String(id) }, { id: (id: unknown) => String(id), isSse: true }, { id: (id: unknown) => `${String(id)}.0` }]) {
    const name = `${form.isSse === true ? 'SSE' : 'JSON'} ${JSON.stringify(form.id(1))}`
    const { client } = await clientFor(t, form)
    const { call, tools } = await readBoth(client)
    t.notOk(call.includes(FAKE.github), `${name}: the token did not reach the client (${call})`)
    t.notOk(tools.includes('secret_tool'), `${name}: the denied tool is not listed (${tools})`)
  }
})

t.test('an upstream\'s own CORS headers do not replace the gateway\'s for an allowed Origin', async (t) => {
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then((text) => {
      const body = JSON.parse(text) as { id: unknown }
      // As an SDK server with cors({ origin: '*', exposedHeaders: ['Mcp-Session-Id'], credentials: true }) answers.
      res.writeHead(200, {
        'content-type': 'application/json',
        'mcp-session-id': 'cors-1',
        'access-control-allow-origin': 'https://upstream.example',
        'access-control-expose-headers': 'Mcp-Session-Id',
        'access-control-allow-credentials': 'true',
      })
      res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: 'cors', version: '1' } } }))
    })
  })
  const gw = await startGateway(t, { allowedOrigins: ['https://app.example'], servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const res = await postJson(gw.mcpUrl('fx'), INIT_BODY, { origin: 'https://app.example' })
  t.equal(res.status, 200)
  t.equal(res.headers.get('access-control-allow-origin'), 'https://app.example', 'the gateway\'s answer to the Origin it allowed')
  t.match(res.headers.get('access-control-expose-headers'), /retry-after/, 'the gateway\'s list of readable headers')
  t.equal(res.headers.get('access-control-allow-credentials'), null, 'no credentials mode the gateway never offered')
})

t.test('a Content-Type in capitals through a virtual server and the 2024-11-05 routes: read as the event stream it is', async (t) => {
  // The virtual route and the legacy routes read the member's answer themselves: a stream they
  // took for one JSON body failed the call, though the member's own URL served it.
  const seen = { acceptEncoding: [] as Array<string | undefined> }
  const upstream = await startRawServer(t, formServer({ type: 'Text/Event-Stream', isSse: true }, seen))
  const gw = await startGateway(t, {
    servers: [{ name: 'fx', transport: 'http', url: upstream.url, ...SERVER }],
    virtualServers: [{ name: 'work', prefix: 'always', members: ['fx'] }],
  })
  const { client } = await connectClient(t, gw.mcpUrl('work'))
  const listed = await client.listTools().then((r) => r.tools.map((tool) => tool.name).join(','), (err: Error) => `error: ${err.message}`)
  t.equal(listed, 'fx__open', 'the member\'s tools are listed, the denied one not')
  const call = await client.callTool({ name: 'fx__open', arguments: {} }).then((r) => textOf(r), (err: Error) => `error: ${err.message}`)
  t.equal(call, 'your token is [redacted:github-tokens]', 'the call is answered, masked')

  const legacy = new Client({ name: 'legacy', version: '1' })
  await legacy.connect(new SSEClientTransport(new URL(`${gw.baseUrl}/fx/sse`)))
  t.teardown(async () => { await legacy.close() })
  const old = await legacy.callTool({ name: 'open', arguments: {} }).then((r) => textOf(r), (err: Error) => `error: ${err.message}`)
  t.equal(old, 'your token is [redacted:github-tokens]', '2024-11-05 client: answered, masked')
})

t.test('an answer to edit larger than servers[].maxMessageBytes is refused, not held without bound or passed unedited', async (t) => {
  // A token at the end of 2 MB of text, as JSON or as one SSE event.
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then((text) => {
      const body = JSON.parse(text) as { id?: unknown, method: string, params?: { arguments?: { sse?: boolean } } }
      if (body.id === undefined) return void res.writeHead(202).end()
      if (body.method === 'initialize') {
        res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'big-1' })
        res.end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: 'big', version: '1' } } }))
        return
      }
      const message = JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { content: [{ type: 'text', text: `${'a'.repeat(2 * 1024 * 1024)} ${FAKE.github}` }] } })
      const isSse = body.params?.arguments?.sse === true
      res.writeHead(200, { 'content-type': isSse ? 'text/event-stream' : 'application/json' })
      res.end(isSse ? `event: message\ndata: ${message}\n\n` : message)
    })
  })
  const gw = await startGateway(t, {
    servers: [
      { name: 'fx', transport: 'http', url: upstream.url, redactResults: ['github-tokens'], maxMessageBytes: '1mb' },
      { name: 'plain', transport: 'http', url: upstream.url, maxMessageBytes: '1mb' },
    ],
  })
  const call = (sse: boolean): unknown => ({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'big', arguments: { sse } } })
  const headers = await session(gw.mcpUrl('fx'))
  const json = await postJson(gw.mcpUrl('fx'), call(false), headers)
  t.equal(json.status, 502, 'JSON: refused')
  t.match(json.json, { id: 7, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  const sse = await postJson(gw.mcpUrl('fx'), call(true), headers)
  t.notOk(sse.text.includes(FAKE.github), 'SSE: the token did not reach the client')
  t.match(messagesOf(sse), [{ id: 7, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } }], 'SSE: the request is answered with an error, the stream ended')
  t.equal(gw.logs.text().match(/PORTCULLIS_UPSTREAM_TOO_LARGE/g)?.length, 2, 'both logged with their reason')
  // Nothing to edit: streamed as it comes, whatever its size.
  const plain = await postJson(gw.mcpUrl('plain'), call(false), await session(gw.mcpUrl('plain')))
  t.equal(plain.status, 200)
  t.ok(plain.text.endsWith(`${FAKE.github}"}]}}`), 'no edit: the whole answer passes')
})

t.test('an upstream\'s redirect is not passed on: the client is not sent past the gateway to the upstream\'s address', async (t) => {
  // As a Starlette server mounted at /mcp/ answers POST /mcp (redirect_slashes).
  const upstream = await startRawServer(t, (req, res) => {
    void readBody(req).then(() => {
      res.writeHead(307, { location: `http://${req.headers.host ?? ''}/mcp/` })
      res.end()
    })
  })
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url }] })
  const res = await fetch(gw.mcpUrl('fx'), { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify(INIT_BODY) })
  t.equal(res.headers.get('location'), null, 'the upstream\'s address is not handed to the client')
  t.equal(res.status, 502)
  t.match(await res.json(), { id: 1, error: { data: { code: 'PORTCULLIS_ERR_UPSTREAM_UNAVAILABLE' } } })
  t.ok(await eventually(() => gw.logs.text().includes('PORTCULLIS_UPSTREAM_REDIRECTED')), 'logged with its reason')
  t.match(gw.logs.text(), `answered 307 to ${upstream.url}/`, 'the log names where the upstream pointed, for the operator to correct servers[].url')
})
