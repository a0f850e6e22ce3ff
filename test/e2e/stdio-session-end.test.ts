// A session that ends while one of its requests is in flight (DELETE by its client, the admin's
// end, offboarding, the user's cap) answers that request at once with an error, whatever the
// isolation: on a process shared with other sessions the request was cancelled at the child and
// then left waiting, its POST open until the client gave up.
import t from 'tap'
import { INIT_BODY, MCP_HEADERS, postJson, startGateway, stdioServer, within } from '../helpers.js'

for (const isolation of ['session', 'user', 'shared'] as const) {
  t.test(`isolation ${isolation}: a request in flight when its session is DELETEd is answered, not left open`, async (t) => {
    const gw = await startGateway(t, { servers: [stdioServer('s', { isolation })] })
    const url = gw.mcpUrl('s')
    const init = await postJson(url, INIT_BODY)
    const headers = { 'mcp-session-id': init.headers.get('mcp-session-id') ?? '' }
    await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)
    // Answered, so the process is up and the next call goes straight to it.
    t.match((await postJson(url, { jsonrpc: '2.0', id: 1, method: 'ping' }, headers)).json, { id: 1, result: {} })

    const gaveUp = new AbortController()
    const slow = fetch(url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body: JSON.stringify({ jsonrpc: '2.0', id: 'slow', method: 'tools/call', params: { name: 'slow', arguments: { ms: 30_000 } } }), signal: gaveUp.signal })
    await new Promise((resolve) => setTimeout(resolve, 300))
    t.equal((await fetch(url, { method: 'DELETE', headers })).status, 200)

    const answered = await within(slow, 5_000, 'still open')
    if (typeof answered === 'string') {
      gaveUp.abort()
      t.fail('the request was left open after its session ended')
      return
    }
    t.equal(answered.status, 404)
    t.match(await answered.json(), { jsonrpc: '2.0', id: 'slow', error: { data: { code: 'PORTCULLIS_ERR_SESSION_NOT_FOUND' } } }, 'an error naming the session\'s end, with the request\'s id')
  })
}
