/**
 * The doctor's walk along a client's path to the gateway, in the order a
 * client takes it (MCP authorization spec, "Authorization Server Discovery"):
 * reach the gateway, get a 401 naming `resource_metadata` (RFC 9728 5.1),
 * read the protected-resource metadata (RFC 9728 3), then the authorization
 * server's metadata (RFC 8414 3), register (RFC 7591), and stream events.
 */
import type { Config } from '../config/schema.js'
import { LOOPBACK_HOSTS } from '../net/loopback.js'
import { fail, pass, describeFetchError, type CheckResult, type DoctorFetch } from './check.js'
import { PROBE_GAP_MS, REQUEST_PROBE_PATH, SSE_PROBE_PATH, type RequestProbe } from './probe-routes.js'

export interface GatewayTarget {
  readonly config: Config
  /** The origin clients use (--url, else publicUrl). */
  readonly url: string
  readonly fetch: DoctorFetch
}

const INITIALIZE = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'portcullis-doctor', version: '1' } } })
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }
/** A gap shorter than this between the probe's two events means something held the first one back. */
const BUFFERED_BELOW_MS = PROBE_GAP_MS / 2


/** publicUrl is the issuer and the base of every resource URL: it must be the origin clients use, over TLS. */
export function checkPublicUrl (config: Config, url: string): CheckResult {
  const name = 'publicUrl'
  const publicUrl = new URL(config.publicUrl)
  if (new URL(url).origin !== publicUrl.origin) {
    return fail(name, `clients reach the gateway at ${url}, but publicUrl is ${config.publicUrl}: tokens' iss and aud and every metadata URL name ${config.publicUrl}, so clients reject them or go there instead`, `set publicUrl: ${url} (exactly the origin clients use: scheme, host, port)`)
  }
  if (publicUrl.protocol !== 'https:' && !LOOPBACK_HOSTS.has(publicUrl.hostname)) {
    return fail(name, `${config.publicUrl} is plain http on a non-loopback host: tokens and passwords cross the network in clear`, 'terminate TLS in front (deploy/nginx) and use an https:// publicUrl')
  }
  return pass(name, `${config.publicUrl}${publicUrl.protocol === 'https:' ? '' : ' (plain http on loopback: development only)'}`)
}

/** What the gateway derives from a request that came the clients' way; undefined: unreachable. */
export async function checkRequestPath (target: GatewayTarget): Promise<{ result: CheckResult, probe?: RequestProbe, date?: string }> {
  const name = 'what reaches the gateway'
  let res: Response
  try {
    res = await target.fetch(`${target.url}${REQUEST_PROBE_PATH}`)
  } catch (err) {
    return { result: fail(name, `cannot reach ${target.url}: ${describeFetchError(err)}`, `start the gateway, or pass --url with the address clients use (now ${target.url})`) }
  }
  if (res.status !== 200) {
    return { result: fail(name, `GET ${REQUEST_PROBE_PATH} answered ${res.status}: something in front does not pass /.well-known/ through`, 'proxy every path to the gateway, /.well-known/ included (deploy/nginx/portcullis.conf)') }
  }
  const probe = await res.json() as RequestProbe
  const date = res.headers.get('date') ?? undefined
  const headers = Object.entries(probe.forwarded).filter(([, present]) => present).map(([h]) => `X-Forwarded-${h[0]?.toUpperCase()}${h.slice(1)}`)
  const arrived = headers.length === 0 ? 'no X-Forwarded-* headers' : headers.join(', ')
  // Scheme and host must be right; a port the proxy leaves out (nginx's $host has none) does no harm:
  // the gateway builds every URL from publicUrl.
  const seen = new URL(probe.origin)
  const expected = new URL(target.config.publicUrl)
  if (seen.protocol !== expected.protocol || seen.hostname !== expected.hostname) {
    const fix = headers.length === 0
      ? 'make the proxy send X-Forwarded-Proto and X-Forwarded-Host (nginx: proxy_set_header, as in deploy/nginx/portcullis.conf), and set trustProxy to its address'
      : 'set trustProxy to the proxy\'s address as the gateway sees it, so X-Forwarded-* are honoured'
    return { result: fail(name, `the gateway sees requests as ${probe.origin}, not ${target.config.publicUrl} (${arrived} arrived): secure cookies, redirects and client addresses go wrong`, fix), probe, ...(date === undefined ? {} : { date }) }
  }
  return { result: pass(name, `requests arrive as ${probe.origin} (${arrived})`), probe, ...(date === undefined ? {} : { date }) }
}

