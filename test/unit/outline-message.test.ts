import t from 'tap'
import { outlineMessage } from '../../src/mcp/scan-json.js'
import { seededRandom } from '../seeded-random.js'

type Item = Record<string, unknown>

/** What JSON.parse makes of `text`: the object, or undefined when it throws or makes no plain object. */
function parsedObject (text: string): Item | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return undefined
  }
  return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Item : undefined
}

/**
 * The outline against JSON.parse: accepted exactly when JSON.parse makes an object of the text;
 * a message with a top-level "method" is always left to a full parse; otherwise the id slice
 * parses to the object's id (none when the object has none; the last when doubled, which a
 * full parse is asked for).
 */
function agrees (text: string): string | undefined {
  const outline = outlineMessage(text)
  const parsed = parsedObject(text)
  if ((outline === undefined) !== (parsed === undefined)) return `accepted ${String(outline !== undefined)}, JSON.parse object ${String(parsed !== undefined)}`
  if (outline === undefined || parsed === undefined) return undefined
  if (Object.hasOwn(parsed, 'method') && !outline.needsParse) return 'a top-level method not left to a full parse'
  if (outline.needsParse) return undefined
  if (outline.idStart < 0) return Object.hasOwn(parsed, 'id') ? 'an id not found' : undefined
  const id: unknown = JSON.parse(text.slice(outline.idStart, outline.idEnd))
  return JSON.stringify(id) === JSON.stringify(parsed.id) ? undefined : `id ${JSON.stringify(id)}, JSON.parse ${JSON.stringify(parsed.id)}`
}

t.test('hand-written cases', async (t) => {
  const outline = outlineMessage('{"jsonrpc":"2.0","id":7,"result":{"content":[]}}')
  t.same(outline, { idStart: 22, idEnd: 23, needsParse: false })
  const spaced = ' {\n "result" : {"id":1} ,\r\n\t"id" : "a\\"b" } '
  t.same(outlineMessage(spaced), { idStart: spaced.indexOf('"a'), idEnd: spaced.indexOf('b"') + 2, needsParse: false }, 'whitespace, a nested id')
  t.same(outlineMessage('{"result":{}}'), { idStart: -1, idEnd: -1, needsParse: false }, 'no id')
  t.equal(outlineMessage('{"id":1,"method":"notifications/progress"}')?.needsParse, true)
  t.equal(outlineMessage('{"id":1,"\\u006dethod":"x"}')?.needsParse, true, 'an escaped "method" key is one')
  t.equal(outlineMessage('{"id":1,"result":{"method":"x"}}')?.needsParse, false, 'a nested method key is not')
  t.equal(outlineMessage('{"id":1,"result":{},"id":2}')?.needsParse, true, 'a doubled id: JSON.parse keeps the last')
  t.equal(outlineMessage('{"id":1,"\\u0069\\u0064":2}')?.needsParse, true, 'also when escaped')
  t.equal(outlineMessage('{"result":1,"id":1,"result":2}')?.needsParse, false, 'another key doubled does not change the id')
  t.same(outlineMessage('{"\\u0069d":3,"result":{}}'), { idStart: 11, idEnd: 12, needsParse: false }, 'an escaped "id" key')
  t.same(outlineMessage('{"id":{"a":[1,{"b":2}]},"error":{}}'), { idStart: 6, idEnd: 23, needsParse: false }, 'an id that is no scalar')
  for (const text of ['', ' ', '[]', '[{"id":1}]', '"x"', '1', 'null', 'true', '{', '{"id":1', '{"id":1}}', '{"id":1,}', '{,}', '{"id" 1}',
    '{"id":01}', '{"id":1.}', '{"id":-}', '{"id":1e}', '{"id":.5}', '{"id":+1}', '{"id":tru}', '{"id":nul}', '{"a":[1,]}', '{"a":[,1]}',
    '{"a":"\t"}', '{"a":"\\x"}', '{"a":"\\u12g4"}', '{"a":"\\u12"}', '{id:1}', "{'id':1}", '\ufeff{"id":1}', '{"id":1}\u00a0', '{"a":1 "b":2}',
    '{"a":[1}', '{"a":{]}', '{"a":"}', '{"a":NaN}', '{"a":Infinity}', '{"a":-0x1}']) {
    t.equal(agrees(text), undefined, JSON.stringify(text))
    t.equal(outlineMessage(text), undefined, `${JSON.stringify(text)} is refused`)
  }
  for (const text of ['{}', '{"id":-0.5e+10}', '{"id":1E5}', '{"id":"\\ud800"}', '{"a":"\\/\\b\\f\\n\\r\\t\\u00e9"}', '{"a":[[[]],{}],"b":true,"c":false,"d":null}']) {
    t.equal(agrees(text), undefined, JSON.stringify(text))
    t.not(outlineMessage(text), undefined, `${JSON.stringify(text)} is accepted`)
  }
  const deep = `{"id":1,"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}`
  t.same(outlineMessage(deep), { idStart: 6, idEnd: 7, needsParse: false }, 'nesting without bound, as JSON.parse')
})

