// The official MCP SDK client through the gateway to @modelcontextprotocol/server-everything,
// spawned by the gateway as a stdio child (a real published server, unmodified).
import t from 'tap'
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { connectClient, EVERYTHING_SERVER, startGateway, textOf } from '../helpers.js'

t.test('server-everything over stdio: tools, progress, sampling, elicitation, resources, prompts', async (t) => {
  const gw = await startGateway(t, { servers: [{ name: 'everything', transport: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'] }] })
  const { client, transport } = await connectClient(t, gw.mcpUrl('everything'), { capabilities: { sampling: {}, elicitation: { form: {} } } })
  t.ok(transport.sessionId, 'the gateway minted a session id')
  t.equal(client.getServerVersion()?.name, 'mcp-servers/everything')
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
    role: 'assistant', model: 'test-model', content: { type: 'text', text: `sampled: ${JSON.stringify(req.params.messages[0]?.content)}` },
  }))
  client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'decline' }))

  const tools = (await client.listTools()).tools.map((tool) => tool.name)
  t.ok(tools.includes('echo') && tools.includes('trigger-long-running-operation'), `tools listed (${tools.length})`)
  t.ok(tools.includes('trigger-sampling-request'), 'capability-dependent tools registered after initialized')

  t.equal(textOf(await client.callTool({ name: 'echo', arguments: { message: 'hello stdio' } })), 'Echo: hello stdio')

  const progress: number[] = []
  const long = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } }, undefined, {
    onprogress: (p) => progress.push(p.progress),
  })
  t.same(progress, [1, 2, 3], 'progress notifications arrived in order')
  t.match(textOf(long), /Long running operation completed/)

  const sampled = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'ping', maxTokens: 5 } })
  t.match(JSON.stringify(sampled), /sampled: .*ping/, 'sampling/createMessage went to the client and its answer came back')

  const elicited = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} })
  t.match(JSON.stringify(elicited), /decline/i, 'elicitation/create went to the client and its answer came back')

  const resources = await client.listResources()
  t.ok(resources.resources.length > 0, 'resources listed')
  const first = resources.resources[0]
  const read = await client.readResource({ uri: first?.uri ?? '' })
  t.equal(read.contents[0]?.uri, first?.uri, 'a resource was read')

  const prompts = (await client.listPrompts()).prompts.map((p) => p.name)
  t.ok(prompts.includes('simple-prompt'))
  const prompt = await client.getPrompt({ name: 'args-prompt', arguments: { city: 'Kyiv' } })
  t.match(JSON.stringify(prompt.messages), /Kyiv/)

  const health = await (await fetch(`${gw.baseUrl}/readyz`)).json() as { servers: Array<{ sessions: number, processes: Array<{ role: string }> }> }
  t.equal(health.servers[0]?.sessions, 1)
  t.same(health.servers[0]?.processes.map((p) => p.role), ['session'])
})
