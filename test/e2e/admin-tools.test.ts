// Pinned tool definitions approved through the admin API (issue 18, section 1, "and the admin
// API"): a real gateway with authorization on, a stdio fixture whose tool list changes under
// pinTools: enforce, a user signed in through the real OAuth flow with the real MCP SDK client,
// the API authenticated by admin.bearerToken and by an administrator's access token for
// <publicUrl>/admin. Then a second gateway on the same Redis: the approval reaches it too.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { TOOL_APPROVALS_CACHE_MS } from '../../src/guardrails/tool-guard.js'
import { adminToken, connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { connectClient, eventually, redisAvailable, REDIS_URL, scratchRedis, startGateway, stdioServer, textOf, type RunningGateway } from '../helpers.js'
import { V1, V2 } from '../tool-listings.js'

const FIXTURE = fileURLToPath(new URL('../fixtures/tool-list-server.mjs', import.meta.url))
const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)
const USERS = [{ username: 'alice', passwordHash }, { username: 'carol', passwordHash, groups: ['portcullis-admins'] }]
const ADMIN_TOKEN = randomBytes(32).toString('base64url')
const API = '/admin/api/v1'


type Json = Record<string, unknown>

/** `tl`: the changing fixture under enforce; `never`: enforce, never listed; `loose`: pinTools off. */
function servers (toolsFile: string): Json[] {
  return [
    { name: 'tl', transport: 'stdio', command: process.execPath, args: [FIXTURE, toolsFile], pinTools: 'enforce' },
    { name: 'never', transport: 'stdio', command: process.execPath, args: [FIXTURE, toolsFile], pinTools: 'enforce' },
    stdioServer('loose', { pinTools: 'off' }),
  ]
}

async function gateway (t: Test, store: Json = { memory: true }): Promise<{ gw: RunningGateway, toolsFile: string }> {
  const toolsFile = join(t.testdir({}), 'tools.json')
  writeFileSync(toolsFile, JSON.stringify(V1))
  const gw = await startGateway(t, { store, auth: { users: USERS }, admin: { bearerToken: ADMIN_TOKEN }, servers: servers(toolsFile) })
  return { gw, toolsFile }
}

