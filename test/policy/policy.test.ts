import t from 'tap'
import { ServerPolicy, type Caller } from '../../src/policy/policy.js'
import { compileGlob } from '../../src/policy/glob.js'
import { inspectBody, type McpMessage } from '../../src/mcp/jsonrpc.js'
import { makeConfig } from '../helpers.js'

const policyFor = (server: Record<string, unknown>): ServerPolicy => {
  const config = makeConfig({ servers: [{ name: 'github', transport: 'http', url: 'http://127.0.0.1:9/mcp', ...server }] })
  const s = config.servers[0]
  if (s === undefined) throw new Error('no server')
  return new ServerPolicy(s)
}
const firstMessage = (body: unknown): McpMessage => {
  const message = inspectBody(Buffer.from(JSON.stringify(body))).messages[0]
  if (message === undefined) throw new Error('no message')
  return message
}
const call = (name: string): McpMessage => firstMessage({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name } })
const alice: Caller = { name: 'alice', groups: ['eng'], clientId: 'c1', isClient: false, scopes: new Set(['mcp']) }

t.test('globs: * and ? and literal characters', async (t) => {
  t.ok(compileGlob('delete_*')('delete_repository'))
  t.notOk(compileGlob('delete_*')('undelete_x'))
  t.ok(compileGlob('get_?')('get_a'))
  t.notOk(compileGlob('get_?')('get_ab'))
  t.ok(compileGlob('file:///srv/*')('file:///srv/a/b.txt'))
  t.notOk(compileGlob('a.b')('axb'), 'dots are literal')
  t.ok(compileGlob('(x)+[y]')('(x)+[y]'), 'regex characters are literal')
})

t.test('deny beats allow; allow lists exclude the rest; messages name the rule', async (t) => {
  const policy = policyFor({ tools: { allow: ['get_*', 'create_issue', 'delete_*'], deny: ['delete_*'] } })
  t.match(policy.judge(call('get_issue'), alice), { allowed: true, kind: 'tool', name: 'get_issue' })
  t.same(policy.judge(call('delete_repository'), alice), { allowed: false, reason: 'denied', message: 'tool "delete_repository" is denied by tools.deny "delete_*" of server "github"' })
  t.same(policy.judge(call('merge_pr'), alice), { allowed: false, reason: 'denied', message: 'tool "merge_pr" is not in tools.allow of server "github"' })
})

t.test('per-tool scopes: insufficient_scope naming every scope the call needs', async (t) => {
  const policy = policyFor({ scopes: ['github'], tools: { create_issue: { scopes: ['github:write'] }, 'admin_*': { scopes: ['github:admin'] } } })
  t.same(policy.judge(call('create_issue'), alice), { allowed: false, reason: 'scope', requiredScopes: ['github', 'github:write'], message: 'tool "create_issue" needs the scope(s): github:write' })
  t.match(policy.judge(call('create_issue'), { ...alice, scopes: new Set(['github', 'github:write']) }), { allowed: true, tool: { scopes: ['github:write'] } })
  t.match(policy.judge(call('admin_reset'), alice), { allowed: false, reason: 'scope', requiredScopes: ['github', 'github:admin'] }, 'pattern rules apply')
  t.match(policy.judge(call('create_issue'), { ...alice, scopes: undefined }), { allowed: true }, 'with authorization off, scope rules do not apply')
  t.same(policy.ruleScopes().sort(), ['github:admin', 'github:write'])
})

t.test('access lists: users, groups, machine clients', async (t) => {
  const policy = policyFor({ access: { users: ['bob'], groups: ['eng'], clients: ['ci-bot'] } })
  t.match(policy.reach(alice), { allowed: true }, 'by group')
  t.match(policy.reach({ ...alice, name: 'bob', groups: [] }), { allowed: true }, 'by name')
  t.same(policy.reach({ ...alice, name: 'mallory', groups: ['sales'] }), { allowed: false, reason: 'denied', message: 'user "mallory" is not in the access list of server "github"' })
  t.match(policy.reach({ name: 'ci-bot', groups: [], clientId: 'ci-bot', isClient: true, scopes: new Set() }), { allowed: true }, 'machine client by id')
  t.match(policy.reach({ name: 'alice', groups: [], clientId: 'ci-bot', isClient: false, scopes: new Set() }), { allowed: false }, 'a user does not pass as the client they signed in through')
  t.match(policyFor({}).reach({ ...alice, name: 'anyone', groups: [] }), { allowed: true }, 'no access list: every signed-in caller')
})

