// MCP-Protocol-Version on the stdio bridge's 2025-era requests (MCP 2025-11-25 basic/transports,
// "Protocol Version Header"): an unknown or invalid value is 400; a known one or none passes.
import t from 'tap'
import { request as httpRequest } from 'node:http'
import { INIT_BODY, postJson, startGateway, stdioServer } from '../helpers.js'

const UNSUPPORTED = {
  code: -32600,
  message: "Bad Request: unsupported MCP-Protocol-Version: '2099-01-01'; supported: 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28",
  data: { code: 'PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION' },
}

function send (url: string, method: string, headers: Record<string, string>): Promise<{ status: number, text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: { accept: 'application/json, text/event-stream', ...headers } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
      // A GET that opened its stream is not read to the end.
      if (res.headers['content-type'] === 'text/event-stream') { res.destroy(); resolve({ status: res.statusCode ?? 0, text: '' }) }
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('stdio session: an unsupported MCP-Protocol-Version is 400 on POST, GET and DELETE; known ones and none pass', async (t) => {
  const gw = await startGateway(t, { servers: [stdioServer('local')] })
  const url = gw.mcpUrl('local')
  const init = await postJson(url, INIT_BODY)
  t.equal(init.status, 200)
  const session = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '' }

  const ping = { jsonrpc: '2.0', id: 'p', method: 'ping' }
  // A later revision than the gateway knows: its header rules apply first (Mcp-Method mirrors the body).
  const bad = await postJson(url, ping, { ...session, 'mcp-protocol-version': '2099-01-01', 'mcp-method': 'ping' })
  t.equal(bad.status, 400)
  t.same(bad.json, { jsonrpc: '2.0', id: 'p', error: UNSUPPORTED }, 'the request id is echoed, the supported revisions listed')
  const unmirrored = await postJson(url, ping, { ...session, 'mcp-protocol-version': '2099-01-01' })
  t.equal(unmirrored.status, 400, 'without Mcp-Method it is the header mismatch of modern revisions, still a 400')
  const older = await postJson(url, ping, { ...session, 'mcp-protocol-version': '2025-01-01' })
  t.equal(older.status, 400, 'a date that is no revision')
  t.match(older.json, { id: 'p', error: { message: /'2025-01-01'/, data: { code: 'PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION' } } })
  const junk = await postJson(url, ping, { ...session, 'mcp-protocol-version': 'latest' })
  t.equal(junk.status, 400, 'a value that is no revision at all')
  t.match(junk.json, { id: 'p', error: { data: { code: 'PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION' } } })

  for (const version of ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25']) {
    const ok = await postJson(url, ping, { ...session, 'mcp-protocol-version': version })
    t.equal(ok.status, 200, `${version} is known`)
  }
  t.equal((await postJson(url, ping, session)).status, 200, 'no header: 2025-03-26 is assumed')

  t.equal((await send(url, 'GET', { ...session, 'mcp-protocol-version': '2025-01-01' })).status, 400, 'GET stream')
  t.equal((await send(url, 'GET', { ...session, 'mcp-protocol-version': '2025-11-25' })).status, 200)
  t.equal((await postJson(url, { ...INIT_BODY, id: 'i' }, { 'mcp-protocol-version': '2025-01-01' })).status, 400, 'initialize')
  const del = await send(url, 'DELETE', { ...session, 'mcp-protocol-version': '2025-01-01' })
  t.equal(del.status, 400, 'DELETE')
  t.equal((await postJson(url, ping, { ...session, 'mcp-protocol-version': '2025-11-25' })).status, 200, 'the refused DELETE ended nothing')
  t.equal((await send(url, 'DELETE', { ...session, 'mcp-protocol-version': '2025-11-25' })).status, 200)
})
