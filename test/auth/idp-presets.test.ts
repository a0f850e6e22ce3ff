// "Tested for shape": a realistic claims sample of each documented provider (README "Identity
// providers") through the same mapping and admission the sign-in uses. The samples follow each
// vendor's documented ID token / userinfo layout; values are made up.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { admissionRefusal, hasGroupsOverage, identityFromClaims } from '../../src/auth-server/idp-identity.js'
import type { IdentityProviderConfig } from '../../src/config/schema.js'
import { offlineParameters } from '../../src/auth-server/oidc-relying-party.js'

function provider (entry: Record<string, unknown>): IdentityProviderConfig {
  const config = parseConfig(JSON.stringify({
    publicUrl: 'https://gw.example.com',
    servers: [{ name: 'echo', transport: 'http', url: 'https://upstream.example.com/mcp' }],
    auth: { identityProviders: [{ name: 'corp', type: 'oidc', clientId: 'gw', clientSecret: 's', ...entry }] },
  }), 'test.yaml', {})
  const found = config.auth.identityProviders[0]
  if (found === undefined) throw new Error('no provider parsed')
  return found
}

t.test('Microsoft Entra ID: GUID groups through groupMap; the overage claim is recognised', async (t) => {
  const entra = provider({
    issuer: 'https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0',
    groupsClaim: 'groups',
    groupMap: { '5f3c6f1e-2b7a-4d59-9a8e-0c1d2e3f4a5b': 'eng', 'a1b2c3d4-0000-4000-8000-000000000001': ['sre', 'eng'] },
    allowedDomains: ['contoso.com'],
    requiredGroups: ['eng'],
  })
  const claims = {
    iss: 'https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0',
    sub: 'AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ',
    oid: '00000000-0000-0000-66f3-3332eca7ea81',
    tid: '72f988bf-86f1-41af-91ab-2d7cd011db47',
    preferred_username: 'alice@contoso.com',
    name: 'Alice Example',
    email: 'alice@contoso.com',
    groups: ['5f3c6f1e-2b7a-4d59-9a8e-0c1d2e3f4a5b', 'a1b2c3d4-0000-4000-8000-000000000001', 'ffffffff-1111-4111-8111-111111111111'],
  }
  const identity = identityFromClaims(entra, claims)
  t.equal(identity.id, 'corp:AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ')
  t.equal(identity.name, 'alice@contoso.com')
  t.same(identity.groups, ['eng', 'ffffffff-1111-4111-8111-111111111111', 'sre'], 'GUIDs mapped; an unmapped GUID passes through unchanged')
  // Entra's v2 email claim carries no email_verified: allowedDomains needs it, so it refuses (README says so).
  t.match(admissionRefusal(entra, identity, claims), /not verified/)
  const verified = identityFromClaims(entra, { ...claims, email_verified: true })
  t.equal(admissionRefusal(entra, verified, claims), undefined)

  const overage = { ...claims, groups: undefined, _claim_names: { groups: 'src1' }, _claim_sources: { src1: { endpoint: 'https://graph.microsoft.com/v1.0/users/x/getMemberObjects' } } }
  t.ok(hasGroupsOverage(overage), '_claim_names.groups: an overage')
  t.ok(hasGroupsOverage({ hasgroups: true }), 'hasgroups: an overage')
  t.notOk(hasGroupsOverage(claims))
  t.same(identityFromClaims(entra, overage).groups, [], 'no groups, no crash')
})

t.test('Okta: the groups claim (an authorization server rule) by name', async (t) => {
  const okta = provider({ issuer: 'https://example.okta.com/oauth2/default', scopes: ['openid', 'email', 'profile', 'groups'], groupsClaim: 'groups', groupMap: { 'Everyone': [] as string[] }, requiredGroups: ['mcp-users'] })
  const claims = { iss: 'https://example.okta.com/oauth2/default', sub: '00uid4BxXw6I6TV4m0g3', email: 'bob@example.com', email_verified: true, preferred_username: 'bob@example.com', groups: ['Everyone', 'mcp-users'] }
  const identity = identityFromClaims(okta, claims)
  t.equal(identity.id, 'corp:00uid4BxXw6I6TV4m0g3')
  t.same(identity.groups, ['mcp-users'], 'a group mapped to [] is dropped (Everyone)')
  t.equal(admissionRefusal(okta, identity, claims), undefined)
  t.match(admissionRefusal(okta, identityFromClaims(okta, { ...claims, groups: ['Everyone'] }), claims), /one of: mcp-users/)
})

t.test('Keycloak: realm_access.roles, or a groups mapper with full paths', async (t) => {
  const roles = provider({ issuer: 'https://sso.example.com/realms/corp', groupsClaim: 'realm_access.roles' })
  const claims = { iss: 'https://sso.example.com/realms/corp', sub: 'f7c1e8a2-4b8d-4f7e-9a1b-2c3d4e5f6a7b', preferred_username: 'carol', email: 'carol@example.com', email_verified: true, realm_access: { roles: ['offline_access', 'uma_authorization', 'eng'] }, groups: ['/staff/eng'] }
  const identity = identityFromClaims(roles, claims)
  t.equal(identity.name, 'carol')
  t.same(identity.groups, ['eng', 'offline_access', 'uma_authorization'])
  const mapper = provider({ issuer: 'https://sso.example.com/realms/corp', groupsClaim: 'groups', groupMap: { '/staff/eng': 'eng' } })
  t.same(identityFromClaims(mapper, claims).groups, ['eng'], 'a group mapper sends full paths: groupMap names them')
})

t.test('Google Workspace: hd must match, groups only from groupMap by email', async (t) => {
  const google = provider({ issuer: 'https://accounts.google.com', allowedDomains: ['example.com'], groupMap: { 'dana@example.com': ['eng', 'sre'] } })
  const claims = { iss: 'https://accounts.google.com', sub: '110169484474386276334', email: 'Dana@example.com', email_verified: true, hd: 'example.com', name: 'Dana' }
  const identity = identityFromClaims(google, claims)
  t.equal(identity.name, 'Dana@example.com', 'no preferred_username at Google: the email')
  t.same(identity.groups, ['eng', 'sre'], 'groupMap keyed by the (lower-cased) email')
  t.equal(admissionRefusal(google, identity, claims), undefined)
  const personal = { ...claims, hd: undefined, email: 'dana@gmail.com' }
  t.match(admissionRefusal(google, identityFromClaims(google, personal), personal), /email domain/)
  const otherWorkspace = { ...claims, hd: 'other.com' }
  t.match(admissionRefusal(google, identityFromClaims(google, otherWorkspace), otherWorkspace), /email domain/, 'an alias in the domain from another Workspace is refused by hd')
})

t.test('any OIDC provider: roles claim and a custom username claim', async (t) => {
  const any = provider({ issuer: 'https://idp.example.com', groupsClaim: 'roles', usernameClaim: 'upn' })
  const identity = identityFromClaims(any, { sub: 's-1', upn: 'erin@example.com', roles: 'admin reader' })
  t.equal(identity.name, 'erin@example.com')
  t.same(identity.groups, ['admin', 'reader'], 'a space-separated string is split')
})

t.test('Google: a refresh token is asked for with access_type=offline and prompt=consent; other issuers get no extra parameters', async (t) => {
  t.same(offlineParameters('https://accounts.google.com'), { access_type: 'offline', prompt: 'consent' })
  t.same(offlineParameters('https://login.microsoftonline.com/tenant/v2.0'), {})
  t.same(offlineParameters('https://accounts.google.com.evil.example'), {}, 'the issuer is compared exactly')
})
