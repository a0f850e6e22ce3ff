// servers[].identity and ${user.*} in HTTP upstream headers (issue 14 section 1): what
// `portcullis check` refuses, and how a per-user value is made safe for a header.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { describeConfig } from '../../src/config/describe.js'
import { configWarnings } from '../../src/config/warnings.js'
import { escapeHeaderValue, renderHeaderTemplate } from '../../src/config/user-template.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { configErrorMessage } from '../config-helpers.js'

const HTTP = 'servers:\n  - name: a\n    transport: http\n    url: https://search.internal:9000/mcp\n'

t.test('identity: accepted on an HTTP server with auth on, shown by check', async (t) => {
  const config = parseConfig(`publicUrl: https://gw.example.com\n${HTTP}    identity: { header: X-Portcullis-Identity }\n`, 'gw.yaml', {})
  t.match(config.servers[0], { identity: { header: 'X-Portcullis-Identity' } })
  t.match(describeConfig(config), /identity: signed ES256 JWT in X-Portcullis-Identity \(aud https:\/\/search\.internal:9000\/mcp, verify at https:\/\/gw\.example\.com\/oauth\/jwks\)/)
  t.notOk('identity' in (parseConfig(HTTP, 'gw.yaml', {}).servers[0] ?? {}), 'off by default')
})

t.test('identity: refused where it could not be trusted or makes no sense', async (t) => {
  t.match(configErrorMessage(`${HTTP}    identity: { header: X-Portcullis-Identity }\nauth: { enabled: false }\n`),
    /gw\.yaml:5:\d+: servers\[0\]\.identity: needs auth\.enabled: true: with authorization off no caller is verified, so there is no identity to sign/)
  t.match(configErrorMessage('servers:\n  - name: s\n    transport: stdio\n    command: node\n    identity: { header: X-Portcullis-Identity }\n'),
    /servers\[0\]\.identity: identity \(a signed identity header\) is for transport: http and sse only; a stdio server gets its caller through per-user \$\{user\.\*\} values in args and env/)
  for (const header of ['Authorization', 'Cookie', 'Host', 'Content-Length', 'Mcp-Session-Id', 'Accept', 'User-Agent', 'Mcp-Param-Region', 'mcp-anything']) {
    t.match(configErrorMessage(`${HTTP}    identity: { header: ${header} }\n`), new RegExp(`servers\\[0\\]\\.identity\\.header: "${header}" cannot carry the identity: it is a header the gateway manages, never forwards or forwards from the client`), header)
  }
  t.match(configErrorMessage(`${HTTP}    identity: { header: X-Id }\n    forwardHeaders: [x-id]\n`),
    /servers\[0\]\.identity\.header: "X-Id" is also under forwardHeaders: a client could send its own identity \(remove it from forwardHeaders\)/)
  t.match(configErrorMessage(`${HTTP}    identity: { header: X-Id }\n    headers: { X-ID: static }\n`),
    /servers\[0\]\.identity\.header: "X-Id" is also under headers: the identity header is the gateway's alone/)
  t.match(configErrorMessage(`${HTTP}    identity: { header: "bad header" }\n`), /servers\[0\]\.identity\.header: expected an HTTP header name/)
  t.match(configErrorMessage(`${HTTP}    identity: { header: X-Id, audience: x }\n`), /servers\[0\]\.identity\.audience: unknown key "audience"/)
})

t.test('${user.*} in HTTP headers: unknown fields and values that could be sent empty are refused at check', async (t) => {
  t.equal(configErrorMessage(`${HTTP}    headers: { X-User: "\${user.name}", X-Id: "id=\${user.id}", X-Mail: "mailto:\${user.email}" }\n`), 'no error')
  t.match(configErrorMessage(`${HTTP}    headers: { X-User: "\${user.password}" }\n`), /servers\[0\]\.headers\.X-User: unknown per-user field in "\$\{user\.password\}": expected \$\{user\.id\}, \$\{user\.name\} or \$\{user\.email\}/)
  for (const value of ['${user.email}', ' ${user.email} ', '${user.email}${user.email}']) {
    t.match(configErrorMessage(`${HTTP}    headers: { X-Mail: "${value}" }\n`),
      /servers\[0\]\.headers\.X-Mail: ".*" could be sent empty \(a caller without that field, e\.g\. a machine client, has no value\): use a field every caller has/, value)
  }
})

t.test('check warns when a local user lacks a field an HTTP header uses', async (t) => {
  const passwordHash = await hashPassword('correct horse battery staple')
  const config = parseConfig(`${HTTP}    headers: { X-Mail: "mailto:\${user.email}" }\nauth:\n  users:\n    - { username: alice, email: alice@example.com, passwordHash: "${passwordHash}" }\n    - { username: bob, passwordHash: "${passwordHash}" }\n`, 'gw.yaml', {})
  const warnings = configWarnings(config)
  t.equal(warnings.length, 1)
  t.match(warnings[0]?.message, /^servers\[0\] \(a\): headers use \$\{user\.email\}, which local user\(s\) bob lack: their requests to this server will be refused \(PORTCULLIS_ERR_USER_FIELD_MISSING\)/)
})

t.test('a rendered header value can never break the header: controls, spaces, delimiters and non-ASCII are percent-encoded', async (t) => {
  t.equal(escapeHeaderValue('alice@example.com'), 'alice@example.com', 'an email passes as it is')
  t.equal(escapeHeaderValue('oidc:1234-abcd_ef'), 'oidc:1234-abcd_ef')
  t.equal(escapeHeaderValue('eve\r\nX-Admin: true'), 'eve%0D%0AX-Admin:%20true', 'CR LF cannot start a header line')
  t.equal(escapeHeaderValue('a\tb\u0000c\u007f'), 'a%09b%00c%7F')
  t.equal(escapeHeaderValue('Zoë Ünal'), 'Zo%C3%AB%20%C3%9Cnal')
  t.equal(escapeHeaderValue('a,b;c"d\\e%f'), 'a%2Cb%3Bc%22d%5Ce%25f', 'list and quoting delimiters, and the escape itself')
  t.equal(decodeURIComponent(escapeHeaderValue('Zoë, "x"; 100%\r\n')), 'Zoë, "x"; 100%\r\n', 'the upstream reads it back with decodeURIComponent')
  t.equal(renderHeaderTemplate('name=${user.name} mail=${user.email}', { id: 'i', name: 'eve\r\nX: 1', email: 'e@x.io' }), 'name=eve%0D%0AX:%201 mail=e@x.io')
  t.equal(renderHeaderTemplate('static value', { id: 'i', name: 'n' }), 'static value')
})
