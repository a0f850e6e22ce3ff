import t from 'tap'
import { checkParamHeaders, paramHeadersOf, ToolParamHeaders } from '../../src/mcp/param-headers.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import type { PortcullisError } from '../../src/errors.js'

const SCHEMA = {
  type: 'object',
  properties: {
    region: { type: 'string', 'x-mcp-header': 'Region' },
    query: { type: 'string' },
    options: { type: 'object', properties: { shard: { type: 'integer', 'x-mcp-header': 'Shard' }, dryRun: { type: 'boolean', 'x-mcp-header': 'Dry-Run' } } },
    list: { type: 'array', items: { type: 'object', properties: { x: { type: 'string', 'x-mcp-header': 'Ignored' } } } },
  },
}

t.test('paramHeadersOf: annotated properties reachable through properties chains', async (t) => {
  t.same(paramHeadersOf(SCHEMA), [
    { name: 'Region', header: 'mcp-param-region', path: ['region'], type: 'string' },
    { name: 'Shard', header: 'mcp-param-shard', path: ['options', 'shard'], type: 'integer' },
    { name: 'Dry-Run', header: 'mcp-param-dry-run', path: ['options', 'dryRun'], type: 'boolean' },
  ], 'an annotation under items is not statically reachable and is not learnt')
  t.same(paramHeadersOf({ type: 'object', properties: { a: { type: 'string' } } }), [], 'no annotations')
  t.equal(paramHeadersOf({ type: 'object', properties: { a: { type: 'number', 'x-mcp-header': 'A' } } }), undefined, 'number is not permitted')
  t.equal(paramHeadersOf({ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': 'A B' } } }), undefined, 'not a token')
  t.equal(paramHeadersOf({ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': '' } } }), undefined, 'empty')
  t.equal(paramHeadersOf({ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': 'X' }, b: { type: 'string', 'x-mcp-header': 'x' } } }), undefined, 'case-insensitively unique')
})

function callWith (args: Record<string, unknown>): ReturnType<typeof inspectBody> {
  return inspectBody(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'execute_sql', arguments: args, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28' } } })))
}

function refusal (fn: () => void): PortcullisError | undefined {
  try { fn() } catch (err) { return err as PortcullisError }
  return undefined
}

t.test('checkParamHeaders: headers must mirror the arguments the tool annotates', async (t) => {
  const known = new ToolParamHeaders()
  const args = { region: 'us-west1', query: 'q', options: { shard: 42, dryRun: false } }
  const good = { 'mcp-param-region': 'us-west1', 'mcp-param-shard': '42', 'mcp-param-dry-run': 'false' }
  t.equal(refusal(() => checkParamHeaders(callWith(args), {}, known)), undefined, 'a tool not yet listed cannot be checked')
  known.learn({ tools: [{ name: 'execute_sql', inputSchema: SCHEMA }, { name: 'echo', inputSchema: { type: 'object' } }] })
  t.equal(refusal(() => checkParamHeaders(callWith(args), good, known)), undefined)
  t.equal(refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-shard': '42.0' }, known)), undefined, 'integers compare numerically')
  t.equal(refusal(() => checkParamHeaders(callWith({ region: 'Hello, 世界', query: 'q' }), { 'mcp-param-region': `=?base64?${Buffer.from('Hello, 世界').toString('base64')}?=` }, known)), undefined, 'base64 values are decoded')
  t.equal(refusal(() => checkParamHeaders(callWith({ region: 'r', query: 'q', options: { shard: null } }), { 'mcp-param-region': 'r' }, known)), undefined, 'null and absent values need no header')

  const missing = refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-region': undefined }, known))
  t.equal(missing?.code, 'PORTCULLIS_ERR_HEADER_MISMATCH')
  t.equal(missing?.rpcCode, -32020)
  t.equal(missing?.rpcId, 4)
  t.equal(missing?.message, 'Header mismatch: the Mcp-Param-Region header is required: tool "execute_sql" mirrors arguments.region')
  t.equal(refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-region': 'eu-west1' }, known))?.message, "Header mismatch: Mcp-Param-Region header value 'eu-west1' does not match body value 'us-west1'")
  t.match(refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-shard': '43' }, known))?.message, /Mcp-Param-Shard header value '43' does not match body value '42'/)
  t.match(refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-shard': '' }, known))?.message, /Mcp-Param-Shard/)
  t.match(refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-dry-run': 'False' }, known))?.message, /Mcp-Param-Dry-Run header value 'False'/, 'booleans are lowercase')
  t.match(refusal(() => checkParamHeaders(callWith(args), { ...good, 'mcp-param-region': '=?base64?!!?=' }, known))?.message, /invalid characters or malformed base64/)
  t.match(refusal(() => checkParamHeaders(callWith({ region: 'r', query: 'q' }), { 'mcp-param-region': 'r', 'mcp-param-shard': '1' }, known))?.message, /Mcp-Param-Shard header is sent but arguments.options.shard has no value/)
  t.match(refusal(() => checkParamHeaders(callWith({ region: 7, query: 'q' }), { 'mcp-param-region': '7' }, known))?.message, /does not match/, 'a value of the wrong type cannot match')

  known.learn({ tools: [{ name: 'execute_sql', inputSchema: { type: 'object', properties: { region: { type: 'string' } } } }] })
  t.equal(refusal(() => checkParamHeaders(callWith(args), {}, known)), undefined, 'a newer listing without the annotation replaces the old one')
})
