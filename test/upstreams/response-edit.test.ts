// The SSE editor's event and line splitting (indexOf instead of a regex walking each 1 KB
// data line) against the regexes it replaced, /\r?\n\r?\n/ and split(/\r?\n/), on random text
// of line ends in every mix; and the editor fed a masked stream in chunks of every size.
import t from 'tap'
import { editJsonBody, eventEnd, splitLines, SseEditor, type ResponseEdit } from '../../src/upstreams/response-edit.js'
import { createRedactor } from '../../src/guardrails/redactor.js'
import { seededRandom } from '../seeded-random.js'

const PIECES = ['\n', '\r', '\r\n', '\n\n', '\r\n\r\n', '\r\r', 'a', 'data: {}', 'event: message', ':', ' ']

t.test('eventEnd and splitLines find what the regexes found', async (t) => {
  let found = 0
  for (let seed = 1; seed <= 20_000; seed++) {
    const next = seededRandom(seed)
    let text = ''
    for (let n = Math.floor(next() * 12); n > 0; n--) text += PIECES[Math.floor(next() * PIECES.length)] as string
    const match = /\r?\n\r?\n/.exec(text)
    const wanted = match === null ? undefined : { start: match.index, end: match.index + match[0].length }
    const end = eventEnd(text)
    if (JSON.stringify(end) !== JSON.stringify(wanted)) {
      t.fail(`eventEnd(${JSON.stringify(text)})`, { found: end, wanted })
      return
    }
    if (JSON.stringify(splitLines(text)) !== JSON.stringify(text.split(/\r?\n/))) {
      t.fail(`splitLines(${JSON.stringify(text)})`, { found: splitLines(text), wanted: text.split(/\r?\n/) })
      return
    }
    if (end !== undefined) found++
  }
  t.ok(found > 5000, `${found} of 20000 texts hold an event end`)
})

t.test('a masked SSE stream fed in chunks of every size comes out the same', async (t) => {
  const redactor = createRedactor(['secrets'])
  if (redactor === undefined) throw new Error('no redactor')
  const edit: ResponseEdit = {
    watch: new Map([[1, (m) => ({ ...m, result: redactor.redactResult(m.result, {}) })]]),
    extra: [],
  }
  const message = (id: number): string => JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'key AKIAIOSFODNN7EXAMPLE here' }] } })
  const stream = `: keep-alive\r\n\r\nevent: message\r\nid: 7\r\ndata: ${message(1)}\r\n\r\nevent: message\ndata: ${message(2)}\n\n`
  const wanted = `: keep-alive\r\n\r\nevent: message\nid: 7\ndata: ${message(1).replace('AKIAIOSFODNN7EXAMPLE', '[redacted:cloud-keys]')}\r\n\r\nevent: message\ndata: ${message(2)}\n\n`
  for (let size = 1; size <= stream.length; size++) {
    const editor = new SseEditor(edit)
    let out = ''
    for (let at = 0; at < stream.length; at += size) out += editor.push(Buffer.from(stream.slice(at, at + size)))
    out += editor.flush()
    if (out !== wanted) {
      t.fail(`chunks of ${size}`, { found: out, wanted })
      return
    }
  }
  t.pass(`every chunk size from 1 to ${stream.length}`)
})

t.test('a character cut between two network writes is decoded whole', async (t) => {
  const edit: ResponseEdit = { watch: new Map([[1, (m) => ({ ...m, result: { text: `${(m.result as { text: string }).text}!` } })]]), extra: [] }
  const bytes = Buffer.from(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { text: 'café 😀' } })}\n\n`)
  const wanted = `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { text: 'café 😀!' } })}\n\n`
  for (let cut = 1; cut < bytes.length; cut++) {
    const editor = new SseEditor(edit)
    const out = editor.push(bytes.subarray(0, cut)) + editor.push(bytes.subarray(cut)) + editor.flush()
    if (out !== wanted) {
      t.fail(`cut at byte ${cut}`, { found: out, wanted })
      return
    }
  }
  t.pass(`cut at every one of ${bytes.length - 1} bytes`)
})

t.test('an event carrying a batch of answers has each member edited', async (t) => {
  // MCP 2025-03-26: a batch may be answered with a batch, in one SSE event as well as in a JSON body.
  const edit: ResponseEdit = {
    watch: new Map([[1, (m: Record<string, unknown>) => ({ ...m, result: { tools: [{ name: 'echo' }] } })]]),
    extra: [],
  }
  const editor = new SseEditor(edit)
  const batch = [{ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'echo' }, { name: 'delete_repository' }] } }, { jsonrpc: '2.0', id: 2, result: {} }]
  const out = editor.push(Buffer.from(`event: message\nid: 7\ndata: ${JSON.stringify(batch)}\n\n`)) + editor.flush()
  t.equal(out, `event: message\nid: 7\ndata: ${JSON.stringify([{ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'echo' }] } }, batch[1]])}\n\n`, 'the watched member filtered, the other as it was, the event kept')
  const untouched = `event: message\ndata: ${JSON.stringify([{ jsonrpc: '2.0', id: 3, result: {} }])}\n\n`
  t.equal(new SseEditor(edit).push(Buffer.from(untouched)), untouched, 'a batch with nothing watched passes as its bytes')
})

t.test('answers clients read are edited however they are written: a byte-order mark, lines ending in CR alone', async (t) => {
  // Clients drop a leading BOM (response.json(), SSE parsers) and end SSE lines at CR, LF or CRLF:
  // an answer only the gateway could not read would pass unfiltered, unmasked, unpinned.
  const edit: ResponseEdit = { watch: new Map([[1, (m: Record<string, unknown>) => ({ ...m, result: { tools: [] } })]]), extra: [] }
  const answer = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'changed' }] } })
  t.same(JSON.parse(editJsonBody(Buffer.from(`\uFEFF${answer}`), edit).toString()), { jsonrpc: '2.0', id: 1, result: { tools: [] } }, 'a JSON body after a BOM')
  const stream = `\uFEFFevent: message\rdata: ${answer}\r\r`
  for (let size = 1; size <= stream.length; size++) {
    const editor = new SseEditor(edit)
    let out = ''
    for (let at = 0; at < stream.length; at += size) out += editor.push(Buffer.from(stream.slice(at, at + size)))
    out += editor.flush()
    if (out !== `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [] } })}\n\n`) {
      t.fail(`an SSE stream after a BOM, lines ending in CR, chunks of ${size}`, { found: out })
      return
    }
  }
  t.pass('an SSE stream after a BOM with lines ending in CR alone, in chunks of every size')
})
