/**
 * The one way the gateway fetches a URL that someone outside chose: Client ID
 * Metadata Documents, `jwks_uri` and `sector_identifier_uri` (oidc-provider's
 * `fetch` hook). An anonymous registrant picks these URLs, so without a guard
 * each is a request from inside the gateway's network (a blind port probe, or
 * a read of a cloud metadata service: OWASP SSRF; RFC 7591 5 warns of exactly
 * this for registration URIs; draft-ietf-oauth-client-id-metadata-document
 * "Security Considerations" asks for the same checks on client_id URLs).
 *
 * - https only, on every redirect hop (followed here, at most MAX_REDIRECTS);
 * - the address actually connected to must be public: the check sits in the
 *   connector's DNS lookup (and on IP-literal hosts before any connect), so a
 *   name that resolves to 127.0.0.1, or rebinds between checks, is refused
 *   before a single packet leaves — oidc-provider's own guard runs only after
 *   the TCP (and TLS) handshake;
 * - `allowedHosts`, when set, names the only hosts ever contacted;
 * - the response is read whole here, at most `maxBytes`, within `timeoutMs`
 *   from the start of the first request to the last byte.
 *
 * Tests reach 127.0.0.1 only through an OutboundTestAllowance passed in code
 * (BuildOptions), never from configuration. The one configured exception is
 * `operatorHosts`: hosts the operator wrote into the YAML (identity provider
 * issuers) may resolve to private addresses — a company IdP inside the
 * company network is the usual case — and, when loopback, be plain http (a
 * local IdP; the config schema allows http only there). URLs those hosts hand
 * out (an IdP's discovery naming another host) get the full checks.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { BlockList, isIP } from 'node:net'
import { rootCertificates } from 'node:tls'
import { Agent, buildConnector, fetch as undiciFetch } from 'undici'
import { isLoopbackHost } from './loopback.js'

export const OUTBOUND_TIMEOUT_MS = 5_000
export const OUTBOUND_MAX_BYTES = 64 * 1024
const MAX_REDIRECTS = 5

/** Ranges that are not the public internet (IANA special-purpose registries, RFC 6890 and successors). */
const NON_PUBLIC = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NON_PUBLIC.addSubnet(net, prefix, 'ipv4')
for (const [net, prefix] of [
  // Unspecified, loopback, IPv4-translated and 6to4 (they embed an IPv4 address), discard,
  // IETF protocol assignments (Teredo included), documentation, ULA (fd00:ec2::254 is a metadata
  // address), link-local, site-local, multicast, SRv6 SIDs.
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23],
  ['2001:db8::', 32], ['2002::', 16], ['3fff::', 20], ['5f00::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) NON_PUBLIC.addSubnet(net, prefix, 'ipv6')

/** True for an address on the public internet (BlockList judges an IPv4-mapped IPv6 address by its IPv4 rules). */
export function isPublicAddress (address: string): boolean {
  const family = isIP(address)
  if (family === 0) return false
  return !NON_PUBLIC.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/** Test-only: lets named hosts resolve to loopback or private addresses, and trusts one more CA. */
export interface OutboundTestAllowance {
  /** URL host names (e.g. "127.0.0.1") whose non-public addresses may be contacted. */
  readonly privateHosts: readonly string[]
  /** A PEM certificate authority trusted besides the system's (a test server's self-signed certificate). */
  readonly ca?: string
}

export interface GuardedFetchOptions {
  /** Host names that may be contacted; empty: any public host. */
  readonly allowedHosts: readonly string[]
  readonly timeoutMs?: number
  readonly maxBytes?: number
  readonly testAllowance?: OutboundTestAllowance
  /** Hosts named in the operator's configuration: private addresses allowed, http only when loopback. */
  readonly operatorHosts?: readonly string[]
  /** Told about every refusal (host and reason only), for the operator's log. */
  readonly onRefused?: (host: string, reason: string) => void
}

export type FetchLike = (url: URL | string, options?: Record<string, unknown>) => Promise<Response>

export interface GuardedFetch {
  readonly fetch: FetchLike
  close: () => Promise<void>
}

/** A refused outbound request; `code` says which rule refused it. */
export class OutboundRefusedError extends Error {
  constructor (readonly code: 'ERR_OUTBOUND_NOT_HTTPS' | 'ERR_OUTBOUND_HOST_NOT_ALLOWED' | 'ERR_OUTBOUND_ADDRESS_NOT_PUBLIC' | 'ERR_OUTBOUND_TOO_LARGE' | 'ERR_OUTBOUND_TOO_MANY_REDIRECTS', message: string) {
    super(message)
    this.name = 'OutboundRefusedError'
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

const bareHost = (hostname: string): string => hostname.replace(/^\[|\]$/g, '').toLowerCase()

export function createGuardedFetch (options: GuardedFetchOptions): GuardedFetch {
  const timeoutMs = options.timeoutMs ?? OUTBOUND_TIMEOUT_MS
  const maxBytes = options.maxBytes ?? OUTBOUND_MAX_BYTES
  const allowedHosts = new Set(options.allowedHosts.map((h) => h.toLowerCase()))
  const privateHosts = new Set([...(options.testAllowance?.privateHosts ?? []), ...(options.operatorHosts ?? [])].map(bareHost))
  const operatorHosts = new Set((options.operatorHosts ?? []).map(bareHost))
  const isAddressAllowed = (address: string, host: string): boolean => isPublicAddress(address) || privateHosts.has(bareHost(host))
  const refuse = (err: OutboundRefusedError, host: string): OutboundRefusedError => {
    options.onRefused?.(host, err.code)
    return err
  }

  // Every name is resolved here, and every address checked, before the socket connects.
  const lookup = (hostname: string, lookupOptions: { all?: boolean, family?: number }, callback: LookupCallback): void => {
    dnsLookup(hostname, { all: true, family: lookupOptions.family ?? 0 }, (err, addresses) => {
      if (err !== null) return callback(err, [])
      const first = addresses[0]
      if (first === undefined || addresses.some((a) => !isAddressAllowed(a.address, hostname))) {
        return callback(refuse(new OutboundRefusedError('ERR_OUTBOUND_ADDRESS_NOT_PUBLIC', `${hostname} resolves to a non-public address`), hostname), [])
      }
      if (lookupOptions.all === true) callback(null, addresses)
      else callback(null, first.address, first.family)
    })
  }
  const ca = options.testAllowance?.ca
  const base = buildConnector({ lookup, timeout: timeoutMs, ...(ca === undefined ? {} : { ca: [...rootCertificates, ca] }) } as buildConnector.BuildOptions)
  const connect: buildConnector.connector = (target, callback) => {
    // An IP-literal host never reaches the lookup: judged here, before connecting.
    const host = bareHost(target.hostname)
    if (isIP(host) !== 0 && !isAddressAllowed(host, host)) {
      callback(refuse(new OutboundRefusedError('ERR_OUTBOUND_ADDRESS_NOT_PUBLIC', `${host} is not a public address`), host), null)
      return
    }
    base(target, callback)
  }
  const agent = new Agent({ connect, connections: 16, headersTimeout: timeoutMs, bodyTimeout: timeoutMs })

  const checkUrl = (url: URL): void => {
    const isLoopbackOperatorHttp = url.protocol === 'http:' && operatorHosts.has(bareHost(url.hostname)) && isLoopbackHost(url.hostname)
    if (url.protocol !== 'https:' && !isLoopbackOperatorHttp) throw refuse(new OutboundRefusedError('ERR_OUTBOUND_NOT_HTTPS', `only https URLs are fetched, not ${url.protocol}`), url.hostname)
    if (allowedHosts.size > 0 && !allowedHosts.has(bareHost(url.hostname))) {
      throw refuse(new OutboundRefusedError('ERR_OUTBOUND_HOST_NOT_ALLOWED', `${url.hostname} is not in auth.clientMetadataDocuments.allowedHosts`), url.hostname)
    }
  }

  const guardedFetch: FetchLike = async (input, init = {}) => {
    const signals = [AbortSignal.timeout(timeoutMs), ...(init.signal instanceof AbortSignal ? [init.signal] : [])]
    const signal = AbortSignal.any(signals)
    const isManual = init.redirect === 'manual'
    let url = new URL(input)
    const origin = url.origin
    const requestHeaders = Object.fromEntries(new Headers(init.headers as ConstructorParameters<typeof Headers>[0]).entries())
    for (let hop = 0; ; hop++) {
      checkUrl(url)
      const response = await undiciFetch(url, {
        method: typeof init.method === 'string' ? init.method : 'GET',
        // Credentials are for the origin asked, not wherever it redirects (as fetch does cross-origin).
        headers: url.origin === origin ? requestHeaders : withoutCredentials(requestHeaders),
        // A form body (an IdP's token endpoint); never resent on a redirect (see below).
        ...(hop === 0 && (typeof init.body === 'string' || init.body instanceof URLSearchParams) ? { body: init.body } : {}),
        redirect: 'manual',
        signal,
        dispatcher: agent,
      })
      const location = response.headers.get('location')
      if (!isManual && response.status >= 300 && response.status < 400 && location !== null) {
        await response.body?.cancel()
        if (hop >= MAX_REDIRECTS) throw refuse(new OutboundRefusedError('ERR_OUTBOUND_TOO_MANY_REDIRECTS', `more than ${MAX_REDIRECTS} redirects`), url.hostname)
        url = new URL(location, url)
        continue
      }
      const body = await readCapped(response, maxBytes, url.hostname, refuse)
      const headers = new Headers(response.headers as unknown as Headers)
      headers.delete('content-encoding')
      headers.delete('content-length')
      const isNullBody = [101, 204, 205, 304].includes(response.status)
      return new Response(isNullBody ? null : body, { status: response.status, statusText: response.statusText, headers })
    }
  }
  return { fetch: guardedFetch, close: async () => { await agent.close() } }
}

const CREDENTIAL_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization'])

function withoutCredentials (headers: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !CREDENTIAL_HEADERS.has(name)))
}

async function readCapped (response: Awaited<ReturnType<typeof undiciFetch>>, maxBytes: number, host: string, refuse: (err: OutboundRefusedError, host: string) => OutboundRefusedError): Promise<Buffer> {
  const tooLarge = (): OutboundRefusedError => refuse(new OutboundRefusedError('ERR_OUTBOUND_TOO_LARGE', `the response is larger than ${maxBytes} bytes`), host)
  const declared = Number(response.headers.get('content-length') ?? '0')
  if (declared > maxBytes) {
    await response.body?.cancel()
    throw tooLarge()
  }
  const chunks: Buffer[] = []
  let size = 0
  if (response.body === null) return Buffer.alloc(0)
  for await (const chunk of response.body) {
    size += (chunk as Uint8Array).byteLength
    // Leaving the loop by throwing cancels the stream (the iterator's return()).
    if (size > maxBytes) throw tooLarge()
    chunks.push(Buffer.from(chunk as Uint8Array))
  }
  return Buffer.concat(chunks)
}
