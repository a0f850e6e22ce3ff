import t from 'tap'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { InFlight, InFlightMap } from '../../src/in-flight.js'
import { gcRecord } from '../../bench/trace-gc.mjs'

const PROBE = fileURLToPath(new URL('../fixtures/churn-probe.mjs', import.meta.url))

/**
 * The share of what the probe's requests allocate that young-generation collections promoted
 * (summed over V8's --trace-gc-nvp lines for scavenges), with `container` holding what is in flight.
 */
async function promotedShare (container: string): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--trace-gc-nvp', '--expose-gc', '--import', 'tsx', PROBE, container], { maxBuffer: 64 * 1024 * 1024 })
  let allocated = 0
  let promoted = 0
  for (const line of stdout.split('\n')) {
    const gc = gcRecord(line)
    if (gc?.kind !== 'young') continue
    allocated += gc.allocated
    promoted += gc.promoted
  }
  if (allocated === 0) throw new Error(`no young-generation collection in the probe's output: ${stdout.slice(-300)}`)
  return promoted / allocated
}

t.test('collections are read from --trace-gc-nvp lines of either form', async (t) => {
  t.same(gcRecord('[1:0x1]   49 ms: pause=0.4 mutator=33 gc=s reduce_memory=0 allocated=5014528 promoted=87496 new_space_survived=1'), { kind: 'young', pauseMs: 0.4, allocated: 5014528, promoted: 87496 }, 'Node 20')
  t.same(gcRecord('[1:0x1:0]   49 ms: GC: {"pause":0.375,"gc":"s","allocated":937144,"promoted":87496,"nodes_promoted":4}'), { kind: 'young', pauseMs: 0.375, allocated: 937144, promoted: 87496 }, 'Node 26')
  t.same(gcRecord('[1:0x1:0]   49 ms: GC: {"pause":1,"gc":"mmc","allocated":10,"promoted":2}'), { kind: 'young', pauseMs: 1, allocated: 10, promoted: 2 }, 'a minor mark-sweep')
  t.same(gcRecord('[1:0x1]   49 ms: pause=3 mutator=1 gc=mc allocated=5 promoted=0'), { kind: 'full', pauseMs: 3, allocated: 5, promoted: 0 }, 'a full collection')
  t.equal(gcRecord('[1:0x1:0]   49 ms: GC: {"pause":0.3,"gc":"s","alloc'), undefined, 'a line cut short')
  t.equal(gcRecord('{"requests":60000}'), undefined, "the probe's own line")
})

t.test('entries come and go in any order; values() is what is in, each once', async (t) => {
  const list = new InFlight<string>()
  const a = list.add('a')
  const b = list.add('b')
  const c = list.add('c')
  t.equal(list.size, 3)
  t.same(list.values().sort(), ['a', 'b', 'c'])
  list.delete(b)
  t.same(list.values().sort(), ['a', 'c'], 'from the middle')
  list.delete(c)
  t.same(list.values(), ['a'], 'the newest')
  const d = list.add('d')
  list.delete(a)
  t.same(list.values(), ['d'], 'the oldest')
  list.delete(d)
  t.equal(list.size, 0)
  t.same(list.values(), [])
  list.delete(d)
  list.delete(b)
  t.equal(list.size, 0, 'deleting again changes nothing')
  list.add('e')
  t.same(list.values(), ['e'], 'usable again once empty')
})

t.test('an entry that left holds nothing: not its value, not its neighbours', async (t) => {
  const list = new InFlight<{ readonly name: string }>()
  const first = list.add({ name: 'first' })
  const middle = list.add({ name: 'middle' })
  list.add({ name: 'last' })
  list.delete(middle)
  t.equal(middle.value, undefined)
  t.equal(middle.prev, undefined)
  t.equal(middle.next, undefined)
  t.equal(middle.isIn, false)
  t.same(list.values().map((v) => v.name).sort(), ['first', 'last'], 'its neighbours now point at each other')
  list.clear()
  t.equal(first.value, undefined, 'clear lets go of every value')
  t.equal(list.size, 0)
  t.same(list.values(), [])
})

t.test('what is done with each value may delete entries (shutdown aborting relays)', async (t) => {
  const list = new InFlight<number>()
  const entries = [1, 2, 3, 4].map((n) => list.add(n))
  const seen: number[] = []
  for (const value of list.values()) {
    seen.push(value)
    for (const entry of entries) list.delete(entry)
  }
  t.same(seen.sort(), [1, 2, 3, 4], 'every value that was in when the walk began')
  t.equal(list.size, 0)
})

t.test('InFlightMap: a Map that lets go of what left it', async (t) => {
  const map = new InFlightMap<number, string>()
  map.set(1, 'one')
  map.set(2, 'two')
  map.set(2, 'deux')
  t.equal(map.size, 2)
  t.equal(map.get(2), 'deux', 'set again replaces')
  t.ok(map.has(1))
  t.same(map.entries(), [[1, 'one'], [2, 'deux']], 'entries in insertion order')
  t.same(map.values(), ['one', 'deux'])
  t.equal(map.delete(1), true)
  t.equal(map.delete(1), false, 'deleting again: nothing')
  t.equal(map.get(1), undefined)
  t.notOk(map.has(1))
  map.set(1, 'un')
  t.same(map.entries(), [[2, 'deux'], [1, 'un']], 'a key set again after its delete goes last, as in a Map')
  const snapshot = map.entries()
  map.delete(2)
  t.same(snapshot, [[2, 'deux'], [1, 'un']], 'entries() is a copy: a delete after it does not change it')
  for (const [key] of map.entries()) map.delete(key)
  t.equal(map.size, 0, 'the walk may delete what it walks')
  map.set(3, 'three')
  map.clear()
  t.equal(map.size, 0)
  t.same(map.values(), [])
})

t.test('InFlight.find: the newest value that matches', async (t) => {
  const list = new InFlight<number>()
  t.equal(list.find(() => true), undefined, 'empty')
  for (const n of [1, 2, 3, 4]) list.add(n)
  t.equal(list.find((n) => n % 2 === 1), 3)
  t.equal(list.find((n) => n > 9), undefined)
})

// The reason both exist (src/in-flight.ts): a long-lived Map or Set churned by requests makes
// the young-generation collector promote what the requests allocate; these containers do not.
// The probe (test/fixtures/churn-probe.mjs) is a plain script with a container already in the
// old generation; the gateway measured the same way is in docs/benchmarks.md (bench/gc-per-request.mjs).
t.test('requests going through an InFlight or an InFlightMap are not promoted; through a Set or a Map they were', async (t) => {
  for (const container of ['in-flight', 'in-flight-map']) {
    const share = await promotedShare(container)
    t.ok(share < 0.05, `${container}: ${(share * 100).toFixed(1)}% of what the requests allocated was promoted (under 5%)`)
  }
  // The controls: what the containers replaced. Node 20's V8 promotes about a quarter.
  for (const container of ['set', 'map']) {
    const share = await promotedShare(container)
    if (share > 0.1) t.pass(`${container}: ${(share * 100).toFixed(1)}% was promoted`)
    else t.comment(`${container}: this V8 (${process.version}) promoted only ${(share * 100).toFixed(1)}%`)
  }
})
