// README "Connecting clients", checked: each recipe's client replayed against a real gateway.
//
// Claude Desktop is tested with the program it runs, mcp-remote (a dev dependency), as a real
// child process: it registers, prints the authorization URL (no browser here: the test's
// headless browser signs in and delivers the code to mcp-remote's own callback listener), then
// bridges stdio to the gateway. The other clients cannot run here (desktop apps and hosted
// services): the test replays what each sends — its registration payload (docs/client-
// registration.md), its redirect URI, its scopes or none, PKCE S256, the resource indicator —
// after discovering the authorization server from the 401 as they do, then the code exchange, a
// refresh, and MCP over Streamable HTTP with the token.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { hashPassword } from '../../src/auth-server/password.js'
import { HeadlessBrowser } from '../oauth-helpers.js'
import { freePort, INIT_BODY, postJson, startGateway, startUpstream, textOf, type RunningGateway } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'
const MCP_REMOTE = fileURLToPath(new URL('../../node_modules/mcp-remote/dist/proxy.js', import.meta.url))

async function gateway (t: Parameters<typeof startGateway>[0]): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  })
}

interface Recipe {
  /** The client, as README "Connecting clients" names it. */
  readonly client: string
  /** Its Dynamic Client Registration body (RFC 7591), as the client sends it. */
  readonly registration: Record<string, unknown>
  /** The scope it asks for at the authorization endpoint; undefined: none (ChatGPT on reconnect, many SDK clients). */
  readonly scope?: string
}

