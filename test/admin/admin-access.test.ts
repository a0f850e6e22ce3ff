// The admin API's access check against the real TokenVerifier, with tokens signed here by a key
// generated per run: the authorization server issues admin tokens only to admin.groups members
// (test/e2e/admin-api.test.ts), so tokens it would never issue — no scope, a user since removed
// from the group, a machine client — are made here to prove the API refuses them itself.
import t from 'tap'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { createAdminAuthenticator } from '../../src/admin/admin-access.js'
import { TokenVerifier } from '../../src/resource-server/verify-token.js'
import { PortcullisError } from '../../src/errors.js'

const ISSUER = 'https://gw.example.com'
const AUDIENCE = `${ISSUER}/admin`
const BEARER = 'b'.repeat(40)
const { privateKey, publicKey } = await generateKeyPair('ES256')
const jwk = { ...await exportJWK(publicKey), kid: 'k1', alg: 'ES256', use: 'sig' }
const blocked = new Set<string>()
const verifier = new TokenVerifier({ issuer: ISSUER, jwks: { keys: [jwk] }, isUserBlocked: (id) => blocked.has(id) })
const authenticate = createAdminAuthenticator({ audience: AUDIENCE, groups: ['ops'], bearerToken: BEARER, verifier })

async function token (claims: Record<string, unknown>, aud = AUDIENCE): Promise<string> {
  return await new SignJWT({ client_id: 'cli', grant_id: 'g1', preferred_username: 'carol', ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
    .setIssuer(ISSUER).setAudience(aud).setSubject(String(claims.sub ?? 'carol')).setIssuedAt().setExpirationTime('5m')
    .sign(privateKey)
}

async function refusal (header: string | undefined): Promise<{ code: string, message: string }> {
  try {
    await authenticate(header)
  } catch (err) {
    if (err instanceof PortcullisError) return { code: err.code, message: err.message }
    throw err
  }
  throw new Error('expected a refusal')
}

t.test('the bearer token and an administrator\'s token are let in; each actor named', async (t) => {
  t.same(await authenticate(`Bearer ${BEARER}`), { kind: 'admin-token' })
  t.same(await authenticate(`Bearer ${await token({ scope: 'portcullis:admin', groups: ['ops'] })}`), { kind: 'user', id: 'carol', name: 'carol', clientId: 'cli' })
})

t.test('every other credential is refused: 401 when it is not valid for the API, 403 when it grants no admin rights', async (t) => {
  t.match(await refusal(undefined), { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED' })
  t.match(await refusal('Basic abc'), { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', message: /not "Bearer <token>"/ })
  const nearMiss = `${BEARER.slice(0, -1)}c`
  const wrong = await refusal(`Bearer ${nearMiss}`)
  t.match(wrong, { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED' })
  t.notMatch(wrong.message, nearMiss, 'the presented token is not repeated')
  t.match(await refusal(`Bearer ${await token({ scope: 'portcullis:admin', groups: ['ops'] }, `${ISSUER}/fx/mcp`)}`), { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', message: /audience must be https:\/\/gw\.example\.com\/admin/ })
  t.match(await refusal(`Bearer ${await token({ scope: 'mcp', groups: ['ops'] })}`), { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', message: /lacks the portcullis:admin scope/ })
  t.match(await refusal(`Bearer ${await token({ scope: 'portcullis:admin', groups: ['eng'] })}`), { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', message: /none of admin\.groups/ })
  t.match(await refusal(`Bearer ${await token({ scope: 'portcullis:admin', sub: 'cli', preferred_username: undefined, grant_id: undefined })}`), { code: 'PORTCULLIS_ERR_ADMIN_FORBIDDEN', message: /machine client/ })
  blocked.add('carol')
  t.teardown(() => blocked.delete('carol'))
  t.match(await refusal(`Bearer ${await token({ scope: 'portcullis:admin', groups: ['ops'] })}`), { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED', message: /blocked/ })
})

t.test('an admin.bearerToken with characters outside RFC 6750\'s b64token (as password generators make) is let in too', async (t) => {
  // The schema takes any token of 32 characters or more; the one configured must then open the API.
  const symbols = 'Zq8!x#4$Lm%2&Rt*9@Yw^7(Pk)3?Hv;6'
  const withSymbols = createAdminAuthenticator({ audience: AUDIENCE, groups: ['ops'], bearerToken: symbols, verifier })
  t.same(await withSymbols(`Bearer ${symbols}`), { kind: 'admin-token' })
  await t.rejects(withSymbols(`Bearer ${symbols.slice(0, -1)}7`), { code: 'PORTCULLIS_ERR_ADMIN_UNAUTHORIZED' }, 'a near miss is still refused')
})
