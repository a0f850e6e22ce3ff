#!/usr/bin/env node
/**
 * The portcullis command: load config -> build app -> listen, with graceful
 * shutdown; plus `check` to validate a config without starting anything.
 */
// First: before the process allocates much (see heap-tuning.ts).
import './heap-tuning.js'
import { parseArgs } from 'node:util'
import type { Config } from './config/schema.js'
import type { createLogger } from './observability/logger.js'
import { VERSION } from './version.js'
import { hashPassword } from './auth-server/password.js'
import type { FirstRunAccount } from './auth-server/users.js'
import { COMMAND_USAGE, USAGE } from './cli/usage.js'
import { LOOPBACK_HOSTS } from './net/loopback.js'
// Everything that reads a configuration (the schema, the logger, the server) is imported by the
// commands that need it: --help, --version, hash-password and a usage error answer without it
// (0.15 s instead of 0.5 s: the configuration schema alone takes 0.3 s to load).

const MIN_PASSWORD_CHARS = 8

const EXIT_OK = 0
const EXIT_CONFIG = 1
const EXIT_USAGE = 2
/**
 * After a shutdown that ended everything of the gateway's, the process ends on its own once
 * nothing is left to do; what a library still runs in the background then (the OTLP exporter
 * retrying its last export to a collector that is down, up to its 10 s budget) gets at most this
 * long before the process exits anyway.
 */
const EXIT_GRACE_MS = 1000

/** Commands that read the config (hash-password does not). */
const KNOWN_COMMANDS: ReadonlySet<string> = new Set(['start', 'check', 'doctor', 'migrate-store', 'tools', 'keys', 'admin'])

/** The command's own help; the global help for no command or one we do not know. */
async function commandUsage (command: string | undefined): Promise<string> {
  if (command === 'admin') return (await import('./admin/admin-command.js')).ADMIN_USAGE
  return (command === undefined ? undefined : COMMAND_USAGE[command]) ?? USAGE
}

async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        to: { type: 'string' },
        prefix: { type: 'string' },
        tool: { type: 'string', multiple: true },
        by: { type: 'string' },
        user: { type: 'string' },
        servers: { type: 'string' },
        scopes: { type: 'string' },
        expires: { type: 'string' },
        name: { type: 'string' },
        url: { type: 'string' },
        token: { type: 'string' },
        server: { type: 'string' },
        watch: { type: 'boolean' },
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
  if (command === 'help' || values.help === true) {
    const topic = command === 'help' ? positionals[1] : command
    process.stdout.write(await commandUsage(topic))
    return EXIT_OK
  }
  if (command === undefined) {
    process.stderr.write(`portcullis: a command is required\n\n${USAGE}`)
    return EXIT_USAGE
  }
  if (command === 'hash-password') return hashPasswordCommand()
  if (!KNOWN_COMMANDS.has(command)) {
    process.stderr.write(`portcullis: unknown command "${command}"\n\n${USAGE}`)
    return EXIT_USAGE
  }
  const { ConfigError, loadConfigFile, readConfigFile, resolveConfigPath } = await import('./config/load.js')

  if (command === 'admin') {
    // A client of the running gateway's API: the config is read only for publicUrl, and only without --url.
    let url = values.url
    if (url === undefined) {
      try {
        url = loadConfigFile(resolveConfigPath(values.config)).publicUrl
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err
      }
    }
    const { adminCommand } = await import('./admin/admin-command.js')
    return adminCommand({ action: positionals[1], args: positionals.slice(2), url, token: values.token ?? process.env.PORTCULLIS_ADMIN_TOKEN, user: values.user, server: values.server })
  }

  let config: Config
  let fileSha256: string
  try {
    ({ config, sha256: fileSha256 } = readConfigFile(resolveConfigPath(values.config)))
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`portcullis: invalid configuration\n${err.message}\n`)
      return EXIT_CONFIG
    }
    throw err
  }

  if (command === 'check' || command === 'start') {
    // A stdio command the child could not exec fails here, naming it and the PATH searched.
    const { stdioCommandProblems } = await import('./upstreams/stdio/resolve-command.js')
    const problems = stdioCommandProblems(config)
    if (problems.length > 0) {
      process.stderr.write(`portcullis: invalid configuration\n${problems.map((p) => `${config.source}: ${p}`).join('\n')}\n`)
      return EXIT_CONFIG
    }
  }
  if (command === 'check') {
    const [{ describeConfig }, { configWarnings }] = await Promise.all([import('./config/describe.js'), import('./config/warnings.js')])
    process.stdout.write(describeConfig(config))
    for (const warning of configWarnings(config)) process.stderr.write(`portcullis: warning: ${warning.message}\n`)
    return EXIT_OK
  }
  if (command === 'migrate-store') {
    if (values.to === undefined) {
      process.stderr.write(`portcullis: migrate-store needs --to <store> (redis://… or a .db file)\n\n${COMMAND_USAGE['migrate-store'] ?? USAGE}`)
      return EXIT_USAGE
    }
    const { migrateStoreCommand } = await import('./store/migrate-command.js')
    return migrateStoreCommand(config, values.to, values.prefix)
  }
  if (command === 'tools') {
    const { toolsCommand } = await import('./guardrails/tools-command.js')
    return toolsCommand(config, { action: positionals[1], server: positionals[2], tools: values.tool, by: values.by })
  }
  if (command === 'doctor') {
    const { doctorCommand } = await import('./doctor/doctor-command.js')
    return doctorCommand(config, values.url)
  }
  if (command === 'keys') {
    const { keysCommand } = await import('./account/keys-command.js')
    return keysCommand(config, { action: positionals[1], keyId: positionals[2], user: values.user, servers: values.servers, scopes: values.scopes, expires: values.expires, name: values.name })
  }
  return start(config, fileSha256, values.watch === true)
}

