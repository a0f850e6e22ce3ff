/**
 * A real nginx (the Debian package) running deploy/nginx/portcullis.conf and
 * upstream.conf (one gateway) or upstream-replicas.conf (several) as shipped,
 * with a self-signed certificate made by openssl at test time. Only what must
 * differ on a test machine is changed — ports, certificate paths, server_name,
 * the upstream's addresses — and every change must find its line, so an edit
 * to the shipped files that breaks these tests is noticed.
 */
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent } from 'undici'
import { canConnect, freePort, type Teardown } from './helpers.js'

export const NGINX_CONF = new URL('../deploy/nginx/portcullis.conf', import.meta.url).pathname
const UPSTREAM_CONF = new URL('../deploy/nginx/upstream.conf', import.meta.url).pathname
const REPLICAS_UPSTREAM_CONF = new URL('../deploy/nginx/upstream-replicas.conf', import.meta.url).pathname

const NGINX_BINARIES = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx', '/usr/local/bin/nginx']

/** The nginx binary; in CI a missing one fails loudly, on a laptop the test says so and stops. */
export function nginxBinary (t: { comment: (message: string) => void }): string | undefined {
  const found = NGINX_BINARIES.find((path) => existsSync(path))
  if (found !== undefined) return found
  if (process.env.CI !== undefined) throw new Error('nginx is required in CI (apt-get install -y nginx) but was not found')
  t.comment('nginx is not installed (apt-get install -y nginx): skipping the nginx tests')
  return undefined
}

export interface RunningNginx {
  /** https://127.0.0.1:<port> */
  readonly httpsUrl: string
  /** The plain-http port, which only redirects. */
  readonly httpUrl: string
  /** The self-signed certificate (also its own CA). */
  readonly certificate: string
  /** fetch that trusts the certificate (for the SDK client and the headless browser). */
  readonly fetch: typeof fetch
  /** nginx's error log so far (for failure messages). */
  readonly errorLog: () => string
}

/** Replaces every occurrence, and insists on at least one. */
function replaceRequired (text: string, search: string | RegExp, replacement: string, what: string): string {
  const pattern = typeof search === 'string' ? undefined : new RegExp(search.source, `${search.flags.replace('g', '')}g`)
  const count = pattern === undefined ? text.split(search as string).length - 1 : (text.match(pattern) ?? []).length
  if (count === 0) throw new Error(`deploy/nginx/ no longer has ${what} (${String(search)}): update test/nginx.ts with it`)
  return pattern === undefined ? text.split(search as string).join(replacement) : text.replace(pattern, replacement)
}

/**
 * Starts nginx in the foreground (no master process: it runs as the test's
 * user) in front of the given gateway ports. With several, the replicas'
 * upstream (hash on Mcp-Session-Id) lists them in place of gateway-1..N.
 */
export async function startNginx (t: Teardown, binary: string, options: { upstreamPorts: readonly number[], tlsPort?: number, extraLocations?: string }): Promise<RunningNginx> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-nginx-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const tlsPort = options.tlsPort ?? await freePort()
  const httpPort = await freePort()

  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', join(dir, 'privkey.pem'), '-out', join(dir, 'fullchain.pem'),
  ], { stdio: 'ignore' })
  const certificate = readFileSync(join(dir, 'fullchain.pem'), 'utf8')

  const servers = options.upstreamPorts.map((port) => `    server 127.0.0.1:${port};`).join('\n')
  const upstream = options.upstreamPorts.length > 1
    ? replaceRequired(readFileSync(REPLICAS_UPSTREAM_CONF, 'utf8'), /^ {4}server gateway-1:8080;\n(?: {4}server gateway-\d+:8080;\n)+/m, `${servers}\n`, 'the replicas\' server lines')
    : replaceRequired(readFileSync(UPSTREAM_CONF, 'utf8'), '    server 127.0.0.1:8080;', servers, 'the upstream server line')
  writeFileSync(join(dir, 'upstream.conf'), upstream)
  let site = readFileSync(NGINX_CONF, 'utf8')
  site = replaceRequired(site, /^\s*listen \[::\]:\d+.*$/m, '', 'the IPv6 listen lines')
  site = replaceRequired(site, /listen 80;/, `listen 127.0.0.1:${httpPort};`, 'the plain-http listen line')
  site = replaceRequired(site, /listen 443 ssl/, `listen 127.0.0.1:${tlsPort} ssl`, 'the TLS listen line')
  site = replaceRequired(site, 'server_name mcp.example.com;', 'server_name localhost 127.0.0.1;', 'server_name')
  site = replaceRequired(site, '/etc/nginx/tls/fullchain.pem', join(dir, 'fullchain.pem'), 'the certificate path')
  site = replaceRequired(site, '/etc/nginx/tls/privkey.pem', join(dir, 'privkey.pem'), 'the key path')
  // A test's own locations (a misconfiguration to detect), ahead of the shipped ones.
  if (options.extraLocations !== undefined) site = replaceRequired(site, '    location ^~ /.well-known/ {', `${options.extraLocations}\n    location ^~ /.well-known/ {`, 'the /.well-known/ location')
  // 308 to https://$host keeps the plain port in $host; the test checks the Location's scheme and path.
  writeFileSync(join(dir, 'portcullis.conf'), site)
  writeFileSync(join(dir, 'nginx.conf'), `daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} info;
events { worker_connections 512; }
http {
  access_log ${join(dir, 'access.log')};
  client_body_temp_path ${join(dir, 'client_body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  include ${join(dir, 'portcullis.conf')};
  include ${join(dir, 'upstream.conf')};
}
`)
  const errorLog = (): string => { try { return readFileSync(join(dir, 'error.log'), 'utf8') } catch { return '' } }
  const child = spawn(binary, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
  })
  const deadline = Date.now() + 10_000
  while (!await canConnect(tlsPort)) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${stderr}${errorLog()}`)
    if (Date.now() > deadline) throw new Error(`nginx did not listen on ${tlsPort}: ${stderr}${errorLog()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }

  return { httpsUrl: `https://127.0.0.1:${tlsPort}`, httpUrl: `http://127.0.0.1:${httpPort}`, certificate, fetch: trustingFetch(t, certificate), errorLog }
}

/** fetch that trusts `certificate` (PEM) as its only CA, for the SDK client and the headless browser. */
export function trustingFetch (t: Teardown, certificate: string): typeof fetch {
  const agent = new Agent({ connect: { ca: certificate } })
  t.teardown(() => agent.close())
  return ((input: string | URL | Request, init?: RequestInit) => fetch(input, { ...init, dispatcher: agent } as unknown as RequestInit)) as typeof fetch
}
