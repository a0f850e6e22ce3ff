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
  t.same(policy.filterList('tools/list', result, alice), { tools: [{ name: 'get_issue' }, { name: 'create_issue' }], nextCursor: 'c' }, 'scope-gated tools stay visible (calling one starts the step-up)')
  t.equal(policy.filterList('tools/list', { tools: [{ name: 'get_issue' }] }, alice), undefined)
  t.equal(policy.filterList('tools/call', result, alice), undefined)
  t.ok(policy.filtersLists)
  t.notOk(policyFor({}).filtersLists)
  const resources = policyFor({ resources: { deny: ['file:///secret/*'] } })
  t.same(resources.filterList('resources/list', { resources: [{ uri: 'file:///a' }, { uri: 'file:///secret/k' }] }, alice), { resources: [{ uri: 'file:///a' }] })
  t.same(resources.filterList('resources/templates/list', { resourceTemplates: [{ uriTemplate: 'file:///secret/{x}' }, { uriTemplate: 'file:///{x}' }] }, alice), { resourceTemplates: [{ uriTemplate: 'file:///{x}' }] })
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

const bob: Caller = { name: 'bob', groups: ['sales'], clientId: 'c1', isClient: false, scopes: new Set(['mcp']) }
const ciBot: Caller = { name: 'ci-bot', groups: [], clientId: 'ci-bot', isClient: true, scopes: new Set(['mcp']) }

t.test('user and group rules: one of the users OR in one of the groups; refusals name the rule', async (t) => {
  const policy = policyFor({ tools: { deploy: { groups: ['sre', 'eng'] }, rotate_keys: { users: ['bob'], groups: ['sre'] }, 'admin_*': { users: ['carol'] } } })
  t.match(policy.judge(call('deploy'), alice), { allowed: true, kind: 'tool', name: 'deploy', tool: { groups: ['sre', 'eng'] } }, 'in a listed group')
  t.same(policy.judge(call('deploy'), bob), { allowed: false, reason: 'denied', message: 'tool "deploy" requires groups sre, eng (rule tools.deploy of server "github")' })
  t.match(policy.judge(call('rotate_keys'), bob), { allowed: true }, 'a listed user need not be in a listed group')
  t.match(policy.judge(call('rotate_keys'), { ...bob, name: 'dave', groups: ['sre'] }), { allowed: true }, 'a group member need not be a listed user')
  t.same(policy.judge(call('rotate_keys'), alice), { allowed: false, reason: 'denied', message: 'tool "rotate_keys" requires user bob or group sre (rule tools.rotate_keys of server "github")' })
  t.same(policy.judge(call('admin_reset'), alice), { allowed: false, reason: 'denied', message: 'tool "admin_reset" requires user carol (rule tools.admin_* of server "github")' }, 'pattern keys name the pattern')
  t.match(policy.judge(call('admin_reset'), { ...alice, name: 'carol' }), { allowed: true })
  t.match(policy.judge(call('get_issue'), bob), { allowed: true }, 'names without a rule stay open')
})

t.test('user and group rules still need their scopes; deny still wins', async (t) => {
  const policy = policyFor({ tools: { deny: ['deploy_prod'], deploy: { groups: ['eng'], scopes: ['ops:deploy'] }, 'deploy_*': { groups: ['eng'] } } })
  t.match(policy.judge(call('deploy'), alice), { allowed: false, reason: 'scope', requiredScopes: ['ops:deploy'] }, 'a member without the scope steps up')
  t.match(policy.judge(call('deploy'), { ...alice, scopes: new Set(['ops:deploy']) }), { allowed: true })
  t.match(policy.judge(call('deploy'), { ...bob, scopes: new Set(['ops:deploy']) }), { allowed: false, reason: 'denied', message: /requires group eng/ }, 'the scope does not stand in for the group')
  t.match(policy.judge(call('deploy'), bob), { allowed: false, reason: 'denied' }, 'a non-member is refused outright, not sent to step up for nothing')
  const anonymous: Caller = { name: 'anonymous', groups: [], clientId: undefined, isClient: false, scopes: undefined }
  t.match(policy.judge(call('deploy'), anonymous), { allowed: false, reason: 'denied' }, 'with authorization off (no scopes judged) nobody is in a group')
  t.match(policy.judge(call('deploy_prod'), alice), { allowed: false, message: /tools\.deny "deploy_prod"/ })
})

