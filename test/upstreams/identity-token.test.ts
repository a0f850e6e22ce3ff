// servers[].identity's token cache (src/upstreams/identity-token.ts) without a gateway: one
// signature per caller and server per 30 s, and never one caller's token for another, even
// when their claims would run together if simply joined.
import t from 'tap'
import { decodeJwt, exportJWK, generateKeyPair } from 'jose'
import { IDENTITY_TOKEN_REUSE_MS, IdentityTokens } from '../../src/upstreams/identity-token.js'
import type { UserIdentity } from '../../src/identity.js'

async function tokensAt (clock: { ms: number }): Promise<{ tokens: IdentityTokens, signed: () => number }> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  const key = { ...await exportJWK(privateKey), alg: 'ES256', kid: 'test' }
  let signed = 0
  const tokens = new IdentityTokens({ issuer: 'https://gw.example.com', key, now: () => clock.ms, onSigned: () => { signed++ } }, 'echo', 'https://echo.internal/mcp')
  return { tokens, signed: () => signed }
}

t.test('a caller\'s token is reused for 30 s, by an equal identity object too, then signed again', async (t) => {
  const clock = { ms: 1_800_000_000_000 }
  const { tokens, signed } = await tokensAt(clock)
  // The route builds a new identity object per request: equal claims must find the cached token.
  const alice = (): UserIdentity => ({ id: 'u1', name: 'alice', email: 'alice@example.com', groups: ['eng', 'ops'] })
  const first = await tokens.tokenFor(alice(), 'app')
  clock.ms += IDENTITY_TOKEN_REUSE_MS - 1
  t.equal(tokens.tokenFor(alice(), 'app'), first, 'a string at once: the cached token')
  t.equal(signed(), 1)
  clock.ms += 1
  const second = await tokens.tokenFor(alice(), 'app')
  t.not(second, first)
  t.equal(signed(), 2)
})

t.test('callers whose claims differ anywhere get their own token, even where plain joining would collide', async (t) => {
  const { tokens, signed } = await tokensAt({ ms: 1_800_000_000_000 })
  const callers: Array<[UserIdentity, string]> = [
    [{ id: 'u1', name: 'ab', email: 'c', groups: [] }, 'app'],
    [{ id: 'u1', name: 'a', email: 'bc', groups: [] }, 'app'],
    [{ id: 'u1', name: 'a', groups: ['bc'] }, 'app'],
    [{ id: 'u1', name: 'a', groups: ['b', 'c'] }, 'app'],
    [{ id: 'u1', name: 'a', email: '-', groups: [] }, 'app'],
    [{ id: 'u1', name: 'a', groups: [] }, 'app'],
    [{ id: 'u1', name: 'a', groups: [] }, 'ap'],
    [{ id: 'u1:', name: 'a', groups: [] }, 'ap'],
    [{ id: 'u1', name: '1:a', groups: [] }, 'ap'],
  ]
  const seen = new Set<string>()
  for (const [user, clientId] of callers) {
    const token = await tokens.tokenFor(user, clientId)
    const claims = decodeJwt(token)
    t.equal(claims.preferred_username, user.name, `${JSON.stringify(user)} ${clientId}: its own name`)
    t.same(claims.groups, user.groups, 'its own groups')
    t.equal(claims.email, user.email, 'its own email')
    seen.add(token)
  }
  t.equal(seen.size, callers.length, 'one token each')
  t.equal(signed(), callers.length, 'one signature each')
})

t.test('a machine client never gets a person\'s token, nor a person a machine client\'s, whatever their ids', async (t) => {
  const { tokens, signed } = await tokensAt({ ms: 1_800_000_000_000 })
  // The same id, name and client: only isClient differs, and with it the claims (no name for a client).
  const person: UserIdentity = { id: 'client:ci', name: 'ci', groups: [] }
  const machine: UserIdentity = { id: 'client:ci', name: 'ci', groups: [], isClient: true }
  const personClaims = decodeJwt(await tokens.tokenFor(person, 'ci'))
  const machineClaims = decodeJwt(await tokens.tokenFor(machine, 'ci'))
  t.equal(personClaims.preferred_username, 'ci', 'the person is named')
  t.equal(machineClaims.preferred_username, undefined, 'the machine client is no person')
  t.equal(machineClaims.client_id, 'ci')
  t.equal(signed(), 2, 'one signature each')
})
