/**
 * A short lock in the store around a read-modify-write of one shared value (the blocked-user
 * list): two administrators blocking at once, on two replicas, would otherwise each write the
 * list they read and one block would be lost — fail closed: an action that cannot get the lock
 * fails and says so. The lock expires by itself if its holder dies, and is released only by
 * its holder (compare-and-swap on the holder's own value).
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Store } from '../store/types.js'

const LOCK_TTL_MS = 5_000
/** Waiting outlasts a dead holder's lock. */
const LOCK_WAIT_MS = LOCK_TTL_MS + 2_000
const LOCK_RETRY_MS = 15

export async function withStoreLock<T> (store: Store, key: string, now: () => number, work: () => Promise<T>): Promise<T> {
  // Each holding its own value: a holder whose work outlasted LOCK_TTL_MS must not release
  // the lock someone took since its own ran out (both would then be inside, and a third too).
  const holder = randomUUID()
  // Wall time for the wait (the injected clock may stand still in tests); the lock's expiry is the store's.
  const deadline = performance.now() + LOCK_WAIT_MS
  while (!await store.kvSetIfAbsent(key, holder, now() + LOCK_TTL_MS)) {
    if (performance.now() > deadline) throw new Error(`${key} stayed locked for ${LOCK_WAIT_MS} ms`)
    await sleep(LOCK_RETRY_MS + Math.random() * LOCK_RETRY_MS)
  }
  try {
    return await work()
  } finally {
    await store.kvCompareAndSwap(key, holder, undefined)
  }
}
