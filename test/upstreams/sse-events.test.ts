// Reading Server-Sent Events (WHATWG HTML 9.2.6): what the legacy routes and transport: sse read.
import t from 'tap'
import { SseEventReader } from '../../src/upstreams/sse-events.js'

t.test('events split anywhere across chunks come out whole, in order', async (t) => {
  const reader = new SseEventReader()
  t.same(reader.push('event: endpoint\ndata: /messages?sessionId=1'), [], 'nothing before the blank line')
  t.same(reader.push('\n\nevent: message\ndata: {"id":1}\n\ndata: {"id"'), [
    { event: 'endpoint', data: '/messages?sessionId=1' },
    { event: 'message', data: '{"id":1}' },
  ])
  t.same(reader.push(':2}\n\n'), [{ event: 'message', data: '{"id":2}' }], 'an event without a type is a message')
})

t.test('CRLF lines, comments, multi-line data and a bare field name', async (t) => {
  const reader = new SseEventReader()
  t.same(reader.push(': keep-alive\r\n\r\n'), [], 'a comment alone dispatches nothing')
  t.same(reader.push('event:message\r\ndata:a\r\ndata: b\r\nid: 7\r\nretry: 10\r\n\r\n'), [{ event: 'message', data: 'a\nb' }], 'data lines joined with LF; no space after the colon is fine')
  t.same(reader.push('data\n\n'), [{ event: 'message', data: '' }], 'a field with no colon has an empty value')
})

t.test('a character cut between two chunks is not mangled', async (t) => {
  const reader = new SseEventReader()
  const bytes = Buffer.from('data: {"text":"héllo ✓"}\n\n')
  const cut = bytes.indexOf(0xe2) + 1
  t.same(reader.push(bytes.subarray(0, cut)), [])
  t.same(reader.push(bytes.subarray(cut)), [{ event: 'message', data: '{"text":"héllo ✓"}' }])
})
