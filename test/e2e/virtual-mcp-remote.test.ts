// mcp-remote (what Claude Desktop runs for a remote server) against a virtual server (README
// "Virtual servers", "Connecting clients"): the real program as a child process, the real sign-in
// (its authorization URL, the gateway's login and consent pages, the code delivered to its own
// callback listener), then the official SDK client over mcp-remote's stdio. The virtual server's
// members are the HTTP fixture and a stdio fixture, both listing `echo`: one sign-in and one
// consent, for the virtual server's resource, reach both.
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { HeadlessBrowser } from '../oauth-helpers.js'
import { eventually, freePort, startGateway, startUpstream, stdioServer, textOf } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const MCP_REMOTE = fileURLToPath(new URL('../../node_modules/mcp-remote/dist/proxy.js', import.meta.url))

interface AuditRecord { server: string, virtualServer?: string, method: string, target?: { name: string }, decision: string, user?: { username: string } | null }

t.test('mcp-remote signs in once to a virtual server of an HTTP and a stdio member, lists the merged tools and calls each member', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [
      { name: 'web', transport: 'http', url: upstream.url },
      stdioServer('files'),
    ],
    virtualServers: [{ name: 'work', members: ['web', 'files'] }],
  })
  const mcpUrl = gw.mcpUrl('work')
  const callbackPort = await freePort()
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [MCP_REMOTE, mcpUrl, String(callbackPort), '--host', '127.0.0.1'],
    // Its token cache in a directory of this test's; no browser to open here.
    env: { PATH: process.env.PATH ?? '', HOME: t.testdir({}), MCP_REMOTE_CONFIG_DIR: t.testdir({}), BROWSER: 'true' },
    stderr: 'pipe',
  })
  let stderr = ''
  const authorizationUrl = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mcp-remote printed no authorization URL: ${stderr.slice(-2000)}`)), 30_000)
    transport.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
      const url = /Please authorize this client by visiting:\s*(\S+)/.exec(stderr)?.[1]
      if (url !== undefined) {
        clearTimeout(timer)
        resolve(url)
      }
    })
  })
  const client = new Client({ name: 'claude-desktop-virtual', version: '1.0.0' })
  // initialize waits in mcp-remote's stdin until it has signed in and reached the gateway.
  const connected = client.connect(transport, { timeout: 60_000 })
  t.teardown(async () => {
    const pid = transport.pid
    await client.close().catch(() => {})
    if (pid !== null) try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
  })

  const authorize = new URL(await authorizationUrl)
  t.equal(authorize.origin, gw.baseUrl, 'it found the gateway\'s authorization server from the virtual server\'s 401')
  t.equal(authorize.searchParams.get('resource'), mcpUrl, 'with the virtual server\'s URL as the resource')
  const browser = new HeadlessBrowser()
  const callback = await browser.authorize(authorize.href, { username: 'alice', password: PASSWORD })
  t.same(browser.pages, ['login', 'consent'], 'one sign-in, one consent')
  t.equal(callback.hostname, '127.0.0.1', 'back to mcp-remote\'s own callback listener')
  const delivered = await fetch(callback)
  t.ok(delivered.status < 400, `mcp-remote took the code (${delivered.status})`)
  await delivered.arrayBuffer()
  await connected
  t.equal(client.getServerVersion()?.name, 'portcullis/work', 'initialize answered by the virtual server, through the bridge')

  const tools = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(tools.includes('web__echo') && tools.includes('files__echo'), `both members' echo, prefixed: ${tools.join(', ')}`)
  t.ok(tools.includes('whoami'), 'the HTTP member\'s own tool')
  t.ok(tools.includes('increment'), 'the stdio member\'s own tool')

  t.equal(textOf(await client.callTool({ name: 'web__echo', arguments: { text: 'to the HTTP member' } })), 'to the HTTP member', 'a call routed to the HTTP member')
  t.ok(upstream.seen.some((message) => JSON.stringify(message).includes('to the HTTP member')), 'which the HTTP fixture received')
  t.equal(textOf(await client.callTool({ name: 'files__echo', arguments: { text: 'to the stdio member' } })), 'to the stdio member', 'a call routed to the stdio member')
  t.equal(textOf(await client.callTool({ name: 'increment', arguments: {} })), '1', 'an unprefixed stdio tool')
  t.equal(textOf(await client.callTool({ name: 'whoami', arguments: {} })), 'fixture', 'an unprefixed HTTP tool')

  const audits = (): AuditRecord[] => gw.audit.lines.map((line) => JSON.parse(line) as AuditRecord)
  const memberCall = (server: string): AuditRecord | undefined => audits().find((r) => r.server === server && r.method === 'tools/call' && r.target?.name === 'echo')
  t.ok(await eventually(() => memberCall('web') !== undefined && memberCall('files') !== undefined), 'each member audited its call')
  for (const server of ['web', 'files']) {
    t.match(memberCall(server), { virtualServer: 'work', user: { username: 'alice' } }, `${server}'s record names the virtual server and the signed-in user`)
  }
  t.notMatch(stderr, /Bearer [A-Za-z0-9._-]{20,}/, 'no token in what mcp-remote prints')
})