t.test('machine clients: only by clients, never as a user of the same name or through groups', async (t) => {
  const policy = policyFor({ tools: { deploy: { groups: ['sre'], clients: ['ci-bot'] }, rotate: { users: ['ci-bot'] } } })
  t.match(policy.judge(call('deploy'), ciBot), { allowed: true }, 'a listed client')
  t.same(policy.judge(call('rotate'), ciBot), { allowed: false, reason: 'denied', message: 'tool "rotate" requires user ci-bot (rule tools.rotate of server "github")' }, 'a client is no user of its id')
  t.match(policy.judge(call('deploy'), { ...alice, clientId: 'ci-bot' }), { allowed: false }, 'a user does not pass as the client they signed in through')
  const access = policyFor({ access: { users: ['ci-bot'] } })
  t.match(access.reach(ciBot), { allowed: false }, 'the access list reads machine clients the same way')
})

t.test('resource rules judge only plain URIs: dot segments and needless percent-encoding are refused', async (t) => {
  // The README's example: a user outside hr must not reach file:///srv/public/hr/ by another spelling.
  const policy = policyFor({ resources: { allow: ['file:///srv/public/*'], 'file:///srv/public/hr/*': { scopes: ['hr'], groups: ['hr'] } } })
  const read = (uri: string): McpMessage => firstMessage({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri } })
  for (const uri of [
    'file:///srv/public/x/../hr/salaries.csv',
    'file:///srv/public/%68r/salaries.csv',
    'file:///srv/public/../../etc/passwd',
    'file:///srv/public/./hr/salaries.csv',
    'file:///srv/public/x/..',
    'file:///srv/public/%2e%2e/etc/passwd',
    'file:///srv/public/hr%2fsalaries.csv',
    'file:///srv/public/x\\..\\hr/salaries.csv',
    'file://user@/srv/public/hr/salaries.csv',
  ]) {
    t.match(policy.judge(read(uri), alice), { allowed: false, reason: 'denied', message: /dot segment, user info or a percent-encoded letter/ }, uri)
  }
  t.match(policy.judge(firstMessage({ jsonrpc: '2.0', id: 1, method: 'completion/complete', params: { ref: { type: 'ref/resource', uri: 'file:///srv/public/x/../hr/{name}' }, argument: { name: 'name', value: 's' } } }), alice), { allowed: false, reason: 'denied' }, 'a completion names its template the same way')
  for (const uri of ['file:///srv/public/a%20b.txt', 'file:///srv/public/..hidden', 'file:///srv/public/a.b/c', 'file:///srv/public/%E2%82%AC.txt']) {
    t.match(policy.judge(read(uri), alice), { allowed: true }, `${uri} is plain`)
  }
  // A server without resource rules has nothing to get past: its URIs go as they are.
  t.match(policyFor({}).judge(read('file:///srv/public/x/../hr/salaries.csv'), alice), { allowed: true })
})

