// Virtual servers served by `portcullis start` as a real process (dist/main.js): the SDK client
// against a virtual server of an HTTP member and a stdio member (both list `echo`), merged and
// prefixed lists, a call routed to each member, the virtual deny, prompts, toolSearch's two
// tools, DELETE ending the stdio member's process; then a graceful SIGTERM.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { connectClient, eventually, freePort, isProcessAlive, startCliGateway, startUpstream, stdioServer, textOf } from '../helpers.js'

t.test('portcullis start serves virtual servers: merged lists, routing, the virtual deny, toolSearch, DELETE', async (t) => {
  const upstream = await startUpstream(t)
  const port = await freePort()
  const dir = t.testdir({})
  const configPath = join(dir, 'gw.yaml')
  writeFileSync(configPath, stringify({
    publicUrl: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    dataDir: join(dir, 'data'),
    auth: { enabled: false },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }, stdioServer('local')],
    virtualServers: [
      { name: 'work', members: ['fx', 'local'], tools: { deny: ['local__increment'] } },
      { name: 'find', members: ['fx', 'local'], prefix: 'always', toolSearch: { above: 1 } },
    ],
  }))
  const { child, output } = await startCliGateway(t, configPath)
  const url = (name: string): string => `http://127.0.0.1:${port}/${name}/mcp`

  const { client, transport } = await connectClient(t, url('work'))
  const names = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(names.includes('fx__echo') && names.includes('local__echo'), 'echo, listed by both members, is prefixed for each')
  t.notOk(names.includes('echo'), 'and not listed plain')
  t.notOk(names.includes('increment') || names.includes('local__increment'), 'the virtual deny hides local__increment, listed plain (only local has it)')
  t.equal(textOf(await client.callTool({ name: 'fx__echo', arguments: { text: 'to fx' } })), 'to fx', 'routed to the HTTP member')
  t.equal(textOf(await client.callTool({ name: 'local__echo', arguments: { text: 'to local' } })), 'to local', 'routed to the stdio member')
  await t.rejects(client.callTool({ name: 'increment', arguments: {} }), /POLICY_DENIED|denied/i, 'a denied tool is refused by its plain name')
  t.ok(Array.isArray((await client.listPrompts()).prompts), 'prompts/list merges the members\' prompts')
  t.ok(Array.isArray((await client.listResources()).resources), 'resources/list too')
  t.ok(Array.isArray((await client.listResourceTemplates()).resourceTemplates), 'and resource templates')
  const pid = JSON.parse(textOf(await client.callTool({ name: 'env', arguments: {} }))).pid as number
  t.ok(isProcessAlive(pid), 'the stdio member runs a process for this session')
  await transport.terminateSession()
  t.ok(await eventually(() => !isProcessAlive(pid), 10_000), 'DELETE of the virtual session ended the stdio member\'s process')

  const search = await connectClient(t, url('find'))
  const offered = (await search.client.listTools()).tools.map((tool) => tool.name).sort()
  t.same(offered, ['call_tool', 'search_tools'], 'past toolSearch.above, two tools stand in for the list')
  const found = await search.client.callTool({ name: 'search_tools', arguments: { query: 'echo' } }) as { structuredContent?: { tools?: Array<{ name: string }> } }
  t.ok(found.structuredContent?.tools?.some((tool) => tool.name === 'fx__echo'), 'search_tools finds the members\' echo by name')
  t.equal(textOf(await search.client.callTool({ name: 'call_tool', arguments: { name: 'local__echo', arguments: { text: 'via call_tool' } } })), 'via call_tool', 'call_tool runs the named tool')
  await search.transport.terminateSession()

  // A 2024-11-05 client of the same virtual server.
  const legacy = new Client({ name: 'legacy', version: '1.0.0' })
  await legacy.connect(new SSEClientTransport(new URL(`http://127.0.0.1:${port}/work/sse`)))
  t.ok((await legacy.listTools()).tools.some((tool) => tool.name === 'fx__echo'), 'GET /work/sse: the merged list for an old client')
  t.equal(textOf(await legacy.callTool({ name: 'fx__echo', arguments: { text: 'old' } })), 'old', 'and its calls routed')
  await legacy.close()

  // A graceful stop (the process writes what it holds and exits by itself).
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM: a clean exit')
  t.notMatch(output(), /"level":50/, 'no error logged')
})
