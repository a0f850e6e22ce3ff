// A member route's in-process response (src/virtual/in-process-response.ts) read by a consumer:
// what the virtual route's tools/call relay uses instead of a Readable.
import t from 'tap'
import { InProcessResponse } from '../../src/virtual/in-process-response.js'
import { inspectBody, inspectValue } from '../../src/mcp/jsonrpc.js'

t.test('a consumer gets what was written before it came, then each write as it is made, then the end, once', async (t) => {
  const res = new InProcessResponse()
  res.writeHead(200, { 'Content-Type': 'text/event-stream' })
  t.ok(res.write('a'), 'nobody reading yet: kept, the writer goes on')
  const got: string[] = []
  let ends = 0
  res.consume({ data: (chunk) => { got.push(String(chunk)); return true }, end: () => { ends++ } })
  t.same(got, ['a'], 'what came before, handed over at once')
  res.write(Buffer.from('b'))
  res.end('c')
  t.same(got, ['a', 'b', 'c'])
  t.equal(ends, 1)
  res.destroy()
  t.equal(ends, 1, 'the end is passed once')
  t.equal(res.headers['content-type'], 'text/event-stream')
  t.throws(() => res.body, /already being consumed/, 'one way of reading per answer')
})

t.test('backpressure: the consumer says wait, the writer gets false, and drain when the consumer resumes it', async (t) => {
  const res = new InProcessResponse()
  let isFull = true
  res.consume({ data: () => !isFull, end: () => {} })
  let drained = 0
  res.on('drain', () => { drained++ })
  t.notOk(res.write('x'), 'the consumer\'s client is full: wait')
  isFull = false
  res.resumeWriter()
  t.equal(drained, 1)
  res.resumeWriter()
  t.equal(drained, 1, 'drain only for a writer that was told to wait')
})

t.test('kept writes before a reader chooses are bounded as a Readable\'s buffer; the first reader lets the writer go on', async (t) => {
  const res = new InProcessResponse()
  t.notOk(res.write(Buffer.alloc(20 * 1024)), 'past 16 KiB kept: wait')
  let drained = 0
  res.on('drain', () => { drained++ })
  let bytes = 0
  res.consume({ data: (chunk) => { bytes += chunk.length; return true }, end: () => {} })
  t.equal(bytes, 20 * 1024)
  t.equal(drained, 1, 'handed over: the writer may go on')
})

t.test('the writer dropping the answer, or the reader leaving, ends the consumer and closes the response', async (t) => {
  const dropped = new InProcessResponse()
  let ended = 0
  dropped.consume({ data: () => true, end: () => { ended++ } })
  dropped.write('partial')
  dropped.destroy()
  t.equal(ended, 1, 'cut short: the consumer hears the end (what it read does not look complete: no blank line, no whole JSON)')
  const left = new InProcessResponse()
  let closed = 0
  left.on('close', () => { closed++ })
  left.consume({ data: () => true, end: () => {} })
  left.leave()
  t.equal(closed, 1, 'the reader left: the writer sees its client go')
  t.notOk(left.write('more'), 'and writes nothing more')
})

t.test('a message the gateway built from one it inspected is judged as the same message in JSON text would be', async (t) => {
  const messages = [
    { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' }, _meta: { progressToken: 'p' } } },
    { jsonrpc: '2.0', id: 'x', method: 'resources/read', params: { uri: 'file:///a' } },
    { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7 } },
    { jsonrpc: '2.0', id: 3, result: { action: 'accept' } },
    { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo', _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28' } } },
  ]
  for (const message of messages) {
    t.same(inspectValue(message), inspectBody(Buffer.from(JSON.stringify(message))), String(message.method ?? 'response'))
  }
  t.throws(() => inspectValue({ jsonrpc: '1.0', id: 1, method: 'ping' }), { code: 'PORTCULLIS_ERR_INVALID_REQUEST' }, 'not JSON-RPC 2.0: refused as inspectBody refuses it')
})

t.test('a consumer that destroys the response while it is handed what came before gets nothing more, and the end once', async (t) => {
  const res = new InProcessResponse()
  res.write('first')
  res.write('second')
  let ends = 0
  const got: string[] = []
  res.consume({
    data: (chunk) => {
      got.push(String(chunk))
      res.destroy()
      return true
    },
    end: () => { ends++ },
  })
  t.same(got, ['first'], 'nothing after the reader left')
  t.equal(ends, 1, 'the end once')
  const ended = new InProcessResponse()
  ended.write('a')
  ended.end('b')
  let endedEnds = 0
  ended.consume({ data: () => { ended.destroy(); return true }, end: () => { endedEnds++ } })
  t.equal(endedEnds, 1, 'an answer already complete: the end once too')
})
