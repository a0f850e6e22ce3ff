// The result masker on its own: each built-in detector's true and false positives, the walk
// over result shapes (what is read, what is left alone), operator patterns and their checks,
// and the config key. The end-to-end path (HTTP, SSE split across writes, batch, stdio, audit)
// is test/e2e/redact-results.test.ts.
import t from 'tap'
import { createRedactor, type RedactionCounts } from '../../src/guardrails/redactor.js'
import { isLuhnValid, patternProblem } from '../../src/guardrails/detectors.js'
import { ConfigError, parseConfig } from '../../src/config/load.js'
import { describeConfig } from '../../src/config/describe.js'
import { FAKE } from '../fixtures/fake-secrets.mjs'

function redact (entries: Parameters<typeof createRedactor>[0], text: string): { text: string, counts: RedactionCounts } {
  const redactor = createRedactor(entries)
  if (redactor === undefined) throw new Error('no redactor')
  const counts: RedactionCounts = {}
  return { text: redactor.redactText(text, counts), counts }
}

t.test('each secret shape is found and masked by its kind', async (t) => {
  const cases: Array<[string, string, string]> = [
    ['cloud-keys', `key id ${FAKE.aws} here`, 'key id [redacted:cloud-keys] here'],
    ['cloud-keys', `${FAKE.awsSecret}\n`, '[redacted:cloud-keys]\n'],
    ['cloud-keys', `"${FAKE.google}"`, '"[redacted:cloud-keys]"'],
    ['github-tokens', `token=${FAKE.github};`, 'token=[redacted:github-tokens];'],
    ['github-tokens', FAKE.githubFine, '[redacted:github-tokens]'],
    ['gitlab-tokens', `use ${FAKE.gitlab}`, 'use [redacted:gitlab-tokens]'],
    ['slack-tokens', `${FAKE.slack} and ${FAKE.slackHook}`, '[redacted:slack-tokens] and [redacted:slack-tokens]'],
    ['jwts', `id_token: ${FAKE.jwt}`, 'id_token: [redacted:jwts]'],
    ['bearer', `Authorization: ${FAKE.bearer}`, 'Authorization: [redacted:bearer]'],
    ['private-keys', `key:\n${FAKE.pem}\nend`, 'key:\n[redacted:private-keys]\nend'],
    ['private-keys', '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA', '[redacted:private-keys]'],
    ['private-keys', '-----BEGIN RSA PRIVATE KEY-----\\nMIIEpAIBAAKCAQEA\\n-----END RSA PRIVATE KEY-----', '[redacted:private-keys]'],
    ['credit-cards', `card ${FAKE.card}.`, 'card [redacted:credit-cards].'],
    ['credit-cards', 'card 4111 1111 1111 1111, amex 3782-822463-10005', 'card [redacted:credit-cards], amex [redacted:credit-cards]'],
    ['emails', `mail ${FAKE.email}!`, 'mail [redacted:emails]!'],
  ]
  for (const [kind, input, expected] of cases) {
    const out = redact([kind], input)
    t.equal(out.text, expected, `${kind}: ${input.slice(0, 30)}`)
    t.same(out.counts, { [kind]: (expected.match(/\[redacted:/g) ?? []).length })
  }
})

t.test('look-alikes stay: prose, short or embedded tokens, public keys, Luhn failures, other numbers', async (t) => {
  const keep = [
    'the bearer of bad news',
    'ghp_short and glpat-short and xoxb-1',
    `x${FAKE.aws}x`,
    'eyJhbGciOiJIUzI1NiJ9 is a header alone',
    '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----',
    '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----',
    `order ${FAKE.notCard}`,
    'timestamp 1732924800000, phone +1 555-123-4567, uuid 123e4567-e89b-12d3-a456-426614174000',
    'version 4.1.1, port 65535, 2026-11-29',
    'root@localhost and @mentions',
  ]
  for (const text of keep) {
    const out = redact(['secrets', 'emails'], text)
    t.equal(out.text, text, text.slice(0, 40))
    t.same(out.counts, {})
  }
})

t.test('Luhn', async (t) => {
  for (const valid of ['4111111111111111', '5555555555554444', '378282246310005', '6011111111111117', '4111-1111-1111-1111']) t.ok(isLuhnValid(valid), valid)
  for (const invalid of ['4111111111111112', '1234567812345678', '411111111111', '41111111111111111111']) t.notOk(isLuhnValid(invalid), invalid)
})

t.test('only the detectors named run: groups, fine names, each once', async (t) => {
  const text = `${FAKE.github} ${FAKE.email} ${FAKE.card}`
  t.equal(redact(['github-tokens'], text).text, `[redacted:github-tokens] ${FAKE.email} ${FAKE.card}`)
  t.equal(redact(['emails'], text).text, `${FAKE.github} [redacted:emails] ${FAKE.card}`)
  t.equal(redact(['secrets'], text).text, `[redacted:github-tokens] ${FAKE.email} [redacted:credit-cards]`, 'secrets: every secret shape, not personal data')
  t.same(redact(['secrets', 'github-tokens', 'emails'], text).counts, { 'github-tokens': 1, emails: 1, 'credit-cards': 1 }, 'a detector named twice over runs once')
  t.equal(createRedactor([]), undefined, 'nothing listed: no redactor at all')
})

t.test('operator patterns, with and without groups of their own, beside the built-ins', async (t) => {
  const entries = [
    'jwts' as const,
    { name: 'ticket', pattern: '(OPS|SEC)-(\\d{4})' },
    { name: 'employee-id', pattern: 'EMP-\\d{6}' },
  ]
  const out = redact(entries, `EMP-123456 opened SEC-0042 with ${FAKE.jwt}; EMP-12 is too short`)
  t.equal(out.text, '[redacted:employee-id] opened [redacted:ticket] with [redacted:jwts]; EMP-12 is too short')
  t.same(out.counts, { 'employee-id': 1, ticket: 1, jwts: 1 }, 'each match counted under its own name (groups do not shift the others)')
})

t.test('the walk: text, embedded resource text, structured content, resource and prompt text; blobs left alone', async (t) => {
  const redactor = createRedactor(['secrets'])
  if (redactor === undefined) throw new Error('no redactor')
  const call = {
    content: [
      { type: 'text', text: `found ${FAKE.github}` },
      { type: 'image', data: FAKE.aws, mimeType: 'image/png' },
      { type: 'resource', resource: { uri: 'file:///k', text: FAKE.pem } },
      { type: 'resource', resource: { uri: 'file:///b', blob: FAKE.aws } },
      { type: 'resource_link', uri: 'file:///x', name: 'x' },
    ],
    structuredContent: { token: FAKE.slack, nested: { list: [FAKE.jwt, 7, null, { deep: FAKE.card }] }, [FAKE.aws]: 'keys are names' },
    isError: false,
  }
  const counts: RedactionCounts = {}
  const out = redactor.redactResult(call, counts)
  t.same(out, {
    content: [
      { type: 'text', text: 'found [redacted:github-tokens]' },
      { type: 'image', data: FAKE.aws, mimeType: 'image/png' },
      { type: 'resource', resource: { uri: 'file:///k', text: '[redacted:private-keys]' } },
      { type: 'resource', resource: { uri: 'file:///b', blob: FAKE.aws } },
      { type: 'resource_link', uri: 'file:///x', name: 'x' },
    ],
    structuredContent: { token: '[redacted:slack-tokens]', nested: { list: ['[redacted:jwts]', 7, null, { deep: '[redacted:credit-cards]' }] }, [FAKE.aws]: 'keys are names' },
    isError: false,
  })
  t.same(counts, { 'github-tokens': 1, 'private-keys': 1, 'slack-tokens': 1, jwts: 1, 'credit-cards': 1 })
  t.equal(call.content[0]?.text, `found ${FAKE.github}`, 'the input is not mutated')

  const read = { contents: [{ uri: 'a', text: `k=${FAKE.gitlab}` }, { uri: 'b', blob: FAKE.aws }] }
  t.same(redactor.redactResult(read, {}), { contents: [{ uri: 'a', text: 'k=[redacted:gitlab-tokens]' }, { uri: 'b', blob: FAKE.aws }] })
  const prompt = { messages: [{ role: 'user', content: { type: 'text', text: FAKE.bearer } }, { role: 'user', content: { type: 'image', data: FAKE.aws } }] }
  t.same(redactor.redactResult(prompt, {}), { messages: [{ role: 'user', content: { type: 'text', text: '[redacted:bearer]' } }, { role: 'user', content: { type: 'image', data: FAKE.aws } }] })

  const clean = { content: [{ type: 'text', text: 'nothing here' }], structuredContent: { a: ['b'] } }
  t.equal(redactor.redactResult(clean, {}), clean, 'nothing matched: the very same object (the answer passes unedited)')
  const list = { tools: [{ name: 'x', description: FAKE.github }] }
  t.equal(redactor.redactResult(list, {}), list, 'other result shapes are not read')
})

t.test('operator patterns are checked: catastrophic, backreferences, named groups, empty matches, flags', async (t) => {
  t.equal(patternProblem('EMP-\\d{6}'), undefined)
  t.equal(patternProblem('id:(?=\\d)[0-9a-f]{8}'), undefined, 'lookahead is fine')
  t.match(patternProblem('(?<=id:)\\d+'), /lookbehind/)
  t.match(patternProblem('(a+)+$'), /exponential time/)
  t.match(patternProblem('(\\w+\\s?)*x'), /exponential time/)
  t.match(patternProblem('(x)\\1'), /backreferences/)
  t.match(patternProblem('(?<id>x)'), /named groups/)
  t.match(patternProblem('a*'), /empty string/)
  t.match(patternProblem('(?i)emp'), /inline flags/)
  t.match(patternProblem('[a-'), /not a valid regular expression/)
  t.match(patternProblem('x'.repeat(1001)), /at most 1000/)
})

function configError (redactResults: unknown): string {
  const yaml = JSON.stringify({ servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:9/mcp', redactResults }] })
  try {
    parseConfig(yaml, 'gw.yaml', {})
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  return 'accepted'
}

t.test('config: servers[].redactResults', async (t) => {
  const config = parseConfig('servers:\n  - { name: a, transport: http, url: "http://127.0.0.1:9/mcp", redactResults: [secrets, emails, { name: employee-id, pattern: "EMP-\\\\d{6}" }] }\n', 'gw.yaml', {})
  t.same(config.servers[0]?.redactResults, ['secrets', 'emails', { name: 'employee-id', pattern: 'EMP-\\d{6}' }])
  t.same(parseConfig('servers:\n  - { name: a, transport: stdio, command: x }\n', 'gw.yaml', {}).servers[0]?.redactResults, [], 'off by default')
  t.match(configError(['secret']), /servers\[0\]\.redactResults\[0\].*unknown detector "secret": expected one of secrets, private-keys/)
  t.match(configError([{ name: 'x', pattern: '(a+)+' }]), /servers\[0\]\.redactResults\[0\]\.pattern.*exponential time/)
  t.match(configError([{ name: 'jwts', pattern: 'x' }]), /is a built-in detector's name/)
  t.match(configError(['emails', 'emails']), /"emails" is listed twice/)
  t.match(configError([{ name: 'x' }]), /redactResults\[0\]/)
  t.match(configError('secrets'), /redactResults/)
  const typo = (() => { try { parseConfig('servers:\n  - { name: a, transport: http, url: "http://127.0.0.1:9/mcp", redact_results: [secrets] }\n', 'gw.yaml', {}) } catch (err) { return (err as Error).message } return '' })()
  t.match(typo, /unknown key "redact_results" \(did you mean "redactResults"\?\)/)
  const described = describeConfig(config)
  t.match(described, /results masked: secrets, emails, employee-id/, 'check lists what is masked')
  t.notMatch(described, /EMP-/, 'by name: an operator pattern is not printed')
})
