/**
 * `promise`, or the error `onTimeout` returns once `ms` have passed (then `onTimeout` runs once,
 * and may log). The timer is cleared either way, so nothing is kept alive by it.
 */
export async function withTimeout<T> (promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(onTimeout()) }, ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
