// deploy/: every Kubernetes manifest and the Compose file parse, and the fields that tie them
// together agree — ports, probe paths, the config mount path, labels and selectors, secrets
// the config needs — and each embedded Portcullis config loads through the real loader.
import t from 'tap'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { dirname, basename, join } from 'node:path'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { parseConfig } from '../../src/config/load.js'
import { hashPassword } from '../../src/auth-server/password.js'
import type { Config } from '../../src/config/schema.js'

const DEPLOY = new URL('../../deploy/', import.meta.url).pathname
const DOCKERFILE = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8')
const NGINX_CONF = readFileSync(join(DEPLOY, 'nginx', 'portcullis.conf'), 'utf8')
/** Where the image reads its config (the Dockerfile's CMD). */
const IMAGE_CONFIG_PATH = (JSON.parse(/^CMD (.+)$/m.exec(DOCKERFILE)?.[1] ?? '[]') as string[]).at(-1) ?? ''
const IMAGE_USER_ID = 1000 // the node user of the official Node images
const passwordHash = await hashPassword('manifest-test-password')

/* eslint-disable @typescript-eslint/no-explicit-any -- manifests are untyped YAML; the assertions are the types */
type Doc = Record<string, any>

function loadDir (dir: string): Doc[] {
  return readdirSync(dir).filter((f) => f.endsWith('.yaml')).flatMap((file) => parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`)
    return d.toJS() as Doc
  }))
}

const isSubset = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v)

/** A stand-in for every value the config reads from the environment, as the Secret would supply it. */
function sampleEnv (names: readonly string[]): NodeJS.ProcessEnv {
  return Object.fromEntries(names.map((name) => [name, name.endsWith('PASSWORD_HASH') ? passwordHash : `${name.toLowerCase()}-0123456789abcdef`]))
}

for (const layout of ['standalone', 'sidecar'] as const) {
  t.test(`kubernetes/${layout}: manifests agree with each other, the image and the config`, async (t) => {
    const docs = loadDir(join(DEPLOY, 'kubernetes', layout))
    for (const doc of docs) t.ok(typeof doc.apiVersion === 'string' && typeof doc.kind === 'string' && typeof doc.metadata?.name === 'string', `${String(doc.kind)} ${String(doc.metadata?.name)} has apiVersion, kind and name`)
    const ofKind = (kind: string): Doc[] => docs.filter((d) => d.kind === kind)
    const [deployment] = ofKind('Deployment')
    if (deployment === undefined) throw new Error('no Deployment')
    const pod = deployment.spec.template
    const labels = pod.metadata.labels as Record<string, string>
    t.ok(isSubset(deployment.spec.selector.matchLabels, labels), 'the Deployment selects its own pods')
    for (const kind of ['Service', 'PodDisruptionBudget', 'NetworkPolicy']) {
      for (const doc of ofKind(kind)) {
        const selector = kind === 'Service' ? doc.spec.selector : kind === 'NetworkPolicy' ? doc.spec.podSelector.matchLabels : doc.spec.selector.matchLabels
        t.ok(isSubset(selector, labels), `${kind} ${String(doc.metadata.name)} selects the gateway's pods`)
      }
    }
    t.equal(ofKind('PodDisruptionBudget').length, 1, 'a PodDisruptionBudget')

    const containers = pod.spec.containers as Doc[]
    const gateway = containers.find((c) => String(c.image).includes('portcullis'))
    if (gateway === undefined) throw new Error('no portcullis container')
    for (const c of [...containers, ...(pod.spec.initContainers ?? []) as Doc[]]) {
      t.ok(c.resources?.requests?.cpu !== undefined && c.resources?.requests?.memory !== undefined && c.resources?.limits?.memory !== undefined, `${String(c.name)}: resource requests and a memory limit`)
    }

    // The config file: mounted where the image's CMD reads it, from the ConfigMap key of that name.
    t.same(gateway.args, ['start', '--config', IMAGE_CONFIG_PATH], 'the container reads the config path the image documents')
    const mounts = gateway.volumeMounts as Doc[]
    const configMount = mounts.find((m) => m.mountPath === dirname(IMAGE_CONFIG_PATH))
    const configVolume = (pod.spec.volumes as Doc[]).find((v) => v.name === configMount?.name)
    const configMap = ofKind('ConfigMap').find((c) => c.metadata.name === configVolume?.configMap?.name)
    if (configMap === undefined) throw new Error(`no ConfigMap mounted at ${dirname(IMAGE_CONFIG_PATH)}`)
    const configText = configMap.data[basename(IMAGE_CONFIG_PATH)] as string | undefined
    if (configText === undefined) throw new Error(`ConfigMap ${String(configMap.metadata.name)} has no key ${basename(IMAGE_CONFIG_PATH)}`)

    // Every ${VAR} comes from the Secret the container loads: the real loader fails on any other.
    const secretNames = ((gateway.envFrom ?? []) as Doc[]).map((e) => e.secretRef?.name as string)
    const secrets = ofKind('Secret').filter((s) => secretNames.includes(s.metadata.name as string))
    t.equal(secrets.length, secretNames.length, 'every Secret the container loads is defined here')
    const env = sampleEnv(secrets.flatMap((s) => Object.keys(s.stringData ?? {})))
    let config: Config
    try {
      config = parseConfig(configText, `${layout}/configmap.yaml`, env)
    } catch (err) {
      t.fail(`the ConfigMap's portcullis.yaml does not load: ${(err as Error).message}`)
      return
    }
    t.equal(config.listen.host, '0.0.0.0', 'listens beyond the pod\'s loopback (probes, Service)')
    t.match(config.publicUrl, /^https:\/\//)
    t.not(config.trustProxy, false, 'trusts the ingress controller\'s forwarded headers')

    // Ports and probes.
    const httpPort = (gateway.ports as Doc[]).find((p) => p.name === 'http')
    t.equal(httpPort?.containerPort, config.listen.port, 'the container port is the config\'s listen port')
    t.match(DOCKERFILE, new RegExp(`^EXPOSE ${String(config.listen.port)}$`, 'm'), 'and the port the image exposes')
    t.same([gateway.livenessProbe?.httpGet, gateway.readinessProbe?.httpGet], [{ path: '/healthz', port: 'http' }, { path: '/readyz', port: 'http' }])
    for (const service of ofKind('Service')) {
      t.same(service.spec.ports.map((p: Doc) => p.targetPort), ['http'], `Service ${String(service.metadata.name)} targets the gateway's port only`)
    }
    for (const ingress of ofKind('Ingress')) {
      const backend = ingress.spec.rules[0].http.paths[0].backend.service
      const service = ofKind('Service').find((s) => s.metadata.name === backend.name)
      t.ok(service?.spec.ports.some((p: Doc) => p.name === backend.port.name), 'the Ingress routes to the Service\'s named port')
      t.equal(`https://${String(ingress.spec.tls[0].hosts[0])}`, config.publicUrl, 'the Ingress host is the publicUrl')
    }
    for (const policy of ofKind('NetworkPolicy')) {
      t.same(policy.spec.ingress.flatMap((rule: Doc) => rule.ports.map((p: Doc) => p.port)), ['http'], 'only the gateway\'s port admits traffic')
    }

    // State and a read-only root: dataDir and /tmp are writable volumes; the image's user owns them.
    const dataMount = mounts.find((m) => m.mountPath === config.dataDir)
    t.ok(dataMount !== undefined && dataMount.readOnly !== true, `dataDir ${config.dataDir} is a writable volume`)
    t.ok(mounts.some((m) => m.mountPath === '/tmp'), '/tmp is writable under readOnlyRootFilesystem')
    t.equal(gateway.securityContext?.readOnlyRootFilesystem, true)
    t.equal(pod.spec.securityContext?.runAsUser, IMAGE_USER_ID)
    t.equal(pod.spec.securityContext?.fsGroup, IMAGE_USER_ID, 'volumes writable by the image\'s user')
    t.ok(pod.spec.terminationGracePeriodSeconds * 1000 > config.shutdownTimeoutMs + 5000, 'the grace period outlasts preStop plus the gateway\'s drain')
    if (config.store.redis === undefined) {
      t.equal(deployment.spec.replicas, 1, 'an SQLite store means one replica')
      t.equal(deployment.spec.strategy?.type, 'Recreate', '...and never two pods on its volume')
    }

    if (layout === 'sidecar') {
      // http-on-localhost: the upstream is the neighbouring container's port, on loopback.
      const http = config.servers.find((s) => s.transport === 'http')
      const neighbour = containers.find((c) => c !== gateway)
      t.ok(http !== undefined && neighbour !== undefined)
      if (http?.transport === 'http') {
        const url = new URL(http.url)
        t.equal(url.hostname, '127.0.0.1')
        t.ok((neighbour?.ports as Doc[]).some((p) => p.containerPort === Number(url.port)), 'the upstream URL\'s port is the MCP container\'s')
      }
      // stdio-in-sidecar: the init container installs into the volume the gateway spawns from.
      const stdio = config.servers.find((s) => s.transport === 'stdio')
      const init = (pod.spec.initContainers as Doc[])[0]
      if (stdio?.transport !== 'stdio' || init === undefined) throw new Error('expected a stdio server and an init container')
      const script = stdio.args[0] ?? ''
      const gatewayMount = mounts.find((m) => script.startsWith(`${String(m.mountPath)}/`))
      const initMount = (init.volumeMounts as Doc[]).find((m) => m.name === gatewayMount?.name)
      t.ok(gatewayMount !== undefined && initMount !== undefined, `the stdio server's script (${script}) is on a volume the init container fills`)
      t.ok((init.command as string[]).includes(initMount?.mountPath as string), 'the init container installs into that mount')
      t.equal(gatewayMount?.readOnly, true, 'the gateway only reads it')
    }
  })
}

