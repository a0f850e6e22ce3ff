// virtualServers[] (README "Virtual servers"): what the loader takes, and what it refuses with the reason.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { describeConfig } from '../../src/config/describe.js'
import { configErrorMessage } from '../config-helpers.js'

const SERVERS = 'servers:\n  - {name: github, transport: http, url: "http://127.0.0.1:9/mcp"}\n  - {name: memory, transport: http, url: "http://127.0.0.1:9/mcp"}\n'
const withVirtual = (entry: string): string => `${SERVERS}virtualServers:\n  - ${entry}\n`

t.test('a virtual server gets its defaults', async (t) => {
  const config = parseConfig(withVirtual('{name: work, members: [github, memory]}'), 'gw.yaml', {})
  const work = config.virtualServers[0]
  t.equal(work?.prefix, 'auto')
  t.equal(work?.separator, '__')
  t.same(work?.tools, { deny: [] })
  t.equal(work?.toolSearch, undefined)
  t.same(parseConfig(SERVERS, 'gw.yaml', {}).virtualServers, [], 'none by default')
  const full = parseConfig(withVirtual('{name: work, members: [memory], prefix: always, separator: ".", tools: {allow: ["memory.*"], deny: ["memory.delete_*"]}, toolSearch: {above: 40}}'), 'gw.yaml', {}).virtualServers[0]
  t.same(full?.toolSearch, { above: 40 })
  t.same(full?.tools, { allow: ['memory.*'], deny: ['memory.delete_*'] })
  t.match(describeConfig(parseConfig(withVirtual('{name: work, members: [memory], prefix: always, separator: ".", tools: {deny: ["memory.delete_*"]}, toolSearch: {above: 40}}'), 'gw.yaml', {})),
    /virtual servers:\n {2}- work: http:\/\/127\.0\.0\.1:8080\/work\/mcp\n {6}members: memory; prefix always, separator "\."\n {6}tools: deny memory\.delete_\*\n {6}toolSearch: search_tools and call_tool above 40 tools/, 'portcullis check describes it')
  t.equal(parseConfig(withVirtual('{name: work, members: [memory]}'), 'gw.yaml', {}).auth.enabled, true, 'auth stays as configured (on by default); a virtual server needs nothing of it')
  t.doesNotThrow(() => parseConfig(`auth: {enabled: false}\n${withVirtual('{name: work, members: [memory]}')}`, 'gw.yaml', {}), 'with auth off too: every caller is anonymous, on the members as well')
})

t.test('what a virtual server cannot be is refused at load, with the reason', async (t) => {
  t.match(configErrorMessage(withVirtual('{name: work, members: [github, search]}')), /virtualServers\[0\]\.members\[1\]: unknown server "search": expected the name of a server under servers \(one of: github, memory\)/)
  t.match(configErrorMessage(withVirtual('{name: work, members: []}')), /virtualServers\[0\]\.members: expected at least one member server/)
  t.match(configErrorMessage(withVirtual('{name: work}')), /virtualServers\[0\]\.members/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github, github]}')), /virtualServers\[0\]\.members\[1\]: "github" is listed twice/)
  t.match(configErrorMessage(withVirtual('{name: github, members: [memory]}')), /virtualServers\[0\]\.name: "github" is already a server's name \(both would be \/github\/mcp\)/)
  t.match(configErrorMessage(`${SERVERS}virtualServers:\n  - {name: work, members: [github]}\n  - {name: work, members: [memory]}\n`), /virtualServers\[1\]\.name: duplicate virtual server name "work" \(also virtualServers\[0\]\)/)
  t.match(configErrorMessage(withVirtual('{name: admin, members: [github]}')), /virtualServers\[0\]\.name: "admin" is reserved for the gateway's own routes/)
  t.match(configErrorMessage(withVirtual('{name: oauth, members: [github]}')), /virtualServers\[0\]\.name: "oauth" is reserved/)
  t.match(configErrorMessage(withVirtual('{name: "Work Tools", members: [github]}')), /virtualServers\[0\]\.name: expected 1-63 lowercase letters/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], separator: "/"}')), /virtualServers\[0\]\.separator: expected 1-8 characters of A-Z, a-z, 0-9, "_", "\." or "-"/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], separator: "_________"}')), /virtualServers\[0\]\.separator: expected 1-8 characters/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], separator: ""}')), /virtualServers\[0\]\.separator/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], prefix: sometimes}')), /virtualServers\[0\]\.prefix/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], tools: {github__push: {scopes: [repo]}}}')), /virtualServers\[0\]\.tools\.github__push: a virtual server takes only allow and deny lists of \(merged\) tool names; put rules with scopes or limits on the member server/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], toolSearch: {above: -1}}')), /virtualServers\[0\]\.toolSearch\.above: expected 0 or more tools/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], toolSearch: {}}')), /virtualServers\[0\]\.toolSearch\.above/)
  t.match(configErrorMessage(withVirtual('{name: work, members: [github], extra: 1}')), /virtualServers\[0\]/)
})
