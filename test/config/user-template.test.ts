import t from 'tap'
import { escapeUserValue, missingUserField, renderUserTemplate, templateFields, unknownTemplateFields } from '../../src/config/user-template.js'
import { configWarnings } from '../../src/config/warnings.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { childEnvironment, requireUserFields } from '../../src/upstreams/stdio/environment.js'
import { parseConfig } from '../../src/config/load.js'
import { configErrorMessage } from '../config-helpers.js'

t.test('user values are escaped so they can never inject an argument or a path', async (t) => {
  t.equal(escapeUserValue('alice'), 'alice')
  t.equal(escapeUserValue('alice@example.com'), 'alice@example%2Ecom', 'dots are encoded: no ".." can form')
  t.equal(escapeUserValue('../../etc/passwd'), '%2E%2E%2F%2E%2E%2Fetc%2Fpasswd')
  t.equal(escapeUserValue('--config=/etc/shadow'), '%2D-config%3D%2Fetc%2Fshadow', 'a leading "-" cannot start an option')
  t.equal(escapeUserValue('a b;rm -rf *'), 'a%20b%3Brm%20-rf%20%2A')
  t.equal(escapeUserValue('jörg'), 'j%C3%B6rg')
  t.equal(escapeUserValue(''), '%00', 'an empty value cannot collapse a path segment')
  t.equal(renderUserTemplate('/data/memory-${user.id}.jsonl', { id: '../x', name: 'n' }), '/data/memory-%2E%2E%2Fx.jsonl')
  t.equal(renderUserTemplate('--user=${user.name} ${user.email}', { id: 'i', name: 'bob' }), '--user=bob %00')
  t.same(unknownTemplateFields('${user.id} ${user.password}'), ['password'])
})

t.test('the child environment: allow-listed inheritance plus configured values', async (t) => {
  const env = childEnvironment({ TOKEN: 'x', FILE: '/d/${user.id}' }, { id: 'u1', name: 'n' }, { PATH: '/bin', HOME: '/h', SECRET_KEY: 's', NODE_OPTIONS: '--inspect' })
  t.same(env, { PATH: '/bin', HOME: '/h', TOKEN: 'x', FILE: '/d/u1' })
})

t.test('stdio config validation', async (t) => {
  const err = configErrorMessage
  const base = 'servers:\n  - name: s\n    transport: stdio\n    command: node\n'
  t.equal(err(base), 'no error')
  const config = parseConfig(base, 'gw.yaml', {})
  t.match(config.servers[0], { isolation: 'session', maxProcesses: 32, prestart: 0, idleTimeoutMs: 900_000, startupTimeoutMs: 30_000, requestTimeoutMs: 60_000, args: [], env: {} })
  t.match(err(`${base}    isolation: shared\n    env: { F: "/d/\${user.id}" }\n`), /servers\[0\]\.isolation: per-user values \(\$\{user\.\*\}\) need isolation: user or session/)
  t.match(err(`${base}    prestart: 2\n    args: ["\${user.id}"]\n`), /servers\[0\]\.prestart: prestart cannot be used with per-user values/)
  t.match(err(`${base}    prestart: 5\n    maxProcesses: 2\n`), /prestart \(5\) cannot exceed maxProcesses \(2\)/)
  t.match(err(`${base}    args: ["\${user.password}"]\n`), /unknown per-user field/)
  // cwd is a per-user value like args and env: the same rules.
  t.match(err(`${base}    isolation: shared\n    cwd: "/tmp/users/\${user.id}"\n`), /servers\[0\]\.isolation: per-user values \(\$\{user\.\*\}\) need isolation: user or session/)
  t.match(err(`${base}    prestart: 1\n    cwd: "/tmp/users/\${user.id}"\n`), /servers\[0\]\.prestart: prestart cannot be used with per-user values/)
  t.match(err(`${base}    cwd: "/tmp/users/\${user.password}"\n`), /servers\[0\]\.cwd: unknown per-user field/)
  t.match(err(`${base}    cwd: "/tmp/\${user.credentials.linear}"\n`), /servers\[0\]\.cwd: .*is for the env of stdio servers only/)
  t.equal(err(`${base}    isolation: user\n    cwd: "/nonexistent-base/\${user.id}"\n`), 'no error', 'a per-user directory need not exist before its user comes')
  t.match(err(`${base}    isolation: everyone\n`), /servers\[0\]\.isolation/)
  t.match(err(`${base}    env: { "bad-name": x }\n`), /expected an environment variable name/)
  t.match(err('servers:\n  - name: s\n    transport: stdio\n'), /servers\[0\]\.command: missing required key/)
})

