import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseConfig, loadConfigFile, resolveConfigPath } from '../../src/config/load.js'
import { describeConfig } from '../../src/config/describe.js'
import type { Config, HttpServerConfig } from '../../src/config/schema.js'
import { configError } from '../config-helpers.js'

const httpServer = (config: Config, index = 0): HttpServerConfig => {
  const server = config.servers[index]
  if (server?.transport !== 'http') throw new Error(`servers[${index}] is not an http server`)
  return server
}

const MINIMAL = 'servers:\n  - name: a\n    transport: http\n    url: http://127.0.0.1:9/mcp\n'

t.test('a minimal config gets every default', async (t) => {
  const config = parseConfig(MINIMAL, 'gw.yaml', {})
  t.equal(config.publicUrl, 'http://127.0.0.1:8080')
  t.same(config.listen, { host: '127.0.0.1', port: 8080 })
  t.equal(config.bodyLimit, 4 * 1024 * 1024)
  t.same(config.allowedOrigins, [])
  t.equal(config.shutdownTimeoutMs, 10_000)
  t.same(config.log, { level: 'info', requests: false })
  t.match(config.servers[0], { name: 'a', transport: 'http', headers: {}, forwardHeaders: [], timeoutMs: 60_000 })
  t.ok(Object.isFrozen(config) && Object.isFrozen(config.servers[0]), 'the config is frozen')
})

t.test('a typo\'d key names file, line, key and suggests the right one', async (t) => {
  const err = configError(`${MINIMAL}    timeutMs: 5\n`)
  t.equal(err.issues.length, 1)
  t.equal(err.message, 'gw.yaml:5:5: servers[0].timeutMs: unknown key "timeutMs" (did you mean "timeoutMs"?)')
})

t.test('a wrong type names the line, the key and what was expected', async (t) => {
  const err = configError(`listen:\n  port: eighty\n${MINIMAL}`)
  t.equal(err.message, 'gw.yaml:2:9: listen.port: expected a TCP port number')
  const err2 = configError(`bodyLimit: lots\n${MINIMAL}`)
  t.equal(err2.message, 'gw.yaml:1:12: bodyLimit: expected a size such as 4mb, 512kb or a number of bytes, got "lots"')
})

t.test('a missing environment variable is an error naming the variable, line and key — never an empty string', async (t) => {
  const yaml = `${MINIMAL}    headers:\n      Authorization: Bearer \${UPSTREAM_TOKEN}\n`
  const err = configError(yaml, {})
  t.equal(err.message, 'gw.yaml:6:22: servers[0].headers.Authorization: environment variable UPSTREAM_TOKEN is not set (referenced as ${UPSTREAM_TOKEN}); set it, or write $${UPSTREAM_TOKEN} for a literal')
  const config = parseConfig(yaml, 'gw.yaml', { UPSTREAM_TOKEN: 's3cret' })
  t.equal(httpServer(config).headers.Authorization, 'Bearer s3cret')
})

t.test('an error quoting a value from the environment names the variable, never its value', async (t) => {
  const stdio = 'servers:\n  - name: db\n    transport: stdio\n    command: node\n'
  const template = configError(`${stdio}    env: { DATABASE_URL: "postgres://app:\${DB_PASSWORD}@db/app_\${user.login}" }\n`, { DB_PASSWORD: 's3cr3t-hunter2' })
  t.match(template.message, /unknown per-user field in "postgres:\/\/app:\$\{DB_PASSWORD\}@db\/app_\$\{user\.login\}"/)
  t.notOk(template.message.includes('s3cr3t-hunter2'), 'the password is not in the message')
  const url = configError('servers:\n  - name: s\n    transport: http\n    url: "${SEARCH_URL}"\n', { SEARCH_URL: 'not a url?api_key=k-live-0123456789' })
  t.notOk(url.message.includes('k-live-0123456789'), 'nor a key in a URL that is not one')
  t.match(url.message, /\$\{SEARCH_URL\}/)
  const quoted = configError(`${stdio}    env: { T: "\${QUOTED}/\${user.nope}" }\n`, { QUOTED: 'pa"ss\\word' })
  t.notOk(quoted.message.includes('ss\\\\word'), 'a value whose quoting escapes characters is found as quoted too')
})

t.test('interpolation: numbers from the environment, $${} literals, per-user templates left alone', async (t) => {
  const config = parseConfig(`listen:\n  port: \${PORT}\n${MINIMAL}    headers:\n      X-Literal: "$\${NOT_EXPANDED}"\n      X-User: "\${user.id}"\n`, 'gw.yaml', { PORT: '9090' })
  t.equal(config.listen.port, 9090)
  t.equal(httpServer(config).headers['X-Literal'], '${NOT_EXPANDED}')
  t.equal(httpServer(config).headers['X-User'], '${user.id}')
  t.match(configError(`${MINIMAL}    headers:\n      X: "\${bad-name}"\n`).message, /invalid placeholder \$\{bad-name\}/)
})