/** `fileSha256`: the digest of the text `config` was read from (a reload compares it with the file now). */
async function start (config: Config, fileSha256: string, isWatching: boolean): Promise<number> {
  const [{ createLogger, resolveLogFormat }, { startBanner }, { configWarnings }, { watchConfigFile }] = await Promise.all([
    import('./observability/logger.js'),
    import('./observability/start-banner.js'),
    import('./config/warnings.js'),
    import('./reload/watch.js'),
  ])
  const format = resolveLogFormat(config.log.format, process.stdout.isTTY === true)
  const log = createLogger(config.log.level, undefined, format)
  // README "Reloading": SIGHUP re-reads the file. Node's default for SIGHUP ends the process, so the
  // handler comes first; a SIGHUP before the gateway is ready is honoured (once) when it is.
  const hangup: { isPending: boolean, reload?: () => void } = { isPending: false }
  process.on('SIGHUP', () => {
    if (hangup.reload === undefined) hangup.isPending = true
    else hangup.reload()
  })
  // Loaded here, not at the top: `check` and `hash-password` need none of the server.
  const { Gateway } = await import('./reload/gateway.js')
  const { lockStoreDir } = await import('./store/create-store.js')
  let lock: ReturnType<typeof lockStoreDir>
  try {
    lock = lockStoreDir(config)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    log.fatal({ err: { message: (err as Error).message, code } }, 'cannot start')
    process.stderr.write(`portcullis: ${(err as Error).message}\n`)
    return EXIT_CONFIG
  }
  let gateway: Awaited<ReturnType<typeof Gateway.create>>
  try {
    gateway = await Gateway.create(config, log, fileSha256)
  } catch (err) {
    lock?.release()
    const code = (err as NodeJS.ErrnoException).code
    log.fatal({ err: { message: (err as Error).message, code } }, code === 'PORTCULLIS_ERR_CONFIG' ? 'invalid configuration' : 'cannot start')
    return EXIT_CONFIG
  }
  warnAboutDevSettings(config, log)
  for (const { server, field, users } of configWarnings(config)) {
    log.warn({ server, field, users }, 'stdio server uses a per-user value some users lack; their requests will be refused')
  }
  const app = gateway.app
  announceFirstRun(app.portcullis.firstRun, log)
  const metricsListen = config.metrics.listen
  let listening = config.listen
  try {
    await gateway.listen()
    if (app.portcullis.metricsServer !== undefined && metricsListen !== undefined) {
      listening = metricsListen
      await app.portcullis.metricsServer.listen({ host: metricsListen.host, port: metricsListen.port })
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    log.fatal({ host: listening.host, port: listening.port, code }, code === 'EADDRINUSE' ? 'listen address already in use' : 'cannot listen')
    await gateway.close()
    lock?.release()
    return EXIT_CONFIG
  }
  log.info({ publicUrl: config.publicUrl, servers: config.servers.map((s) => `${config.publicUrl}/${s.name}/mcp`), ...(config.auth.enabled ? { account: `${config.publicUrl}/account` } : {}), config: config.source }, 'portcullis ready')
  // For a person reading the terminal; a log shipper has the same URLs in the line above.
  if (format === 'pretty') process.stdout.write(startBanner(config, app.portcullis.firstRun))

  let signals = 0
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting now')
      process.exit(EXIT_CONFIG)
    }
    log.info({ signal, timeoutMs: gateway.shutdownTimeoutMs }, 'shutting down')
    stopWatching?.()
    gateway.close().then((isComplete) => {
      lock?.release()
      // Not "cleanly" while a configuration left behind at the deadline still stops its stdio processes.
      log.info(isComplete ? 'shut down cleanly' : 'shut down; a configuration left behind at the deadline is still closing')
      log.flush()
      process.exitCode = EXIT_OK
      // The process ends when nothing is left to do. When close() ended everything of the
      // gateway's, that is at most EXIT_GRACE_MS from now (the timer holds nothing open itself):
      // with a collector that is down, the OTLP exporter would otherwise keep it alive for its
      // retries (README "Tracing"). Not when a reload or a retired build was left finishing:
      // exiting would cut the stopping of its stdio children (pino writes what it holds at exit).
      if (isComplete) setTimeout(() => process.exit(EXIT_OK), EXIT_GRACE_MS).unref()
    }, (err: unknown) => {
      log.error({ err }, 'shutdown failed')
      process.exit(EXIT_CONFIG)
    })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  // SIGHUP and --watch re-read the file; the gateway logs each outcome.
  const reload = (cause: 'signal' | 'watch') => (): void => {
    gateway.reload(cause).catch((err: Error) => log.error({ err: { message: err.message } }, 'configuration reload failed'))
  }
  hangup.reload = reload('signal')
  if (hangup.isPending) hangup.reload()
  const stopWatching = isWatching ? watchConfigFile(config.source, reload('watch'), (err) => log.error({ err: { message: err.message } }, 'cannot watch the configuration file')) : undefined
  // An edit while the gateway was starting happened before the watch began.
  if (isWatching) gateway.reloadIfChanged().catch((err: Error) => log.error({ err: { message: err.message } }, 'configuration reload failed'))
  return EXIT_OK
}