/** The 401 a client gets first, and the resource_metadata URL it names (RFC 9728 5.1). */
export async function checkChallenge (target: GatewayTarget, server: string): Promise<{ result: CheckResult, metadataUrl?: string }> {
  const name = '401 challenge'
  // Where the client can follow it: on the origin it reached the gateway at.
  const expected = `${target.url}/.well-known/oauth-protected-resource/${server}/mcp`
  let res: Response
  try {
    res = await target.fetch(`${target.url}/${server}/mcp`, { method: 'POST', headers: MCP_HEADERS, body: INITIALIZE })
  } catch (err) {
    return { result: fail(name, `POST /${server}/mcp: ${describeFetchError(err)}`, 'check the proxy in front passes the MCP endpoints through') }
  }
  await res.body?.cancel()
  const header = res.headers.get('www-authenticate') ?? ''
  const metadataUrl = /resource_metadata="([^"]*)"/.exec(header)?.[1]
  if (res.status !== 401 || metadataUrl === undefined) {
    return { result: fail(name, `POST /${server}/mcp without a token answered ${res.status}${header === '' ? ' with no WWW-Authenticate' : ''}; a client needs 401 with WWW-Authenticate: Bearer resource_metadata="…"`, 'pass the gateway\'s 401 and its WWW-Authenticate header through the proxy unchanged (no auth_request or error pages in front)') }
  }
  if (metadataUrl !== expected) {
    return { result: fail(name, `resource_metadata is ${metadataUrl}, not on the origin clients reach (${expected})`, 'set publicUrl to the origin clients use'), metadataUrl }
  }
  return { result: pass(name, `401 with resource_metadata="${metadataUrl}"`), metadataUrl }
}

