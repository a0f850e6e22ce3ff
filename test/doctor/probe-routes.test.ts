// The doctor's probe routes, through app.inject (no socket needed for what they derive).
import t, { type Test } from 'tap'
import { buildApp } from '../../src/app.js'
import { createLogger } from '../../src/observability/logger.js'
import { REQUEST_PROBE_PATH } from '../../src/doctor/probe-routes.js'
import { makeConfig } from '../helpers.js'

const FORWARDED = { host: 'internal:8080', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'gw.example.com', 'x-forwarded-for': '203.0.113.7' }

async function app (t: Test, trustProxy: boolean): Promise<Awaited<ReturnType<typeof buildApp>>> {
  const config = makeConfig({ publicUrl: 'https://gw.example.com', trustProxy, dataDir: t.testdir({}), store: { memory: true }, auth: { enabled: false }, servers: [{ name: 'a', transport: 'http', url: 'http://127.0.0.1:1/mcp' }] })
  const built = await buildApp(config, { logger: createLogger('silent') })
  t.teardown(() => built.close())
  return built
}

t.test('request-probe: the origin the gateway derives, X-Forwarded-* honoured only with trustProxy', async (t) => {
  const trusting = await app(t, true)
  const trusted = await trusting.inject({ url: REQUEST_PROBE_PATH, headers: FORWARDED })
  t.equal(trusted.statusCode, 200)
  t.equal(trusted.headers['cache-control'], 'no-store')
  t.same(trusted.json(), { origin: 'https://gw.example.com', forwarded: { proto: true, host: true, for: true } })
  const direct = await trusting.inject({ url: REQUEST_PROBE_PATH, headers: { host: 'gw.example.com' } })
  t.same(direct.json(), { origin: 'http://gw.example.com', forwarded: { proto: false, host: false, for: false } })
})

t.test('request-probe without trustProxy: the headers arrive but are not believed', async (t) => {
  const res = await (await app(t, false)).inject({ url: REQUEST_PROBE_PATH, headers: FORWARDED })
  t.same(res.json(), { origin: 'http://internal:8080', forwarded: { proto: true, host: true, for: true } })
})
