// The merged-name table of a virtual server (src/virtual/names.ts): the three prefix modes,
// collisions, shortening to Claude's 64 characters with a hash, the MCP charset, and that the
// table depends on the set of names alone (same names, any arrival order: same table).
import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { buildNameTable, MAX_TOOL_NAME_LENGTH, type MemberItem, type NameTable, type PrefixMode } from '../../src/virtual/names.js'
import { seededRandom } from '../seeded-random.js'

const SEP = { separator: '__' }
const MCP_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/

function items (byMember: Record<string, string[]>): MemberItem[] {
  return Object.entries(byMember).flatMap(([member, names]) => names.map((name) => ({ member, name })))
}

function mergedNames (table: NameTable): string[] {
  return table.entries.map((e) => e.merged)
}

/** The design's formula, computed here independently of the module. */
function shortened (full: string, hashed = full): string {
  return `${full.slice(0, 55)}_${createHash('sha256').update(hashed).digest('hex').slice(0, 8)}`
}

/** Every entry has a valid, unique name that resolves back to it. */
function assertSound (t: Test, table: NameTable): void {
  const names = mergedNames(table)
  t.equal(new Set(names).size, names.length, 'merged names are unique')
  for (const e of table.entries) {
    t.match(e.merged, MCP_NAME_RE, `${e.merged} is within the charset and 64 characters`)
    t.same(table.resolve(e.merged), e, `${e.merged} resolves to its own entry`)
  }
}

t.test('always: every name is <member><separator><name> and resolves back', async (t) => {
  const table = buildNameTable(items({ github: ['create_issue', 'search'], memory: ['search'] }), { prefix: 'always', ...SEP })
  t.same(mergedNames(table), ['github__create_issue', 'github__search', 'memory__search'])
  t.same(table.resolve('memory__search'), { merged: 'memory__search', member: 'memory', name: 'search' })
  t.equal(table.resolve('search'), undefined, 'an original name is not a merged name')
  t.equal(table.resolve('nope'), undefined)
  t.same(table.collisions, [])
  const dotted = buildNameTable(items({ a: ['x'] }), { prefix: 'always', separator: '.' })
  t.same(mergedNames(dotted), ['a.x'], 'the configured separator')
})

t.test('auto: only a shared name is prefixed, for every member that lists it', async (t) => {
  const table = buildNameTable(items({ github: ['create_issue', 'search'], search: ['search', 'fetch'], memory: ['remember'] }), { prefix: 'auto', ...SEP })
  t.same(mergedNames(table), ['create_issue', 'github__search', 'search__search', 'fetch', 'remember'])
  t.same(table.resolve('search__search'), { merged: 'search__search', member: 'search', name: 'search' })
  t.equal(table.resolve('search'), undefined, 'the shared name itself routes nowhere (no winner)')
  t.same(table.collisions, [], 'auto reports nothing: the shared names are all reachable')
  assertSound(t, table)
})

t.test('auto: a prefixed name that equals another member\'s own name gets that one prefixed too, until stable', async (t) => {
  // a and b share x -> a__x, b__x; c's own tool "a__x" would collide -> c__a__x; d's own "c__a__x" -> d__c__a__x.
  const table = buildNameTable(items({ a: ['x'], b: ['x'], c: ['a__x', 'keep'], d: ['c__a__x'] }), { prefix: 'auto', ...SEP })
  t.same(mergedNames(table), ['a__x', 'b__x', 'c__a__x', 'keep', 'd__c__a__x'])
  t.same(table.resolve('a__x'), { merged: 'a__x', member: 'a', name: 'x' })
  t.same(table.resolve('c__a__x'), { merged: 'c__a__x', member: 'c', name: 'a__x' })
  t.same(table.resolve('d__c__a__x'), { merged: 'd__c__a__x', member: 'd', name: 'c__a__x' })
  assertSound(t, table)
})

