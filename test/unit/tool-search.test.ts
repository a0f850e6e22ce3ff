// Tool search for large virtual servers (src/virtual/tool-search.ts): the word splitting, the
// BM25 ranking (a word in a tool's name beats the same word in another's description), the two
// tool definitions, and the argument checks whose errors a model reads and acts on.
import t from 'tap'
import {
  CALL_TOOL_NAME, MAX_QUERY_CHARS, parseCallToolArgs, parseSearchArgs, SEARCH_TOOLS_NAME, searchResult,
  type SearchableTool, tokenize, ToolIndex, toolSearchTools,
} from '../../src/virtual/tool-search.js'

const schema = { type: 'object', properties: {} }
const tools: SearchableTool[] = [
  { name: 'github__create_issue', description: 'Create a new issue in a GitHub repository.', inputSchema: schema },
  { name: 'github__list_pull_requests', description: 'List pull requests of a repository, open or closed.', inputSchema: schema },
  { name: 'github__search_code', description: 'Search code across GitHub repositories.', inputSchema: schema },
  { name: 'getWeatherForecast', description: 'Forecast for a city for the next days.', inputSchema: schema },
  { name: 'send-email', description: 'Send an email, for example a daily weather summary, to a recipient.', inputSchema: schema },
  { name: 'memory.remember', title: 'Remember a fact', description: 'Store an observation about an entity.', inputSchema: schema },
  { name: 'echo', description: 'Echoes back the input.', inputSchema: schema },
  { name: 'add', description: 'Adds two numbers.', inputSchema: schema },
]
const index = new ToolIndex(tools)

function names (query: string, limit = 10): string[] {
  return index.search(query, limit).map((tool) => tool.name)
}

t.test('tokenize splits camelCase, snake_case, kebab-case, dots and acronyms, lowercased', async (t) => {
  t.same(tokenize('getWeatherForecast'), ['get', 'weather', 'forecast'])
  t.same(tokenize('github__create_issue'), ['github', 'create', 'issue'])
  t.same(tokenize('send-email memory.remember'), ['send', 'email', 'memory', 'remember'])
  t.same(tokenize('parseHTTPResponse2 getV2'), ['parse', 'http', 'response2', 'get', 'v2'])
  t.same(tokenize('  Create, an ISSUE!  '), ['create', 'an', 'issue'])
  t.same(tokenize('Café crème'), ['café', 'crème'], 'letters beyond ASCII are words')
  t.same(tokenize('!!! --- '), [])
})

t.test('a word in a tool\'s name beats the same word in another tool\'s description', async (t) => {
  t.same(names('weather'), ['getWeatherForecast', 'send-email'], 'both found, the named one first')
  t.equal(names('email')[0], 'send-email')
  t.same(names('remember'), ['memory.remember'])
  t.equal(names('Remember a fact')[0], 'memory.remember', 'the title counts too')
  const wordy = new ToolIndex([
    { name: 'github__get_current_weather_for_city_by_name' },
    { name: 'notify', description: 'weather weather weather alerts' },
    { name: 'x_y', description: 'lorem ipsum dolor sit amet consectetur' },
  ])
  t.same(wordy.search('weather', 5).map((x) => x.name), ['github__get_current_weather_for_city_by_name', 'notify'],
    'even a long name against a short description that repeats the word')
})

t.test('query words are split like names: camelCase or snake_case finds the same tool', async (t) => {
  t.equal(names('createIssue')[0], 'github__create_issue')
  t.equal(names('create_issue')[0], 'github__create_issue')
  t.equal(names('CREATE-ISSUE')[0], 'github__create_issue')
  t.equal(names('pull requests')[0], 'github__list_pull_requests')
  t.equal(names('weather forecast')[0], 'getWeatherForecast')
})

t.test('more matching words and rarer words rank higher', async (t) => {
  // "github" is in three names; "code" only in one: search_code leads for "github code".
  t.equal(names('github code')[0], 'github__search_code')
  t.same(names('github').slice(0, 3).sort(), ['github__create_issue', 'github__list_pull_requests', 'github__search_code'])
  t.equal(names('add two numbers')[0], 'add')
})

t.test('limit, no match, and an empty index', async (t) => {
  t.equal(names('github', 2).length, 2)
  t.same(names('github', 0), [])
  t.same(names('kubernetes'), [], 'a word no tool has finds nothing (no padding with unrelated tools)')
  t.same(names(''), [])
  t.same(new ToolIndex([]).search('anything', 10), [])
  const same = new ToolIndex([{ name: 'b_tool' }, { name: 'a_tool' }])
  t.same(same.search('tool', 10).map((x) => x.name), ['b_tool', 'a_tool'], 'equal scores keep the list\'s order')
  t.equal(index.search('echo', 1)[0], tools[6], 'the tool object itself is returned')
})

t.test('parseSearchArgs: a query and a limit (default 10, at most 50)', async (t) => {
  t.same(parseSearchArgs({ query: 'create issue' }), { query: 'create issue', limit: 10 })
  t.same(parseSearchArgs({ query: 'x', limit: 50 }), { query: 'x', limit: 50 })
  t.same(parseSearchArgs({ query: 'x', limit: 1, other: true }), { query: 'x', limit: 1 }, 'unknown keys are ignored')
  t.same(parseSearchArgs({ query: 'x'.repeat(MAX_QUERY_CHARS) }), { query: 'x'.repeat(MAX_QUERY_CHARS), limit: 10 })
})

