#!/usr/bin/env node
// A lightweight real Streamable HTTP MCP server for the `streams` bench scenario: it speaks the
// 2025-era transport (initialize + Mcp-Session-Id, JSON answers, GET event streams, DELETE) with
// one `echo` tool, and holds thousands of open GET streams at a few hundred bytes each (the MCP
// SDK's server keeps a server object per session, too heavy for 5,000 of them on this machine).
//
//   node bench/light-mcp-server.mjs [--port N] [--tls KEY.pem CERT.pem]
// With --tls it serves HTTP/2 over TLS (HTTP/1.1 still accepted). Prints {"port":N} when ready.
import http from 'node:http'
import http2 from 'node:http2'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

const args = process.argv.slice(2)
const portIndex = args.indexOf('--port')
const tlsIndex = args.indexOf('--tls')
const sessions = new Map()

function json (res, status, body, headers = {}) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

function answer (message) {
  switch (message.method) {
    case 'initialize': return { protocolVersion: message.params?.protocolVersion ?? '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 'light', version: '1' } }
    case 'tools/list': return { tools: [{ name: 'echo', description: 'Echo the text back', inputSchema: { type: 'object', properties: { text: { type: 'string' } } } }] }
    case 'tools/call': return { content: [{ type: 'text', text: String(message.params?.arguments?.text ?? '') }] }
    case 'ping': return {}
    default: return undefined
  }
}

async function handler (req, res) {
  const sessionId = req.headers['mcp-session-id']
  if (req.method === 'GET') {
    const session = sessions.get(sessionId)
    if (session === undefined) return json(res, 404, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } })
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.flushHeaders?.()
    session.stream = res
    res.once('close', () => { if (session.stream === res) session.stream = undefined })
    return
  }
  if (req.method === 'DELETE') {
    sessions.delete(sessionId)
    return json(res, 200, {})
  }
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  let message
  try {
    message = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    return json(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } })
  }
  if (message.method === 'initialize') {
    const id = randomUUID()
    sessions.set(id, { stream: undefined })
    return json(res, 200, { jsonrpc: '2.0', id: message.id, result: answer(message) }, { 'mcp-session-id': id })
  }
  if (!sessions.has(sessionId)) return json(res, 404, { jsonrpc: '2.0', id: message.id ?? null, error: { code: -32001, message: 'Session not found' } })
  if (!('id' in message)) {
    res.writeHead(202)
    return res.end()
  }
  const result = answer(message)
  if (result === undefined) return json(res, 200, { jsonrpc: '2.0', id: message.id, error: { code: -32601, message: 'Method not found' } })
  return json(res, 200, { jsonrpc: '2.0', id: message.id, result })
}

const server = tlsIndex === -1
  ? http.createServer({ keepAliveTimeout: 60_000 }, handler)
  : http2.createSecureServer({ key: readFileSync(args[tlsIndex + 1]), cert: readFileSync(args[tlsIndex + 2]), allowHTTP1: true }, handler)
server.listen(portIndex === -1 ? 0 : Number(args[portIndex + 1]), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`)
})
process.on('SIGTERM', () => process.exit(0))
