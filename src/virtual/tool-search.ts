/**
 * Tool search for a virtual server with many tools (issue 16, `toolSearch: { above: N }`):
 * instead of listing every tool, the server lists two, `search_tools` (BM25 over names, titles and
 * descriptions, no external service) and `call_tool`. A model then spends context on the few
 * tools a task needs rather than on every schema. Pure: the virtual layer owns routing and policy.
 *
 * BM25 as in Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
 * (2009), with Lucene's non-negative IDF; each field scored on its own and weighted, since a word
 * in a tool's name says more about what it does than the same word somewhere in its description.
 */

export interface SearchableTool { readonly name: string, readonly description?: string, readonly inputSchema?: unknown, readonly title?: string }

export const SEARCH_TOOLS_NAME = 'search_tools'
export const CALL_TOOL_NAME = 'call_tool'
export const DEFAULT_SEARCH_LIMIT = 10
export const MAX_SEARCH_LIMIT = 50
/** A query is a few words; a bound keeps one call's cost bounded. */
export const MAX_QUERY_CHARS = 1000

const K1 = 1.2
const B = 0.75
const FIELD_WEIGHTS = { name: 3, title: 2, description: 1 } as const
type Field = keyof typeof FIELD_WEIGHTS
const FIELDS = Object.keys(FIELD_WEIGHTS) as Field[]

/**
 * Words of a name or a text, lowercased: camelCase, snake_case, kebab-case, dotted and spaced
 * words all split (`getHTTPResponse2` -> get, http, response2), so a query word meets a name's parts.
 */
export function tokenize (text: string): string[] {
  return text
    .replace(/(\p{Ll}|\p{N})(\p{Lu})/gu, '$1 $2')
    .replace(/(\p{Lu})(\p{Lu}\p{Ll})/gu, '$1 $2')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((word) => word.length > 0)
}

/** One field of every tool: each tool's term counts and length, and the field's document frequencies. */
interface FieldIndex { readonly counts: ReadonlyArray<ReadonlyMap<string, number>>, readonly lengths: readonly number[], readonly avgLength: number, readonly df: ReadonlyMap<string, number> }

function indexField (texts: readonly string[]): FieldIndex {
  const counts = texts.map((text) => termCounts(tokenize(text)))
  const lengths = counts.map((c) => [...c.values()].reduce((sum, n) => sum + n, 0))
  const df = new Map<string, number>()
  for (const c of counts) for (const term of c.keys()) df.set(term, (df.get(term) ?? 0) + 1)
  const avgLength = lengths.reduce((sum, n) => sum + n, 0) / Math.max(lengths.length, 1)
  return { counts, lengths, avgLength, df }
}

function termCounts (terms: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const term of terms) counts.set(term, (counts.get(term) ?? 0) + 1)
  return counts
}

/** A field's BM25 score of one tool; 0 where the field is empty or has none of the terms. */
function fieldScore (field: FieldIndex, doc: number, terms: readonly string[], docCount: number): number {
  const length = field.lengths[doc] ?? 0
  if (length === 0) return 0
  let score = 0
  for (const term of terms) {
    const tf = field.counts[doc]?.get(term) ?? 0
    if (tf === 0) continue
    const df = field.df.get(term) ?? 0
    const idf = Math.log(1 + (docCount - df + 0.5) / (df + 0.5))
    score += idf * (tf * (K1 + 1)) / (tf + K1 * (1 - B + B * length / field.avgLength))
  }
  return score
}

/** The index a virtual server keeps per merged tool list; rebuilt when the list changes. */
export class ToolIndex {
  readonly #tools: readonly SearchableTool[]
  readonly #fields: Readonly<Record<Field, FieldIndex>>

