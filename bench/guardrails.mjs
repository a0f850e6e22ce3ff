#!/usr/bin/env node
// Micro-benchmark: what the guardrails (README "Guardrails") add per message, beside the JSON.parse
// every MCP POST already pays. `npm run build && node bench/guardrails.mjs`. Medians of 7 runs, µs;
// on a shared machine compare the columns, not the absolute figures.
//   validateArguments  a tools/call's arguments against an already compiled inputSchema
//   deny rules         two (?i) patterns over a 1 KB string argument
//   pinTools           fingerprinting a 20-tool tools/list answer (every listing pays it)
import { ArgumentValidator } from '../dist/guardrails/argument-validator.js'
import { listedTools } from '../dist/guardrails/tool-guard.js'
import { argumentRefusal, compileArgumentDeny } from '../dist/policy/argument-rules.js'

function median (fn, iterations) {
  for (let i = 0; i < iterations / 10; i++) fn()
  const runs = []
  for (let r = 0; r < 7; r++) {
    const started = process.hrtime.bigint()
    for (let i = 0; i < iterations; i++) fn()
    runs.push(Number(process.hrtime.bigint() - started) / iterations / 1000)
  }
  return runs.sort((a, b) => a - b)[3]
}

const schema = {
  type: 'object',
  properties: { query: { type: 'string', minLength: 1 }, limit: { type: 'integer', minimum: 1, maximum: 100 }, repo: { type: 'string', pattern: '^[\\w.-]+/[\\w.-]+$' }, labels: { type: 'array', items: { type: 'string' } } },
  required: ['query'],
  additionalProperties: false,
}
const args = { query: 'label:bug state:open', limit: 20, repo: 'acme/widgets', labels: ['bug', 'p1'] }
const body = JSON.stringify({ jsonrpc: '2.0', id: 17, method: 'tools/call', params: { name: 'search_issues', arguments: args } })
const validator = new ArgumentValidator()
if (validator.check('fp', schema, args) !== undefined) throw new Error('expected valid')

const rules = compileArgumentDeny({ sql: ['(?i)\\bdrop\\b', '(?i)\\btruncate\\b'] })
const sqlArgs = { sql: `select * from t where ${'a = 1 and '.repeat(100)}b = 2` }
if (argumentRefusal(rules, sqlArgs, 'q') !== undefined) throw new Error('expected allowed')

const tools = Array.from({ length: 20 }, (_, i) => ({ name: `tool_${i}`, description: `Does thing ${i} with care; `.repeat(4), inputSchema: schema, annotations: { readOnlyHint: i % 2 === 0 } }))
const list = { tools }

const parse = median(() => JSON.parse(body), 100_000)
console.log(`JSON.parse of the tools/call (${body.length} B)      ${parse.toFixed(2)} µs`)
console.log(`validateArguments (compiled schema)     ${median(() => validator.check('fp', schema, args), 100_000).toFixed(2)} µs`)
console.log(`deny rules: 2 patterns, 1 KB argument   ${median(() => argumentRefusal(rules, sqlArgs, 'q'), 20_000).toFixed(2)} µs`)
console.log(`pinTools: fingerprint a 20-tool list (${JSON.stringify(list).length} B) ${median(() => listedTools(list), 2_000).toFixed(2)} µs`)
