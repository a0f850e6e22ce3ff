// Failed sign-ins slow the guesser down without locking the owner out: a growing delay per
// (account, address), a ceiling per address and a higher one per account. Client addresses
// come from X-Forwarded-For (trustProxy: true), as behind nginx.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { hashPassword } from '../../src/auth-server/password.js'
import { HeadlessBrowser, REDIRECT_URL } from '../oauth-helpers.js'
import { startGateway, startUpstream, type RunningGateway, type Teardown } from '../helpers.js'
import { MemoryStore } from '../../src/store/memory-store.js'

const PASSWORD = 'correct horse battery staple'
const passwordHash = await hashPassword(PASSWORD)

async function gateway (t: Teardown, login: Record<string, unknown> = {}, options: Parameters<typeof startGateway>[3] = {}): Promise<RunningGateway> {
  const upstream = await startUpstream(t)
  return startGateway(t, {
    trustProxy: true,
    auth: { users: [{ username: 'alice', passwordHash }], login },
    servers: [{ name: 'alpha', transport: 'http', url: upstream.url }],
  }, {}, options)
}

/** A browser whose requests come from `ip`. */
function browserAt (ip: string): HeadlessBrowser {
  return new HeadlessBrowser(async (url, init) => fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), 'x-forwarded-for': ip } }))
}

