// transport: sse — the endpoint event's URI must be on the origin of servers[].url (sse-upstream.ts
// sameOriginPath). Tested directly: the e2e test's "elsewhere" server cannot tell a bypass that
// reaches a same-host lookalike from one that is refused, and these are the inputs parsers differ on.
import t from 'tap'
import { sameOriginPath } from '../../src/upstreams/sse-upstream.js'

const URL_ = 'http://127.0.0.1:9000/sse'

t.test('endpoints on the origin of url: their path and query', async (t) => {
  t.equal(sameOriginPath('/messages?sessionId=1', URL_), '/messages?sessionId=1', 'an absolute path')
  t.equal(sameOriginPath('messages?sessionId=1', URL_), '/messages?sessionId=1', 'a relative path')
  t.equal(sameOriginPath('  http://127.0.0.1:9000/m?x=1\n', URL_), '/m?x=1', 'an absolute URI, surrounding space trimmed')
  t.equal(sameOriginPath('HTTP://127.0.0.1:9000/m', URL_), '/m', 'the scheme in capitals is the same scheme')
  t.equal(sameOriginPath('http://LOCALHOST/m', 'http://localhost/sse'), '/m', 'the host in capitals is the same host')
  t.equal(sameOriginPath('http://gw.example:80/m', 'http://gw.example/sse'), '/m', 'the default port written out is the same port')
  t.equal(sameOriginPath('http://user:secret@127.0.0.1:9000/m', URL_), '/m', 'userinfo is not part of the origin, and is not kept')
})

t.test('endpoints anywhere else: refused', async (t) => {
  for (const [data, why] of [
    ['//evil.example/messages', 'a network-path reference (//host)'],
    ['\\\\evil.example/messages', 'backslashes (read as // for http)'],
    ['/\\evil.example/messages', 'a slash and a backslash'],
    ['http://127.0.0.1:9001/messages', 'another port'],
    ['https://127.0.0.1:9000/messages', 'another scheme'],
    ['http://localhost:9000/messages', 'another name for the same address'],
    ['http://127.0.0.1:9000@evil.example/messages', 'the origin written as userinfo'],
    ['http://evil.example#@127.0.0.1:9000/', 'the origin after a fragment'],
    ['http://[::1', 'not a URI'],
  ] as const) {
    t.equal(sameOriginPath(data, URL_), undefined, why)
  }
})
