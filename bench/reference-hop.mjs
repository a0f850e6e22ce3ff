// The smallest useful HTTP hop, measured beside Portcullis in the same run as a yardstick:
// node:http in, undici Pool out, body and the MCP headers passed on, the response piped back.
// No inspection, no auth, no policy. Usage: node bench/reference-hop.mjs <upstream url> <port>
import http from 'node:http'
import { Pool } from 'undici'

const [upstreamUrl, port] = process.argv.slice(2)
const target = new URL(upstreamUrl)
const pool = new Pool(target.origin, { connections: 128 })
const PASS = ['content-type', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']

http.createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const headers = {}
    for (const name of PASS) if (req.headers[name] !== undefined) headers[name] = req.headers[name]
    pool.request({ path: target.pathname, method: req.method, headers, body: chunks.length > 0 ? Buffer.concat(chunks) : null }).then((up) => {
      const out = {}
      for (const name of ['content-type', 'mcp-session-id', 'cache-control']) if (up.headers[name] !== undefined) out[name] = up.headers[name]
      res.writeHead(up.statusCode, out)
      up.body.pipe(res)
    }, () => { res.writeHead(502).end() })
  })
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'))