async function authorizeUrl (gw: RunningGateway): Promise<string> {
  const res = await fetch(`${gw.baseUrl}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [REDIRECT_URL], token_endpoint_auth_method: 'none' }) })
  const clientId = String((await res.json() as { client_id: string }).client_id)
  const verifier = randomBytes(32).toString('base64url')
  const params = new URLSearchParams({
    client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URL, state: 'st',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', resource: gw.mcpUrl('alpha'),
  })
  return `${gw.baseUrl}/oauth/authorize?${params.toString()}`
}

/** Opens the sign-in page in `browser`; returns a function that posts one attempt. */
async function signInPage (gw: RunningGateway, browser: HeadlessBrowser): Promise<(username: string, password: string) => Promise<{ status: number, retryAfter: string | null, html: string }>> {
  const first = await browser.request(await authorizeUrl(gw))
  const interaction = new URL(first.headers.get('location') ?? '', gw.baseUrl).href
  const csrf = /name="csrf" value="([^"]+)"/.exec(await (await browser.request(interaction)).text())?.[1] ?? ''
  return async (username, password) => {
    const res = await browser.request(`${interaction}/login`, { method: 'POST', form: { csrf, username, password } })
    return { status: res.status, retryAfter: res.headers.get('retry-after'), html: await res.text() }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

t.test('an attacker failing many times does not lock the owner out', async (t) => {
  const gw = await gateway(t)
  const attempt = await signInPage(gw, browserAt('203.0.113.66'))
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) statuses.push((await attempt('alice', `guess-${i}`)).status)
  t.same(statuses.slice(0, 5), [401, 401, 401, 401, 401], 'five wrong passwords are checked')
  t.ok(statuses.slice(5).every((s) => s === 429), 'then this address must wait before each further attempt')
  const throttled = await attempt('alice', PASSWORD)
  t.equal(throttled.status, 429, 'even the right password, from the attacker\'s address')
  t.match(throttled.html, /Too many failed sign-in attempts for this account from your network\. Try again in 1 second\./)
  t.equal(throttled.retryAfter, '1')

  const owner = browserAt('198.51.100.20')
  const callback = await owner.authorize(await authorizeUrl(gw), { username: 'alice', password: PASSWORD })
  t.ok(callback.searchParams.get('code'), 'the owner, from another address, signs in at once')
})

t.test('wrong passwords sent at once are checked one at a time: no more than maxFailures before the wait', async (t) => {
  const gw = await gateway(t, {}, {})
  const attempt = await signInPage(gw, browserAt('203.0.113.67'))
  const answers = await Promise.all(Array.from({ length: 24 }, async (_, i) => attempt('alice', `guess-${i}`)))
  const checked = answers.filter((a) => a.status === 401).length
  t.ok(checked >= 1 && checked <= 5, `at most five of 24 checked (${checked})`)
  t.ok(answers.every((a) => a.status === 401 || a.status === 429), 'the others refused unchecked')
  t.ok(answers.filter((a) => a.status === 429).every((a) => a.retryAfter !== null), 'each with Retry-After')
  const owner = browserAt('198.51.100.21')
  t.ok((await owner.authorize(await authorizeUrl(gw), { username: 'alice', password: PASSWORD })).searchParams.get('code'), 'the owner, from another address, is not locked out')
})

t.test('the delay grows: 1 s, 2 s, 4 s … after each further failure', async (t) => {
  const gw = await gateway(t, { maxFailures: 2 })
  const attempt = await signInPage(gw, browserAt('203.0.113.67'))
  t.equal((await attempt('alice', 'x1')).status, 401)
  t.equal((await attempt('alice', 'x2')).status, 401)
  t.equal((await attempt('alice', 'x3')).retryAfter, '1', 'after maxFailures: 1 s')
  await sleep(1100)
  t.equal((await attempt('alice', 'x4')).status, 401, 'after the wait the attempt is checked again')
  const next = await attempt('alice', 'x5')
  t.equal(next.status, 429)
  t.equal(next.retryAfter, '2', 'and the next wait is twice as long')
})

t.test('ceilings: per address (any account), and per account from all addresses together', async (t) => {
  const gw = await gateway(t, { maxFailuresPerIp: 3, maxFailuresPerAccount: 4 })
  const spray = await signInPage(gw, browserAt('203.0.113.68'))
  for (const user of ['bob', 'carol', 'dave']) t.equal((await spray(user, 'x')).status, 401)
  const perIp = await spray('erin', 'x')
  t.equal(perIp.status, 429, 'one address guessing across accounts hits the per-address ceiling')
  t.match(perIp.html, /Too many failed sign-in attempts from your network\./)

  for (const ip of ['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4']) t.equal((await (await signInPage(gw, browserAt(ip)))('alice', 'x')).status, 401)
  const perAccount = await (await signInPage(gw, browserAt('198.51.100.21')))('alice', PASSWORD)
  t.equal(perAccount.status, 429, 'spraying one account from many addresses is bounded too')
  t.match(perAccount.html, /Too many failed sign-in attempts for this account\./)
})

t.test('failed usernames are logged as a short hash, never verbatim', async (t) => {
  const gw = await gateway(t)
  const attempt = await signInPage(gw, browserAt('203.0.113.69'))
  // Someone typed their password into the username field.
  t.equal((await attempt('Tr0ub4dor&3-secret', 'x')).status, 401)
  t.notMatch(gw.logs.text(), /Tr0ub4dor/, 'the typed username is not in the log')
  const line = gw.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'sign-in failed')
  t.match(line, { userHash: /^[\w-]{12}$/, ip: '203.0.113.69' }, 'a 12-character hash ties attempts together')
  t.notOk(line !== undefined && 'user' in line, 'no user field on a failed attempt')
})

t.test('the waits and the remembered consent go by the gateway\'s clock, the one its store expires entries by', async (t) => {
  // A clock a month ahead of the machine's: a wait or an expiry counted on the machine's clock
  // instead would be a month off.
  const day = 24 * 3600_000
  let clock = Date.now() + 30 * day
  const store = new MemoryStore(() => clock)
  t.teardown(() => store.close())
  const gw = await gateway(t, { maxFailures: 2, maxFailuresPerIp: 4, window: '15m' }, { store, now: () => clock })
  const attempt = await signInPage(gw, browserAt('203.0.113.70'))
  t.equal((await attempt('alice', 'x1')).status, 401)
  t.equal((await attempt('alice', 'x2')).status, 401)
  t.equal((await attempt('alice', 'x3')).retryAfter, '1', 'after maxFailures: 1 s')
  clock += 1100
  t.equal((await attempt('alice', 'x4')).status, 401, 'once 1.1 s have passed on the gateway\'s clock (not on the machine\'s), the attempt is checked again')
  t.equal((await attempt('bob', 'x')).status, 401, 'the fourth failure from this address (a refused attempt is no failure)')
  const ceiling = await attempt('carol', 'x')
  t.equal(ceiling.status, 429, 'four failures from one address: its ceiling')
  const retryAfter = Number(ceiling.retryAfter)
  t.ok(retryAfter > 890 && retryAfter <= 900, `the wait is the rest of the 15-minute window on the gateway's clock (Retry-After ${String(ceiling.retryAfter)})`)

  const owner = browserAt('198.51.100.22')
  const callback = await owner.authorize(await authorizeUrl(gw), { username: 'alice', password: PASSWORD })
  t.ok(callback.searchParams.get('code'), 'the owner signs in and consents')
  const consents: Array<number | undefined> = []
  for await (const entry of store.entries()) if (entry.kind === 'kv' && entry.key.startsWith('auth:consent:')) consents.push(entry.expiresAtMs)
  t.same(consents, [clock + 14 * day], 'the consent is remembered until refreshTokenTtl (14 d) from now on the gateway\'s clock')
})