t.test('missing keys, bad names, bad URLs and duplicates are each reported', async (t) => {
  t.equal(configError('listen: {port: 1}\n').message, 'gw.yaml:1:1: servers: missing required key (expected array)')
  t.match(configError('servers: []\n').message, /servers: expected at least one server/)
  t.match(configError('servers:\n  - {name: Bad Name, transport: http, url: "http://x/mcp"}\n').message, /gw\.yaml:2:12: servers\[0\]\.name: expected 1-63 lowercase letters/)
  t.match(configError('servers:\n  - {name: healthz, transport: http, url: "http://x/mcp"}\n').message, /"healthz" is reserved/)
  t.match(configError('servers:\n  - {name: a, transport: http, url: "ftp://x/mcp"}\n').message, /servers\[0\]\.url: expected an absolute http\(s\) URL, got "ftp:\/\/x\/mcp"/)
  t.match(configError('servers:\n  - {name: a, transport: smoke-signals, url: "http://x/mcp"}\n').message, /servers\[0\]\.transport: expected transport: http, stdio or sse/)
  t.match(configError('servers:\n  - {name: a, transport: http}\n').message, /gw\.yaml:2:5: servers\[0\]\.url: missing required key/)
  t.match(configError('servers:\n  - {name: a, transport: http, url: "http://x/mcp"}\n  - {name: a, transport: http, url: "http://y/mcp"}\n').message,
    /gw\.yaml:3:12: servers\[1\]\.name: duplicate server name "a" \(also servers\[0\]\)/)
  t.match(configError(`publicUrl: https://gw.example.com/prefix\n${MINIMAL}`).message, /publicUrl: expected an origin only/)
  t.match(configError(`${MINIMAL}    headers: { Host: x }\n`).message, /header "Host" is managed by the gateway/)
  t.match(configError(`${MINIMAL}    forwardHeaders: [Authorization]\n`).message, /"Authorization" is never forwarded/)
  t.match(configError(`allowedOrigins: ["https://a.example.com/path"]\n${MINIMAL}`).message, /allowedOrigins\[0\]: expected an origin/)
})

t.test('several problems are all reported at once', async (t) => {
  const err = configError('listen: { prot: 1 }\nservers:\n  - {name: a, transport: http, url: nope}\n')
  t.equal(err.issues.length, 2)
  t.match(err.message, /listen\.prot: unknown key "prot" \(did you mean "port"\?\)/)
  t.match(err.message, /servers\[0\]\.url/)
})

t.test('invalid YAML and empty files', async (t) => {
  t.match(configError('servers: [\n').message, /^gw\.yaml:2:1: invalid YAML: /)
  t.match(configError('a: 1\na: 2\n').message, /invalid YAML: Map keys must be unique/)
  t.match(configError('').message, /the config file is empty/)
})

t.test('config files: explicit path, default search order, unreadable files', async (t) => {
  const dir = t.testdir({ 'portcullis.yaml': MINIMAL, config: { 'portcullis.example.yaml': MINIMAL } })
  t.equal(resolveConfigPath(undefined, dir), join(dir, 'portcullis.yaml'))
  const dir2 = t.testdir({ config: { 'portcullis.example.yaml': MINIMAL } })
  t.equal(resolveConfigPath(undefined, dir2), join(dir2, 'config', 'portcullis.example.yaml'))
  t.throws(() => resolveConfigPath('missing.yaml', dir2), /missing\.yaml: config file not found/)
  t.throws(() => resolveConfigPath(undefined, t.testdir({})), /no config file found/)
  const file = join(dir, 'x.yaml')
  writeFileSync(file, MINIMAL)
  t.equal(loadConfigFile(file, {}).source, file)
})

t.test('check output masks header values and URL credentials', async (t) => {
  const config = parseConfig('servers:\n  - name: a\n    transport: http\n    url: "https://user:pw@up.example.com/mcp?key=abc"\n    headers: { Authorization: "Bearer topsecret" }\n', 'gw.yaml', {})
  const out = describeConfig(config)
  t.match(out, /route: http:\/\/127\.0\.0\.1:8080\/a\/mcp/)
  t.match(out, /headers: Authorization: \*\*\*/)
  t.notMatch(out, /topsecret|pw@|abc/)
})

t.test('check output says who a user or group rule is for', async (t) => {
  const config = parseConfig('servers:\n  - name: a\n    transport: http\n    url: "https://up.example.com/mcp"\n    tools: { deploy: { groups: [sre], users: [alice] }, "admin_*": { clients: [ci-bot] }, write: { scopes: [w] } }\n    prompts: { p: { groups: [ops, hr] } }\n', 'gw.yaml', {})
  const out = describeConfig(config)
  t.match(out, /tools: rules for deploy \(only user alice or group sre\), admin_\* \(only client ci-bot\), write\n/)
  t.match(out, /prompts: rules for p \(only groups ops, hr\)\n/)
})