t.test('never: a shared name is a collision, reported and hidden, with no winner', async (t) => {
  const table = buildNameTable(items({ github: ['search', 'create_issue', 'fetch'], web: ['search', 'fetch'], memory: ['search'] }), { prefix: 'never', ...SEP })
  t.same(mergedNames(table), ['create_issue'])
  t.same(table.collisions, [
    { name: 'fetch', members: ['github', 'web'] },
    { name: 'search', members: ['github', 'web', 'memory'] },
  ], 'sorted by name; the holders in member order')
  t.equal(table.resolve('search'), undefined)
  t.equal(table.resolve('github__search'), undefined, 'never does not invent prefixes')
  t.same(buildNameTable(items({ a: ['x'], b: ['y'] }), { prefix: 'never', ...SEP }).collisions, [])
})

t.test('a name over 64 characters: the first 55 + "_" + 8 hex of SHA-256 of the full name, exactly 64', async (t) => {
  const exact = 'n'.repeat(MAX_TOOL_NAME_LENGTH)
  const long = `${'very_long_tool_name_'.repeat(4)}end`
  const table = buildNameTable(items({ m: [exact, long] }), { prefix: 'auto', ...SEP })
  t.same(mergedNames(table), [exact, shortened(long)], '64 is kept as it is, longer is shortened')
  t.equal(mergedNames(table)[1]?.length, MAX_TOOL_NAME_LENGTH)
  t.same(table.resolve(shortened(long)), { merged: shortened(long), member: 'm', name: long })

  const member = 'a-member-with-a-rather-long-name'
  const name = 'and_a_tool_name_that_is_also_long'
  const prefixed = buildNameTable(items({ [member]: [name] }), { prefix: 'always', ...SEP })
  t.same(mergedNames(prefixed), [shortened(`${member}__${name}`)], 'the prefixed name is what is shortened and hashed')
  t.same(mergedNames(buildNameTable(items({ m: [long] }), { prefix: 'never', ...SEP })), [shortened(long)], 'never shortens too')
})

t.test('shortening never creates a duplicate: a real name keeps its own, the hashed one moves on', async (t) => {
  const long = 'x'.repeat(70)
  const squatter = shortened(long) // a member that happens to list exactly the shortened form
  const table = buildNameTable(items({ a: [long], b: [squatter] }), { prefix: 'auto', ...SEP })
  const [forLong, forSquatter] = mergedNames(table)
  t.equal(forSquatter, squatter, 'the name a member really lists is not displaced')
  t.equal(forLong, shortened(long, `${long}\u00001`), 'the shortened one takes the next salted hash')
  assertSound(t, table)
  t.same(mergedNames(buildNameTable(items({ b: [squatter], a: [long] }), { prefix: 'auto', ...SEP })), [squatter, forLong], 'the same either way round')
})

t.test('two members whose names contain the separator can make the same prefixed name: both stay reachable', async (t) => {
  // member "a" + "b__x" and member "a__b" + "x" are both "a__b__x".
  const table = buildNameTable(items({ a__b: ['x'], a: ['b__x'] }), { prefix: 'always', ...SEP })
  t.same(table.resolve('a__b__x'), { merged: 'a__b__x', member: 'a', name: 'b__x' }, 'the first in content order keeps it')
  const other = table.entries.find((e) => e.member === 'a__b')
  t.equal(other?.merged, shortened('a__b__x', 'a__b__x\u00001'))
  assertSound(t, table)
})

t.test('names stay inside [A-Za-z0-9_.-]: a member\'s odd name is rewritten with a hash, a valid one is kept', async (t) => {
  const odd = ['read file', 'fs/read', 'café', '', 'emoji_😀']
  const table = buildNameTable(items({ m: ['ok.name-1_x', ...odd] }), { prefix: 'auto', ...SEP })
  t.equal(mergedNames(table)[0], 'ok.name-1_x')
  t.equal(table.resolve('read_file_' + createHash('sha256').update('read file').digest('hex').slice(0, 8))?.name, 'read file')
  t.equal(table.resolve('fs_read_' + createHash('sha256').update('fs/read').digest('hex').slice(0, 8))?.name, 'fs/read')
  t.same(table.entries.map((e) => e.name), ['ok.name-1_x', ...odd], 'every one is listed, under its original name')
  assertSound(t, table)
})

