// servers[].upstreamAuth type tokenExchange (issue 14 section 3): what `portcullis check`
// accepts, shows (secret masked) and refuses — a user's IdP token must only ever go to the
// token endpoint of the one oidc provider it came from.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { describeConfig } from '../../src/config/describe.js'
import { configErrorMessage } from '../config-helpers.js'

const CORP = '    - { name: corp, type: oidc, issuer: https://login.corp.example, clientId: gw, clientSecret: idp-secret }\n'
const OTHER = '    - { name: other, type: oidc, issuer: https://sso.other.example, clientId: gw, clientSecret: other-secret }\n'
const GITHUB = '    - { name: gh, type: github, clientId: gh-app, clientSecret: gh-secret }\n'

function yaml (providers: string, exchange: string): string {
  return `publicUrl: https://gw.example.com
auth:
  identityProviders:
${providers}servers:
  - name: docs
    transport: http
    url: https://docs.internal.example/mcp
    upstreamAuth: { type: tokenExchange, tokenEndpoint: https://login.corp.example/token, audience: https://docs.internal.example, clientId: gw, ${exchange} }
`
}

t.test('accepted with one oidc provider; check shows it with the secret masked', async (t) => {
  const config = parseConfig(yaml(CORP + GITHUB, 'clientSecret: exchange-secret-123, scopes: [docs.read]'), 'gw.yaml', {})
  t.match(config.servers[0], { upstreamAuth: { type: 'tokenExchange', audience: 'https://docs.internal.example', scopes: ['docs.read'], clientId: 'gw' } })
  const described = describeConfig(config)
  t.match(described, /upstreamAuth: token exchange \(RFC 8693\) of corp tokens at https:\/\/login\.corp\.example\/token for audience https:\/\/docs\.internal\.example, scopes docs\.read, client gw \(secret \*+\)/)
  t.notMatch(described, /exchange-secret-123/, 'the client secret is masked')
  t.equal(configErrorMessage(yaml(CORP + OTHER, 'identityProvider: other')), 'no error', 'several providers: one named')
})

t.test('refused: no oidc provider, several unnamed, a name that is not an oidc provider, plain http off loopback', async (t) => {
  t.match(configErrorMessage(yaml(GITHUB, 'scopes: []')), /servers\[0\]\.upstreamAuth\.identityProvider: tokenExchange exchanges the user's identity-provider token: configure an oidc provider under auth\.identityProviders/)
  t.match(configErrorMessage(yaml(CORP + OTHER, 'scopes: []')), /servers\[0\]\.upstreamAuth\.identityProvider: several oidc identity providers are configured: name the one whose tokens are exchanged \(one of: corp, other\)/)
  t.match(configErrorMessage(yaml(CORP + GITHUB, 'identityProvider: gh')), /servers\[0\]\.upstreamAuth\.identityProvider: expected the name of an oidc provider under auth\.identityProviders \(one of: corp\), got "gh"/)
  t.match(configErrorMessage(yaml(CORP, 'scopes: []').replace('https://login.corp.example/token', 'http://login.corp.example/token')),
    /servers\[0\]\.upstreamAuth\.tokenEndpoint: must be https \(http only on loopback, for local identity providers and tests\), got http:\/\/login\.corp\.example\/token/)
  t.match(configErrorMessage(yaml(CORP, 'subjectToken: id_token')), /servers\[0\]\.upstreamAuth.*unknown key "subjectToken"/)
})
