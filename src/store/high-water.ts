/**
 * A number kept in the store that only grows: the largest value any replica (or any earlier
 * configuration) has needed. Read it, and raise it to `value` when that is larger, atomically
 * (set-if-absent, then compare-and-swap: two replicas raising it at once both end at the larger).
 */
import type { Store } from './types.js'

/** The stored high-water mark after raising it to at least `value`. */
export async function raiseHighWater (store: Store, key: string, value: number): Promise<number> {
  for (;;) {
    const stored = await store.kvGet(key)
    const known = stored === undefined ? 0 : Number(stored)
    if (known >= value) return known
    const isRaised = stored === undefined
      ? await store.kvSetIfAbsent(key, String(value))
      : await store.kvCompareAndSwap(key, stored, String(value))
    if (isRaised) return value
  }
}
