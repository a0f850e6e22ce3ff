// The shared core of `portcullis tools diff|approve` and the admin API's tools routes
// (src/guardrails/tool-review.ts, src/admin/server-tools.ts), over the real in-memory store.
import t from 'tap'
import { MemoryStore } from '../../src/store/memory-store.js'
import { approveTools, fieldChanges, reviewTools } from '../../src/guardrails/tool-review.js'
import { approveFirstUse, loadApproved, saveObserved } from '../../src/guardrails/tool-approvals.js'
import { listedTools } from '../../src/guardrails/tool-guard.js'
import { approvalRequest } from '../../src/admin/server-tools.js'

const V1 = listedTools({ tools: [{ name: 'a', description: '1', inputSchema: { type: 'object' } }, { name: 'b' }] }) ?? {}
const V2 = listedTools({ tools: [{ name: 'a', description: '2', inputSchema: { type: 'object' } }, { name: 'c', annotations: { readOnlyHint: true } }] }) ?? {}

t.test('fieldChanges: only the fields whose canonical JSON differs; an absent side stays absent', async (t) => {
  t.same(fieldChanges({ name: 'a', description: '1', inputSchema: { type: 'object', properties: {} } }, { name: 'a', inputSchema: { properties: {}, type: 'object' }, annotations: { x: 1 } }), [
    { field: 'annotations', after: { x: 1 } },
    { field: 'description', before: '1' },
  ], 'key order inside a field is no change')
})

t.test('reviewTools and approveTools: the differences with their fields; the named tools or all of them approved, by whom', async (t) => {
  const store = new MemoryStore()
  t.teardown(() => store.close())
  t.same(await reviewTools(store, 's'), { approved: undefined, observed: undefined, differences: [] })
  t.same(await approveTools(store, 's', { names: undefined, by: 'x', nowMs: 1 }), { status: 'no-listing' })

  await approveFirstUse(store, 's', V1, 1)
  await saveObserved(store, 's', { tools: V2, observedAtMs: 2, isComplete: true })
  const review = await reviewTools(store, 's')
  t.same(review.differences.map((d) => [d.change, d.name, d.fields?.map((f) => f.field)]), [['changed', 'a', ['description']], ['removed', 'b', undefined], ['added', 'c', undefined]])

  const unknown = await approveTools(store, 's', { names: ['a', 'zzz'], by: 'x', nowMs: 3 })
  t.match(unknown, { status: 'unknown-tools', unknown: ['zzz'] }, 'a name without a change: nothing written')
  t.equal((await loadApproved(store, 's'))?.approvedBy, 'first-use')

  t.match(await approveTools(store, 's', { names: ['c'], by: 'carol', nowMs: 4 }), { status: 'approved', approved: [{ name: 'c', change: 'added' }] })
  t.match(await loadApproved(store, 's'), { approvedBy: 'carol', approvedAtMs: 4 })
  t.same(Object.keys((await loadApproved(store, 's'))?.tools ?? {}).sort(), ['a', 'b', 'c'], 'the other changes stay unapproved')

  t.same((await approveTools(store, 's', { names: [], by: 'admin-token', nowMs: 5 })), { status: 'approved', approved: [{ name: 'a', change: 'changed', from: V1.a?.fingerprint, to: V2.a?.fingerprint }, { name: 'b', change: 'removed', from: V1.b?.fingerprint }] }, 'no names: everything')
  t.same(await approveTools(store, 's', { names: undefined, by: 'admin-token', nowMs: 6 }), { status: 'approved', approved: [] }, 'nothing left')
  t.equal((await loadApproved(store, 's'))?.approvedAtMs, 5, 'and nothing written')
})

