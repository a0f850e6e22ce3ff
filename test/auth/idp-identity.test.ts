import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { admissionRefusal, claimAt, identityFromClaims } from '../../src/auth-server/idp-identity.js'
import type { IdentityProviderConfig } from '../../src/config/schema.js'

/** The YAML loader takes text: JSON is YAML. */
const parse = (doc: unknown) => parseConfig(JSON.stringify(doc), 'test.yaml', {})

function idp (extra: Record<string, unknown> = {}): IdentityProviderConfig {
  const config = parse({
    publicUrl: 'http://127.0.0.1:8080',
    servers: [{ name: 'echo', transport: 'http', url: 'http://127.0.0.1:9/mcp' }],
    auth: { identityProviders: [{ name: 'corp', type: 'oidc', issuer: 'http://localhost:4000', clientId: 'gw', clientSecret: 's', ...extra }] },
  })
  const found = config.auth.identityProviders[0]
  if (found === undefined) throw new Error('no provider parsed')
  return found
}

t.test('a claim path reaches nested claims and nothing else', async (t) => {
  t.same(claimAt({ realm_access: { roles: ['a'] } }, 'realm_access.roles'), ['a'])
  t.equal(claimAt({ realm_access: ['x'] }, 'realm_access.roles'), undefined)
  t.equal(claimAt({}, 'groups'), undefined)
})

t.test('identity: <provider>:<sub>, username fallbacks, mapped groups', async (t) => {
  const plain = identityFromClaims(idp(), { sub: 'u1', email: 'a@example.com' })
  t.equal(plain.id, 'corp:u1')
  t.equal(plain.name, 'a@example.com', 'no preferred_username: the email')
  t.same(plain.groups, [])
  t.equal(identityFromClaims(idp(), { sub: 'u1' }).name, 'u1', 'nothing else: the subject')
  const keycloak = identityFromClaims(idp({ groupsClaim: 'realm_access.roles', usernameClaim: 'upn', groupMap: { 'guid-1': 'eng', 'guid-2': ['sre', 'eng'] } }),
    { sub: 'u2', upn: 'alice@corp', preferred_username: 'ignored', realm_access: { roles: ['guid-2', 'guid-1', 'other'] } })
  t.equal(keycloak.name, 'alice@corp')
  t.same(keycloak.groups, ['eng', 'other', 'sre'], 'mapped, unmapped kept, sorted, no duplicates')
  const google = identityFromClaims(idp({ groupMap: { 'bob@example.com': 'sre' } }), { sub: 'g', email: 'Bob@example.com', email_verified: true })
  t.same(google.groups, ['sre'], 'an email key gives groups where the IdP sends none')
  t.throws(() => identityFromClaims(idp(), { email: 'x@y.z' }), /no sub claim/)
})

t.test('an email the IdP marks unverified names nobody and maps no groups', async (t) => {
  // Keycloak and Auth0 let a user set their own email; the IdP says so with email_verified: false.
  const provider = idp({ groupMap: { 'dana@example.com': ['admin', 'eng'] }, requiredGroups: ['eng'] })
  const claimed = { sub: 'attacker', email: 'dana@example.com', email_verified: false }
  const identity = identityFromClaims(provider, claimed)
  t.same(identity.groups, [], 'no groups from groupMap')
  t.equal(identity.name, 'attacker', 'the name is not the email')
  t.equal(identity.email, undefined, 'no ${user.email} either')
  t.match(admissionRefusal(provider, identity, claimed), /not in a group allowed/, 'so requiredGroups refuses')
  for (const verified of [true, 'true', undefined]) {
    const dana = identityFromClaims(provider, { sub: 'dana', email: 'dana@example.com', ...(verified === undefined ? {} : { email_verified: verified }) })
    t.same(dana.groups, ['admin', 'eng'], `email_verified ${String(verified)}: the address counts`)
    t.equal(dana.name, 'dana@example.com')
  }
})

t.test('admission: allowed domains (and hd), verified email, required groups', async (t) => {
  const restricted = idp({ allowedDomains: ['example.com'], requiredGroups: ['staff'], groupsClaim: 'groups' })
  const ok = { sub: 'a', email: 'a@example.com', email_verified: true, groups: ['staff'] }
  t.equal(admissionRefusal(restricted, identityFromClaims(restricted, ok), ok), undefined)
  const otherDomain = { ...ok, email: 'a@evil.com' }
  t.match(admissionRefusal(restricted, identityFromClaims(restricted, otherDomain), otherDomain), /email domain/)
  const otherHd = { ...ok, hd: 'evil.com' }
  t.match(admissionRefusal(restricted, identityFromClaims(restricted, otherHd), otherHd), /email domain/)
  const unverified = { ...ok, email_verified: false }
  t.match(admissionRefusal(restricted, identityFromClaims(restricted, unverified), unverified), /not verified/)
  const noGroup = { ...ok, groups: ['guest'] }
  t.match(admissionRefusal(restricted, identityFromClaims(restricted, noGroup), noGroup), /one of: staff/)
})

t.test('config: provider shapes are checked with clear errors', async (t) => {
  const base = { publicUrl: 'http://127.0.0.1:8080', servers: [{ name: 'echo', transport: 'http', url: 'http://127.0.0.1:9/mcp' }] }
  const withProviders = (providers: unknown[]) => () => parse({ ...base, auth: { identityProviders: providers } })
  t.throws(withProviders([{ name: 'corp', type: 'oidc', clientId: 'x' }]), /needs issuer/)
  t.throws(withProviders([{ name: 'corp', type: 'oidc', issuer: 'http://idp.example.com', clientId: 'x' }]), /must be https/)
  t.throws(withProviders([{ name: 'Corp', type: 'oidc', issuer: 'https://idp.example.com', clientId: 'x' }]), /lowercase/)
  t.throws(withProviders([{ name: 'gh', type: 'github', clientId: 'x' }]), /needs clientSecret/)
  t.throws(withProviders([{ name: 'gh', type: 'github', clientId: 'x', clientSecret: 'y', idJag: true }]), /idJag needs an OpenID Connect provider/)
  t.throws(withProviders([{ name: 'gh', type: 'github', clientId: 'x', clientSecret: 'y', groupsClaim: 'groups' }]), /groupsClaim is for type: oidc; a GitHub user's name is their login/)
  t.throws(withProviders([{ name: 'gh', type: 'github', clientId: 'x', clientSecret: 'y', usernameClaim: 'email' }]), /usernameClaim is for type: oidc/)
  t.throws(withProviders([{ name: 'a', type: 'oidc', issuer: 'https://i.example.com', clientId: 'x' }, { name: 'a', type: 'oidc', issuer: 'https://j.example.com', clientId: 'x' }]), /duplicate identity provider/)
  t.throws(withProviders([{ name: 'a', type: 'oidc', issuer: 'https://i.example.com', clientId: 'x', clientSecret: 'y', privateKeyJwt: { keysFile: 'k' } }]), /choose one client authentication/)
  // Its users would be client:<sub>, the id a machine client acts as: an IdP user with the sub
  // "ci-bot" shared the machine client ci-bot's per-user stdio process and ${user.id} files.
  t.throws(withProviders([{ name: 'client', type: 'oidc', issuer: 'https://i.example.com', clientId: 'x', clientSecret: 'y' }]), /the name "client" is reserved: machine clients act as client:<client id>/)
  t.equal(idp().revalidateEvery, 15 * 60_000, 'revalidateEvery defaults to 15m')
})
