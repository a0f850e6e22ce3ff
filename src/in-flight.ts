/**
 * What is in flight on a long-lived object (an HTTP upstream's relays, the event streams kept
 * alive), for what must later reach each of them (shutdown, the keep-alive sweep): a doubly
 * linked list whose nodes let go of their value when they leave.
 *
 * Not a Set. One Set add and one delete per request (HttpUpstream's relays) made about a
 * quarter of all a request allocates outlive the young generation: promoted to the old one,
 * collected only by a full GC, and a scavenge time of 24 µs per request where the same gateway
 * without the Set spent 3.5 (docs/benchmarks.md, the 2026-12-01 06:20 entry; an array did as
 * well as no collection, a Map as badly as the Set). The cause: a Set's table is rebuilt as
 * entries come and go, and a discarded table that had reached the old generation still points
 * at the requests it held; the young-generation collector takes every old-to-young pointer as
 * live, so those requests, and all they reference, are kept until the next full GC. A plain
 * script shows it once the container is old (test/fixtures/churn-probe.mjs: a quarter promoted
 * through a Set or a Map, about 1% through these). A list rewrites its pointers in place and
 * clears a node that leaves: nothing stale points anywhere.
 */
export class InFlight<T> {
  private head: Entry<T> | undefined
  private count = 0

  /** Adds `value`; the entry is what `delete` takes. */
  add (value: T): Entry<T> {
    const entry = new Entry(value, this.head)
    if (this.head !== undefined) this.head.prev = entry
    this.head = entry
    this.count++
    return entry
  }

  /** Removes the entry (again: nothing); it no longer refers to its value or its neighbours. */
  delete (entry: Entry<T>): void {
    if (!entry.isIn) return
    entry.isIn = false
    const { prev, next } = entry
    if (prev === undefined) this.head = next
    else prev.next = next
    if (next !== undefined) next.prev = prev
    entry.prev = undefined
    entry.next = undefined
    entry.value = undefined
    this.count--
  }

  get size (): number {
    return this.count
  }

  /** The newest value that satisfies `predicate`, without copying (the predicate must not delete entries). */
  find (predicate: (value: T) => boolean): T | undefined {
    for (let entry = this.head; entry !== undefined; entry = entry.next) if (predicate(entry.value as T)) return entry.value
    return undefined
  }

  /** The values now, newest first, as an array: what is done with each may delete entries. */
  values (): T[] {
    const out: T[] = []
    for (let entry = this.head; entry !== undefined; entry = entry.next) out.push(entry.value as T)
    return out
  }

  clear (): void {
    for (let entry = this.head; entry !== undefined;) {
      const next = entry.next
      this.delete(entry)
      entry = next
    }
  }
}

export class Entry<T> {
  isIn = true
  prev: Entry<T> | undefined = undefined

  constructor (public value: T | undefined, public next: Entry<T> | undefined) {}
}

/**
 * What is in flight by key (a stdio channel's requests by id), for a long-lived owner: a Map
 * whose values sit in cells, and a cell that leaves lets go of its value. The Map's tables are
 * rebuilt as entries come and go, and a discarded table that reached the old generation still
 * points at what it held (InFlight above says what that costs); here it points at emptied cells
 * only, so a request's objects are not kept past their time.
 */
export class InFlightMap<K, V> {
  private readonly cells = new Map<K, Cell<V>>()

  get size (): number {
    return this.cells.size
  }

  has (key: K): boolean {
    return this.cells.has(key)
  }

  get (key: K): V | undefined {
    return this.cells.get(key)?.value
  }

  set (key: K, value: V): void {
    const cell = this.cells.get(key)
    if (cell !== undefined) cell.value = value
    else this.cells.set(key, { value })
  }

  delete (key: K): boolean {
    const cell = this.cells.get(key)
    if (cell === undefined) return false
    cell.value = undefined
    return this.cells.delete(key)
  }

  clear (): void {
    for (const cell of this.cells.values()) cell.value = undefined
    this.cells.clear()
  }

  /** The entries now, as an array: what is done with each may delete entries. */
  entries (): Array<[K, V]> {
    const out: Array<[K, V]> = []
    for (const [key, cell] of this.cells) out.push([key, cell.value as V])
    return out
  }

  /** The values now, as an array. */
  values (): V[] {
    const out: V[] = []
    for (const cell of this.cells.values()) out.push(cell.value as V)
    return out
  }
}

interface Cell<V> { value: V | undefined }
