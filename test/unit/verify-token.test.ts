// TokenVerifier (src/resource-server/verify-token.ts) with real tokens signed by jose here, keys
// generated per run, and the verifier's clock injected: each refusal reason, the clock
// tolerance on both sides of a token's lifetime, and the checks a cached token still meets.
import t from 'tap'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { TOKEN_CLOCK_TOLERANCE_S, TokenError, TokenVerifier, type TokenFailure } from '../../src/resource-server/verify-token.js'

const ISSUER = 'https://gw.example.com'
const AUD = 'https://gw.example.com/github/mcp'
const T0 = 1_800_000_000 // token issue time, seconds
const { privateKey, publicKey } = await generateKeyPair('ES256')
const other = await generateKeyPair('ES256')
const jwk = { ...await exportJWK(publicKey), kid: 'k1', alg: 'ES256', use: 'sig' }

interface TokenShape {
  claims?: Record<string, unknown>
  header?: Record<string, unknown>
  iss?: string
  aud?: string | string[]
  exp?: number
  nbf?: number
  key?: Parameters<SignJWT['sign']>[0]
  alg?: string
}

async function token (shape: TokenShape = {}): Promise<string> {
  const alg = shape.alg ?? 'ES256'
  const jwt = new SignJWT({ client_id: 'cli', grant_id: 'g1', preferred_username: 'ada', scope: 'mcp:tools openid', groups: ['ops', 7], email: 'ada@example.com', ...shape.claims })
    .setProtectedHeader({ alg, typ: 'at+jwt', kid: 'k1', ...shape.header })
    .setIssuer(shape.iss ?? ISSUER).setAudience(shape.aud ?? AUD).setSubject('u-ada')
    .setIssuedAt(T0).setExpirationTime(shape.exp ?? T0 + 300)
  if (shape.nbf !== undefined) jwt.setNotBefore(shape.nbf)
  return await jwt.sign(shape.key ?? privateKey)
}

/** A verifier whose clock the test moves; revoked grants and blocked users are plain sets. */
function verifier () {
  const clock = { nowS: T0 + 10 }
  const revoked = new Set<string>()
  const blocked = new Set<string>()
  const v = new TokenVerifier({
    issuer: ISSUER,
    jwks: { keys: [jwk] },
    now: () => clock.nowS * 1000,
    isGrantRevoked: (id) => revoked.has(id),
    isUserBlocked: (id) => blocked.has(id),
  })
  return { v, clock, revoked, blocked }
}

async function reason (promise: Promise<unknown>): Promise<TokenFailure> {
  try {
    await promise
  } catch (err) {
    if (err instanceof TokenError) return err.reason
    throw err
  }
  throw new Error('expected the token to be refused')
}

t.test('a valid user token: its identity, scopes and groups', async (t) => {
  const { v } = verifier()
  const identity = await v.verify(await token(), [AUD])
  t.same({ ...identity, scopes: [...identity.scopes] }, {
    id: 'u-ada', name: 'ada', email: 'ada@example.com', groups: ['ops'], clientId: 'cli',
    scopes: ['mcp:tools', 'openid'], isClient: false, expiresAtS: T0 + 300, grantId: 'g1',
  }, 'non-string groups are dropped')
})

