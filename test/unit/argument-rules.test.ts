// Per-tool argument deny rules (src/policy/argument-rules.ts) as the policy applies them to a
// call's arguments: strings inside arrays and objects, values that are not strings, the
// fail-closed depth bound, the bounded match window. Pattern compilation (flags, ReDoS) is
// covered in test/guardrails/guardrails.test.ts; one call end to end in test/e2e/argument-validation.
import t from 'tap'
import { argumentRefusal, compileArgumentDeny, MAX_MATCHED_CHARS } from '../../src/policy/argument-rules.js'

const rules = compileArgumentDeny({ sql: ['(?i)\\bdrop\\b', ';\\s*$'], limit: ['^9{3,}$'] })

function nested (depth: number, leaf: unknown): unknown {
  let value = leaf
  for (let i = 0; i < depth; i++) value = { inner: value }
  return value
}

t.test('a string argument: refused by the first pattern it matches, named in the message', async (t) => {
  t.equal(argumentRefusal(rules, { sql: 'select 1' }, 'q'), undefined)
  t.equal(argumentRefusal(rules, { sql: 'DROP table users' }, 'q'), 'argument "sql" of tool "q" matches the deny pattern "(?i)\\\\bdrop\\\\b"')
  t.match(argumentRefusal(rules, { sql: 'select 1;' }, 'q'), /matches the deny pattern ";\\\\s\*\$"/)
  t.equal(argumentRefusal(rules, { other: 'drop' }, 'q'), undefined, 'other arguments are not checked')
})

t.test('strings inside arrays and objects are checked; numbers as their text', async (t) => {
  t.match(argumentRefusal(rules, { sql: ['select 1', 'drop x'] }, 'q'), /argument "sql"/, 'an array of statements')
  t.match(argumentRefusal(rules, { sql: { parts: [{ text: 'x' }, { text: 'Drop y' }] } }, 'q'), /argument "sql"/, 'deep inside an object')
  t.match(argumentRefusal(rules, { limit: 99999 }, 'q'), /argument "limit" of tool "q" matches the deny pattern "\^9\{3,\}\$"/, 'a number, as text')
  t.equal(argumentRefusal(rules, { limit: 10, sql: null }, 'q'), undefined)
})

t.test('too deep to look through: refused, not let through', async (t) => {
  t.equal(argumentRefusal(rules, { sql: nested(31, 'select 1') }, 'q'), undefined, 'within the bound: checked and allowed')
  t.match(argumentRefusal(rules, { sql: nested(31, 'drop') }, 'q'), /matches the deny pattern/, 'within the bound: the match is found')
  t.equal(argumentRefusal(rules, { sql: nested(40, 'select 1') }, 'q'), 'argument "sql" of tool "q" is nested too deeply to check against its deny rules')
})

t.test('only the first MAX_MATCHED_CHARS of a string are matched, and a longer one is refused; no rules, no check', async (t) => {
  const padding = 'x'.repeat(MAX_MATCHED_CHARS)
  t.match(argumentRefusal(rules, { sql: `drop ${padding}` }, 'q'), /matches/, 'a match at the start of a long argument')
  t.equal(argumentRefusal(rules, { sql: `${padding} drop` }, 'q'), `argument "sql" of tool "q" holds a string of ${MAX_MATCHED_CHARS + 5} characters, longer than the ${MAX_MATCHED_CHARS} its deny rules are checked on`, 'past the window: not let through unchecked')
  t.match(argumentRefusal(rules, { sql: ['select 1', `${padding} drop`] }, 'q'), /longer than/, 'a long string inside an array too')
  t.equal(argumentRefusal(rules, { sql: padding }, 'q'), undefined, 'a string of exactly the window is checked whole')
  t.equal(argumentRefusal(rules, { other: `${padding} drop` }, 'q'), undefined, 'an argument without rules may be any length')
  t.equal(argumentRefusal([], { sql: 'drop' }, 'q'), undefined)
  t.equal(argumentRefusal(rules, ['drop'], 'q'), undefined, 'arguments that are not an object have no named argument')
  t.throws(() => compileArgumentDeny({ sql: ['(a+)+$'] }), /arguments\.deny\.sql: "\(a\+\)\+\$" may backtrack catastrophically/)
})
