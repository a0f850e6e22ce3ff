// Raw 2025-era MCP sessions for the reload tests (in-process and CLI): a reload's behaviour is
// judged on the session, its calls and its GET stream, without an SDK client reconnecting for us.
import type { Test } from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { INIT_BODY, postJson } from './helpers.js'

export const VERSION_HEADER = { 'mcp-protocol-version': '2025-11-25' }

/** A raw 2025-era session: initialize, then the initialized notification. */
export async function openSession (url: string, headers: Record<string, string> = {}): Promise<string> {
  const init = await postJson(url, INIT_BODY, headers)
  if (init.status !== 200) throw new Error(`initialize answered ${init.status}: ${init.text}`)
  const sessionId = init.headers.get('mcp-session-id') ?? ''
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, { ...headers, ...VERSION_HEADER, 'mcp-session-id': sessionId })
  return sessionId
}

/** A tools/call in a session; the answer's JSON whether it came as JSON or as one SSE event. */
export async function call (url: string, sessionId: string, name: string, args: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await postJson(url, { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name, arguments: args } }, { ...headers, ...VERSION_HEADER, 'mcp-session-id': sessionId })
  const data = /^data: (.*)$/m.exec(res.text)?.[1]
  return { status: res.status, body: (res.json ?? (data === undefined ? {} : JSON.parse(data))) as Record<string, unknown> }
}

/** The text of a tools/call result. */
export function resultText (body: Record<string, unknown>): string {
  return ((body.result as { content?: Array<{ text?: string }> } | undefined)?.content?.[0]?.text) ?? JSON.stringify(body)
}

/** The server->client event stream of a session (GET), read as it arrives. */
export async function openStream (t: Test, url: string, sessionId: string): Promise<{ status: number, text: () => string }> {
  const abort = new AbortController()
  t.teardown(() => abort.abort())
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...VERSION_HEADER, 'mcp-session-id': sessionId }, signal: abort.signal })
  let text = ''
  const reader = res.body?.getReader()
  const pump = async (): Promise<void> => {
    for (;;) {
      const chunk = await reader?.read()
      if (chunk === undefined || chunk.done) break
      text += Buffer.from(chunk.value).toString('utf8')
    }
    text += '\n[stream ended]'
  }
  pump().catch(() => undefined)
  return { status: res.status, text: () => text }
}

/** Live processes whose command line carries `mark` (each test marks its stdio servers; orphans included). */
export function childrenMarked (mark: string): number[] {
  return readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).flatMap((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      return stat[0] !== 'Z' && cmdline.includes(mark) ? [Number(pid)] : []
    } catch {
      return []
    }
  })
}
