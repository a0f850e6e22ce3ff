#!/usr/bin/env node
/**
 * The portcullis command: load config -> build app -> listen, with graceful
 * shutdown; plus `check` to validate a config without starting anything.
 */
import { mkdirSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { buildApp, closeGracefully } from './app.js'
import { ConfigError, loadConfigFile, resolveConfigPath } from './config/load.js'
import type { Config } from './config/schema.js'
import { describeConfig } from './config/describe.js'
import { createLogger } from './observability/logger.js'
import { VERSION } from './version.js'

const USAGE = `Usage: portcullis <command> [options]

An OAuth 2.1 gateway for MCP servers.

Commands:
  start    Start the gateway
  check    Validate the config; print the resolved servers and routes (secrets masked)

Options:
  -c, --config <file>  Config file (default: ./portcullis.yaml, then config/portcullis.example.yaml)
  -h, --help           Show this help
  -v, --version        Print the version

Environment:
  \${VAR} in the config reads the environment; a missing variable is an error.

Docs: README.md (configuration reference, deployment, troubleshooting).
`

const EXIT_OK = 0
const EXIT_CONFIG = 1
const EXIT_USAGE = 2

async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    })
  } catch (err) {
    process.stderr.write(`portcullis: ${(err as Error).message}\n\n${USAGE}`)
    return EXIT_USAGE
  }
  const { values, positionals } = parsed
  if (values.version === true) {
    process.stdout.write(`${VERSION}\n`)
    return EXIT_OK
  }
  const command = positionals[0]
  if (values.help === true || command === 'help') {
    process.stdout.write(USAGE)
    return EXIT_OK
  }
  if (command === undefined) {
    process.stderr.write(`portcullis: a command is required\n\n${USAGE}`)
    return EXIT_USAGE
  }
  if (command !== 'start' && command !== 'check') {
    process.stderr.write(`portcullis: unknown command "${command}"\n\n${USAGE}`)
    return EXIT_USAGE
  }

  let config: Config
  try {
    config = loadConfigFile(resolveConfigPath(values.config))
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`portcullis: invalid configuration\n${err.message}\n`)
      return EXIT_CONFIG
    }
    throw err
  }

  if (command === 'check') {
    process.stdout.write(describeConfig(config))
    return EXIT_OK
  }
  return start(config)
}

async function start (config: Config): Promise<number> {
  const log = createLogger(config.log.level)
  try {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    log.fatal({ dataDir: config.dataDir, code: (err as NodeJS.ErrnoException).code }, 'cannot create the data directory')
    return EXIT_CONFIG
  }
  const app = await buildApp(config, { logger: log })
  warnAboutDevSettings(config, log)
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    log.fatal({ host: config.listen.host, port: config.listen.port, code }, code === 'EADDRINUSE' ? 'listen address already in use' : 'cannot listen')
    await app.close()
    return EXIT_CONFIG
  }
  log.info({ publicUrl: config.publicUrl, servers: config.servers.map((s) => `${config.publicUrl}/${s.name}/mcp`), config: config.source }, 'portcullis ready')

  let signals = 0
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting now')
      process.exit(EXIT_CONFIG)
    }
    log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down')
    closeGracefully(app, config.shutdownTimeoutMs).then(() => {
      log.info('shut down cleanly')
      log.flush()
      process.exitCode = EXIT_OK
    }, (err: unknown) => {
      log.error({ err }, 'shutdown failed')
      process.exit(EXIT_CONFIG)
    })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  return EXIT_OK
}

function warnAboutDevSettings (config: Config, log: ReturnType<typeof createLogger>): void {
  const url = new URL(config.publicUrl)
  const isLoopback = url.hostname === 'localhost' || url.hostname === '127.0.0.1' || url.hostname === '[::1]'
  if (url.protocol === 'http:' && !isLoopback) {
    log.warn({ publicUrl: config.publicUrl }, 'publicUrl is plain http on a non-loopback host: put TLS (nginx) in front and use https')
  }
}

main(process.argv.slice(2)).then((code) => {
  if (code !== EXIT_OK) process.exitCode = code
}, (err: unknown) => {
  process.stderr.write(`portcullis: unexpected failure: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = EXIT_CONFIG
})
