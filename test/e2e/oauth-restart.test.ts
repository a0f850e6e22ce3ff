// State survives a restart on the same data directory (SQLite, the embedded default), and the
// first-run account is created once, hashed, and handed over through an owner-only file.
import t from 'tap'
import { readFileSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { hashPassword } from '../../src/auth-server/password.js'
import { createLogger } from '../../src/observability/logger.js'
import { connectWithOAuth, TestOAuthClient } from '../oauth-helpers.js'
import { freePort, logSink, makeConfig, startUpstream } from '../helpers.js'

const PASSWORD = 'correct horse battery staple'

async function boot (t: { teardown: (fn: () => unknown) => void }, object: Record<string, unknown>, port: number): Promise<{ app: FastifyInstance, logs: ReturnType<typeof logSink> }> {
  const config = makeConfig({ publicUrl: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port }, log: { level: 'info' }, ...object })
  const logs = logSink()
  const app = await buildApp(config, { logger: createLogger('info', logs.stream) })
  await app.listen({ host: '127.0.0.1', port })
  t.teardown(() => app.close())
  return { app, logs }
}

t.test('restart on the same data directory: the client is still registered and its refresh token still works', async (t) => {
  const upstream = await startUpstream(t)
  const dataDir = t.testdir({})
  const port = await freePort()
  const config = { dataDir, auth: { users: [{ username: 'alice', passwordHash: await hashPassword(PASSWORD) }] }, servers: [{ name: 'alpha', transport: 'http', url: upstream.url }] }
  const first = await boot(t, config, port)
  const url = `http://127.0.0.1:${port}/alpha/mcp`
  // A confidential client: its consent is remembered (a public one returning to a loopback port consents every time, RFC 8252 8.6).
  const connected = await connectWithOAuth(t, url, { username: 'alice', password: PASSWORD, issuer: `http://127.0.0.1:${port}`, oauth: new TestOAuthClient({ authMethod: 'client_secret_basic' }) })
  const clientId = connected.oauth.info?.client_id ?? ''
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(connected.oauth.info?.client_secret ?? '')}`).toString('base64')}`
  const refreshToken = connected.oauth.savedTokens?.refresh_token ?? ''
  const accessToken = connected.oauth.savedTokens?.access_token ?? ''
  await connected.client.close()
  await first.app.close()
  t.equal(statSync(join(dataDir, 'portcullis.db')).mode & 0o777, 0o600, 'the database is owner-only')

  await boot(t, config, port)
  const stillValid = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }) })
  t.equal(stillValid.status, 200, 'the signing keys persisted: an access token from before still verifies')
  const refreshed = await fetch(`http://127.0.0.1:${port}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString() })
  t.equal(refreshed.status, 200, 'the refresh token survived the restart')
  // The same client authorizes again without registering: it is still known, and so is the consent.
  const again = new TestOAuthClient({ authMethod: 'client_secret_basic' })
  again.info = connected.oauth.info
  const reconnected = await connectWithOAuth(t, url, { username: 'alice', password: PASSWORD, issuer: `http://127.0.0.1:${port}`, oauth: again })
  t.equal(again.info?.client_id, clientId, 'no new registration')
  t.same(reconnected.browser.pages, ['login'], 'the remembered consent survived too')
})

t.test('no users configured: a first-run account with a generated password, created once', async (t) => {
  const upstream = await startUpstream(t)
  const dataDir = t.testdir({})
  const port = await freePort()
  const config = { dataDir, servers: [{ name: 'alpha', transport: 'http', url: upstream.url }] }
  const first = await boot(t, config, port)
  const firstRun = first.app.portcullis.firstRun
  t.equal(firstRun?.username, 'admin')
  const file = join(dataDir, 'initial-admin-password')
  t.equal(statSync(file).mode & 0o777, 0o600, 'the password file is owner-only')
  const password = readFileSync(file, 'utf8').trim()
  t.equal(password, firstRun?.password)
  t.match(password, /^[A-Za-z0-9]{20}$/)
  t.notMatch(first.logs.text(), password, 'the password is not in the log')
  const stored = await first.app.portcullis.store.kvGet('auth:first-run-account') ?? ''
  t.notMatch(stored, password, 'only a hash is stored')
  t.match(stored, /scrypt\$/)

  const oauthUrl = `http://127.0.0.1:${port}/alpha/mcp`
  const connected = await connectWithOAuth(t, oauthUrl, { username: 'admin', password, issuer: `http://127.0.0.1:${port}` })
  t.same(connected.browser.pages, ['login', 'consent'], 'the generated password signs in')
  await connected.client.close()
  await first.app.close()

  const second = await boot(t, config, port)
  t.equal(second.app.portcullis.firstRun, undefined, 'not created again on the next start')
  t.ok(existsSync(file))
})
