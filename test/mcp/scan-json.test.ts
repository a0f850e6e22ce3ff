import t from 'tap'
import { MAX_JSON_DEPTH, memberOf, objectMembers, scanJson } from '../../src/mcp/scan-json.js'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { PortcullisError } from '../../src/errors.js'

/** The scanner's precondition: text JSON.parse accepts. Every case is checked against it first. */
function scan (text: string): ReturnType<typeof scanJson> {
  JSON.parse(text)
  return scanJson(text)
}

t.test('duplicate keys are found at any depth, as JSON.parse decodes them', async (t) => {
  t.same(scan('{"method":"tools/call","params":{"name":"danger"},"method":"ping"}'), { kind: 'duplicate-key', key: 'method' })
  t.same(scan('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"danger"}}'), { kind: 'duplicate-key', key: 'name' })
  t.same(scan('{"method":"a","\\u006dethod":"b"}'), { kind: 'duplicate-key', key: 'method' }, '\\u escapes decode before comparing')
  t.same(scan('{"\\u0061\\u0062":1,"a\\u0062":2}'), { kind: 'duplicate-key', key: 'ab' })
  t.same(scan('{ "a" : 1 ,\n\t"a" : 2 }'), { kind: 'duplicate-key', key: 'a' }, 'whitespace anywhere')
  t.same(scan('{"":1,"":2}'), { kind: 'duplicate-key', key: '' }, 'the empty key')
  t.same(scan('{"a":[[{"b":1}],{"c":[1,{"d":1,"d":2}]}]}'), { kind: 'duplicate-key', key: 'd' }, 'inside nested arrays')
  t.same(scan('{"a":{"x":1},"a":2}'), { kind: 'duplicate-key', key: 'a' }, 'after a nested object closes')
  t.same(scan('[{"a":1},{"b":1,"b":2}]'), { kind: 'duplicate-key', key: 'b' }, 'in a batch member')
  t.same(scan('{"a\\"":1,"a\\"":2}'), { kind: 'duplicate-key', key: 'a"' }, 'escaped quotes inside keys')
  const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i]))
  t.same(scan(JSON.stringify(many).replace(/}$/, ',"k3":0}')), { kind: 'duplicate-key', key: 'k3' }, 'objects with many keys (the Set path)')
  t.same(scan(JSON.stringify(many).replace(/}$/, ',"k39":0}')), { kind: 'duplicate-key', key: 'k39' })
})

t.test('no false alarms: same names at other levels, in values, in arrays, in tricky strings', async (t) => {
  t.equal(scan('{"a":{"a":{"a":1}},"b":{"a":2}}'), undefined, 'the same key at different levels')
  t.equal(scan('[{"a":1},{"a":2}]'), undefined, 'the same key in sibling objects')
  t.equal(scan('{"a":"a","b":"a","c":["a","a"]}'), undefined, 'values equal to keys')
  t.equal(scan('{"a":"{,\\"a\\":1}","b":"[\\\\","c":"\\\\\\"a\\":"}'), undefined, 'braces, commas, quotes and backslashes inside strings')
  t.equal(scan('{"a\\\\":1,"a":2}'), undefined, 'a key ending in an escaped backslash')
  t.equal(scan('{"ab":1,"a_b":2,"a-b":3,"\\u00e4b":4}'), undefined, 'keys that differ in more than letter case')
  t.equal(scan('{"a":{},"b":[],"c":[{}],"d":{"e":[]}}'), undefined, 'empty containers')
  t.equal(scan('"just a string"'), undefined)
  t.equal(scan('42'), undefined)
  // Random documents JSON.stringify wrote (unique keys by construction) pass.
  let seed = 7
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  const gen = (depth: number): unknown => {
    const r = rand(depth > 6 ? 3 : 6)
    if (r === 0) return ['x', 'a"b', 'c\\d', '{"k":1}', '\u00e9\u{1F600}', ''][rand(6)]
    if (r === 1) return rand(1000) - 500
    if (r === 2) return [null, true, false][rand(3)]
    if (r === 3) return Array.from({ length: rand(4) }, () => gen(depth + 1))
    return Object.fromEntries(Array.from({ length: rand(12) }, (_, i) => [['k', 'a"', 'b\\', 'é', ''][rand(5)] + String(i), gen(depth + 1)]))
  }
  let hazards = 0
  for (let i = 0; i < 500; i++) if (scan(JSON.stringify(gen(0))) !== undefined) hazards++
  t.equal(hazards, 0, '500 generated documents, no hazard reported')
})