t.test('prompts and resources take users and groups too', async (t) => {
  const policy = policyFor({ prompts: { 'incident-*': { groups: ['sre'] } }, resources: { 'file:///srv/hr/*': { users: ['alice'] } } })
  const msg = (method: string, params: Record<string, unknown>): McpMessage => firstMessage({ jsonrpc: '2.0', id: 1, method, params })
  t.match(policy.judge(msg('prompts/get', { name: 'incident-report' }), alice), { allowed: false, message: 'prompt "incident-report" requires group sre (rule prompts.incident-* of server "github")' })
  t.match(policy.judge(msg('prompts/get', { name: 'incident-report' }), { ...bob, groups: ['sre'] }), { allowed: true })
  t.match(policy.judge(msg('resources/read', { uri: 'file:///srv/hr/pay.csv' }), bob), { allowed: false, message: /requires user alice \(rule resources\.file:\/\/\/srv\/hr\/\* / })
  t.match(policy.judge(msg('completion/complete', { ref: { type: 'ref/prompt', name: 'incident-report' }, argument: { name: 'a', value: '' } }), alice), { allowed: false }, 'completing a prompt the caller may not use is refused')
  t.match(policy.judge(msg('resources/read', { uri: 'file:///srv/hr/pay.csv' }), alice), { allowed: true })
})

t.test('lists are filtered per caller by user and group rules', async (t) => {
  const policy = policyFor({ tools: { deploy: { groups: ['sre'] }, 'admin_*': { users: ['bob'] }, write: { scopes: ['w'] } }, prompts: { secret: { users: ['alice'] } } })
  t.ok(policy.filtersLists, 'rules with users or groups make lists per-caller')
  const tools = { tools: [{ name: 'read' }, { name: 'deploy' }, { name: 'admin_reset' }, { name: 'write' }], nextCursor: 'p2' }
  t.same(policy.filterList('tools/list', tools, alice), { tools: [{ name: 'read' }, { name: 'write' }], nextCursor: 'p2' }, 'alice: neither sre nor bob; the scope-gated tool stays')
  t.same(policy.filterList('tools/list', tools, bob), { tools: [{ name: 'read' }, { name: 'admin_reset' }, { name: 'write' }], nextCursor: 'p2' })
  t.equal(policy.filterList('tools/list', tools, { ...bob, groups: ['sre'] }), undefined, 'nothing to hide: the answer passes untouched')
  t.same(policy.filterList('prompts/list', { prompts: [{ name: 'secret' }, { name: 'open' }] }, bob), { prompts: [{ name: 'open' }] })
  t.same(policy.filterAnyList({ tools: [{ name: 'deploy' }, { name: 'read' }] }, alice), { tools: [{ name: 'read' }] }, 'replayed lists too')
  t.notOk(policyFor({ tools: { write: { scopes: ['w'] } } }).filtersLists, 'scope-only rules leave lists alone')
})

t.test('config: user and group rules are validated; an empty list is refused', async (t) => {
  const err = (server: Record<string, unknown>): string => {
    try {
      makeConfig({ servers: [{ name: 'g', transport: 'http', url: 'http://127.0.0.1:9/mcp', ...server }] })
      return 'no error'
    } catch (e) {
      return (e as Error).message
    }
  }
  t.equal(err({ tools: { deploy: { groups: ['sre'], users: ['nobody-configured'], clients: ['ci'], scopes: ['w'] }, 'x_*': { users: ['a'] } }, prompts: { p: { groups: ['g'] } }, resources: { 'file:///*': { users: ['u'] } } }), 'no error', 'unknown users and groups are fine (groups come from an identity provider)')
  t.match(err({ tools: { deploy: { groups: [] } } }), /servers\[0\]\.tools\.deploy\.groups: an empty list admits nobody; remove the key to admit everyone, or list the name under deny/)
  t.match(err({ prompts: { p: { users: [] } } }), /servers\[0\]\.prompts\.p\.users: an empty list admits nobody/)
  t.match(err({ tools: { deploy: { groups: [''] } } }), /servers\[0\]\.tools\.deploy\.groups\[0\]: expected a group name/)
  t.match(err({ tools: { deploy: { group: ['sre'] } } }), /unknown key "group" \(did you mean "groups"\?\)/)
})

t.test('argument deny patterns are compiled when the policy is built, exact and pattern keys alike, not on a call', async (t) => {
  const callWith = (name: string, args: unknown): McpMessage => firstMessage({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } })
  const policy = policyFor({ tools: { run_query: { arguments: { deny: { sql: ['(?i)\\bdrop\\b'] } } }, 'exec_*': { arguments: { deny: { cmd: ['rm -rf'] } } } } })
  t.match(policy.judge(callWith('run_query', { sql: 'DROP TABLE x' }), alice), { allowed: false, reason: 'denied', message: /argument "sql" of tool "run_query" matches the deny pattern/ })
  t.match(policy.judge(callWith('exec_shell', { cmd: 'rm -rf /' }), alice), { allowed: false, message: /argument "cmd" of tool "exec_shell"/ }, 'a pattern key\'s rule too')
  t.match(policy.judge(callWith('run_query', { sql: 'select 1' }), alice), { allowed: true })

  // The config check refuses a bad pattern first; a policy built around it (a config that skipped the
  // check) must still fail at once, before any call, not on the first call that reaches the rule.
  const config = makeConfig({ servers: [{ name: 'g', transport: 'http', url: 'http://127.0.0.1:9/mcp', tools: { 'run_*': { arguments: { deny: { sql: ['drop'] } } } } }] })
  const frozen = config.servers[0]
  if (frozen === undefined) throw new Error('no server')
  const server = structuredClone(frozen) // the loaded config is frozen
  const rule = (server.tools as Record<string, { arguments?: { deny: Record<string, string[]> } }>)['run_*']
  if (rule?.arguments === undefined) throw new Error('no rule')
  rule.arguments.deny.sql = ['(a+)+$']
  t.throws(() => new ServerPolicy(server), /arguments\.deny\.sql: "\(a\+\)\+\$" may backtrack catastrophically/)
})