const RECIPES: Recipe[] = [
  {
    client: 'Claude Code (claude mcp add --transport http)',
    registration: { client_name: 'Claude Code (portcullis)', redirect_uris: ['http://localhost:53175/callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' },
  },
  {
    client: 'claude.ai custom connector',
    registration: { client_name: 'claudeai', redirect_uris: ['https://claude.ai/api/mcp/auth_callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'claudeai' },
    scope: 'claudeai',
  },
  {
    client: 'ChatGPT custom connector',
    registration: { client_name: 'ChatGPT', redirect_uris: ['https://chatgpt.com/connector_platform_oauth_redirect'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' },
  },
  {
    client: 'Cursor',
    registration: { client_name: 'Cursor', redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' },
  },
  {
    client: 'VS Code',
    registration: { client_name: 'Visual Studio Code', redirect_uris: ['http://127.0.0.1:33418/', 'https://vscode.dev/redirect'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', application_type: 'native' },
  },
  {
    client: 'MCP Inspector',
    registration: { client_name: 'MCP Inspector', redirect_uris: ['http://localhost:6274/oauth/callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'mcp' },
    scope: 'mcp',
  },
]

/** What every client does first: the MCP URL's 401 names the resource metadata, which names the authorization server (RFC 9728, RFC 8414). */
async function discover (mcpUrl: string): Promise<{ resource: string, issuer: string, authorizationEndpoint: string, tokenEndpoint: string, registrationEndpoint: string }> {
  const challenge = await postJson(mcpUrl, INIT_BODY)
  const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge.headers.get('www-authenticate') ?? '')?.[1]
  if (challenge.status !== 401 || metadataUrl === undefined) throw new Error(`expected a 401 naming resource_metadata, got ${challenge.status}`)
  const resourceMetadata = await (await fetch(metadataUrl)).json() as { resource: string, authorization_servers: string[] }
  const issuer = resourceMetadata.authorization_servers[0] ?? ''
  const as = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json() as Record<string, string>
  return { resource: resourceMetadata.resource, issuer: as.issuer ?? '', authorizationEndpoint: as.authorization_endpoint ?? '', tokenEndpoint: as.token_endpoint ?? '', registrationEndpoint: as.registration_endpoint ?? '' }
}

async function tokenRequest (endpoint: string, form: Record<string, string>): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

for (const recipe of RECIPES) {
  t.test(`${recipe.client}: registration, sign-in, code exchange, refresh and MCP calls as the client makes them`, async (t) => {
    const gw = await gateway(t)
    const mcpUrl = gw.mcpUrl('tools')
    const found = await discover(mcpUrl)
    t.equal(found.resource, mcpUrl, 'the resource metadata names the MCP URL the user entered')
    t.equal(found.issuer, gw.baseUrl)

    const registered = await postJson(found.registrationEndpoint, recipe.registration)
    t.equal(registered.status, 201, `registration accepted: ${registered.text.slice(0, 200)}`)
    const clientId = String((registered.json as { client_id?: string }).client_id)
    const redirectUri = String((recipe.registration.redirect_uris as string[])[0])

    const verifier = randomBytes(32).toString('base64url')
    const state = randomBytes(16).toString('base64url')
    const authorize = new URL(found.authorizationEndpoint)
    authorize.search = new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: redirectUri,
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      resource: found.resource,
      ...(recipe.scope === undefined ? {} : { scope: recipe.scope }),
    }).toString()
    const browser = new HeadlessBrowser()
    const callback = await browser.authorize(authorize, { username: 'alice', password: PASSWORD })
    t.same(browser.pages, ['login', 'consent'], 'the user signs in and consents')
    t.ok(callback.href.startsWith(redirectUri), `the browser goes back to the client's redirect URI (${redirectUri})`)
    t.equal(callback.searchParams.get('state'), state)
    t.equal(callback.searchParams.get('iss'), found.issuer, 'with iss (RFC 9207)')

    const tokens = await tokenRequest(found.tokenEndpoint, { grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: redirectUri, code_verifier: verifier, client_id: clientId, resource: found.resource })
    t.equal(tokens.status, 200, `code exchange: ${JSON.stringify(tokens.body.error ?? '')}`)
    t.equal(typeof tokens.body.refresh_token, 'string', 'a refresh token, so the client stays connected')

    const headers = { authorization: `Bearer ${String(tokens.body.access_token)}` }
    const init = await postJson(mcpUrl, INIT_BODY, headers)
    t.equal(init.status, 200, 'initialize with the token')
    const session = init.headers.get('mcp-session-id') ?? ''
    const call = await postJson(mcpUrl, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: `hello from ${recipe.client}` } } }, { ...headers, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' })
    t.equal(call.status, 200)
    t.match(call.text, `hello from ${recipe.client}`, 'a tool call reaches the server')

    const refreshed = await tokenRequest(found.tokenEndpoint, { grant_type: 'refresh_token', refresh_token: String(tokens.body.refresh_token), client_id: clientId, resource: found.resource })
    t.equal(refreshed.status, 200, 'the refresh the client makes when the hour is up')
    t.equal((await postJson(mcpUrl, INIT_BODY, { authorization: `Bearer ${String(refreshed.body.access_token)}` })).status, 200, 'and the new token works')
  })
}

t.test('Claude Desktop through mcp-remote: the real program signs in, then bridges stdio to the gateway', async (t) => {
  const gw = await gateway(t)
  const callbackPort = await freePort()
  const child = spawn(process.execPath, [MCP_REMOTE, gw.mcpUrl('tools'), String(callbackPort), '--host', '127.0.0.1'], {
    // Its token cache in a directory of this test's; no browser to open here.
    env: { PATH: process.env.PATH ?? '', HOME: t.testdir({}), MCP_REMOTE_CONFIG_DIR: t.testdir({}), BROWSER: 'true' },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  t.teardown(() => { child.kill('SIGKILL') })
  let stderr = ''
  const authorizationUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mcp-remote printed no authorization URL: ${stderr.slice(-2000)}`)), 30_000)
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
      const url = /Please authorize this client by visiting:\s*(\S+)/.exec(stderr)?.[1]
      if (url !== undefined) {
        clearTimeout(timer)
        resolve(url)
      }
    })
    child.once('exit', (code) => reject(new Error(`mcp-remote exited (${code}): ${stderr.slice(-2000)}`)))
  })
  t.equal(new URL(authorizationUrl).origin, gw.baseUrl, 'it found the gateway\'s authorization server from the 401')
  t.equal(new URL(authorizationUrl).searchParams.get('resource'), gw.mcpUrl('tools'), 'with the MCP URL as resource')
  const browser = new HeadlessBrowser()
  const callback = await browser.authorize(authorizationUrl, { username: 'alice', password: PASSWORD })
  t.equal(callback.hostname, '127.0.0.1', 'back to mcp-remote\'s own callback listener')
  const delivered = await fetch(callback)
  t.ok(delivered.status < 400, `mcp-remote took the code (${delivered.status})`)
  await delivered.arrayBuffer()

  const lines = createInterface({ input: child.stdout })
  const answers = new Map<number, unknown>()
  const waiting = new Map<number, (answer: unknown) => void>()
  lines.on('line', (line) => {
    const message = JSON.parse(line) as { id?: number }
    if (typeof message.id !== 'number') return
    const resolve = waiting.get(message.id)
    if (resolve === undefined) answers.set(message.id, message)
    else resolve(message)
  })
  const request = async (id: number, method: string, params: Record<string, unknown>): Promise<unknown> => {
    const answer = new Promise<unknown>((resolve, reject) => {
      const known = answers.get(id)
      if (known !== undefined) return resolve(known)
      // Cleared with the answer: a pending timer would hold the test process open for 30 s.
      const timer = setTimeout(() => reject(new Error(`no answer to ${method}: ${stderr.slice(-2000)}`)), 30_000)
      waiting.set(id, (message) => {
        clearTimeout(timer)
        resolve(message)
      })
    })
    child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`)
    return await answer
  }
  const init = await request(1, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'claude-desktop-recipe', version: '1.0.0' } })
  t.match(init, { result: { serverInfo: {} } }, 'initialize answered through the bridge')
  child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })}\n`)
  const called = await request(2, 'tools/call', { name: 'echo', arguments: { text: 'hello from Claude Desktop' } })
  t.match(textOf((called as { result?: unknown }).result), 'hello from Claude Desktop', 'a tool call through mcp-remote and the gateway')
  t.notMatch(stderr, /Bearer [A-Za-z0-9._-]{20,}/, 'no token in what it prints')
})
