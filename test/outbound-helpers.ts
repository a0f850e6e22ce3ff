/**
 * Servers for the gateway's outbound requests: an https document server on 127.0.0.1 with a
 * self-signed certificate (made by openssl at test time), the explicit test-only allowance that
 * lets the gateway reach it, and a plain listener that only counts who connects to it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createTcpServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { OutboundTestAllowance } from '../src/net/guarded-fetch.js'
import { selfSignedCertificate, type Teardown } from './helpers.js'

export interface DocumentServer {
  readonly port: number
  /** https://127.0.0.1:<port><path> */
  readonly urlOf: (path: string) => string
  /** Pass as BuildOptions.outboundTestAllowance. */
  readonly allowance: OutboundTestAllowance
  /** Requests served so far. */
  readonly requests: () => number
}

/** An https server on 127.0.0.1; `handler` gets the request and this server's own URL for the path. */
export async function startDocumentServer (t: Teardown, handler: (req: IncomingMessage, res: ServerResponse, selfUrl: string) => void): Promise<DocumentServer> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-docs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { keyPath, certPath } = selfSignedCertificate(dir)
  const cert = readFileSync(certPath, 'utf8')
  let served = 0
  let port = 0
  const server = createHttpsServer({ key: readFileSync(keyPath), cert }, (req, res) => {
    served++
    handler(req, res, `https://127.0.0.1:${port}${req.url ?? ''}`)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  port = (server.address() as AddressInfo).port
  return { port, urlOf: (path) => `https://127.0.0.1:${port}${path}`, allowance: { privateHosts: ['127.0.0.1'], ca: cert }, requests: () => served }
}

/** A TCP listener on 127.0.0.1 that accepts, counts and closes every connection. */
export async function startConnectionRecorder (t: Teardown): Promise<{ port: number, connections: () => number }> {
  let connections = 0
  const server = createTcpServer((socket) => {
    connections++
    socket.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.address() as AddressInfo).port, connections: () => connections }
}