/** Each member's items shuffled, and the members' items interleaved at random (each member's order kept). */
function shuffledArrival (byMember: Record<string, string[]>, seed: number): MemberItem[] {
  const random = seededRandom(seed)
  const queues = Object.entries(byMember).map(([member, names]) => shuffle([...names], random).map((name) => ({ member, name })))
  const arrival: MemberItem[] = []
  for (let left = queues.filter((q) => q.length > 0); left.length > 0; left = left.filter((q) => q.length > 0)) {
    const next = left[Math.floor(random() * left.length)]?.shift()
    if (next !== undefined) arrival.push(next)
  }
  return arrival
}

function shuffle<T> (list: T[], random: () => number): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[list[i], list[j]] = [list[j] as T, list[i] as T]
  }
  return list
}

t.test('the table depends on the names alone: any order of the members\' items gives the same table', async (t) => {
  const byMember: Record<string, string[]> = {
    github: ['search', 'create_issue', 'x'.repeat(80), 'memory__search', 'list_prs'],
    memory: ['search', 'remember', 'forget', 'x'.repeat(80)],
    web: ['fetch', 'search', 'github__search', 'odd name'],
  }
  const mapping = (table: NameTable) => Object.fromEntries(table.entries.map((e) => [`${e.member}/${e.name}`, e.merged]))
  for (const prefix of ['auto', 'always', 'never'] as PrefixMode[]) {
    for (let seed = 1; seed <= 20; seed++) {
      const arrival = shuffledArrival(byMember, seed)
      const memberOrder = [...new Set(arrival.map((i) => i.member))]
      const reference = buildNameTable(memberOrder.flatMap((m) => (byMember[m] ?? []).map((name) => ({ member: m, name }))), { prefix, ...SEP })
      const table = buildNameTable(arrival, { prefix, ...SEP })
      assertSound(t, table)
      t.same(mapping(table), mapping(reference), `${prefix}, seed ${seed}: the same merged names`)
      t.same(table.collisions, reference.collisions, `${prefix}, seed ${seed}: the same collisions`)
      t.same([...new Set(table.entries.map((e) => e.member))], memberOrder.filter((m) => table.entries.some((e) => e.member === m)), 'entries grouped in member order')
      for (const member of memberOrder) {
        const own = arrival.filter((i) => i.member === member).map((i) => i.name)
        const listed = table.entries.filter((e) => e.member === member).map((e) => e.name)
        t.same(listed, own.filter((n) => listed.includes(n)), `${member}'s entries in its own order`)
      }
    }
  }
  t.same(buildNameTable(items(byMember), { prefix: 'auto', ...SEP }).entries, buildNameTable(items(byMember), { prefix: 'auto', ...SEP }).entries, 'the same input, the same output')
})

t.test('random name sets: unique, valid, resolvable, whatever collides (seeded)', async (t) => {
  const parts = ['a', 'b', 'a__b', 'x', 'b__x', 'search', 'y'.repeat(40), 'z'.repeat(60), 'odd name']
  for (let seed = 100; seed < 130; seed++) {
    const random = seededRandom(seed)
    const pick = () => parts[Math.floor(random() * parts.length)] ?? 'a'
    const members = ['a', 'a__b', 'b', 'c'.repeat(30)]
    const list = members.flatMap((member) => Array.from({ length: 6 }, () => ({ member, name: random() < 0.5 ? pick() : `${pick()}__${pick()}` })))
    for (const prefix of ['auto', 'always', 'never'] as PrefixMode[]) {
      const table = buildNameTable(list, { prefix, ...SEP })
      const names = mergedNames(table)
      t.equal(new Set(names).size, names.length, `seed ${seed} ${prefix}: unique`)
      t.ok(names.every((n) => MCP_NAME_RE.test(n)), `seed ${seed} ${prefix}: valid`)
      t.ok(table.entries.every((e) => table.resolve(e.merged) === e), `seed ${seed} ${prefix}: resolvable`)
    }
  }
})

t.test('a name a member lists twice (e.g. on two pages) is one entry', async (t) => {
  const table = buildNameTable([{ member: 'a', name: 'x' }, { member: 'b', name: 'y' }, { member: 'a', name: 'x' }], { prefix: 'auto', ...SEP })
  t.same(mergedNames(table), ['x', 'y'])
  t.same(buildNameTable([], { prefix: 'auto', ...SEP }).entries, [])
})
