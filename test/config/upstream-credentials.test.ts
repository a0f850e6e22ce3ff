// servers[].upstreamAuth and ${user.credentials.<server>} (issue 14 section 2): what
// `portcullis check` accepts and refuses, and how a credential is rendered into a child's env.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { credentialServers, renderEnvValue } from '../../src/config/user-template.js'
import { childEnvironment } from '../../src/upstreams/stdio/environment.js'
import { configErrorMessage } from '../config-helpers.js'

const LINEAR = '  - name: linear\n    transport: http\n    url: https://mcp.linear.app/mcp\n    upstreamAuth: { type: oauth }\n'
const stdio = (env: string, extra = ''): string => `  - name: tools\n    transport: stdio\n    command: node\n    env: { ${env} }\n${extra}`

t.test('upstreamAuth oauth: accepted with auth on; refused with auth off or beside an Authorization header', async (t) => {
  const config = parseConfig(`servers:\n${LINEAR}`, 'gw.yaml', {})
  t.match(config.servers[0], { upstreamAuth: { type: 'oauth', scopes: [] } })
  t.match(configErrorMessage(`servers:\n${LINEAR}auth: { enabled: false }\n`), /servers\[0\]\.upstreamAuth: needs auth\.enabled: true/)
  t.match(configErrorMessage(`servers:\n${LINEAR}    headers: { Authorization: Bearer x }\n`), /Authorization is set by upstreamAuth/)
  t.match(configErrorMessage(`servers:\n${LINEAR.replace('{ type: oauth }', '{ type: oauth, clientSecret: s }')}`), /clientSecret needs clientId/)
  t.match(configErrorMessage(`servers:\n${LINEAR}  - name: connect\n    transport: http\n    url: https://x.example/mcp\n`), /"connect" is reserved/, 'the /connect/<server> route')
})

t.test('${user.credentials.<server>}: in a stdio env, naming an oauth server, per user or session', async (t) => {
  const config = parseConfig(`servers:\n${LINEAR}${stdio('GITHUB_TOKEN: "${user.credentials.linear}"')}`, 'gw.yaml', {})
  t.match(config.servers[1], { env: { GITHUB_TOKEN: '${user.credentials.linear}' } })
  t.match(configErrorMessage(`servers:\n${LINEAR}${stdio('T: "${user.credentials.nope}"')}`),
    /servers\[1\]\.env\.T: \$\{user\.credentials\.nope\} needs an http server named "nope" with upstreamAuth: \{ type: oauth \}/)
  t.match(configErrorMessage(`servers:\n${LINEAR}  - name: plain\n    transport: http\n    url: https://p.example/mcp\n${stdio('T: "${user.credentials.plain}"')}`),
    /\$\{user\.credentials\.plain\} needs an http server named "plain" with upstreamAuth/, 'a server without upstreamAuth has no linked tokens')
  t.match(configErrorMessage(`servers:\n${LINEAR}${stdio('T: "${user.credentials.linear}"', '    isolation: shared\n')}`), /per-user values \(\$\{user\.\*\}\) need isolation: user or session/)
  t.match(configErrorMessage(`servers:\n${LINEAR}${stdio('T: "${user.credentials.linear}"', '    prestart: 1\n')}`), /prestart cannot be used with per-user values/)
  t.match(configErrorMessage(`servers:\n${LINEAR}  - name: tools\n    transport: stdio\n    command: node\n    args: ["--token=\${user.credentials.linear}"]\n`),
    /is for the env of stdio servers only \(arguments are visible to every local user; use env\)/)
  t.match(configErrorMessage(`servers:\n${LINEAR}  - name: h\n    transport: http\n    url: https://h.example/mcp\n    headers: { X-Token: "\${user.credentials.linear}" }\n`),
    /is for the env of stdio servers only \(an HTTP server gets each caller's own token with upstreamAuth\)/)
})

t.test('rendering: the token as it is, other fields escaped, one pass', async (t) => {
  const user = { id: 'u/1', name: 'alice' }
  const tokens = new Map([['linear', 'eyJ.abc-def_g/h+i=']])
  t.same(credentialServers(['${user.credentials.linear}', 'x ${user.credentials.gh} ${user.credentials.linear}']), ['linear', 'gh'])
  t.equal(renderEnvValue('${user.credentials.linear}', user, tokens), 'eyJ.abc-def_g/h+i=', 'not escaped: the token must reach the program unchanged')
  t.equal(renderEnvValue('${user.id}:${user.credentials.linear}', user, tokens), 'u%2F1:eyJ.abc-def_g/h+i=')
  t.equal(renderEnvValue('${user.credentials.linear}', user, new Map([['linear', '${user.id}']])), '${user.id}', 'a token is never read again as a template')
  t.throws(() => renderEnvValue('${user.credentials.linear}', user, new Map()), /no linked credential for linear/, 'never rendered empty')
  t.match(childEnvironment({ GITHUB_TOKEN: '${user.credentials.linear}' }, user, { PATH: '/bin' }, tokens), { PATH: '/bin', GITHUB_TOKEN: 'eyJ.abc-def_g/h+i=' })
})