t.test('approvalRequest: no body or no tools is everything; anything else but a list of names (and their reviewed fingerprints) is refused', async (t) => {
  t.same(approvalRequest(undefined), { names: undefined })
  t.same(approvalRequest(null), { names: undefined })
  t.same(approvalRequest({}), { names: undefined })
  t.same(approvalRequest({ tools: ['a', 'b', 'a'] }), { names: ['a', 'b'] })
  t.same(approvalRequest({ tools: ['a', 'b'], reviewed: { a: 'sha256:x', b: null } }), { names: ['a', 'b'], reviewed: { a: 'sha256:x', b: null } })
  for (const body of [[], 'a', { tools: [] }, { tools: ['a', ''] }, { tools: ['x'.repeat(257)] }, { tools: Array.from({ length: 1001 }, (_, i) => `t${i}`) }, { tools: ['a'], by: 'me' },
    { reviewed: { a: 'x' } }, { tools: ['a'], reviewed: { b: 'x' } }, { tools: ['a'], reviewed: { a: 1 } }, { tools: ['a'], reviewed: ['x'] }]) {
    t.throws(() => approvalRequest(body), { code: 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST', message: /: body: / }, JSON.stringify(body).slice(0, 40))
  }
})

t.test('approveTools with reviewed fingerprints: approved only while each named tool is still the definition reviewed', async (t) => {
  const store = new MemoryStore()
  t.teardown(() => store.close())
  await approveFirstUse(store, 's', V1, 1)
  await saveObserved(store, 's', { tools: V2, observedAtMs: 2, isComplete: true })
  const V3 = listedTools({ tools: [{ name: 'a', description: '3', inputSchema: { type: 'object' } }, { name: 'c', annotations: { readOnlyHint: true } }] }) ?? {}
  const reviewed = { a: V2.a?.fingerprint ?? '', b: null }
  await saveObserved(store, 's', { tools: V3, observedAtMs: 3, isComplete: true })
  t.same(await approveTools(store, 's', { names: ['a', 'b'], by: 'carol', nowMs: 4, reviewed }), { status: 'changed-since-review', changed: ['a'] }, 'a changed again after the review')
  t.equal((await loadApproved(store, 's'))?.approvedBy, 'first-use', 'nothing written')
  t.match(await approveTools(store, 's', { names: ['a', 'b'], by: 'carol', nowMs: 5, reviewed: { a: V3.a?.fingerprint ?? '', b: null } }), { status: 'approved', approved: [{ name: 'a' }, { name: 'b', change: 'removed' }] }, 'reviewed as it is now: approved')
  t.same(Object.keys((await loadApproved(store, 's'))?.tools ?? {}).sort(), ['a'], 'b removed, c (not named) still unapproved')
})

t.test("tools named like an object's own properties are tools like any other: listed, diffed, reviewed, approved, removed", async (t) => {
  const names = ['constructor', 'toString', 'hasOwnProperty', '__proto__']
  const listed = listedTools({ tools: names.map((name) => ({ name, description: 'one' })) }) ?? {}
  t.same(Object.keys(listed).sort(), [...names].sort(), 'each listed name is its own key (__proto__ included)')
  t.equal(Object.getPrototypeOf(listed), null, 'no inherited member looks like a tool')

  const store = new MemoryStore()
  t.teardown(() => store.close())
  await saveObserved(store, 's', { tools: listed, observedAtMs: 1, isComplete: true })
  t.same((await reviewTools(store, 's')).differences.map((d) => [d.change, d.name, d.from]), [...names].sort((a, b) => a.localeCompare(b)).map((n) => ['added', n, undefined]), 'added, with nothing before')
  t.match(await approveTools(store, 's', { names: ['constructor', '__proto__'], by: 'carol', nowMs: 2 }), { status: 'approved', approved: [{ name: '__proto__', change: 'added' }, { name: 'constructor', change: 'added' }] })
  t.same(Object.keys((await loadApproved(store, 's'))?.tools ?? {}).sort(), ['__proto__', 'constructor'], 'approved by their own names')

  // The upstream drops them all: a complete listing without them is their removal.
  await saveObserved(store, 's', { tools: {}, observedAtMs: 3, isComplete: true })
  const removed = (await reviewTools(store, 's')).differences
  t.same(removed.map((d) => [d.change, d.name]), [['removed', '__proto__'], ['removed', 'constructor']], 'removals are seen')
  t.match(await approveTools(store, 's', { names: ['constructor'], by: 'carol', nowMs: 4 }), { status: 'approved', approved: [{ name: 'constructor', change: 'removed' }] })
  t.same(Object.keys((await loadApproved(store, 's'))?.tools ?? {}), ['__proto__'], 'the removal approved drops it')
})