t.test('a machine token (sub is the client, no username) needs no grant and is never "blocked"', async (t) => {
  const { v, blocked } = verifier()
  blocked.add('svc')
  const machine = await new SignJWT({ client_id: 'svc' }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
    .setIssuer(ISSUER).setAudience(AUD).setSubject('svc').setIssuedAt(T0).setExpirationTime(T0 + 300).sign(privateKey)
  t.match(await v.verify(machine, [AUD]), { id: 'svc', isClient: true, grantId: undefined })
  t.equal(await reason(v.verify(await token({ claims: { grant_id: undefined } }), [AUD])), 'claims', 'a user token without a grant could never be revoked: refused')
  t.equal(await reason(v.verify(await token({ claims: { client_id: undefined } }), [AUD])), 'claims', 'client_id is required')
})

t.test('audience: any of the accepted ones; checked again on a cached token', async (t) => {
  const { v } = verifier()
  const jwt = await token({ aud: [AUD, 'https://other.example.com/mcp'] })
  t.equal(await reason(v.verify(await token({ aud: 'https://elsewhere.example.com/mcp' }), [AUD])), 'audience')
  t.equal((await v.verify(jwt, ['https://x.example.com', AUD])).id, 'u-ada', 'one match among several is enough')
  t.equal(await reason(v.verify(jwt, ['https://x.example.com'])), 'audience', 'the cache does not widen the audience')
  t.equal((await v.verify(jwt, ['https://other.example.com/mcp'])).id, 'u-ada', 'the cached token keeps all its audiences')
})

t.test('expiry and not-before, each with the clock tolerance, fresh and cached', async (t) => {
  const exp = T0 + 60
  const fresh = verifier()
  fresh.clock.nowS = exp + TOKEN_CLOCK_TOLERANCE_S - 1
  t.equal((await fresh.v.verify(await token({ exp }), [AUD])).id, 'u-ada', 'just expired, within the tolerance')
  fresh.clock.nowS = exp + TOKEN_CLOCK_TOLERANCE_S + 1
  t.equal(await reason(fresh.v.verify(await token({ exp, claims: { jti: 'other' } }), [AUD])), 'expired', 'past the tolerance')

  const cached = verifier()
  const jwt = await token({ exp })
  await cached.v.verify(jwt, [AUD])
  cached.clock.nowS = exp + TOKEN_CLOCK_TOLERANCE_S - 1
  t.equal((await cached.v.verify(jwt, [AUD])).id, 'u-ada', 'cached, within the tolerance')
  cached.clock.nowS = exp + TOKEN_CLOCK_TOLERANCE_S
  t.equal(await reason(cached.v.verify(jwt, [AUD])), 'expired', 'cached, at the tolerance\'s end')

  const early = verifier()
  early.clock.nowS = T0
  t.equal((await early.v.verify(await token({ nbf: T0 + TOKEN_CLOCK_TOLERANCE_S - 1 }), [AUD])).id, 'u-ada', 'not yet valid by less than the tolerance')
  t.equal(await reason(early.v.verify(await token({ nbf: T0 + TOKEN_CLOCK_TOLERANCE_S + 2 }), [AUD])), 'not_yet_valid')
})

t.test('revoked grants and blocked users are refused on the next request, cached or not', async (t) => {
  const { v, revoked, blocked } = verifier()
  const jwt = await token()
  await v.verify(jwt, [AUD])
  revoked.add('g1')
  t.equal(await reason(v.verify(jwt, [AUD])), 'revoked', 'cached token of a revoked grant')
  t.equal(await reason(v.verify(await token({ claims: { jti: 'fresh' } }), [AUD])), 'revoked', 'fresh token of a revoked grant')
  revoked.clear()
  blocked.add('u-ada')
  t.equal(await reason(v.verify(jwt, [AUD])), 'blocked')
  blocked.clear()
  t.equal((await v.verify(jwt, [AUD])).id, 'u-ada', 'unblocked: accepted again')
})

t.test('issuer, algorithm, type, key and signature: each refused with its own reason', async (t) => {
  const { v } = verifier()
  t.equal(await reason(v.verify(await token({ iss: 'https://evil.example.com' }), [AUD])), 'issuer')
  t.equal(await reason(v.verify(await token({ alg: 'HS256', key: new Uint8Array(32).fill(1) }), [AUD])), 'algorithm', 'an HMAC token is not accepted')
  t.equal(await reason(v.verify(await token({ header: { typ: 'JWT' } }), [AUD])), 'type', 'an ID token shape is not an access token')
  t.equal(await reason(v.verify(await token({ header: { kid: 'k2' } }), [AUD])), 'unknown_key')
  t.equal(await reason(v.verify(await token({ key: other.privateKey }), [AUD])), 'signature', 'signed by another key under the known kid')
  t.equal(await reason(v.verify('not.a.jwt', [AUD])), 'malformed')
  const refused = await v.verify(await token({ iss: 'https://evil.example.com', claims: { jti: 'x' } }), [AUD]).catch((err: unknown) => err)
  t.match(refused, { name: 'TokenError', message: 'the access token was issued by another authorization server' }, 'the message names no token content')
})
