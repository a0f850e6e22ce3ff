import t from 'tap'
import { InFlight } from '../../src/in-flight.js'

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