t.test('__proto__ keys are refused, escaped or not; other names are not', async (t) => {
  t.same(scan('{"params":{"arguments":{"__proto__":{"isAdmin":true}}}}'), { kind: 'proto-key' })
  t.same(scan('{"\\u005f_proto__":1}'), { kind: 'proto-key' })
  t.equal(scan('{"a":"__proto__","constructor":{"prototype":1},"__proto":1}'), undefined, 'only the key __proto__ itself')
})

t.test(`nesting is capped at MAX_JSON_DEPTH (${MAX_JSON_DEPTH})`, async (t) => {
  const nested = (depth: number, open = '[', close = ']'): string => open.repeat(depth) + close.repeat(depth)
  t.equal(scan(nested(MAX_JSON_DEPTH)), undefined, 'exactly the cap passes')
  t.same(scan(nested(MAX_JSON_DEPTH + 1)), { kind: 'too-deep' })
  t.same(scan('{"a":'.repeat(MAX_JSON_DEPTH + 1) + '1' + '}'.repeat(MAX_JSON_DEPTH + 1)), { kind: 'too-deep' }, 'objects count too')
  t.same(scan(nested(100_000)), { kind: 'too-deep' })
  t.equal(scan(`[${nested(10).repeat(1000)}]`.replace(/\]\[/g, '],[')), undefined, 'depth, not size: many shallow containers pass')
})

function failure (text: string): PortcullisError {
  try {
    inspectBody(Buffer.from(text))
  } catch (err) {
    if (err instanceof PortcullisError) return err
    throw err
  }
  throw new Error('expected inspectBody to throw')
}

t.test('keys that differ only in letter case are duplicates (Go\'s encoding/json reads them as one)', async (t) => {
  t.same(scan('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"delete_repository","arguments":{}}}'), { kind: 'duplicate-key', key: 'Name', first: 'name' })
  t.same(scan('{"method":"tools/call","METHOD":"ping"}'), { kind: 'duplicate-key', key: 'METHOD', first: 'method' })
  t.same(scan('{"\\u006dethod":1,"Method":2}'), { kind: 'duplicate-key', key: 'Method', first: 'method' }, 'escapes decoded, then case folded')
  t.same(scan('{"sql":"select 1","\u017fql":"drop table t"}'), { kind: 'duplicate-key', key: '\u017fql', first: 'sql' }, 'the long s is an s')
  t.same(scan('{"kind":1,"\u212aind":2}'), { kind: 'duplicate-key', key: '\u212aind', first: 'kind' }, 'the Kelvin sign is a k')
  t.same(scan('{"\u03c3":1,"\u03c2":2}'), { kind: 'duplicate-key', key: '\u03c2', first: '\u03c3' }, 'Greek sigma in both its small forms')
  t.same(scan('{"a":{"Key":1},"b":{"kEY":2,"x":[{"key":3}]}}'), undefined, 'keys of different objects never clash')
  t.same(scan('{"Name":1,"Name":2}'), { kind: 'duplicate-key', key: 'Name' }, 'the same spelling twice is an ordinary duplicate')
  // Past the linear check's few keys, the Set of folded keys.
  t.same(scan(`{${Array.from({ length: 12 }, (_, i) => `"k${i}":${i}`).join(',')},"K11":0}`), { kind: 'duplicate-key', key: 'K11', first: 'k11' })
})

