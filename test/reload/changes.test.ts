// What a reloaded file changes, and what it cannot change until a restart (src/reload/changes.ts).
import t from 'tap'
import { describeChanges, restartOnlyChanges, withRestartOnlyKept } from '../../src/reload/changes.js'
import { definitionKey } from '../../src/reload/upstream-pool.js'
import { makeConfig, stdioServer } from '../helpers.js'

const HTTP = { name: 'fx', transport: 'http', url: 'http://127.0.0.1:9/mcp' }
const base = { publicUrl: 'http://127.0.0.1:8080', listen: { host: '127.0.0.1', port: 8080 }, auth: { enabled: false }, servers: [HTTP, stdioServer('local')] }

t.test('restart-only settings are reported and kept at their old values; the rest of the file applies', async (t) => {
  const current = makeConfig({ ...base, metrics: { listen: { host: '127.0.0.1', port: 9464 }, bearerToken: 'a'.repeat(16) } })
  const next = makeConfig({
    ...base,
    publicUrl: 'http://127.0.0.1:9090',
    listen: { host: '127.0.0.1', port: 9090 },
    store: { memory: true },
    metrics: { listen: { host: '127.0.0.1', port: 9465 }, bearerToken: 'b'.repeat(16) },
    allowedOrigins: ['https://app.example.com'],
  })
  t.same(restartOnlyChanges(current, next), ['listen', 'publicUrl', 'store', 'metrics.listen', 'metrics.bearerToken'], 'in a fixed order, as dotted paths')
  const applied = withRestartOnlyKept(current, next)
  t.same(applied.listen, current.listen)
  t.equal(applied.publicUrl, current.publicUrl)
  t.same(applied.store, current.store)
  t.same(applied.metrics, current.metrics, 'the metrics listener and its token as they were')
  t.same(applied.allowedOrigins, ['https://app.example.com'], 'the rest applies')
  t.same(describeChanges(current, applied), ['allowedOrigins changed'], 'only what applies is reported as changed')
  t.same(next.listen, { host: '127.0.0.1', port: 9090 }, 'the parsed file itself is left alone')
})

t.test('with a metrics listener, metrics.enabled needs a restart (the listener is made at start or not at all)', async (t) => {
  const listen = { host: '127.0.0.1', port: 9464 }
  const current = makeConfig({ ...base, metrics: { listen } })
  const next = makeConfig({ ...base, metrics: { listen, enabled: false } })
  t.same(restartOnlyChanges(current, next), ['metrics.enabled'], 'reported as needing a restart')
  t.equal(withRestartOnlyKept(current, next).metrics.enabled, true, 'kept as it was')
  t.same(describeChanges(current, withRestartOnlyKept(current, next)), [], 'not reported as applied')
  const without = makeConfig(base)
  t.same(describeChanges(without, withRestartOnlyKept(without, makeConfig({ ...base, metrics: { enabled: false } }))), ['metrics.enabled changed'], 'on the main port it applies live')
})

t.test('without a metrics listener, metrics.bearerToken applies live (it guards /metrics on the main port)', async (t) => {
  const current = makeConfig(base)
  const next = makeConfig({ ...base, metrics: { bearerToken: 'c'.repeat(16) } })
  t.same(restartOnlyChanges(current, next), [])
  t.same(describeChanges(current, withRestartOnlyKept(current, next)), ['metrics.bearerToken changed'])
})

t.test('servers: added, removed, a policy change, a process change; sections a level deep', async (t) => {
  const current = makeConfig({ ...base, servers: [HTTP, stdioServer('local'), stdioServer('policy')] })
  const next = makeConfig({
    ...base,
    rateLimits: { perUser: '5/min' },
    servers: [stdioServer('local', { env: { A: '1' } }), stdioServer('policy', { tools: { echo: { rateLimit: '1/min' } } }), { ...HTTP, name: 'new' }],
  })
  t.same(describeChanges(current, next), [
    'server changed: local (new sessions start the new definition; open ones drain)',
    'server changed: policy',
    'server added: new',
    'server removed: fx',
    'rateLimits.perUser changed',
  ])
  t.same(describeChanges(current, makeConfig({ ...base, servers: [HTTP, stdioServer('local'), stdioServer('policy')] })), [], 'the same file: nothing')
})

t.test('a stdio definition key ignores what the gateway judges by, and key order', async (t) => {
  const plain = makeConfig({ ...base, servers: [stdioServer('local', { env: { A: '1', B: '2' } })] }).servers[0]
  const reordered = makeConfig({ ...base, servers: [stdioServer('local', { env: { B: '2', A: '1' } })] }).servers[0]
  const policed = makeConfig({ ...base, servers: [stdioServer('local', { env: { A: '1', B: '2' }, scopes: ['files:read'], tools: { echo: { rateLimit: '1/min' } } })] }).servers[0]
  const changed = makeConfig({ ...base, servers: [stdioServer('local', { env: { A: '1', B: '3' } })] }).servers[0]
  if (plain === undefined || reordered === undefined || policed === undefined || changed === undefined) throw new Error('no server')
  t.equal(definitionKey(reordered), definitionKey(plain), 'key order does not matter')
  t.equal(definitionKey(policed), definitionKey(plain), 'policy and scopes keep the processes')
  t.not(definitionKey(changed), definitionKey(plain), 'an env value is a new definition')
})
