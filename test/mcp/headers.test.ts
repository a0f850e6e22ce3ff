import t from 'tap'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { checkMirroredHeaders, checkProtocolVersionHeader, decodeHeaderValue, isModernRevision } from '../../src/mcp/headers.js'
import { PortcullisError } from '../../src/errors.js'

const META = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} }
const modernCall = (name: string, id: number | string = 1): Buffer =>
  Buffer.from(JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {}, _meta: META } }))
const b64 = (s: string): string => `=?base64?${Buffer.from(s, 'utf8').toString('base64')}?=`

function check (body: Buffer, headers: Record<string, string>): PortcullisError | undefined {
  try {
    checkMirroredHeaders(inspectBody(body), headers)
    return undefined
  } catch (err) {
    if (err instanceof PortcullisError) return err
    throw err
  }
}

const GOOD = { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'echo' }

t.test('a modern request whose headers mirror the body passes', async (t) => {
  t.equal(check(modernCall('echo'), GOOD), undefined)
})

t.test('modern requests: each missing or mismatched header is -32020 with HTTP 400 and the id', async (t) => {
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['no version header', { 'mcp-method': 'tools/call', 'mcp-name': 'echo' }, /MCP-Protocol-Version header is required/],
    ['version mismatch', { ...GOOD, 'mcp-protocol-version': '2025-11-25' }, /MCP-Protocol-Version header value '2025-11-25' does not match body value '2026-07-28'/],
    ['no Mcp-Method', { 'mcp-protocol-version': '2026-07-28', 'mcp-name': 'echo' }, /Mcp-Method header is required/],
    ['Mcp-Method mismatch', { ...GOOD, 'mcp-method': 'tools/list' }, /Mcp-Method header value 'tools\/list' does not match body value 'tools\/call'/],
    ['Mcp-Method case differs (values are case-sensitive)', { ...GOOD, 'mcp-method': 'Tools/Call' }, /does not match/],
    ['no Mcp-Name', { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call' }, /Mcp-Name header is required for tools\/call/],
    ['Mcp-Name mismatch', { ...GOOD, 'mcp-name': 'delete_everything' }, /Mcp-Name header value 'delete_everything' does not match body value 'echo'/],
    ['Mcp-Name bad base64', { ...GOOD, 'mcp-name': '=?base64?***?=' }, /malformed base64/],
    ['Mcp-Name control char', { ...GOOD, 'mcp-name': 'ec\u0001ho' }, /invalid characters/],
  ]
  for (const [label, headers, message] of cases) {
    const err = check(modernCall('echo', 'req-9'), headers)
    t.ok(err, label)
    t.equal(err?.rpcCode, -32020, label)
    t.equal(err?.status, 400, label)
    t.equal(err?.rpcId, 'req-9', label)
    t.match(err?.message, message, label)
  }
})

t.test('Mcp-Name in base64 form is decoded before comparing (non-ASCII names)', async (t) => {
  t.equal(check(modernCall('grüße'), { ...GOOD, 'mcp-name': b64('grüße') }), undefined)
  t.match(check(modernCall('grüße'), { ...GOOD, 'mcp-name': b64('gruesse') })?.message, /does not match/)
  t.equal(decodeHeaderValue('plain'), 'plain')
  t.equal(decodeHeaderValue(b64('世界')), '世界')
  t.equal(decodeHeaderValue('=?base64?/w==?='), undefined, 'bytes that are not UTF-8 are refused')
})

t.test('resources/read mirrors params.uri; prompts/get params.name', async (t) => {
  const read = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///a', _meta: META } }))
  t.equal(check(read, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'resources/read', 'mcp-name': 'file:///a' }), undefined)
  t.match(check(read, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'resources/read', 'mcp-name': 'file:///b' })?.message, /does not match/)
  const prompt = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'prompts/get', params: { name: 'p', _meta: META } }))
  t.match(check(prompt, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'prompts/get' })?.message, /Mcp-Name header is required for prompts\/get/)
})

t.test('methods without a target need no Mcp-Name', async (t) => {
  const list = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: META } }))
  t.equal(check(list, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' }), undefined)
})

t.test('a 2026 version header makes mirroring required even without _meta in the body', async (t) => {
  const bare = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }))
  t.match(check(bare, { 'mcp-protocol-version': '2026-07-28' })?.message, /Mcp-Method header is required/)
})

t.test('2025-era requests need no mirrored headers, but any that are sent must agree', async (t) => {
  const legacy = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } }))
  t.equal(check(legacy, { 'mcp-protocol-version': '2025-11-25' }), undefined)
  t.equal(check(legacy, {}), undefined)
  t.match(check(legacy, { 'mcp-name': 'other' })?.message, /does not match/)
  t.match(check(legacy, { 'mcp-method': 'tools/list' })?.message, /does not match/)
})

t.test('notifications and responses: headers only checked when present', async (t) => {
  const note = Buffer.from(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { _meta: META } }))
  t.equal(check(note, { 'mcp-protocol-version': '2026-07-28' }), undefined)
  t.match(check(note, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'x' })?.message, /does not match/)
  const response = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, result: {} }))
  t.equal(check(response, { 'mcp-method': 'whatever' }), undefined)
})

t.test('batches are refused for modern requests (2026-07-28 has no batching), allowed for 2025-03-26', async (t) => {
  const batch = Buffer.from(JSON.stringify([{ jsonrpc: '2.0', id: 1, method: 'tools/list' }]))
  const err = check(batch, { 'mcp-protocol-version': '2026-07-28' })
  t.equal(err?.rpcCode, -32600)
  t.match(err?.message, /batches are not part of MCP 2026-07-28/)
  t.equal(check(batch, { 'mcp-protocol-version': '2025-03-26' }), undefined)
})

t.test('isModernRevision: revisions are dates; a value that is none is not modern', async (t) => {
  t.equal(isModernRevision('2026-07-28'), true)
  t.equal(isModernRevision('2099-01-01'), true)
  t.equal(isModernRevision('2025-11-25'), false)
  t.equal(isModernRevision('latest'), false)
  t.equal(isModernRevision('2026-07-28x'), false)
  t.equal(isModernRevision(undefined), false)
})

t.test('checkProtocolVersionHeader: known revisions or none pass; anything else is a 400 naming the value', async (t) => {
  for (const v of ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25', '2026-07-28']) t.doesNotThrow(() => checkProtocolVersionHeader({ 'mcp-protocol-version': v }), v)
  t.doesNotThrow(() => checkProtocolVersionHeader({}))
  const err = (() => { try { checkProtocolVersionHeader({ 'mcp-protocol-version': '2025-01-01' }) } catch (e) { return e as PortcullisError } return undefined })()
  t.equal(err?.code, 'PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION')
  t.equal(err?.status, 400)
  t.match(err?.message, /'2025-01-01'; supported: 2024-11-05, /)
  t.throws(() => checkProtocolVersionHeader({ 'mcp-protocol-version': '2025-11-25 ' }), { code: 'PORTCULLIS_ERR_UNSUPPORTED_PROTOCOL_VERSION' }, 'exact match only')
  t.throws(() => checkProtocolVersionHeader({ 'mcp-protocol-version': 'x'.repeat(500) }), { message: /x{80}…'/ }, 'a long value is shortened')
})
