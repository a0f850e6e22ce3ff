// The pure parts of the guardrails: fingerprints, the dialect a schema is validated in, the
// compiled-schema cache bound, deny patterns ((?i), other inline flags, catastrophic patterns) and
// the config errors `portcullis check` prints for them.
import t from 'tap'
import { canonicalJson, fingerprintOf, toolDefinition } from '../../src/guardrails/tool-fingerprint.js'
import { ArgumentValidator, MAX_COMPILED_SCHEMAS } from '../../src/guardrails/argument-validator.js'
import { approveObserved, diffTools } from '../../src/guardrails/tool-approvals.js'
import { listedTools } from '../../src/guardrails/tool-guard.js'
import { compileDenyPattern } from '../../src/policy/argument-rules.js'
import { makeConfig } from '../helpers.js'

const fingerprint = (tool: unknown): string => {
  const definition = toolDefinition(tool)
  if (definition === undefined) throw new Error('not a tool')
  return fingerprintOf(definition)
}

t.test('fingerprints: key order and whitespace do not matter; every defining field does; display-only fields do not', async (t) => {
  const tool = { name: 'a', description: 'd', inputSchema: { type: 'object', properties: { x: { type: 'string' } } } }
  t.equal(canonicalJson({ b: 1, a: [{ d: 2, c: 'é\n' }] }), '{"a":[{"c":"é\\n","d":2}],"b":1}')
  t.equal(fingerprint(tool), fingerprint(JSON.parse('{ "inputSchema": {"properties": {"x": {"type":"string"}}, "type":"object"}, "description":"d", "name":"a" }')))
  t.not(fingerprint(tool), fingerprint({ ...tool, description: 'd.' }), 'description')
  t.not(fingerprint(tool), fingerprint({ ...tool, inputSchema: { type: 'object' } }), 'inputSchema')
  t.not(fingerprint(tool), fingerprint({ ...tool, outputSchema: { type: 'object' } }), 'outputSchema')
  t.not(fingerprint(tool), fingerprint({ ...tool, annotations: { destructiveHint: true } }), 'annotations')
  t.equal(fingerprint(tool), fingerprint({ ...tool, _meta: { x: 1 }, icons: [] }), '_meta and icons are not part of the definition')
})

t.test('diff and approval: changed, added, removed only from a complete listing; approving one tool keeps the rest', async (t) => {
  const approved = listedTools({ tools: [{ name: 'a', description: '1' }, { name: 'b' }] }) ?? {}
  const listed = listedTools({ tools: [{ name: 'a', description: '2' }, { name: 'c' }] }) ?? {}
  t.same(diffTools(approved, listed, true).map((c) => `${c.change} ${c.name}`), ['changed a', 'removed b', 'added c'])
  t.same(diffTools(approved, listed, false).map((c) => `${c.change} ${c.name}`), ['changed a', 'added c'], 'a page cannot say a tool is gone')
  const observed = { tools: listed, observedAtMs: 0, isComplete: true }
  t.same(Object.keys(approveObserved(approved, observed, ['c'])).sort(), ['a', 'b', 'c'])
  t.equal(approveObserved(approved, observed, ['c']).a?.fingerprint, approved.a?.fingerprint, 'the unapproved change stays out')
  t.same(Object.keys(approveObserved(approved, observed, ['b'])).sort(), ['a'], 'approving a removal drops the tool')
  t.same(Object.keys(approveObserved(approved, observed, undefined)).sort(), ['a', 'c'])
})

t.test('validation dialects: none or 2020-12 is 2020-12, draft-07 and 2019-09 as declared, others refused by name', async (t) => {
  const v = new ArgumentValidator()
  // prefixItems exists only in 2020-12: under it the second item must be a number.
  const tuple = { type: 'array', prefixItems: [{ type: 'string' }, { type: 'number' }] }
  t.match(v.check('t1', { type: 'object', properties: { p: tuple } }, { p: ['a', 'b'] }), { path: '/p/1', message: 'must be number' })
  // draft-07 `items` as an array is the tuple form there.
  const draft07 = { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { p: { type: 'array', items: [{ type: 'string' }, { type: 'number' }] } } }
  t.match(v.check('t2', draft07, { p: ['a', 'b'] }), { path: '/p/1' })
  t.equal(v.check('t2', draft07, { p: ['a', 2] }), undefined)
  t.equal(v.check('t3', { $schema: 'https://json-schema.org/draft/2019-09/schema', type: 'object' }, {}), undefined)
  t.match(v.check('t4', { $schema: 'http://json-schema.org/draft-04/schema#', type: 'object' }, {}), { message: /\$schema .*draft-04.* cannot validate/ })
  t.match(v.check('t5', { type: 'object', properties: { e: { type: 'string', format: 'email' } } }, { e: 'nope' }), { path: '/e', message: /format "email"/ }, 'formats are checked')
  t.match(v.check('t6', { type: 'nonsense' }, {}), { message: /does not compile/ }, 'a broken schema fails closed')
  t.equal(v.check('t7', { $id: 'same', type: 'object' }, {}), undefined)
  t.equal(v.check('t8', { $id: 'same', type: 'object', required: [] }, {}), undefined, 'two tools may share an $id')
})

t.test('the compiled-schema cache is bounded', async (t) => {
  const small = new ArgumentValidator(10)
  for (let i = 0; i < 15; i++) small.check(`f${i}`, { type: 'object', properties: { [`k${i}`]: { type: 'number' } } }, {})
  t.equal(small.size, 10)
  t.equal(new ArgumentValidator().maxCompiled, MAX_COMPILED_SCHEMAS, 'the default bound')
})

t.test('deny patterns: (?i) becomes the i flag; other inline flags and catastrophic patterns are refused', async (t) => {
  const drop = compileDenyPattern('(?i)\\bdrop\\b')
  t.ok(drop instanceof RegExp && drop.flags === 'i' && drop.test('DROP table'))
  t.match(compileDenyPattern('(?m)^x'), /inline flags \(\?m\) are not supported/)
  t.match(compileDenyPattern('a(?i)b'), /only at the very start/)
  t.match(compileDenyPattern('(a+)+$'), /backtrack catastrophically/)
  t.match(compileDenyPattern('('), /not a valid regular expression/)
})

t.test('config: unsafe or malformed deny patterns fail `check` naming the key; defaults are warn and false', async (t) => {
  const base = { auth: { enabled: false }, store: { memory: true } }
  const server = (extra: Record<string, unknown>) => ({ ...base, servers: [{ name: 'db', transport: 'http', url: 'http://127.0.0.1:1/mcp', ...extra }] })
  t.throws(() => makeConfig(server({ tools: { run_query: { arguments: { deny: { sql: ['(x+x+)+y'] } } } } })),
    { name: 'ConfigError', message: /servers\[0\]\.tools\.run_query\.arguments\.deny\.sql\[0\][\s\S]*backtrack catastrophically/ })
  t.throws(() => makeConfig(server({ tools: { run_query: { arguments: { deny: ['drop'] } } } })), { name: 'ConfigError', message: /arguments\.deny[\s\S]*expected a mapping of argument name to a list of regular expressions/ })
  t.throws(() => makeConfig(server({ pinTools: 'strict' })), { name: 'ConfigError', message: /pinTools/ })
  const config = makeConfig(server({}))
  t.match(config.servers[0], { pinTools: 'warn', validateArguments: false })
})
