// README "Configuration reference": `${VAR}` anywhere in a value reads the environment. The
// environment holds strings: a whole number (`port: ${PORT}`) was read as one, but a boolean
// (`auth.enabled: ${AUTH_ENABLED}`) or a ratio (`sampleRatio: ${TRACE_RATIO}`) was refused
// ("expected a number from 0 to 1" for 0.25), so a value could not come from a Secret or ConfigMap.
import t from 'tap'
import { parseConfig } from '../../src/config/load.js'
import { configError } from '../config-helpers.js'

const YAML = `telemetry:
  otlp:
    endpoint: http://127.0.0.1:4318
    sampleRatio: \${TRACE_RATIO}
audit:
  includeArguments: \${AUDIT_ARGS}
metrics:
  enabled: \${METRICS_ON}
trustProxy: \${TRUST_PROXY}
servers:
  - name: a
    transport: http
    url: http://127.0.0.1:9/mcp
    http2: \${HTTP2}
`

t.test('booleans and a ratio read from the environment are the values they spell', async (t) => {
  const config = parseConfig(YAML, 'gw.yaml', { TRACE_RATIO: '0.25', AUDIT_ARGS: 'true', METRICS_ON: 'false', TRUST_PROXY: 'true', HTTP2: 'true' })
  t.equal(config.telemetry.otlp?.sampleRatio, 0.25)
  t.equal(config.audit.includeArguments, true)
  t.equal(config.metrics.enabled, false)
  t.equal(config.trustProxy, true)
  t.match(config.servers[0], { http2: true })
})

t.test('anything else is still refused with the key and what was expected', async (t) => {
  const err = configError(YAML, { TRACE_RATIO: '1.5', AUDIT_ARGS: 'yes', METRICS_ON: 'false', TRUST_PROXY: 'true', HTTP2: 'true' })
  t.match(err.message, /telemetry\.otlp\.sampleRatio: expected a number from 0 to 1/)
  t.match(err.message, /audit\.includeArguments: expected boolean/)
  t.equal(err.issues.length, 2)
  t.equal(parseConfig('servers:\n  - { name: a, transport: http, url: "http://127.0.0.1:9/mcp" }\n', 'gw.yaml', {}).telemetry.otlp, undefined)
})