t.test('prompts and resources follow the same rules; other methods are not judged', async (t) => {
  const policy = policyFor({ prompts: { deny: ['secret-*'] }, resources: { allow: ['file:///srv/public/*'], 'file:///srv/public/hr/*': { scopes: ['hr'] } } })
  const msg = (method: string, params: Record<string, unknown>): McpMessage => firstMessage({ jsonrpc: '2.0', id: 1, method, params })
  t.match(policy.judge(msg('prompts/get', { name: 'secret-plan' }), alice), { allowed: false, reason: 'denied' })
  t.match(policy.judge(msg('resources/read', { uri: 'file:///etc/passwd' }), alice), { allowed: false, message: /not in resources\.allow/ })
  t.match(policy.judge(msg('resources/read', { uri: 'file:///srv/public/hr/pay.csv' }), alice), { allowed: false, reason: 'scope', requiredScopes: ['hr'] })
  t.match(policy.judge(msg('resources/subscribe', { uri: 'file:///srv/public/a.txt' }), alice), { allowed: true, kind: 'resource' })
  t.match(policy.judge(msg('tools/list', {}), alice), { allowed: true, kind: undefined })
})

t.test('list results are filtered to what may be used; untouched when nothing goes', async (t) => {
  const policy = policyFor({ tools: { deny: ['delete_*'], create_issue: { scopes: ['github:write'] } } })
  const result = { tools: [{ name: 'get_issue' }, { name: 'delete_repository' }, { name: 'create_issue' }], nextCursor: 'c' }
  t.same(policy.filterList('tools/list', result), { tools: [{ name: 'get_issue' }, { name: 'create_issue' }], nextCursor: 'c' }, 'scope-gated tools stay visible (calling one starts the step-up)')
  t.equal(policy.filterList('tools/list', { tools: [{ name: 'get_issue' }] }), undefined)
  t.equal(policy.filterList('tools/call', result), undefined)
  t.ok(policy.filtersLists)
  t.notOk(policyFor({}).filtersLists)
  const resources = policyFor({ resources: { deny: ['file:///secret/*'] } })
  t.same(resources.filterList('resources/list', { resources: [{ uri: 'file:///a' }, { uri: 'file:///secret/k' }] }), { resources: [{ uri: 'file:///a' }] })
  t.same(resources.filterList('resources/templates/list', { resourceTemplates: [{ uriTemplate: 'file:///secret/{x}' }, { uriTemplate: 'file:///{x}' }] }), { resourceTemplates: [{ uriTemplate: 'file:///{x}' }] })
})

t.test('config: rules are validated with clear messages', async (t) => {
  const err = (tools: unknown): string => {
    try {
      makeConfig({ servers: [{ name: 'g', transport: 'http', url: 'http://127.0.0.1:9/mcp', tools }] })
      return 'no error'
    } catch (e) {
      return (e as Error).message
    }
  }
  t.equal(err({ deny: ['x'], create: { scopes: ['w'], rateLimit: '10/min', cost: 2, concurrency: 1 } }), 'no error')
  t.match(err({ create: { rateLimit: 'ten per minute' } }), /servers\[0\]\.tools\.create\.rateLimit: expected a rate such as 60\/min/)
  t.match(err({ alow: ['x'] }), /servers\[0\]\.tools\.alow: expected a rule such as \{ scopes/)
  t.match(err({ create: { scope: ['w'] } }), /unknown key "scope" \(did you mean "scopes"\?\)/)
})
