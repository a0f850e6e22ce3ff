// Numbers pass a stdio process shared by several clients as they were written. On such a process
// the gateway gives each request an id of its own; re-encoding the whole parsed message to do so
// rounded every integer beyond 2^53 (a database row id, a 64-bit snowflake) and turned `1.0`
// into `1`, in tool arguments on the way in and in results on the way out: a tool called with
// one id acted on another. Isolation session has always passed the bytes through; user and
// shared, and 2026-07-28 requests, now change only the id (and progress token) they must.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { INIT_BODY, postJson, startGateway, stdioServer } from '../helpers.js'

const LINE_SERVER = new URL('../fixtures/stdio-line-server.mjs', import.meta.url).pathname
const BIG = '12345678901234567891'

for (const isolation of ['session', 'user', 'shared'] as const) {
  t.test(`isolation ${isolation}: integers beyond 2^53 and 1.0 reach the child and come back as written`, async (t) => {
    const log = join(t.testdir({}), 'calls.log')
    writeFileSync(log, '')
    const gw = await startGateway(t, { servers: [stdioServer('db', { script: LINE_SERVER, flags: [log], isolation, requestTimeoutMs: 5_000 })] })
    const url = gw.mcpUrl('db')
    const init = await postJson(url, INIT_BODY)
    const session = init.headers.get('mcp-session-id') ?? ''
    t.equal(init.status, 200, init.text)
    const headers = { 'mcp-session-id': session }
    await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)

    const call = await postJson(url, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"raw","arguments":{"row":${BIG},"ratio":1.0},"_meta":{"progressToken":"p-1"}}}`, headers)
    t.equal(call.status, 200, call.text)
    const seen = (call.json as { id?: unknown, result?: { content?: Array<{ text?: string }> } })
    t.equal(seen.id, 7, 'the client\'s own id comes back')
    const line = seen.result?.content?.[0]?.text ?? ''
    t.match(line, `"arguments":{"row":${BIG},"ratio":1.0}`, 'the child got the arguments as the client wrote them')

    const big = await postJson(url, { jsonrpc: '2.0', id: 'q', method: 'tools/call', params: { name: 'big', arguments: {} } }, headers)
    t.equal(big.status, 200, big.text)
    t.match(big.text, `"structuredContent":{"n":${BIG},"f":1.0}`, 'the client got the result as the child wrote it')
    t.equal((big.json as { id?: unknown }).id, 'q')
  })
}

t.test('2026-07-28 requests on a shared process: integers beyond 2^53 and 1.0 pass as written', async (t) => {
  const log = join(t.testdir({}), 'calls.log')
  writeFileSync(log, '')
  const gw = await startGateway(t, { servers: [stdioServer('db', { script: LINE_SERVER, flags: [log, '--modern'], isolation: 'shared', requestTimeoutMs: 5_000 })] })
  const meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":12345678901234567891}'
  const headers = (name: string): Record<string, string> => ({ 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name })
  const call = await postJson(gw.mcpUrl('db'), `{"jsonrpc":"2.0","id":${BIG},"method":"tools/call","params":{"name":"raw","arguments":{"row":${BIG},"ratio":1.0},${meta}}}`, headers('raw'))
  t.equal(call.status, 200, call.text)
  t.match(call.text, `"id":${BIG},`, 'the client\'s id comes back as it wrote it')
  const line = (call.json as { result?: { content?: Array<{ text?: string }> } }).result?.content?.[0]?.text ?? ''
  t.match(line, `"arguments":{"row":${BIG},"ratio":1.0}`, 'the child got the arguments as the client wrote them')
  t.match(line, /^\{"jsonrpc":"2\.0","id":\d{1,6},/, 'the child got the gateway\'s own id')
  t.match(line, /"progressToken":\d{1,6}\}/, 'and the gateway\'s own progress token')
  const big = await postJson(gw.mcpUrl('db'), `{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":"big","arguments":{},${meta}}}`, headers('big'))
  t.match(big.text, `"structuredContent":{"n":${BIG},"f":1.0}`, 'the client got the result as the child wrote it')
})
