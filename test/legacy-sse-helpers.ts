// A 2024-11-05 event stream driven by hand, for the legacy-transport tests of servers and virtual servers.
import type { Test } from 'tap'
import { SseEventReader } from '../src/upstreams/sse-events.js'

/** A hand-driven legacy session: the endpoint event, then each message event as it comes (token '': none, auth off). */
export async function openRaw (t: Test, url: string, token: string): Promise<{ endpoint: string, next: () => Promise<unknown>, close: () => void }> {
  const abort = new AbortController()
  const auth: Record<string, string> = token === '' ? {} : { authorization: `Bearer ${token}` }
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...auth }, signal: abort.signal })
  t.equal(res.status, 200, 'the event stream opens')
  const body = res.body
  if (body === null) throw new Error('no body')
  const reader = body.getReader()
  const events = new SseEventReader()
  const queue: Array<{ event: string, data: string }> = []
  const take = async (): Promise<{ event: string, data: string }> => {
    while (queue.length === 0) {
      const { value, done } = await reader.read()
      if (done === true) throw new Error('stream ended')
      queue.push(...events.push(Buffer.from(value)))
    }
    return queue.shift() as { event: string, data: string }
  }
  const first = await take()
  t.equal(first.event, 'endpoint', 'the first event names the endpoint')
  t.teardown(() => abort.abort())
  return {
    endpoint: new URL(first.data, url).href,
    next: async () => JSON.parse((await take()).data),
    close: () => abort.abort(),
  }
}
