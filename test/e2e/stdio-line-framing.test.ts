// One client message is one line at the stdio child, whatever its JSON whitespace. JSON allows a
// bare carriage return between tokens; most stdio servers' line readers (Python's TextIOWrapper in
// the MCP Python SDK, Java's readLine, .NET's ReadLine, Node's readline) end a line there. Passed
// on verbatim, such a body is several lines at the child: a message policy never judged can ride
// inside one it allowed.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { INIT_BODY, postJson, startGateway, stdioServer } from '../helpers.js'

const LINE_SERVER = new URL('../fixtures/stdio-line-server.mjs', import.meta.url).pathname
const DENIED_CALL = '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repository","arguments":{}}}'

function ran (log: string): string[] {
  return readFileSync(log, 'utf8').split('\n').filter((line) => line !== '')
}

async function openSession (url: string): Promise<string> {
  const init = await postJson(url, INIT_BODY)
  const session = init.headers.get('mcp-session-id')
  if (init.status !== 200 || session === null) throw new Error(`initialize failed: ${init.status} ${init.text}`)
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, { 'mcp-session-id': session })
  return session
}

for (const isolation of ['session', 'shared'] as const) {
  t.test(`isolation ${isolation}: a carriage return in a client's JSON cannot smuggle a denied call to the child`, async (t) => {
    const log = join(t.testdir({}), 'calls.log')
    writeFileSync(log, '')
    const gw = await startGateway(t, { servers: [stdioServer('repo', { script: LINE_SERVER, flags: [log], isolation, requestTimeoutMs: 3_000, tools: { deny: ['delete_repository'] } })] })
    const url = gw.mcpUrl('repo')
    const session = await openSession(url)
    const headers = { 'mcp-session-id': session }

    const direct = await postJson(url, JSON.parse(DENIED_CALL), headers)
    t.equal(direct.status, 403, 'the denied tool is refused when asked for plainly')

    // An allowed call whose argument, between tokens, holds the denied call on a "line" of its own.
    const request = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"x":\r${DENIED_CALL}\r}}}`
    const allowed = await postJson(url, request, headers)
    t.equal(allowed.status, 200, allowed.text)
    t.match(allowed.json, { id: 2, result: { content: [{ text: 'ran echo' }] } }, 'the allowed call reached the child whole')
    // A notification, forwarded as it came (on shared processes too), carrying the same.
    const notification = `{"jsonrpc":"2.0","method":"notifications/roots/list_changed","params":{"x":\r${DENIED_CALL}\r}}`
    t.equal((await postJson(url, notification, headers)).status, 202)
    // Something after both, answered, so the child has read everything before we look.
    t.match((await postJson(url, { jsonrpc: '2.0', id: 4, method: 'ping' }, headers)).json, { id: 4, result: {} })

    t.same(ran(log), ['echo'], 'the child ran only the allowed call')
  })
}