t.test('inspectBody refuses them as invalid requests with a message naming the problem', async (t) => {
  const dup = failure('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"danger"},"method":"ping"}')
  t.equal(dup.code, 'PORTCULLIS_ERR_INVALID_REQUEST')
  t.equal(dup.status, 400)
  t.equal(dup.rpcCode, -32600)
  t.equal(dup.message, 'Invalid Request: duplicate key "method" in a JSON object (each key may appear once)')
  t.equal(dup.rpcId, 7, 'the id is echoed when it is unambiguous')
  t.equal(failure('{"jsonrpc":"2.0","id":7,"id":8,"method":"ping"}').rpcId, null, 'not when "id" itself is doubled')
  const cased = failure('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","Name":"delete_repository"}}')
  t.equal(cased.message, 'Invalid Request: keys "name" and "Name" of one JSON object differ only in letter case (parsers that ignore case read them as one key)')
  t.equal(cased.rpcId, 7)
  t.equal(failure('{"jsonrpc":"2.0","id":7,"ID":8,"method":"ping"}').rpcId, null, 'nor when "id" is doubled in another case')
  t.equal(failure('[{"jsonrpc":"2.0","id":1,"method":"ping","method":"x"}]').rpcId, null, 'a batch is refused whole')
  const deep = failure(`{"jsonrpc":"2.0","id":"d","method":"tools/call","params":{"name":"echo","arguments":{"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}}}`)
  t.equal(deep.message, `Invalid Request: the JSON body nests objects and arrays deeper than ${MAX_JSON_DEPTH} levels`)
  t.equal(deep.rpcId, 'd')
  t.equal(failure('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"__proto__":{}}}}').message, 'Invalid Request: the key "__proto__" is not accepted in a JSON object')
  t.equal(failure('{"a":1,"a":2').code, 'PORTCULLIS_ERR_PARSE', 'invalid JSON is still a parse error first')
  t.equal(failure(`{"jsonrpc":"2.0","id":1,"method":"x","params":{"${'k'.repeat(200)}":1,"${'k'.repeat(200)}":2}}`).message.length < 200, true, 'a long key is shortened in the message')
})

t.test('memberOf finds one member as objectMembers does: escaped keys decoded, names in values and nested objects passed over', async (t) => {
  const at = (text: string, key: string, open = text.indexOf('{')): string | undefined => {
    JSON.parse(text)
    const found = memberOf(text, open, key)
    const expected = objectMembers(text, open).find((m) => m.key === key)
    t.same(found, expected, `${key} in ${text}: as objectMembers finds it`)
    return found === undefined ? undefined : text.slice(found.valueStart, found.end)
  }
  t.equal(at('{"jsonrpc":"2.0","params":{"arguments":{"name":"inner"},"name":"outer"}}', 'name', 26), '"outer"', 'not the arguments\' own name')
  t.equal(at('{"jsonrpc":"2.0","params":{"arguments":{"name":"inner"},"name":"outer"}}', 'params'), '{"arguments":{"name":"inner"},"name":"outer"}')
  t.equal(at('{ "a\\u005fb" : [1, {"name": 2}] ,\n "name" :\t"x\\"y" }', 'name'), '"x\\"y"', 'whitespace anywhere, escapes in strings')
  t.equal(at('{"n\\u0061me":1e20}', 'name'), '1e20', 'an escaped key is decoded')
  t.equal(at('{"nam\\u0065x":1,"na":2}', 'name'), undefined, 'a key of the same length with an escape is no match')
  t.equal(at('{"\\\\name":1}', 'name'), undefined, 'an escaped backslash is part of the key')
  t.equal(at('{"names":"name","x":{"name":1}}', 'name'), undefined, 'a longer key, a value and a nested key are not the member')
  t.equal(at('{}', 'name'), undefined)
  t.equal(at('{"a":null,"b":true,"c":-1.5e-3,"name":[]}', 'name'), '[]', 'past literals and numbers')
})
