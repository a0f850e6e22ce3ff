// servers[].transport: sse — what the schema takes and what it refuses, with the reason.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { describeConfig } from '../../src/config/describe.js'
import { configErrorMessage } from '../config-helpers.js'

const SSE = 'servers:\n  - name: old\n    transport: sse\n    url: http://127.0.0.1:9/sse\n'

t.test('a transport: sse server gets the defaults of a remote server', async (t) => {
  const server = parseConfig(SSE, 'gw.yaml', {}).servers[0]
  if (server?.transport !== 'sse') throw new Error('not an sse server')
  t.equal(server.url, 'http://127.0.0.1:9/sse')
  t.same(server.headers, {})
  t.equal(server.timeoutMs, 60_000)
  t.equal(server.maxSessionsPerUser, 32)
  t.equal(server.maxMessageBytes, 64 * 1024 * 1024, 'maxMessageBytes: the default of a stdio server')
  t.equal(server.maxSessions, 256, 'maxSessions: 256 by default')
  t.equal(server.maxLegacySessions, 256, 'maxLegacySessions: 256 by default')
  t.match(configErrorMessage(`${SSE}    maxSessions: 0\n`), /servers\[0\]\.maxSessions: expected at least 1 session/)
  t.match(configErrorMessage('servers:\n  - {name: h, transport: http, url: "http://127.0.0.1:9/mcp", maxLegacySessions: -1}\n'), /servers\[0\]\.maxLegacySessions/)
  const sized = parseConfig(`${SSE}    maxMessageBytes: 512kb\n`, 'gw.yaml', {}).servers[0]
  t.equal(sized?.transport === 'sse' ? sized.maxMessageBytes : undefined, 512 * 1024, 'a size such as 512kb')
  t.match(configErrorMessage(`${SSE}    maxMessageBytes: lots\n`), /servers\[0\]\.maxMessageBytes: expected a size such as 4mb/)
  t.match(describeConfig(parseConfig(SSE, 'gw.yaml', {})), /upstream \(2024-11-05 HTTP\+SSE\): http:\/\/127\.0\.0\.1:9\/sse/)
})

t.test('what a 2024-11-05 upstream cannot do is refused at load, with the reason', async (t) => {
  t.match(configErrorMessage(`${SSE}    upstreamAuth: {type: oauth}\n`), /servers\[0\]\.upstreamAuth: upstreamAuth is for transport: http only: a 2024-11-05 server's event stream is opened once per session/)
  t.match(configErrorMessage(`${SSE}    forwardHeaders: [x-trace]\n`), /servers\[0\]\.forwardHeaders: forwardHeaders is for transport: http only/)
  t.match(configErrorMessage(`auth:\n  enabled: false\n${SSE}    identity: {header: x-id}\n`), /servers\[0\]\.identity: needs auth\.enabled: true/)
  t.match(configErrorMessage('servers:\n  - {name: old, transport: sse, url: "ftp://x/sse"}\n'), /servers\[0\]\.url/)
  t.match(configErrorMessage(`${SSE}    command: node\n`), /servers\[0\].*command/)
  t.match(configErrorMessage('servers:\n  - {name: a, transport: smoke-signals, url: "http://x/sse"}\n'), /expected transport: http, stdio or sse/)
})
