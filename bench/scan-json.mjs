#!/usr/bin/env node
// Micro-benchmark: the duplicate-key / depth scan (src/mcp/scan-json.ts) beside the JSON.parse it
// follows on every MCP POST. `npm run build && node bench/scan-json.mjs`. Medians of 7 runs, µs per
// body; on a shared machine compare the two columns, not the absolute figures.
import { scanJson } from '../dist/mcp/scan-json.js'

const typical = JSON.stringify({ jsonrpc: '2.0', id: 17, method: 'tools/call', params: { name: 'search_issues', arguments: { query: 'label:bug state:open', limit: 20, repo: 'acme/widgets' }, _meta: { progressToken: 17 } } })
const args = {}
for (let i = 0; i < 120; i++) args[`field_${i}`] = { text: 'x'.repeat(40), n: i, tags: ['a', 'b\\"c'] }
const large = JSON.stringify({ jsonrpc: '2.0', id: 18, method: 'tools/call', params: { name: 'bulk', arguments: args } })

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

for (const [label, text, iterations] of [['typical tools/call', typical, 200_000], ['10 KB tools/call', large, 5_000]]) {
  const body = Buffer.from(text)
  const parse = median(() => JSON.parse(body.toString('utf8')), iterations)
  const scan = median(() => { if (scanJson(text) !== undefined) throw new Error('unexpected hazard') }, iterations)
  console.log(`${label} (${body.length} B): toString + JSON.parse ${parse.toFixed(2)} µs, scanJson ${scan.toFixed(2)} µs`)
}
