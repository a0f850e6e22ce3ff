import t from 'tap'
import { pino } from 'pino'
import { loggerOptions } from '../../src/observability/logger.js'
import { createAuditLog, mcpRequestLine, type AuditEntry } from '../../src/observability/audit.js'
import { logSink } from '../helpers.js'

const SECRET = 'S3CRET-VALUE-never-log-me'
const quiet = { error: () => {}, info: () => {} }
const config = { enabled: true, destination: 'stdout', includeArguments: true, includeResults: true }

/** Entries of every shape an MCP request's record takes (README "Audit log"). */
const ENTRIES: AuditEntry[] = [
  { requestId: 'req-1', server: 'echo', transport: 'http', method: 'tools/call', jsonrpcId: 7, target: { kind: 'tool', name: 'echo' }, user: { sub: 'u-1', username: 'alice' }, clientId: 'cli', ip: '127.0.0.1', decision: 'allowed', status: 200, latencyMs: 3.2 },
  { requestId: 'req-2', server: 'echo', transport: 'stdio', method: 'initialize', jsonrpcId: null, user: null, clientId: null, ip: '::1', decision: 'denied', reason: 'rule "deny: [delete_*]"', status: 403, latencyMs: 0 },
  { requestId: 'req-3', server: 'e"cho', transport: 'http', method: 'tools/call', jsonrpcId: 'a "quoted" \\ id\n\u0001 é ✓', target: { kind: 'tool', name: 'na\tme' }, user: { sub: 'client:bench', username: 'bench' }, clientId: 'bench', keyId: 'k_123', ip: '10.0.0.1', decision: 'rate_limited', reason: 'user-tool', status: 429, latencyMs: 12.5 },
  { requestId: 'req-4', server: 'echo', transport: 'http', method: 'resources/read', jsonrpcId: 1, target: undefined, user: null, clientId: null, ip: '127.0.0.1', decision: 'allowed', status: 200, latencyMs: Number.NaN },
]

t.test('an MCP request\'s record is the line pino writes for it, byte for byte', async (t) => {
  for (const entry of ENTRIES) {
    let viaPino = ''
    const logger = pino({ ...loggerOptions('info'), base: { type: 'mcp_audit' }, messageKey: 'event', timestamp: () => ',"time":1234' }, { write: (s: string) => { viaPino = s } })
    logger.info(entry, 'mcp_request')
    const line = mcpRequestLine(entry, 1234)
    t.ok(line, 'written without pino')
    t.equal(line, viaPino)
  }
})

t.test('records written either way reach the destination in order, one JSON line each', async (t) => {
  const sink = logSink()
  const audit = createAuditLog(config, quiet, sink.stream)
  const [a, b] = ENTRIES as [AuditEntry, AuditEntry]
  audit?.record(a)
  audit?.record({ ...b, arguments: { q: 'x' } })
  audit?.record(b)
  await audit?.close()
  t.same(sink.lines.map((l) => JSON.parse(l).requestId), ['req-1', 'req-2', 'req-2'])
  t.same(sink.lines.map((l) => JSON.parse(l).event), ['mcp_request', 'mcp_request', 'mcp_request'])
  t.same(JSON.parse(sink.lines[1] ?? '').arguments, { q: 'x' })
})

t.test('records carrying arguments, results or redaction counts keep pino\'s masking', async (t) => {
  const [entry] = ENTRIES as [AuditEntry]
  t.equal(mcpRequestLine({ ...entry, arguments: { password: SECRET } }, 1), undefined)
  t.equal(mcpRequestLine({ ...entry, result: SECRET }, 1), undefined)
  t.equal(mcpRequestLine({ ...entry, redacted: { token: 1 } }, 1), undefined)
  const sink = logSink()
  const audit = createAuditLog(config, quiet, sink.stream)
  audit?.record({ ...entry, arguments: { password: SECRET, nested: { access_token: SECRET } } })
  await audit?.close()
  t.equal(sink.lines.length, 1)
  t.notMatch(sink.text(), SECRET)
  t.match(sink.text(), /\[redacted\]/)
})