t.test('dataDir resolves against the working directory; ${gateway.dataDir} and cwd for stdio servers', async (t) => {
  const base = 'servers:\n  - name: s\n    transport: stdio\n    command: node\n'
  const config = parseConfig(`dataDir: ./state\n${base}    args: ["--db=\${gateway.dataDir}/s.db"]\n    env: { FILE: "\${gateway.dataDir}/\${user.id}.json" }\n    cwd: "\${gateway.dataDir}"\n`, 'gw.yaml', {})
  const dataDir = `${process.cwd()}/state`
  t.equal(config.dataDir, dataDir)
  t.match(config.servers[0], { args: [`--db=${dataDir}/s.db`], env: { FILE: `${dataDir}/\${user.id}.json` }, cwd: dataDir })
  let message = ''
  try {
    parseConfig(`${base}    cwd: /no/such/dir\n`, 'gw.yaml', {})
  } catch (e) {
    message = (e as Error).message
  }
  t.equal(message, 'gw.yaml:5:10: servers[0].cwd: directory "/no/such/dir" does not exist')
  t.equal(parseConfig(base, 'gw.yaml', {}).dataDir, `${process.cwd()}/data`, 'default ./data')
})

t.test('a per-user value the user lacks (missing, empty or blank) is found, and refused naming the field', async (t) => {
  const values = ['--owner=${user.name}', '/data/memory-${user.email}.jsonl', '${user.name}-${user.id}']
  t.same(templateFields(values), ['name', 'email', 'id'])
  t.same(templateFields(['${user.password}', 'plain']), [], 'unknown fields are the schema\'s concern')
  t.equal(missingUserField(values, { id: 'a', name: 'alice', email: 'alice@example.com' }), undefined)
  t.equal(missingUserField(values, { id: 'b', name: 'bob' }), 'email')
  t.equal(missingUserField(values, { id: 'b', name: 'bob', email: '' }), 'email')
  t.equal(missingUserField(values, { id: 'b', name: 'bob', email: '  ' }), 'email')
  t.equal(missingUserField(['${user.name}'], { id: 'x', name: '' }), 'name')
  t.equal(missingUserField(['no template'], { id: '', name: '' }), undefined)
  let refusal: unknown
  try {
    requireUserFields('mem', values, { id: 'b', name: 'bob' })
  } catch (err) {
    refusal = err
  }
  t.match(refusal, { code: 'PORTCULLIS_ERR_USER_FIELD_MISSING', status: 403, data: { field: 'email' }, message: /MCP server "mem" needs your account's email \(\$\{user\.email\}\), and your account has none/ })
  t.doesNotThrow(() => requireUserFields('mem', values, { id: 'a', name: 'alice', email: 'a@example.com' }))
})

t.test('configWarnings: per-user fields some local users lack, and anonymous callers when auth is off', async (t) => {
  const hash = await hashPassword('a-password-for-this-test')
  const server = (env: string): string => `servers:\n  - name: mem\n    transport: stdio\n    command: node\n    env: { DATA_FILE: "${env}" }\n`
  const users = `auth:\n  users:\n    - { username: alice, passwordHash: "${hash}", email: alice@example.com }\n    - { username: bob, passwordHash: "${hash}" }\n    - { username: carol, passwordHash: "${hash}" }\n`
  const warnings = configWarnings(parseConfig(`${users}${server('/data/${user.email}.jsonl')}`, 'gw.yaml', {}))
  t.same(warnings.map((w) => ({ server: w.server, field: w.field, users: w.users })), [{ server: 'mem', field: 'email', users: ['bob', 'carol'] }])
  t.match(warnings[0]?.message, /^servers\[0\] \(mem\): args\/env use \$\{user\.email\}, which local user\(s\) bob, carol lack: their requests to this server will be refused \(PORTCULLIS_ERR_USER_FIELD_MISSING\)/)
  t.same(configWarnings(parseConfig(`${users}${server('/data/${user.name}.jsonl')}`, 'gw.yaml', {})), [], 'every local user has a name')
  const open = configWarnings(parseConfig(`auth: { enabled: false }\n${server('/data/${user.email}.jsonl')}`, 'gw.yaml', {}))
  t.match(open, [{ users: ['anonymous'], message: /"anonymous" \(auth is disabled: every caller\) lacks/ }])
})
