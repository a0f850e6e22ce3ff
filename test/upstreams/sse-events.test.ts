// Reading Server-Sent Events (WHATWG HTML 9.2.6): what the legacy routes and transport: sse read.
import t from 'tap'
import { SseEventReader, endsOnCharBoundary } from '../../src/upstreams/sse-events.js'

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

t.test('a stream of 1- to 4-byte characters cut at every byte, in two and three chunks, comes out whole', async (t) => {
  const text = '{"text":"aé✓😀b"}'
  const bytes = Buffer.from(`data: ${text}\n\ndata: ${text}\n\n`)
  let mangled = 0
  for (let cut = 0; cut <= bytes.length; cut++) {
    for (let second = cut; second <= bytes.length; second++) {
      const reader = new SseEventReader()
      const events = [...reader.push(bytes.subarray(0, cut)), ...reader.push(bytes.subarray(cut, second)), ...reader.push(bytes.subarray(second))]
      if (events.length !== 2 || events.some((e) => e.data !== text)) mangled++
    }
  }
  t.equal(mangled, 0, 'no cut mangles a character or loses an event')
})

t.test('a chunk that is one whole event reads as the same event taken character by character', async (t) => {
  const chunks = [
    'event: message\ndata: {"id":1}\n\n',
    'data: {"id":2}\n\n',
    'data:  two spaces\n\n',
    'event: message\ndata: \n\n',
    'event: message\ndata: a\ndata: b\n\n',
    'event: message\r\ndata: crlf\r\n\r\n',
    'event: endpoint\ndata: /messages\n\n',
    'id: 4\nevent: message\ndata: with an id\n\n',
    ': comment\n\n',
    'data: a\n\ndata: b\n\n',
  ]
  for (const chunk of chunks) {
    const slow = new SseEventReader()
    const bySteps = [...chunk].flatMap((c) => slow.push(c))
    t.same(new SseEventReader().push(chunk), bySteps, JSON.stringify(chunk))
  }
  t.throws(() => new SseEventReader(8).push('data: {"id":12345}\n\n'), { code: 'SSE_EVENT_TOO_LARGE' }, 'one whole event is held to the limit too')
})

t.test('whether bytes end on a character boundary (the reader decodes without a decoder then)', async (t) => {
  const at = (s: string, drop: number): boolean => { const b = Buffer.from(s); return endsOnCharBoundary(b.subarray(0, b.length - drop)) }
  t.ok(endsOnCharBoundary(Buffer.alloc(0)), 'nothing')
  t.ok(at('ab', 0), 'ASCII')
  t.ok(at('aé', 0), '2 bytes, whole')
  t.notOk(at('aé', 1), '2 bytes, cut')
  t.ok(at('a✓', 0), '3 bytes, whole')
  t.notOk(at('a✓', 1), '3 bytes, 2 of them')
  t.notOk(at('a✓', 2), '3 bytes, 1 of them')
  t.ok(at('a😀', 0), '4 bytes, whole')
  t.notOk(at('a😀', 1), '4 bytes, 3 of them')
  t.notOk(at('a😀', 3), '4 bytes, 1 of them')
  t.ok(endsOnCharBoundary(Buffer.from([0x80, 0x80, 0x80, 0x80])), 'stray continuation bytes: nothing to wait for (decoded as U+FFFD)')
})

t.test('a blank line cut anywhere between two chunks ends the event where it would in one piece', async (t) => {
  const stream = 'event: message\r\ndata: a\r\n\r\ndata: b\n\r\ndata: c\n\n'
  for (let cut = 0; cut <= stream.length; cut++) {
    for (let second = cut; second <= stream.length; second++) {
      const reader = new SseEventReader()
      const events = [...reader.push(stream.slice(0, cut)), ...reader.push(stream.slice(cut, second)), ...reader.push(stream.slice(second))]
      if (JSON.stringify(events) !== '[{"event":"message","data":"a"},{"event":"message","data":"b"},{"event":"message","data":"c"}]') {
        t.fail(`cut at ${cut} and ${second}: ${JSON.stringify(events)}`)
        return
      }
    }
  }
  t.pass('every pair of cuts gives the same three events')
})

t.test('a large event in many chunks is read in linear time (each chunk is not a rescan of the whole event)', async (t) => {
  // 16 MB in 4 KB chunks: rescanning what is held from 0 at every chunk reads ~32 GB (minutes);
  // reading each chunk once takes well under a second. The bound leaves a wide margin for a busy machine.
  const reader = new SseEventReader()
  const chunk = 'x'.repeat(4096)
  const started = process.hrtime.bigint()
  t.same(reader.push('data: '), [])
  for (let i = 0; i < 4096; i++) if (reader.push(chunk).length !== 0) t.fail('no event before the blank line')
  const events = reader.push('\n\n')
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6
  t.equal(events.length, 1, 'one event')
  t.equal(events[0]?.data.length, 4096 * 4096, 'all of it')
  t.ok(elapsedMs < 5_000, `read in ${Math.round(elapsedMs)} ms`)
})

t.test('maxEventBytes: an event past it throws, whether it grows across chunks or comes in one', async (t) => {
  const growing = new SseEventReader(1_000)
  growing.push('data: ' + 'x'.repeat(900))
  t.throws(() => growing.push('x'.repeat(200)), { code: 'SSE_EVENT_TOO_LARGE' }, 'an incomplete event held past the limit')
  const whole = new SseEventReader(1_000)
  t.throws(() => whole.push(`data: ${'é'.repeat(600)}\n\n`), { code: 'SSE_EVENT_TOO_LARGE' }, 'a complete event in one chunk, counted in bytes, not characters')
  const fine = new SseEventReader(1_000)
  t.same(fine.push(`data: ${'x'.repeat(900)}\n\ndata: ${'y'.repeat(900)}\n\n`).length, 2, 'a chunk of several events each under the limit is fine')
})
