// The README's metrics table against what /metrics really says: a label value the gateway
// writes must be one the table lists (an operator writes alerts from the table).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { hashPassword } from '../../src/auth-server/password.js'
import { REDIRECT_URL } from '../oauth-helpers.js'
import { startGateway, startUpstream } from '../helpers.js'

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

/** The values in code (`…`) of the README metrics row for `metric`. */
function documentedValues (metric: string): string[] {
  const row = README.split('\n').find((line) => line.startsWith(`| \`${metric}\` |`)) ?? ''
  return [...row.split(' | ').slice(2).join(' | ').matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? '')
}

t.test('a registration refused by rateLimits.registration counts under a bucket the README lists', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    auth: { users: [{ username: 'alice', passwordHash: await hashPassword('correct horse battery staple') }] },
    rateLimits: { registration: '1/hour' },
    servers: [{ name: 'alpha', transport: 'http', url: upstream.url }],
  })
  const register = async (): Promise<number> => (await fetch(`${gw.baseUrl}/oauth/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }),
  })).status
  t.equal(await register(), 201)
  t.equal(await register(), 429, 'the second registration within the hour is refused')
  const metrics = await (await fetch(`${gw.baseUrl}/metrics`)).text()
  const buckets = [...metrics.matchAll(/^portcullis_rate_limit_rejections_total\{bucket="([^"]+)"\} [1-9]/gm)].map((m) => m[1] ?? '')
  t.ok(buckets.length > 0, `a rejection was counted: ${buckets.join(', ')}`)
  const listed = documentedValues('portcullis_rate_limit_rejections_total')
  for (const bucket of buckets) t.ok(listed.includes(bucket), `bucket "${bucket}" is in the README's list (${listed.join(', ')})`)
})