t.test('parseSearchArgs errors are sentences that say what to send', async (t) => {
  const errorOf = (args: unknown) => {
    const result = parseSearchArgs(args)
    return 'error' in result ? result.error : undefined
  }
  t.equal(errorOf(null), 'search_tools takes an object of arguments, e.g. {"query": "create issue"}.')
  t.equal(errorOf(['create issue']), errorOf(null))
  t.equal(errorOf('create issue'), errorOf(null))
  t.equal(errorOf({}), 'search_tools needs "query": a string of words describing the tool you are looking for, e.g. "create issue".')
  t.equal(errorOf({ query: 42 }), errorOf({}))
  t.equal(errorOf({ query: '' }), '"query" has no words to search for; describe the tool in a few words, e.g. "create issue".')
  t.equal(errorOf({ query: '   ' }), errorOf({ query: '' }))
  t.equal(errorOf({ query: '?!' }), errorOf({ query: '' }), 'punctuation alone is no query')
  t.equal(errorOf({ query: 'x'.repeat(MAX_QUERY_CHARS + 1) }), `"query" is ${MAX_QUERY_CHARS + 1} characters long; use at most ${MAX_QUERY_CHARS}: a few words are enough.`)
  const limitError = '"limit" must be a whole number from 1 to 50; leave it out for 10.'
  for (const limit of [0, 51, 2.5, -1, '10', null, Number.NaN]) t.equal(errorOf({ query: 'x', limit }), limitError, `limit ${String(limit)}`)
})

t.test('parseCallToolArgs: a name and an arguments object (default {})', async (t) => {
  t.same(parseCallToolArgs({ name: 'github__create_issue', arguments: { title: 'x' } }), { name: 'github__create_issue', arguments: { title: 'x' } })
  t.same(parseCallToolArgs({ name: 'echo' }), { name: 'echo', arguments: {} })
  const errorOf = (args: unknown) => {
    const result = parseCallToolArgs(args)
    return 'error' in result ? result.error : undefined
  }
  t.equal(errorOf(undefined), 'call_tool takes an object of arguments, e.g. {"name": "some_tool", "arguments": {}}.')
  t.equal(errorOf({ arguments: {} }), 'call_tool needs "name": the exact name of a tool, as search_tools returned it.')
  t.equal(errorOf({ name: '' }), errorOf({ arguments: {} }))
  t.equal(errorOf({ name: 7 }), errorOf({ arguments: {} }))
  t.equal(errorOf({ name: 'echo', arguments: [1] }), '"arguments" must be an object matching the input schema of "echo" (use {} when it takes none), not a list.')
  t.equal(errorOf({ name: 'echo', arguments: null }), '"arguments" must be an object matching the input schema of "echo" (use {} when it takes none), not null.')
  t.equal(errorOf({ name: 'echo', arguments: '{"a":1}' }), '"arguments" must be an object matching the input schema of "echo" (use {} when it takes none), not a string.')
})

t.test('the two tool definitions listed instead of every tool', async (t) => {
  const [search, call] = toolSearchTools() as Array<{ name: string, description: string, inputSchema: { type: string, properties: Record<string, unknown>, required: string[] } }>
  t.equal(search?.name, SEARCH_TOOLS_NAME)
  t.equal(call?.name, CALL_TOOL_NAME)
  for (const tool of [search, call]) {
    t.equal(tool?.inputSchema.type, 'object', 'MCP requires an object schema')
    t.ok((tool?.description.length ?? 0) > 20, 'a description a model can go by')
  }
  t.same(search?.inputSchema.required, ['query'])
  t.same(Object.keys(search?.inputSchema.properties ?? {}), ['query', 'limit'])
  t.same(call?.inputSchema.required, ['name'])
  t.same(Object.keys(call?.inputSchema.properties ?? {}), ['name', 'arguments'])
  t.same(JSON.parse(JSON.stringify(toolSearchTools())), toolSearchTools(), 'plain JSON')
})

t.test('searchResult: the matches as JSON text and as structuredContent', async (t) => {
  const found = index.search('weather', 10)
  const result = searchResult(found) as { content: Array<{ type: string, text: string }>, structuredContent: { tools: unknown[] } }
  const expected = [
    { name: 'getWeatherForecast', description: 'Forecast for a city for the next days.', inputSchema: schema },
    { name: 'send-email', description: 'Send an email, for example a daily weather summary, to a recipient.', inputSchema: schema },
  ]
  t.same(result.structuredContent, { tools: expected })
  t.equal(result.content.length, 1)
  t.equal(result.content[0]?.type, 'text')
  t.same(JSON.parse(result.content[0]?.text ?? ''), expected)
  const bare = searchResult([{ name: 'x', title: 'X' }]) as { structuredContent: { tools: object[] } }
  t.same(bare.structuredContent.tools, [{ name: 'x' }], 'no undefined keys; the title is not part of the answer')
  t.same(searchResult([]), { content: [{ type: 'text', text: '[]' }], structuredContent: { tools: [] } })
})