t.test('behind a proxy: https publicUrl required off loopback, trustProxy forms, metrics options', async (t) => {
  t.match(configError(`publicUrl: http://gw.example.com\n${MINIMAL}`).message, /gw\.yaml:1:12: publicUrl: must be https:\/\/ .*allowInsecurePublicUrl: true/)
  t.equal(parseConfig(`publicUrl: http://gw.example.com\nallowInsecurePublicUrl: true\n${MINIMAL}`, 'gw.yaml', {}).publicUrl, 'http://gw.example.com', 'the dev flag lets it through')
  t.equal(parseConfig(`publicUrl: http://gw.example.com\nauth: { enabled: false }\n${MINIMAL}`, 'gw.yaml', {}).publicUrl, 'http://gw.example.com', 'no tokens, no passwords: no TLS requirement')
  t.equal(parseConfig(`publicUrl: http://localhost:8080\n${MINIMAL}`, 'gw.yaml', {}).publicUrl, 'http://localhost:8080', 'loopback is fine (development)')
  t.equal(parseConfig(MINIMAL, 'gw.yaml', {}).trustProxy, false, 'X-Forwarded-* ignored by default')
  t.equal(parseConfig(`trustProxy: 1\n${MINIMAL}`, 'gw.yaml', {}).trustProxy, 1)
  t.same(parseConfig(`trustProxy: [10.0.0.0/8, 127.0.0.1]\n${MINIMAL}`, 'gw.yaml', {}).trustProxy, ['10.0.0.0/8', '127.0.0.1'])
  t.match(configError(`trustProxy: yes-please\n${MINIMAL}`).message, /trustProxy: /)
  t.match(configError(`trust_proxy: true\n${MINIMAL}`).message, /did you mean "trustProxy"/)
  t.match(configError(`auth: { api_keys: {} }\n${MINIMAL}`).message, /did you mean "apiKeys"/)
  t.match(configError(`auth: { apiKeys: { max_ttl: 30d } }\n${MINIMAL}`).message, /did you mean "maxTtl"/)

  const metrics = parseConfig(`metrics: { bearerToken: "\${SCRAPE_TOKEN}", listen: { host: 0.0.0.0, port: 9464 } }\n${MINIMAL}`, 'gw.yaml', { SCRAPE_TOKEN: 'scrape-token-0123456789' })
  t.same(metrics.metrics, { enabled: true, bearerToken: 'scrape-token-0123456789', listen: { host: '0.0.0.0', port: 9464 } })
  t.match(describeConfig(metrics), /metrics: http:\/\/0\.0\.0\.0:9464\/metrics \(bearer token \*\*\*\)/)
  t.notMatch(describeConfig(metrics), /scrape-token/, 'check never prints the scrape token')
  t.same(parseConfig(MINIMAL, 'gw.yaml', {}).metrics, { enabled: true }, 'on the main port, open, by default')
  t.match(configError(`metrics: { bearerToken: short }\n${MINIMAL}`).message, /metrics\.bearerToken: expected a bearer token of at least 16 characters/)
  t.match(configError(`metrics: { listen: { port: 8080 } }\n${MINIMAL}`).message, /metrics\.listen\.port: expected a port other than listen\.port \(8080\)/)
  t.match(configError(`servers:\n  - {name: gateway, transport: http, url: "http://x/mcp"}\n`).message, /"gateway" is reserved/)
})

t.test('cluster.advertiseUrl: an origin, and only with a Redis store', async (t) => {
  const ok = parseConfig(`store: { redis: "redis://127.0.0.1:6379" }\ncluster: { advertiseUrl: "http://10.0.0.11:8080" }\n${MINIMAL}`, 'gw.yaml', {})
  t.equal(ok.cluster.advertiseUrl, 'http://10.0.0.11:8080')
  t.match(describeConfig(ok), /cluster: this replica is http:\/\/10\.0\.0\.11:8080/)
  t.match(configError(`cluster: { advertiseUrl: "http://10.0.0.11:8080" }\n${MINIMAL}`).message, /cluster\.advertiseUrl: needs store\.redis/)
  t.match(configError(`store: { redis: "redis://127.0.0.1:6379" }\ncluster: { advertiseUrl: "http://10.0.0.11:8080/gw" }\n${MINIMAL}`).message, /cluster\.advertiseUrl: expected an origin only/)
  t.match(configError(`auth: { registeredClientTtl: forever }\n${MINIMAL}`).message, /auth\.registeredClientTtl: /)
  t.equal(parseConfig(MINIMAL, 'gw.yaml', {}).auth.registeredClientTtl, 90 * 24 * 3600_000, 'registrations live 90 days unused by default')
})