/** Loud boot warnings for settings that are fine on a laptop and wrong in production. */
function warnAboutDevSettings (config: Config, log: ReturnType<typeof createLogger>): void {
  const url = new URL(config.publicUrl)
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
    log.warn({ publicUrl: config.publicUrl }, 'INSECURE: publicUrl is plain http on a non-loopback host (allowInsecurePublicUrl): put TLS (nginx) in front and use https')
  }
  if (url.protocol === 'https:' && config.trustProxy === false) {
    log.warn({ publicUrl: config.publicUrl }, 'publicUrl is https but trustProxy is off: behind nginx, set trustProxy (the proxy\'s address) so client addresses, rate limits per address and Secure cookies are right')
  }
  if (config.trustProxy === true && config.listen.host !== '127.0.0.1' && config.listen.host !== 'localhost') {
    log.warn({ listen: config.listen.host }, 'trustProxy: true trusts X-Forwarded-* from anyone who can reach this port; list the proxy addresses instead, or keep the port private')
  }
  if (config.store.redis !== undefined && config.cluster.advertiseUrl === undefined && config.servers.some((s) => s.transport === 'stdio')) {
    log.warn('store.redis without cluster.advertiseUrl: a stdio session is only found on the replica that created it (others answer 404); set cluster.advertiseUrl so replicas forward to each other')
  }
  if (!config.auth.enabled) {
    log.warn('AUTH IS DISABLED (auth.enabled: false): every MCP server is reachable by anyone who can reach this port')
  }
  if ('memory' in config.store) {
    log.warn('in-memory store (store.memory: true): registered clients, sign-ins and tokens are lost on restart')
  }
}

/**
 * The first-run account's password exists in clear only now. It is in an
 * owner-only file in the data directory; on a terminal it is also shown once.
 * It never goes to the log (logs are shipped elsewhere).
 */
function announceFirstRun (firstRun: FirstRunAccount | undefined, log: ReturnType<typeof createLogger>): void {
  if (firstRun === undefined) return
  log.warn({ username: firstRun.username, passwordFile: firstRun.passwordFile }, 'first-run account created: no users are configured (auth.users); its password is in passwordFile')
  if (process.stdout.isTTY) {
    process.stdout.write(`\n  Portcullis created a first-run account (no auth.users are configured).\n    username: ${firstRun.username}\n    password: ${firstRun.password}\n  It is also in ${firstRun.passwordFile} (readable by you only). Shown once.\n\n`)
  }
}

/** Reads a password without echo from a terminal (twice, to confirm), or all of stdin when piped. */
async function hashPasswordCommand (): Promise<number> {
  let password: string
  if (process.stdin.isTTY) {
    password = await promptHidden('Password: ')
    const again = await promptHidden('Again:    ')
    if (password !== again) {
      process.stderr.write('portcullis: the passwords differ\n')
      return EXIT_USAGE
    }
  } else {
    const chunks: Buffer[] = []
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
    password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
  }
  if (password.length < MIN_PASSWORD_CHARS) {
    process.stderr.write(`portcullis: use at least ${MIN_PASSWORD_CHARS} characters\n`)
    return EXIT_USAGE
  }
  process.stdout.write(`${await hashPassword(password)}\n`)
  return EXIT_OK
}

function promptHidden (question: string): Promise<string> {
  return new Promise((resolve) => {
    process.stderr.write(question)
    const stdin = process.stdin
    stdin.setRawMode(true)
    stdin.resume()
    let value = ''
    const onData = (buf: Buffer): void => {
      for (const ch of buf.toString('utf8')) {
        if (ch === '\r' || ch === '\n') {
          stdin.setRawMode(false)
          stdin.pause()
          stdin.off('data', onData)
          process.stderr.write('\n')
          resolve(value)
          return
        }
        if (ch === '\u0003') process.exit(130)
        if (ch === '\u007f') value = value.slice(0, -1)
        else value += ch
      }
    }
    stdin.on('data', onData)
  })
}

main(process.argv.slice(2)).then((code) => {
  if (code !== EXIT_OK) process.exitCode = code
}, (err: unknown) => {
  process.stderr.write(`portcullis: unexpected failure: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = EXIT_CONFIG
})
