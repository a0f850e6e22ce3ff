#!/usr/bin/env node
// Micro-benchmark: result masking (servers[].redactResults, src/guardrails/redactor.ts) on a 1 KB
// tools/call result, through the same edit path the gateway uses (src/upstreams/response-edit.ts):
// a JSON answer and an SSE event, clean and with secrets, beside a JSON.parse + stringify of the
// same answer for scale. A server without redactResults is not in this table: its answers are not
// parsed at all (bytes pass). `npm run build && node bench/redact-results.mjs`, or
// `BENCH_ONLY=redact npm run bench`. Medians of 7 runs, CPU µs per result.
import { fileURLToPath } from 'node:url'
import { createRedactor } from '../dist/guardrails/redactor.js'
import { editJsonBody, SseEditor } from '../dist/upstreams/response-edit.js'

const ITERATIONS = 20_000

/** About 1 KB of what a tool returns: log lines with dates, ids, numbers, paths, a URL. */
export function cleanText () {
  const lines = []
  for (let i = 0; lines.join('\n').length < 1000; i++) {
    lines.push(`2026-11-29T12:${String(i).padStart(2, '0')}:07Z INFO worker-${i} handled request 48213${i} for /api/v2/items/${9000 + i} in ${i * 3} ms (https://status.example.com)`)
  }
  return lines.join('\n').slice(0, 1000)
}

const SECRETS = ['AKIAIOSFODNN7EXAMPLE', 'ghp_0123456789abcdefghijABCDEFGHIJklmnop', 'alice@example.com', '4111111111111111',
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c']

export function leakyText () {
  const words = cleanText().split(' ')
  const step = Math.floor(words.length / (SECRETS.length + 1))
  SECRETS.forEach((s, i) => { words[(i + 1) * step] = s })
  return words.join(' ').slice(0, 1100)
}

export const answer = (text) => JSON.stringify({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text }] } })

/**
 * CPU time (process.cpuUsage, user + system) per call, not wall time: on a shared machine
 * the wall clock also counts the time other processes held the core, and the target is
 * gateway CPU per result.
 */
function median (fn) {
  for (let i = 0; i < ITERATIONS / 10; i++) fn()
  const runs = []
  for (let r = 0; r < 7; r++) {
    const started = process.cpuUsage()
    for (let i = 0; i < ITERATIONS; i++) fn()
    const used = process.cpuUsage(started)
    runs.push((used.user + used.system) / ITERATIONS)
  }
  runs.sort((a, b) => a - b)
  return { median: runs[3], low: runs[0], high: runs[6] }
}

/** The edit the gateway builds for a tools/call when the server masks (src/routes/mcp.ts, maskResult). */
export function maskingEdit (redactor) {
  const mask = (message) => {
    const result = redactor.redactResult(message.result, {})
    return result === message.result ? undefined : { ...message, result }
  }
  return { watch: new Map([[1, mask]]), extra: [] }
}

/** One row per case: µs per result, and the ratio to parsing and re-serialising the same answer (the yardstick). */
export async function redactScenario () {
  const rows = []
  const raw = []
  for (const [label, text] of [['clean', cleanText()], ['5 secrets', leakyText()]]) {
    const body = Buffer.from(answer(text))
    const event = Buffer.from(`event: message\ndata: ${answer(text)}\n\n`)
    const yardstick = median(() => JSON.stringify(JSON.parse(body.toString('utf8'))))
    const record = (name, m) => {
      raw.push({ case: name, bytes: body.length, usPerResult: m, ratioToYardstick: m.median / yardstick.median })
      rows.push([name, body.length, m.median.toFixed(2), `${m.low.toFixed(2)}–${m.high.toFixed(2)}`, (m.median / yardstick.median).toFixed(2)])
    }
    record(`${label}: JSON.parse + JSON.stringify of the answer (yardstick)`, yardstick)
    for (const names of [['secrets'], ['secrets', 'emails']]) {
      const redactor = createRedactor(names)
      const edit = maskingEdit(redactor)
      const masked = editJsonBody(body, edit) !== body
      if (masked !== (label !== 'clean')) throw new Error(`unexpected masking outcome for the ${label} result`)
      const parsed = JSON.parse(body.toString('utf8')).result
      record(`${label}, [${names.join(', ')}]: the scan alone`, median(() => redactor.redactResult(parsed, {})))
      record(`${label}, [${names.join(', ')}]: JSON answer through the edit`, median(() => editJsonBody(body, edit)))
      record(`${label}, [${names.join(', ')}]: SSE event through the editor`, median(() => new SseEditor(edit).push(event)))
    }
  }
  const worst = raw.filter((r) => !r.case.includes('yardstick')).sort((a, b) => b.ratioToYardstick - a.ratioToYardstick)[0]
  return {
    name: 'redact',
    title: 'Result masking (servers[].redactResults) on a 1 KB tools/call result, in process; a server without redactResults does not parse its answers at all',
    columns: ['bytes', 'CPU µs per result (median of 7)', 'range', 'vs parse + stringify'],
    rows,
    summary: `Costliest masked path: ${worst.case}, ${worst.usPerResult.median.toFixed(2)} µs (${worst.ratioToYardstick.toFixed(2)}× the yardstick). Target: under 20 µs per 1 KB result.`,
    raw,
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await redactScenario()
  for (const row of s.rows) console.log(`${row[0]} (${row[1]} B): ${row[2]} µs (${row[3]}), ${row[4]}× the yardstick`)
  console.log(s.summary)
}