async function readJson (target: GatewayTarget, url: string): Promise<Record<string, unknown>> {
  const res = await target.fetch(url, { headers: { accept: 'application/json' } })
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}`)
  return await res.json() as Record<string, unknown>
}

/** RFC 9728 then RFC 8414: both documents are there, and they agree with each other and with publicUrl. */
export async function checkMetadata (target: GatewayTarget, server: string, metadataUrl: string): Promise<{ results: CheckResult[], registrationEndpoint?: string }> {
  const publicUrl = target.config.publicUrl
  const resource = `${publicUrl}/${server}/mcp`
  let prm: Record<string, unknown>
  try {
    prm = await readJson(target, metadataUrl)
  } catch (err) {
    return { results: [fail('RFC 9728 resource metadata', `${metadataUrl}: ${describeFetchError(err)}`, 'publicUrl must be an origin clients can reach; the proxy must pass /.well-known/ through')] }
  }
  const servers = Array.isArray(prm.authorization_servers) ? prm.authorization_servers.filter((s): s is string => typeof s === 'string') : []
  if (prm.resource !== resource || servers.length === 0) {
    return { results: [fail('RFC 9728 resource metadata', `resource is ${JSON.stringify(prm.resource)} (expected ${resource}), authorization_servers ${JSON.stringify(prm.authorization_servers)}`, 'set publicUrl to the origin clients use')] }
  }
  const results = [pass('RFC 9728 resource metadata', `resource ${resource}, authorization server ${servers.join(', ')}`)]
  const issuer = servers[0] ?? ''
  let asm: Record<string, unknown>
  try {
    asm = await readJson(target, `${issuer}/.well-known/oauth-authorization-server`)
  } catch (err) {
    results.push(fail('RFC 8414 server metadata', `${issuer}/.well-known/oauth-authorization-server: ${describeFetchError(err)}`, 'the proxy must pass /.well-known/ through to the gateway'))
    return { results }
  }
  // RFC 8414 3.3: the issuer in the document MUST be identical to the one the client started from.
  const endpoints = ['authorization_endpoint', 'token_endpoint', 'registration_endpoint'].map((k) => asm[k]).filter((v): v is string => typeof v === 'string')
  const stray = endpoints.filter((e) => !e.startsWith(`${publicUrl}/`))
  if (asm.issuer !== issuer || issuer !== publicUrl || stray.length > 0) {
    results.push(fail('RFC 8414 server metadata', `issuer ${JSON.stringify(asm.issuer)}, resource metadata names ${issuer}, publicUrl ${publicUrl}${stray.length > 0 ? `; endpoints elsewhere: ${stray.join(', ')}` : ''}`, 'they must be one origin: set publicUrl to the origin clients use'))
    return { results }
  }
  results.push(pass('RFC 8414 server metadata', `issuer ${issuer}; agrees with the resource metadata`))
  const registrationEndpoint = typeof asm.registration_endpoint === 'string' ? asm.registration_endpoint : undefined
  return { results, ...(registrationEndpoint === undefined ? {} : { registrationEndpoint }) }
}

/**
 * Registers a throwaway client the way MCP clients do (RFC 7591) and deletes
 * it again with its registration access token (RFC 7592 2.3). The token is
 * used once and never printed.
 */
export async function checkRegistration (target: GatewayTarget, endpoint: string | undefined): Promise<CheckResult> {
  const name = 'client registration'
  const auth = target.config.auth
  if (!auth.dynamicRegistration) return pass(name, 'dynamic registration is off (auth.dynamicRegistration: false): clients need auth.clients or a metadata document')
  if (endpoint === undefined) return fail(name, 'the server metadata has no registration_endpoint', 'check auth.dynamicRegistration and the proxy')
  let res: Response
  try {
    res = await target.fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'portcullis doctor (throwaway)', redirect_uris: ['http://127.0.0.1/portcullis-doctor'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' }),
    })
  } catch (err) {
    return fail(name, `${endpoint}: ${describeFetchError(err)}`, 'the proxy must pass /oauth/ through to the gateway')
  }
  const body = await res.json().catch(() => ({})) as Record<string, unknown>
  if (res.status !== 201 || typeof body.client_id !== 'string') {
    return fail(name, `POST ${endpoint} answered ${res.status}${typeof body.error === 'string' ? ` ${body.error}` : ''}`, res.status === 429 ? 'rateLimits.registration refused it: try again later' : res.status === 503 ? 'the store does not answer or refuses writes (see /readyz)' : 'see the gateway\'s log for the registration error')
  }
  const token = body.registration_access_token
  const uri = body.registration_client_uri
  if (typeof token !== 'string' || typeof uri !== 'string') {
    return pass(name, `registered a throwaway client; it stays until auth.unusedClientTtl ends it (no registration access token to delete it with)`)
  }
  try {
    const deleted = await target.fetch(uri, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
    if (deleted.status !== 204) return pass(name, `registered a throwaway client; deleting it answered ${deleted.status}, so it stays until auth.unusedClientTtl ends it`)
  } catch (err) {
    return pass(name, `registered a throwaway client; deleting it failed (${describeFetchError(err)}), so it stays until auth.unusedClientTtl ends it`)
  }
  return pass(name, 'registered a throwaway client and deleted it again (RFC 7592)')
}

/** Two events sent PROBE_GAP_MS apart must arrive apart: a buffering proxy holds MCP's streamed answers back. */
export async function checkEventStream (target: GatewayTarget): Promise<CheckResult> {
  const name = 'event streams unbuffered'
  const fix = 'turn response buffering off for the gateway (nginx: proxy_buffering off, and do not proxy_ignore_headers X-Accel-Buffering; no gzip on text/event-stream); CDNs and load balancers: disable buffering for text/event-stream'
  let arrivals: number[]
  try {
    const res = await target.fetch(`${target.url}${SSE_PROBE_PATH}`, { headers: { accept: 'text/event-stream' } })
    if (res.status !== 200 || res.body === null) return fail(name, `GET ${SSE_PROBE_PATH} answered ${res.status}`, 'proxy every path to the gateway, /.well-known/ included')
    arrivals = []
    let text = ''
    const decoder = new TextDecoder()
    for await (const chunk of res.body) {
      text += decoder.decode(chunk as Uint8Array, { stream: true })
      const events = text.split('\n\n').length - 1
      while (arrivals.length < events) arrivals.push(performance.now())
    }
  } catch (err) {
    return fail(name, `GET ${SSE_PROBE_PATH}: ${describeFetchError(err)}`, fix)
  }
  const [first, second] = arrivals
  if (first === undefined || second === undefined) return fail(name, `the probe stream ended after ${arrivals.length} of 2 events`, fix)
  const gap = Math.round(second - first)
  if (gap < BUFFERED_BELOW_MS) return fail(name, `two events sent ${PROBE_GAP_MS} ms apart arrived ${gap} ms apart: something in front buffers event streams (tool progress and answers would arrive all at once)`, fix)
  return pass(name, `two events sent ${PROBE_GAP_MS} ms apart arrived ${gap} ms apart`)
}
