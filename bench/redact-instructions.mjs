#!/usr/bin/env node
// Instruction counts for result masking, which unlike time do not depend on the load of a shared
// machine: run this under valgrind's callgrind twice, with N results and with none (the same
// warm-up each time), and divide the difference of the totals by N.
//
//   for n in 0 20000; do valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file=/dev/null \
//     node bench/redact-instructions.mjs leaky secrets,emails json $n 2>&1 | grep 'Collected'; done
//
// Arguments: clean|leaky, the redactResults names (comma-separated), json|sse, N. The texts are
// bench/redact-results.mjs's; `npm run build` first (it runs dist/).
import { createRedactor } from '../dist/guardrails/redactor.js'
import { editJsonBody, SseEditor } from '../dist/upstreams/response-edit.js'
import { answer, cleanText, leakyText, maskingEdit } from './redact-results.mjs'

const [label = 'leaky', names = 'secrets,emails', path = 'json', count = '0'] = process.argv.slice(2)
const text = label === 'clean' ? cleanText() : leakyText()
const edit = maskingEdit(createRedactor(names.split(',')))
const body = Buffer.from(answer(text))
const event = Buffer.from(`event: message\ndata: ${answer(text)}\n\n`)
const run = path === 'sse' ? () => new SseEditor(edit).push(event) : () => editJsonBody(body, edit)
for (let i = 0; i < 20_000; i++) run() // to optimised code before the counted part
for (let i = 0; i < Number(count); i++) run()
