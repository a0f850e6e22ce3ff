// log.requests: a request URL's credential query parameters are masked (README "Operations":
// "credential query parameters are masked in URLs"). Clients that cannot set headers put a key
// in the query under many spellings: apiKey, api_key, accessToken, key.
import t from 'tap'
import { postJson, startGateway, startUpstream } from '../helpers.js'
import { redactUrl } from '../../src/observability/logger.js'

const SECRET = 'query-secret-7d41b0c2'

t.test('API keys and camelCase tokens in a request URL never reach the request log', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, {
    log: { level: 'info', requests: true, format: 'json' },
    servers: [{ name: 'fx', transport: 'http', url: upstream.url }],
  })
  for (const name of ['apiKey', 'api_key', 'api-key', 'key', 'accessToken', 'subject_token', 'client_assertion']) {
    await postJson(`${gw.mcpUrl('fx')}?${name}=${SECRET}&page=2`, { jsonrpc: '2.0', id: 1, method: 'tools/list' })
  }
  t.match(gw.logs.text(), /"msg":"request completed"/, 'request logging was on')
  t.match(gw.logs.text(), /page=2/, 'other parameters stay readable')
  t.notMatch(gw.logs.text(), SECRET)
})

t.test('redactUrl: the parameter name is matched whatever its case and separators', async (t) => {
  t.equal(redactUrl('/a?ApiKey=x&q=1'), '/a?ApiKey=%5Bredacted%5D&q=1')
  t.equal(redactUrl('/a?id_token_hint=x'), '/a?id_token_hint=%5Bredacted%5D')
  t.equal(redactUrl('/a?keyword=x'), '/a?keyword=x', 'a name that only starts like one is kept')
})
