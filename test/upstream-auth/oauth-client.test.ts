import t from 'tap'
import { chooseClientIdentity, clientMetadataDocument, linkCallbackPath, metadataDiscoveryUrls, requirePkceS256 } from '../../src/upstream-auth/oauth-client.js'
import { protectedResourceMetadataUrls, scopesToRequest } from '../../src/upstream-auth/discovery.js'

t.test('client identity: configured, else a metadata document (https publicUrl only), else registration', async (t) => {
  const both = { client_id_metadata_document_supported: true, registration_endpoint: 'https://as.example/register' }
  t.equal(chooseClientIdentity('pre-registered', both, 'https://gw.example'), 'configured')
  t.equal(chooseClientIdentity(undefined, both, 'https://gw.example'), 'metadata-document')
  t.equal(chooseClientIdentity(undefined, both, 'http://127.0.0.1:8080'), 'registration', 'a CIMD client_id must be an https URL')
  t.equal(chooseClientIdentity(undefined, { client_id_metadata_document_supported: 'yes', registration_endpoint: 'https://as.example/register' }, 'https://gw.example'), 'registration', 'only a literal true announces CIMD')
  t.throws(() => chooseClientIdentity(undefined, {}, 'https://gw.example'), /set upstreamAuth\.clientId/)
  t.throws(() => chooseClientIdentity(undefined, { client_id_metadata_document_supported: true }, 'http://127.0.0.1:1'), /set upstreamAuth\.clientId/)
})

t.test('the client metadata document names itself and the link callback', async (t) => {
  const doc = clientMetadataDocument('https://gw.example', 'linear')
  t.match(doc, {
    client_id: 'https://gw.example/oauth/client-metadata/linear.json',
    redirect_uris: ['https://gw.example/account/links/linear/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'none',
    application_type: 'web',
  })
  t.equal(linkCallbackPath('linear'), '/account/links/linear/callback')
  t.equal(clientMetadataDocument('http://127.0.0.1:1', 'x').application_type, 'native', 'an http (loopback) redirect is a native client\'s')
})

t.test('RFC 9728 3.1 well-known URIs: path-aware first, then the root', async (t) => {
  t.same(protectedResourceMetadataUrls('https://mcp.example.com/public/mcp'), [
    'https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp',
    'https://mcp.example.com/.well-known/oauth-protected-resource',
  ])
  t.same(protectedResourceMetadataUrls('https://mcp.example.com/mcp/'), [
    'https://mcp.example.com/.well-known/oauth-protected-resource/mcp',
    'https://mcp.example.com/.well-known/oauth-protected-resource',
  ], 'a terminating slash is removed')
  t.same(protectedResourceMetadataUrls('https://mcp.example.com'), ['https://mcp.example.com/.well-known/oauth-protected-resource'])
  t.same(protectedResourceMetadataUrls('https://mcp.example.com:8443/'), ['https://mcp.example.com:8443/.well-known/oauth-protected-resource'])
})

t.test('scopes: configured, else the challenge\'s, else scopes_supported (MCP "Scope Selection Strategy")', async (t) => {
  t.same(scopesToRequest(['read'], { challengeScope: 'a b', scopesSupported: ['c'] }), ['read'])
  t.same(scopesToRequest([], { challengeScope: 'a  b', scopesSupported: ['c'] }), ['a', 'b'])
  t.same(scopesToRequest([], { scopesSupported: ['c', 'd'] }), ['c', 'd'])
  t.same(scopesToRequest([], { scopesSupported: [] }), [])
})

t.test('PKCE S256 must be announced, else the authorization server is refused (MCP "Authorization Code Protection")', async (t) => {
  t.doesNotThrow(() => requirePkceS256({ code_challenge_methods_supported: ['plain', 'S256'] }))
  t.throws(() => requirePkceS256({}), { name: 'DiscoveryError', message: /PKCE S256/ }, 'no code_challenge_methods_supported')
  t.throws(() => requirePkceS256({ code_challenge_methods_supported: ['plain'] }), { name: 'DiscoveryError' }, 'plain only')
  t.throws(() => requirePkceS256({ code_challenge_methods_supported: 'S256' }), { name: 'DiscoveryError' }, 'not a list')
})

t.test('metadata discovery order (MCP "Authorization Server Metadata Discovery")', async (t) => {
  t.same(metadataDiscoveryUrls(new URL('https://as.example')), [{ algorithm: 'oauth2' }, { algorithm: 'oidc' }], 'no path: RFC 8414, then OIDC')
  t.same(metadataDiscoveryUrls(new URL('https://as.example/tenant1')), [
    { algorithm: 'oauth2' },
    { url: 'https://as.example/.well-known/openid-configuration/tenant1', algorithm: 'oidc' },
    { algorithm: 'oidc' },
  ], 'a path: RFC 8414 path insertion, OIDC path insertion, OIDC path appended')
  t.same(metadataDiscoveryUrls(new URL('https://as.example/a/b/'))[1], { url: 'https://as.example/.well-known/openid-configuration/a/b', algorithm: 'oidc' }, 'a trailing slash is not doubled')
})
