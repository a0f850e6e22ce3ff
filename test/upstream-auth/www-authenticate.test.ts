import t from 'tap'
import { parseBearerChallenge } from '../../src/upstream-auth/www-authenticate.js'

t.test('reads resource_metadata, scope and error from a Bearer challenge (RFC 6750 3, RFC 9728 5.1)', async (t) => {
  t.same(parseBearerChallenge('Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="read write"'), {
    resourceMetadata: 'https://mcp.example.com/.well-known/oauth-protected-resource/mcp',
    scope: 'read write',
  })
  t.same(parseBearerChallenge('Bearer error="invalid_token", error_description="expired"'), { error: 'invalid_token' })
  t.same(parseBearerChallenge('bearer Scope=files'), { scope: 'files' }, 'scheme and parameter names are case-insensitive')
  t.same(parseBearerChallenge('Bearer realm="a \\"quoted\\" realm", scope="x"'), { scope: 'x' }, 'quoted-pairs inside a value')
})

t.test('finds the Bearer challenge among several', async (t) => {
  t.same(parseBearerChallenge('Basic realm="old", Bearer resource_metadata="https://a.example/m"'), { resourceMetadata: 'https://a.example/m' })
  t.same(parseBearerChallenge('Negotiate abc123==, Bearer scope="s"'), { scope: 's' }, 'after a token68 challenge')
  t.same(parseBearerChallenge('DPoP algs="ES256", Bearer scope="s"'), { scope: 's' })
})

t.test('nothing usable: no parameters (discovery falls back to the well-known URIs)', async (t) => {
  t.same(parseBearerChallenge(undefined), {})
  t.same(parseBearerChallenge(''), {})
  t.same(parseBearerChallenge('Basic realm="only basic"'), {})
  t.same(parseBearerChallenge('Bearer'), {})
  t.same(parseBearerChallenge('Bearer resource_metadata=""'), {}, 'an empty value is no value')
  t.same(parseBearerChallenge('Bearer resource_metadata="unterminated'), {}, 'unparseable')
})

t.test('a repeated parameter: the first wins', async (t) => {
  t.same(parseBearerChallenge('Bearer scope="first", scope="second"'), { scope: 'first' })
})