async function admin (gw: RunningGateway, method: 'GET' | 'POST', path: string, options: { token?: string, body?: string } = {}): Promise<{ status: number, body: Json }> {
  const headers: Record<string, string> = { authorization: `Bearer ${options.token ?? ADMIN_TOKEN}` }
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`${gw.baseUrl}${API}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: options.body }) })
  return { status: res.status, body: await res.json() as Json }
}

const records = (gw: RunningGateway, event: string): Json[] => gw.audit.lines.map((line) => JSON.parse(line) as Json).filter((r) => r.event === event)
const names = async (client: Client): Promise<string[]> => (await client.listTools()).tools.map((tool) => tool.name).sort()
const codeOf = (body: Json): unknown => (body.error as Json | undefined)?.code

async function signIn (t: Test, gw: RunningGateway): Promise<Client> {
  const { client } = await connectWithOAuth(t, gw.mcpUrl('tl'), { username: 'alice', password: PASSWORD, issuer: gw.baseUrl, oauth: new TestOAuthClient({ name: 'alice\'s client' }) })
  return client
}

t.test('enforce: the API shows the pending change; approving through it lists and allows the tools at once, audited with the approver', async (t) => {
  const { gw, toolsFile } = await gateway(t)
  const alice = await signIn(t, gw)
  t.same(await names(alice), ['echo', 'read_note', 'stable'], 'first use: everything listed')
  await eventually(() => records(gw, 'tool_definitions').length > 0)

  const first = await admin(gw, 'GET', '/servers/tl/tools')
  t.equal(first.status, 200)
  t.match(first.body, { server: 'tl', pinTools: 'enforce', approved: { approvedBy: 'first-use' }, changes: [] })
  t.same(((first.body.approved as Json).tools as Json[]).map((tool) => tool.name), ['echo', 'read_note', 'stable'], 'the approved set, by name')
  t.same(((first.body.approved as Json).tools as Json[])[0]?.definition, V1[0], 'with each approved definition whole')

  writeFileSync(toolsFile, JSON.stringify(V2))
  t.same(await names(alice), ['stable'], 'the changed and the added tools are hidden')
  await t.rejects(alice.callTool({ name: 'echo', arguments: { text: 'hi' } }), { code: 403, message: /changed since it was approved/ })

  const pending = await admin(gw, 'GET', '/servers/tl/tools')
  t.equal(pending.status, 200)
  t.same((pending.body.lastListing as Json).tools, ['echo', 'read_note', 'stable', 'upload'])
  const changes = pending.body.changes as Json[]
  t.same(changes.map((c) => `${String(c.change)} ${String(c.name)}`), ['changed echo', 'changed read_note', 'added upload'], 'the same differences as `portcullis tools diff`')
  t.same(changes[0]?.fields, [{ field: 'description', before: V1[0]?.description, after: V2[0]?.description }], 'what changed: the edited description')
  t.same(changes[1]?.fields, [{ field: 'inputSchema', before: V1[1]?.inputSchema, after: V2[1]?.inputSchema }], 'and the widened schema')
  t.same(changes[2]?.definition, V2[3], 'an added tool with its definition')
  t.match(changes[0], { from: /^[0-9a-f]{64}$/, to: /^[0-9a-f]{64}$/ }, 'fingerprints before and after')

  // An administrator (a user in admin.groups, with an access token for the admin API) approves one tool.
  const carol = await adminToken(gw.baseUrl, 'carol', PASSWORD)
  t.type(carol.accessToken, 'string', carol.error ?? 'an administrator gets an admin token')
  const one = await admin(gw, 'POST', '/servers/tl/tools/approve', { token: carol.accessToken ?? '', body: JSON.stringify({ tools: ['echo'] }) })
  t.equal(one.status, 200)
  t.match(one.body, { server: 'tl', approvedBy: 'carol', approved: [{ name: 'echo', change: 'changed' }] })
  t.equal((one.body.approved as Json[]).length, 1)
  // No waiting: this replica forgets its copy of the approved set (another would within TOOL_APPROVALS_CACHE_MS).
  t.same(await names(alice), ['echo', 'stable'], 'the approved tool is listed at once, without a restart')
  t.equal(textOf(await alice.callTool({ name: 'echo', arguments: { text: 'hi' } })), '{"text":"hi"}', 'and callable at once')
  await t.rejects(alice.callTool({ name: 'upload', arguments: { text: 'x' } }), { code: 403, message: /was added/ }, 'the rest stays refused')

  t.match(records(gw, 'admin_action').at(-1), { actor: 'carol', action: 'tools.approve', target: { kind: 'server', id: 'tl' }, outcome: 'ok', detail: { approved: [{ name: 'echo', change: 'changed' }] } }, 'audited with who approved and what')
  t.match(records(gw, 'tool_definitions').at(-1), { server: 'tl', action: 'approved', by: 'carol', changes: [{ name: 'echo', change: 'changed' }] }, 'and among the tool definition records, as a CLI approval is')

  // No body: the whole current listing, as `portcullis tools approve tl` does.
  const rest = await admin(gw, 'POST', '/servers/tl/tools/approve')
  t.equal(rest.status, 200)
  t.same((rest.body.approved as Json[]).map((c) => `${String(c.change)} ${String(c.name)}`), ['changed read_note', 'added upload'])
  t.same(await names(alice), ['echo', 'read_note', 'stable', 'upload'], 'everything listed at once')
  t.equal(textOf(await alice.callTool({ name: 'upload', arguments: { text: 'x' } })), '{"text":"x"}')
  t.match(records(gw, 'admin_action').at(-1), { actor: 'admin-token', action: 'tools.approve', outcome: 'ok', detail: { approved: [{ name: 'read_note' }, { name: 'upload' }] } })

  const after = await admin(gw, 'GET', '/servers/tl/tools')
  t.match(after.body, { approved: { approvedBy: 'admin-token' }, changes: [] }, 'nothing pending')
  const again = await admin(gw, 'POST', '/servers/tl/tools/approve')
  t.same([again.status, again.body.approved], [200, []], 'approving nothing new is no error')
  t.notMatch(gw.audit.text(), ADMIN_TOKEN, 'the admin token never reaches the audit trail')
  t.notMatch(gw.audit.text(), carol.accessToken ?? '', 'nor the administrator\'s access token')
})

t.test('refusals: unknown server 404, pinTools off 400, nothing listed yet 400, a bad body or a tool with no change 400, no credential 401', async (t) => {
  const { gw } = await gateway(t)
  const alice = await signIn(t, gw)
  await alice.listTools()

  const unknown = await admin(gw, 'GET', '/servers/nope/tools')
  t.same([unknown.status, codeOf(unknown.body)], [404, 'PORTCULLIS_ERR_ADMIN_NOT_FOUND'])
  t.match((unknown.body.error as Json).message, /no MCP server named "nope"/)
  const unknownApproval = await admin(gw, 'POST', '/servers/nope/tools/approve')
  t.equal(unknownApproval.status, 404)

  const loose = await admin(gw, 'POST', '/servers/loose/tools/approve')
  t.same([loose.status, codeOf(loose.body)], [400, 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST'])
  t.match((loose.body.error as Json).message, /pinTools: off/)
  t.equal((await admin(gw, 'GET', '/servers/loose/tools')).status, 400)

  const never = await admin(gw, 'GET', '/servers/never/tools')
  t.match([never.status, never.body], [200, { approved: null, lastListing: null, changes: [] }], 'a server never listed: nothing approved, nothing seen')
  const neverApproval = await admin(gw, 'POST', '/servers/never/tools/approve')
  t.equal(neverApproval.status, 400)
  t.match((neverApproval.body.error as Json).message, /no tool listing of server "never" has been seen yet/)

  for (const body of ['[]', '{"tools":[]}', '{"tools":"echo"}', '{"tools":[1]}', '{"tool":["echo"]}', '{']) {
    const bad = await admin(gw, 'POST', '/servers/tl/tools/approve', { body })
    t.same([bad.status, codeOf(bad.body)], [400, 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST'], `body ${body}`)
  }
  const unchanged = await admin(gw, 'POST', '/servers/tl/tools/approve', { body: JSON.stringify({ tools: ['stable'] }) })
  t.equal(unchanged.status, 400)
  t.match((unchanged.body.error as Json).message, /nothing to approve for "stable" \(differences: none\)/)

  const anonymous = await fetch(`${gw.baseUrl}${API}/servers/tl/tools/approve`, { method: 'POST' })
  t.equal(anonymous.status, 401)
  await anonymous.arrayBuffer()

  const refused = records(gw, 'admin_action').filter((r) => r.action === 'tools.approve')
  // A body that is not JSON at all is refused by the parser before the route (like every admin route): not audited.
  t.same(refused.map((r) => r.outcome), Array.from({ length: 10 }, () => 'refused'), 'every other refused approval is audited')
  t.match(refused.at(-1), { actor: 'unknown', target: { kind: 'server', id: 'tl' } })
  t.same(records(gw, 'tool_definitions').map((r) => r.by), ['first-use'], 'no approval was written')
})

t.test('replicas on one Redis: an approval through one gateway\'s API reaches another within the cache bound, without a restart', async (t) => {
  if (!await redisAvailable(t)) return
  const { prefix } = await scratchRedis(t)
  const store = { redis: REDIS_URL, prefix }
  const { gw, toolsFile } = await gateway(t, store)
  // The second replica shares the store (the approved set lives there); it runs without
  // authorization so the test can list through it with a plain client.
  const other = await startGateway(t, { store, servers: servers(toolsFile) })
  const client = (await connectClient(t, other.mcpUrl('tl'))).client
  t.same(await names(client), ['echo', 'read_note', 'stable'], 'first use through the other replica')
  await eventually(async () => (await admin(gw, 'GET', '/servers/tl/tools')).body.approved !== null)

  writeFileSync(toolsFile, JSON.stringify(V2))
  t.same(await names(client), ['stable'], 'the other replica hides the changes')
  await eventually(async () => ((await admin(gw, 'GET', '/servers/tl/tools')).body.changes as Json[]).length === 3)
  const approved = await admin(gw, 'POST', '/servers/tl/tools/approve', { body: JSON.stringify({ tools: ['upload'] }) })
  t.match([approved.status, approved.body.approved], [200, [{ name: 'upload', change: 'added' }]], 'approved from the listing the other replica saw')
  const startedMs = Date.now()
  t.ok(await eventually(async () => (await names(client)).includes('upload'), 3 * TOOL_APPROVALS_CACHE_MS), 'the other replica lists it without a restart')
  t.ok(Date.now() - startedMs <= TOOL_APPROVALS_CACHE_MS + 2000, 'within the cache bound')
  t.equal(textOf(await client.callTool({ name: 'upload', arguments: { text: 'x' } })), '{"text":"x"}', 'and lets it be called')
})