t.test('generated messages, and the same text corrupted, agree with JSON.parse', async (t) => {
  for (const seed of [1, 2, 3]) {
    const random = seededRandom(seed)
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T
    const value = (depth: number): unknown => {
      const r = Math.floor(random() * (depth > 4 ? 4 : 7))
      if (r === 0) return pick(['x', 'a"b', 'c\\d', '{"id":1}', '\u00e9\u{1F600}', '', '\n', '"method"', '\u0001'])
      if (r === 1) return pick([0, -1, 1.5, 1e21, -2.5e-7, 2 ** 53 + 2, 42])
      if (r === 2) return pick([null, true, false])
      if (r === 3) return pick(['id', 'method', 'result'])
      if (r === 4) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1))
      return Object.fromEntries(Array.from({ length: Math.floor(random() * 5) }, () => [pick(['id', 'method', 'result', 'error', 'k', 'é', '']), value(depth + 1)]))
    }
    const message = (): string => {
      const fields: Array<[string, unknown]> = [['jsonrpc', '2.0']]
      if (random() < 0.9) fields.push(['id', pick([1, 0, -3, 1.25, 'abc', 'a"\\b', '', null, { x: 1 }, { id: 2, method: 'm' }, [1, { id: 3 }], true])])
      if (random() < 0.2) fields.push(['method', pick(['notifications/progress', 'ping', 5])])
      fields.push([pick(['result', 'error']), value(1)])
      if (random() < 0.1) fields.push([pick(['id', 'result', 'jsonrpc']), value(3)])
      for (let i = fields.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1))
        ;[fields[i], fields[j]] = [fields[j] as [string, unknown], fields[i] as [string, unknown]]
      }
      // Written by hand so that a key may appear twice; spaced and escaped at random.
      const space = (): string => random() < 0.2 ? pick([' ', '\n', '\t ', '\r\n']) : ''
      const key = (name: string): string => random() < 0.15 ? `"\\u00${name.charCodeAt(0).toString(16)}${name.slice(1)}"` : JSON.stringify(name)
      const members = fields.map(([name, v]) => `${space()}${key(name)}${space()}:${space()}${JSON.stringify(v, null, random() < 0.2 ? 1 : undefined)}${space()}`)
      return `${space()}{${members.join(',')}}${space()}`
    }
    const noise = ['"', '{', '}', '[', ']', ',', ':', '\\', ' ', '0', '-', '.', 'e', 'a', 'u', 'n', '\u0001', '']
    let checked = 0
    for (let n = 0; n < 3000; n++) {
      const text = message()
      const problem = agrees(text)
      if (problem !== undefined) t.fail(`seed ${seed}: ${problem}: ${text}`)
      // One to three characters replaced, inserted or removed: mostly text JSON.parse refuses.
      let corrupted = text
      for (let k = 1 + Math.floor(random() * 3); k > 0; k--) {
        const at = Math.floor(random() * (corrupted.length + 1))
        corrupted = corrupted.slice(0, at) + pick(noise) + corrupted.slice(at + (random() < 0.5 ? 1 : 0))
      }
      const corruptedProblem = agrees(corrupted)
      if (corruptedProblem !== undefined) t.fail(`seed ${seed}: ${corruptedProblem}: ${corrupted}`)
      checked += 2
    }
    t.equal(checked, 6000, `seed ${seed}: 3000 messages and 3000 corrupted texts agree`)
  }
})
