import t from 'tap'
import { inspectBody } from '../../src/mcp/jsonrpc.js'
import { declaresUrlElicitation } from '../../src/mcp/capabilities.js'

const init = (capabilities: unknown): Buffer => Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities, clientInfo: { name: 'c', version: '1' } } }))

t.test('URL-mode elicitation is declared by capabilities.elicitation.url (MCP 2025-11-25 client/elicitation)', async (t) => {
  t.equal(declaresUrlElicitation(inspectBody(init({ elicitation: { url: {} } }))), true)
  t.equal(declaresUrlElicitation(inspectBody(init({ elicitation: { form: {}, url: {} } }))), true)
  t.equal(declaresUrlElicitation(inspectBody(init({ elicitation: {} }))), false, 'elicitation alone means form mode only')
  t.equal(declaresUrlElicitation(inspectBody(init({ elicitation: { form: {} } }))), false)
  t.equal(declaresUrlElicitation(inspectBody(init({ elicitation: { url: true } }))), false, 'not an object')
  t.equal(declaresUrlElicitation(inspectBody(init({}))), false)
  t.equal(declaresUrlElicitation(inspectBody(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: { capabilities: { elicitation: { url: {} } } } })))), false, 'only initialize declares')
  t.equal(declaresUrlElicitation(undefined), false, 'a GET has no body')
})