  constructor (tools: readonly SearchableTool[]) {
    this.#tools = [...tools]
    this.#fields = {
      name: indexField(tools.map((t) => t.name)),
      title: indexField(tools.map((t) => t.title ?? '')),
      description: indexField(tools.map((t) => t.description ?? '')),
    }
  }

  /** The best `limit` tools with any query word, best first; ties keep the list's order. */
  search (query: string, limit: number): SearchableTool[] {
    const terms = [...new Set(tokenize(query))]
    return this.#tools
      .map((tool, doc) => ({ tool, doc, score: this.#score(doc, terms) }))
      .filter((hit) => hit.score > 0)
      .sort((a, b) => b.score - a.score || a.doc - b.doc)
      .slice(0, Math.max(0, Math.floor(limit)))
      .map((hit) => hit.tool)
  }

  #score (doc: number, terms: readonly string[]): number {
    return FIELDS.reduce((sum, f) => sum + FIELD_WEIGHTS[f] * fieldScore(this.#fields[f], doc, terms, this.#tools.length), 0)
  }
}

/** The two tools listed instead of every tool. */
export function toolSearchTools (): object[] {
  return [
    {
      name: SEARCH_TOOLS_NAME,
      title: 'Search tools',
      description: 'Find the tools this server offers by describing what you want to do in a few words ' +
        '(e.g. "create github issue"). Returns the best matches with their names, descriptions and input schemas; ' +
        `then run one with ${CALL_TOOL_NAME}. Search again with other words if nothing fits.`,
      inputSchema: {
        type: 'object',
        properties: {
          query: { type: 'string', minLength: 1, maxLength: MAX_QUERY_CHARS, description: 'Words describing the task or the tool, e.g. "list open pull requests".' },
          limit: { type: 'integer', minimum: 1, maximum: MAX_SEARCH_LIMIT, default: DEFAULT_SEARCH_LIMIT, description: `How many tools to return (1 to ${MAX_SEARCH_LIMIT}, default ${DEFAULT_SEARCH_LIMIT}).` },
        },
        required: ['query'],
      },
      outputSchema: {
        type: 'object',
        properties: { tools: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, description: { type: 'string' }, inputSchema: { type: 'object' } }, required: ['name'] } } },
        required: ['tools'],
      },
      annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
    },
    {
      name: CALL_TOOL_NAME,
      title: 'Call a tool',
      description: `Run a tool that ${SEARCH_TOOLS_NAME} returned: give its exact name and its arguments as an object matching that tool's input schema.`,
      inputSchema: {
        type: 'object',
        properties: {
          name: { type: 'string', minLength: 1, description: `The tool's exact name, as ${SEARCH_TOOLS_NAME} returned it.` },
          arguments: { type: 'object', description: 'The tool\'s arguments, matching its input schema; {} when it takes none.' },
        },
        required: ['name'],
      },
    },
  ]
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** search_tools arguments, checked; the error is a sentence the model can act on. */
export function parseSearchArgs (args: unknown): { query: string, limit: number } | { error: string } {
  if (!isRecord(args)) return { error: `${SEARCH_TOOLS_NAME} takes an object of arguments, e.g. {"query": "create issue"}.` }
  const { query, limit = DEFAULT_SEARCH_LIMIT } = args
  if (typeof query !== 'string') return { error: `${SEARCH_TOOLS_NAME} needs "query": a string of words describing the tool you are looking for, e.g. "create issue".` }
  if (query.length > MAX_QUERY_CHARS) return { error: `"query" is ${query.length} characters long; use at most ${MAX_QUERY_CHARS}: a few words are enough.` }
  if (tokenize(query).length === 0) return { error: '"query" has no words to search for; describe the tool in a few words, e.g. "create issue".' }
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_SEARCH_LIMIT) {
    return { error: `"limit" must be a whole number from 1 to ${MAX_SEARCH_LIMIT}; leave it out for ${DEFAULT_SEARCH_LIMIT}.` }
  }
  return { query, limit }
}

/** call_tool arguments, checked; whether the name exists is the caller's question (the table's). */
export function parseCallToolArgs (args: unknown): { name: string, arguments: Record<string, unknown> } | { error: string } {
  if (!isRecord(args)) return { error: `${CALL_TOOL_NAME} takes an object of arguments, e.g. {"name": "some_tool", "arguments": {}}.` }
  const { name, arguments: toolArgs = {} } = args
  if (typeof name !== 'string' || name.length === 0) {
    return { error: `${CALL_TOOL_NAME} needs "name": the exact name of a tool, as ${SEARCH_TOOLS_NAME} returned it.` }
  }
  if (!isRecord(toolArgs)) return { error: `"arguments" must be an object matching the input schema of "${name}" (use {} when it takes none), not ${describe(toolArgs)}.` }
  return { name, arguments: toolArgs }
}

function describe (value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'a list' : `a ${typeof value}`
}

/** A CallToolResult: the matches as JSON text (every client reads text) and as structuredContent. */
export function searchResult (tools: SearchableTool[]): object {
  const list = tools.map((t) => ({
    name: t.name,
    ...(t.description !== undefined && { description: t.description }),
    ...(t.inputSchema !== undefined && { inputSchema: t.inputSchema }),
  }))
  return { content: [{ type: 'text', text: JSON.stringify(list) }], structuredContent: { tools: list } }
}
