// The headers a 2024-11-05 POST carries to the in-process /mcp request (routes/legacy-sse.ts mcpHeaders).
import t from 'tap'
import { mcpHeaders } from '../../src/routes/legacy-sse.js'
import type { LegacySession } from '../../src/routes/legacy-sessions.js'

const session = { mcpSessionId: 'mcp-1', protocolVersion: '2024-11-05' } as LegacySession

t.test('who the client is was decided on the legacy request: proxy headers and the replica header do not pass', async (t) => {
  const out = mcpHeaders({
    authorization: 'Bearer t',
    'content-type': 'application/json',
    'x-forwarded-for': '203.0.113.9',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'evil.example',
    'x-portcullis-forwarded-by': 'http://10.0.0.2:8080',
    'mcp-session-id': 'the-client-s-own',
    'x-trace': 'abc',
  }, session, 'POST')
  t.same(Object.keys(out).sort(), ['accept', 'authorization', 'content-type', 'mcp-protocol-version', 'mcp-session-id', 'x-trace'], 'only the client\'s own headers, and the session\'s')
  t.equal(out['mcp-session-id'], 'mcp-1', 'the session behind the legacy one, not the client\'s header')
  t.equal(out['mcp-protocol-version'], '2024-11-05')
})
