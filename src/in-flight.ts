/**
 * What is in flight on a long-lived object (an HTTP upstream's relays, the event streams kept
 * alive), for what must later reach each of them (shutdown, the keep-alive sweep): a doubly
 * linked list whose nodes let go of their value when they leave.
 *
 * Not a Set. One Set add and one delete per request (HttpUpstream's relays) made about a
 * quarter of all a request allocates outlive the young generation: promoted to the old one,
 * collected only by a full GC, and a scavenge time of 24 µs per request where the same gateway
 * without the Set spent 3.5 (docs/benchmarks.md, the 2026-12-01 06:20 entry; an array did as
 * well as no collection, a Map as badly as the Set). The likely cause: a Set's table is rebuilt
 * as entries come and go, and a discarded table that had reached the old generation still
 * points at the requests it held; the young-generation collector takes every old-to-young
 * pointer as live, so those requests, and all they reference, are kept until the next full GC.
 * A list rewrites its pointers in place and clears a node that leaves: nothing stale points
 * anywhere.
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

  /** The values now, as an array: what is done with each may delete entries. */
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
