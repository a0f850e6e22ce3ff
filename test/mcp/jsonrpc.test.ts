import t from 'tap'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { PortcullisError } from '../../src/errors.js'

const buf = (value: unknown): Buffer => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))

function failure (body: unknown): PortcullisError {
  try {
    inspectBody(body === undefined ? undefined : buf(body))
  } catch (err) {
    if (err instanceof PortcullisError) return err
    throw err
  }
  throw new Error('expected inspectBody to throw')
}

t.test('a request is classified with method, id and tool target', async (t) => {
  const insp = inspectBody(buf({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }))
  t.equal(insp.isBatch, false)
  t.same(insp.requestIds, [7])
  t.equal(insp.modernVersion, undefined)
  t.match(insp.messages[0], { kind: 'request', id: 7, method: 'tools/call', target: 'echo' })
})

t.test('notifications, responses and targets of prompts and resources', async (t) => {
  t.match(inspectBody(buf({ jsonrpc: '2.0', method: 'notifications/initialized' })).messages[0], { kind: 'notification', id: undefined, method: 'notifications/initialized' })
  t.same(inspectBody(buf({ jsonrpc: '2.0', method: 'notifications/initialized' })).requestIds, [])
  t.match(inspectBody(buf({ jsonrpc: '2.0', id: 'a', result: {} })).messages[0], { kind: 'response', id: 'a', method: undefined })
  t.match(inspectBody(buf({ jsonrpc: '2.0', id: null, error: { code: 1, message: 'x' } })).messages[0], { kind: 'response', id: null })
  t.equal(inspectBody(buf({ jsonrpc: '2.0', id: 1, method: 'prompts/get', params: { name: 'p' } })).messages[0]?.target, 'p')
  t.equal(inspectBody(buf({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///a' } })).messages[0]?.target, 'file:///a')
  t.equal(inspectBody(buf({ jsonrpc: '2.0', id: 1, method: 'tools/list' })).messages[0]?.target, undefined)
})

t.test('a batch keeps every message and the ids of its requests, in order', async (t) => {
  const insp = inspectBody(buf([
    { jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { jsonrpc: '2.0', method: 'notifications/progress', params: {} },
    { jsonrpc: '2.0', id: 'two', method: 'tools/call', params: { name: 'b' } },
  ]))
  t.equal(insp.isBatch, true)
  t.same(insp.requestIds, [1, 'two'])
  t.same(insp.messages.map((m) => m.kind), ['request', 'notification', 'request'])
})

t.test('the modern protocol revision is read from params._meta', async (t) => {
  const insp = inspectBody(buf({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28' } } }))
  t.equal(insp.modernVersion, '2026-07-28')
})

t.test('malformed JSON and empty bodies are parse errors (-32700)', async (t) => {
  for (const body of ['{"jsonrpc":', 'not json', '', undefined]) {
    const err = failure(body)
    t.equal(err.code, 'PORTCULLIS_ERR_PARSE', String(body))
    t.equal(err.rpcCode, -32700)
    t.equal(err.status, 400)
  }
})

t.test('bodies that are JSON but not JSON-RPC are invalid requests (-32600), id echoed when known', async (t) => {
  const cases: Array<[unknown, RegExp, unknown]> = [
    [42, /message object/, null],
    [{ id: 3, method: 'x' }, /"jsonrpc" must be "2.0"/, 3],
    [{ jsonrpc: '1.0', id: 3, method: 'x' }, /"jsonrpc" must be "2.0"/, 3],
    [{ jsonrpc: '2.0', id: 4, method: 5 }, /"method" must be a non-empty string/, 4],
    [{ jsonrpc: '2.0', id: null, method: 'tools/list' }, /"id" must be a string or a number/, null],
    [{ jsonrpc: '2.0', id: { a: 1 }, method: 'tools/list' }, /"id" must be a string or a number/, null],
    [{ jsonrpc: '2.0', id: 5, method: 'x', params: [1] }, /"params" must be an object/, 5],
    [{ jsonrpc: '2.0', id: 6 }, /expected a request, notification or response/, 6],
    [{ jsonrpc: '2.0', id: 6, result: 1, error: {} }, /not both/, 6],
    [[], /empty batch/, undefined],
  ]
  for (const [body, message, id] of cases) {
    const err = failure(body)
    t.equal(err.rpcCode, -32600, JSON.stringify(body))
    t.match(err.message, message, JSON.stringify(body))
    t.equal(err.rpcId, id, `id of ${JSON.stringify(body)}`)
  }
})

t.test('a bad member of a batch names its index', async (t) => {
  const err = failure([{ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { jsonrpc: '2.0' }])
  t.match(err.message, /batch item 1/)
})

t.test('two requests of a batch with one id are refused (their answers are told apart by id)', async (t) => {
  const list = { jsonrpc: '2.0', id: 1, method: 'tools/list' }
  const err = failure([list, { jsonrpc: '2.0', id: 1, method: 'prompts/list' }])
  t.equal(err.code, 'PORTCULLIS_ERR_INVALID_REQUEST')
  t.match(err.message, /batch item 1: has the id 1 of batch item 0/)
  t.equal(err.rpcId, null)
  // Numbers JSON.parse rounds to one value are one id.
  t.equal(failure(`[{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/list"},{"jsonrpc":"2.0","id":9007199254740992,"method":"tools/list"}]`).code, 'PORTCULLIS_ERR_INVALID_REQUEST')
  // The string "1" and the number 1 are different ids; notifications and responses carry none of the requests'.
  t.same(inspectBody(buf([list, { jsonrpc: '2.0', id: '1', method: 'tools/list' }, { jsonrpc: '2.0', method: 'notifications/initialized' }, { jsonrpc: '2.0', id: 1, result: {} }])).requestIds, [1, '1'])
})

t.test('tools/call without a tool name is invalid params (-32602) with the id', async (t) => {
  const err = failure({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { arguments: {} } })
  t.equal(err.code, 'PORTCULLIS_ERR_INVALID_PARAMS')
  t.equal(err.rpcCode, -32602)
  t.equal(err.rpcId, 9)
  t.match(err.message, /tools\/call requires params.name/)
  t.equal(failure({ jsonrpc: '2.0', id: 9, method: 'resources/read', params: {} }).rpcCode, -32602)
})