t.test('docker-compose.yml: gateway, nginx and Redis agree with the image, the nginx config and each other', async (t) => {
  const compose = parseYaml(readFileSync(join(DEPLOY, 'docker-compose.yml'), 'utf8')) as Doc
  const { gateway, nginx, redis } = compose.services as Record<string, Doc>
  if (gateway === undefined || nginx === undefined || redis === undefined) throw new Error('expected services gateway, nginx, redis')
  for (const [name, service] of Object.entries(compose.services as Record<string, Doc>)) {
    for (const volume of (service.volumes ?? []) as string[]) {
      const source = volume.split(':')[0] ?? ''
      if (source.startsWith('./') && source !== './tls') t.ok(existsSync(join(DEPLOY, source)), `${name}: ${source} exists`) // ./tls: the operator's certificate
    }
  }
  const configVolume = (gateway.volumes as string[]).find((v) => v.split(':')[1] === IMAGE_CONFIG_PATH)
  t.ok(configVolume !== undefined, `the config is mounted at the image's ${IMAGE_CONFIG_PATH}`)
  const configFile = join(DEPLOY, configVolume?.split(':')[0] ?? '')
  // Compose's own ${VAR:-default} / ${VAR:?error} forms, resolved as compose would with an .env.
  const resolve = (value: string): string => value.replace(/\$\{(\w+)(?::[-?][^}]*)?\}/g, (_m, name: string) => name === 'REDIS_PASSWORD' ? 'compose-redis-password' : `https://localhost`)
  const env = Object.fromEntries(Object.entries(gateway.environment as Record<string, string>).map(([k, v]) => [k, resolve(v)]))
  const config = parseConfig(readFileSync(configFile, 'utf8'), configFile, env)
  t.equal(config.store.redis, 'redis://:compose-redis-password@redis:6379/0', 'the store is the redis service, with the password from .env')
  t.same((redis.command as string[]).slice(0, 3), ['redis-server', '--requirepass', '${REDIS_PASSWORD:?set REDIS_PASSWORD in deploy/.env}'], 'Redis requires that password')

  // nginx shares the gateway's network namespace: the shipped conf's upstream is the gateway.
  t.equal(nginx.network_mode, 'service:gateway')
  const upstream = /upstream portcullis \{[^}]*?^\s*server (\S+);/m.exec(NGINX_CONF)?.[1]
  t.equal(upstream, `${config.listen.host}:${config.listen.port}`, 'nginx\'s upstream is where the gateway listens')
  t.same(config.trustProxy, ['loopback'], 'and the gateway trusts exactly that hop')
  t.ok((nginx.volumes as string[]).includes('./nginx/portcullis.conf:/etc/nginx/conf.d/default.conf:ro'), 'nginx runs the shipped conf')
  const tlsMount = (nginx.volumes as string[]).find((v) => v.startsWith('./tls:'))?.split(':')[1]
  for (const path of NGINX_CONF.match(/^\s*ssl_certificate(?:_key)?\s+(\S+);/gm) ?? []) t.match(path, `${String(tlsMount)}/`, 'certificates come from the tls mount')
  const published = (gateway.ports as string[]).map((p) => p.split(':')[1])
  const listens = [...NGINX_CONF.matchAll(/^\s*listen (\d+)\b/gm)].map((m) => m[1])
  t.same(published.sort(), listens.sort(), 'published ports are the ones nginx listens on')
  t.notOk(published.includes(String(config.listen.port)), 'the gateway\'s own port is not published')

  // The example upstream is a service of this file, on the port it is told to use.
  const http = config.servers.find((s) => s.transport === 'http')
  if (http?.transport !== 'http') throw new Error('expected an http server')
  const url = new URL(http.url)
  const service = (compose.services as Record<string, Doc>)[url.hostname]
  t.equal(service?.environment?.PORT, url.port, `the ${url.hostname} service listens where the config points`)
  t.equal(Number(/^\s*client_max_body_size (\d+)m;/m.exec(NGINX_CONF)?.[1]) * 1024 * 1024, config.bodyLimit, 'nginx\'s body limit is the gateway\'s')
})