t.test('a machine client may not carry a username (its token\'s sub would name that user)', async (t) => {
  const users = '  users:\n    - { username: ci-bot, passwordHash: "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g" }\n'
  const client = (id: string): string => `  clients:\n    - { clientId: ${id}, clientSecret: "a-machine-secret-of-at-least-32-characters", grantTypes: [client_credentials] }\n`
  t.match(configError(`auth:\n${users}${client('ci-bot')}${MINIMAL}`).message, /auth\.clients\[0\]\.clientId: clientId "ci-bot" is also a username: a machine client and a user must not share a name/)
  t.match(configError(`auth:\n${client('admin')}${MINIMAL}`).message, /clientId "admin" is also a username/, 'the first-run account counts when no users are listed')
  t.doesNotThrow(() => parseConfig(`auth:\n${users}${client('ci-runner')}${MINIMAL}`, 'gw.yaml', {}))
})

t.test('a YAML client whose redirect URI is plain http to a non-loopback host is refused at load, naming the key', async (t) => {
  const err = configError(`${MINIMAL}auth:\n  clients:\n    - clientId: web\n      redirectUris: [https://app.example.com/cb, http://evil.example/cb]\n`)
  t.equal(err.message, 'gw.yaml:8:50: auth.clients[0].redirectUris[1]: "http://evil.example/cb": redirect URIs using http: must use a loopback host (127.0.0.1, localhost or [::1]); use https: or a custom scheme elsewhere')
  const ok = parseConfig(`${MINIMAL}auth:\n  clients:\n    - clientId: cli\n      redirectUris: [http://127.0.0.1:8765/cb, "http://[::1]/cb", http://localhost/cb, https://app.example.com/cb, "cursor://cb"]\n`, 'gw.yaml', {})
  t.equal(ok.auth.clients[0]?.redirectUris.length, 5, 'loopback http, https and custom schemes load')
})

t.test('the JWT-bearer grant (ID-JAG) for a YAML client needs an identity provider with idJag: true', async (t) => {
  const client = '  clients:\n    - { clientId: agent, clientSecret: "a-machine-secret-of-at-least-32-characters", grantTypes: ["urn:ietf:params:oauth:grant-type:jwt-bearer"] }\n'
  const idp = (idJag: boolean): string => `  identityProviders:\n    - { name: corp, type: oidc, issuer: "https://idp.example.com", clientId: portcullis, clientSecret: s, idJag: ${String(idJag)} }\n`
  t.match(configError(`auth:\n${client}${MINIMAL}`).message, /auth\.clients\[0\]\.grantTypes: the jwt-bearer grant \(ID-JAG\) needs an identity provider with idJag: true/)
  t.match(configError(`auth:\n${client}${idp(false)}${MINIMAL}`).message, /needs an identity provider with idJag: true/)
  t.same(parseConfig(`auth:\n${client}${idp(true)}${MINIMAL}`, 'gw.yaml', {}).auth.clients[0]?.grantTypes, ['urn:ietf:params:oauth:grant-type:jwt-bearer'])
  t.match(configError(`auth:\n${idp(true).replace('idJag', 'idjag')}${MINIMAL}`).message, /unknown key "idjag" \(did you mean "idJag"\?\)/)
})

t.test('admin: groups default to portcullis-admins; bearerToken from the environment, long, masked, only with auth on', async (t) => {
  t.same(parseConfig(MINIMAL, 'gw.yaml', {}).admin, { groups: ['portcullis-admins'] })
  const token = 'admin-token-0123456789-0123456789-abc'
  const config = parseConfig(`admin: { groups: [ops], bearerToken: "\${ADMIN_TOKEN}" }\n${MINIMAL}`, 'gw.yaml', { ADMIN_TOKEN: token })
  t.same(config.admin, { groups: ['ops'], bearerToken: token })
  t.match(describeConfig(config), /admin API: groups ops; bearer token \*\*\*/)
  t.notMatch(describeConfig(config), token, 'check never prints the admin token')
  t.match(configError(`admin: { bearerToken: too-short-for-an-admin-token }\n${MINIMAL}`).message, /gw\.yaml:1:\d+: admin\.bearerToken: expected a bearer token of at least 32 characters/)
  t.match(configError(`auth: { enabled: false }\nadmin: { bearerToken: ${token} }\n${MINIMAL}`).message, /admin\.bearerToken: needs auth\.enabled: true/)
  t.match(configError(`admin: { bearer_token: x }\n${MINIMAL}`).message, /did you mean "bearerToken"/)
  t.match(configError(`servers:\n  - name: admin\n    transport: http\n    url: http://127.0.0.1:9/mcp\n`).message, /servers\[0\]\.name: /, 'admin is a reserved server name')
})
