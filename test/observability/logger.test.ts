import t from 'tap'
import { createLogger, maskSecrets, redactUrl, resolveLogFormat } from '../../src/observability/logger.js'
import { connectClient, freePort, logSink, postJson, startGateway, startUpstream } from '../helpers.js'

const SECRET = 'S3CRET-VALUE-never-log-me'

t.test('sensitive fields are redacted at any depth we log', async (t) => {
  const sink = logSink()
  const log = createLogger('info', sink.stream)
  log.info({ authorization: `Bearer ${SECRET}`, password: SECRET }, 'top level')
  log.info({ headers: { authorization: `Bearer ${SECRET}`, cookie: `sid=${SECRET}`, 'set-cookie': SECRET, 'x-api-key': SECRET } }, 'headers')
  log.info({ body: { client_secret: SECRET, refresh_token: SECRET, access_token: SECRET, code_verifier: SECRET } }, 'oauth')
  log.info({ req: { headers: { Authorization: SECRET } }, deep: { a: { b: { password: SECRET, token: SECRET } } } }, 'deep')
  log.info({ err: { code: 'ECONNREFUSED', message: 'connect refused' } }, 'error codes are kept')
  log.info({ list: [{ TOKEN: SECRET }, { nested: { 'X-API-KEY': SECRET, Cookie: SECRET } }] }, 'any case, inside arrays')
  t.equal(sink.lines.length, 6)
  t.notMatch(sink.text(), SECRET)
  t.match(sink.text(), /\[redacted\]/)
  t.match(sink.lines[4], /"code":"ECONNREFUSED"/, 'err.code is not mistaken for an OAuth code')
})

t.test('the pretty format (pino-pretty) is redacted the same: readable lines, no secret', async (t) => {
  const sink = logSink()
  const log = createLogger('info', sink.stream, 'pretty')
  log.info({ authorization: `Bearer ${SECRET}`, password: SECRET }, 'top level')
  log.info({ headers: { Authorization: `Bearer ${SECRET}`, cookie: `sid=${SECRET}` } }, 'headers')
  log.info({ body: { client_secret: SECRET, refresh_token: SECRET }, list: [{ TOKEN: SECRET }] }, 'oauth')
  log.info({ req: { url: `/a/mcp?access_token=${SECRET}` }, deep: { a: { b: { password: SECRET } } } }, 'deep')
  log.warn({ server: 'fx' }, 'plain data stays')
  const text = sink.text()
  t.match(text, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: top level$/m, 'a readable line: time, level, message')
  t.match(text, /WARN: plain data stays\n\s+server: "fx"/, 'data follows on its own lines')
  t.notMatch(text, /^\{"level"/m, 'not JSON')
  t.notOk(text.includes('\u001b['), 'no colour codes into a stream that is not a terminal')
  t.notMatch(text, SECRET)
  t.ok((text.match(/\[redacted\]/g) ?? []).length >= 8, 'every sensitive field is masked')
  t.match(text, /"url": "\/a\/mcp\?access_token=%5Bredacted%5D"/, 'request URLs masked too')
})

t.test('log.format unset: pretty on a terminal, JSON otherwise; set, it wins', async (t) => {
  t.equal(resolveLogFormat(undefined, true), 'pretty')
  t.equal(resolveLogFormat(undefined, false), 'json')
  t.equal(resolveLogFormat('json', true), 'json')
  t.equal(resolveLogFormat('pretty', false), 'pretty')
})

t.test('masking copies only what changes and leaves the caller\'s object alone', async (t) => {
  const original = { a: 1, nested: { password: 'x', keep: 'y' }, other: { z: 2 } }
  const masked = maskSecrets(original) as typeof original
  t.same(masked, { a: 1, nested: { password: '[redacted]', keep: 'y' }, other: { z: 2 } })
  t.equal(original.nested.password, 'x', 'the logged object is not modified')
  t.equal(masked.other, original.other, 'untouched branches are shared, not copied')
  const clean = { a: 1, b: { c: [1, 2] } }
  t.equal(maskSecrets(clean), clean, 'nothing to mask: the same object')
})

t.test('credential query parameters are masked in URLs', async (t) => {
  t.equal(redactUrl('/a/mcp?access_token=abc&x=1'), '/a/mcp?access_token=%5Bredacted%5D&x=1')
  t.equal(redactUrl('/cb?code=abc&state=xyz'), '/cb?code=%5Bredacted%5D&state=%5Bredacted%5D')
  t.equal(redactUrl('/plain'), '/plain')
})

for (const format of ['json', 'pretty'] as const) {
  t.test(`no token, cookie or secret reaches the gateway log, whatever the request does (log.format: ${format})`, async (t) => {
    const upstream = await startUpstream(t)
    const port = await freePort()
    const gw = await startGateway(t, {
      log: { level: 'trace', requests: true, format },
      servers: [
        { name: 'fx', transport: 'http', url: upstream.url, headers: { Authorization: 'Bearer ${UPSTREAM_KEY}' } },
        { name: 'down', transport: 'http', url: `http://127.0.0.1:${port}/mcp`, headers: { 'X-Api-Key': '${UPSTREAM_KEY}' } },
      ],
    }, { UPSTREAM_KEY: SECRET })
    const headers = { authorization: `Bearer ${SECRET}`, cookie: `session=${SECRET}` }
    const { client } = await connectClient(t, gw.mcpUrl('fx'), { headers })
    await client.callTool({ name: 'echo', arguments: { text: 'hello' } })
    await postJson(`${gw.mcpUrl('fx')}?access_token=${SECRET}`, '{broken', headers)
    await postJson(gw.mcpUrl('down'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, headers)
    await postJson(gw.mcpUrl('fx'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { ...headers, origin: 'http://evil.example' })
    t.ok(gw.logs.lines.length > 5, `the log was written (${gw.logs.lines.length} lines)`)
    t.match(gw.logs.text(), format === 'json' ? /"msg":"request completed"/ : /INFO: request completed/, 'request logging was on, in this format')
    t.match(gw.logs.text(), /access_token=%5Bredacted%5D/)
    t.notMatch(gw.logs.text(), SECRET)
  })
}
