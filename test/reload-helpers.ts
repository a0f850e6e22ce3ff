// Raw 2025-era MCP sessions for the reload tests (in-process and CLI): a reload's behaviour is
// judged on the session, its calls and its GET stream, without an SDK client reconnecting for us.
import type { Test } from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { eventually, INIT_BODY, postJson } from './helpers.js'

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

/** The password of the reload tests' local users. */
export const PASSWORD = 'correct horse battery staple'
/** A browser origin the reload tests allow and disallow. */
export const ORIGIN = 'https://app.example.com'

/** One JSON log line of the gateway. */
export type Log = Record<string, unknown>

/** The gateway's JSON log lines (stdout and stderr together). */
export function logLines (output: string): Log[] {
  return output.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Log)
}

/** Whether this process can listen on 127.0.0.1:port (nobody else holds it). */
export async function canBind (port: number): Promise<boolean> {
  const server = createServer()
  return new Promise((resolve) => {
    server.once('error', () => resolve(false))
    server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)))
  })
}

/** Each reload's one line: applied or refused. */
export function reloads (output: string): Log[] {
  return logLines(output).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reload'))
}

/** Waits for the n-th reload line and returns it. */
export async function nthReload (t: Test, output: () => string, n: number): Promise<Log> {
  t.ok(await eventually(() => reloads(output()).length >= n, 15_000), `reload ${n} logged`)
  return reloads(output())[n - 1] ?? {}
}
