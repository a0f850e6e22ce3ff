// deploy/: every Kubernetes manifest and the Compose file parse, and the fields that tie them
// together agree — ports, probe paths, the config mount path, labels and selectors, secrets
// the config needs — and each embedded Portcullis config loads through the real loader.
import t, { type Test } from 'tap'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { dirname, basename, join } from 'node:path'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { parseConfig } from '../../src/config/load.js'
import { hashPassword } from '../../src/auth-server/password.js'
import type { Config } from '../../src/config/schema.js'

const DEPLOY = new URL('../../deploy/', import.meta.url).pathname
const DOCKERFILE = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8')
const NGINX_CONF = readFileSync(join(DEPLOY, 'nginx', 'portcullis.conf'), 'utf8')
const UPSTREAM_CONF = readFileSync(join(DEPLOY, 'nginx', 'upstream.conf'), 'utf8')
const REPLICAS_UPSTREAM_CONF = readFileSync(join(DEPLOY, 'nginx', 'upstream-replicas.conf'), 'utf8')
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
/** The pod address the downward API would give (status.podIP). */
const SAMPLE_POD_IP = '10.1.2.3'

interface ReplicaContext {
  readonly docs: readonly Doc[]
  readonly deployment: Doc
  readonly gateway: Doc
  readonly config: Config
  readonly env: NodeJS.ProcessEnv
  readonly selecting: (kind: string, workload: Doc) => Doc[]
}

/** Several replicas on Redis: the store is the Redis defined beside them, each pod advertises itself, drains keep two. */
function checkReplicas (t: Test, { docs, deployment, gateway, config, env, selecting }: ReplicaContext): void {
  const replicas = deployment.spec.replicas as number
  t.ok(replicas >= 2, `a Redis store is there to run several replicas (${replicas})`)
  t.same(deployment.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } }, 'rolling updates never drop below the replica count')
  const [pdb] = selecting('PodDisruptionBudget', deployment)
  t.ok(pdb?.spec.minAvailable >= 1 && pdb?.spec.minAvailable < replicas, `the budget keeps ${String(pdb?.spec.minAvailable)} of ${replicas} through a drain, and lets a drain proceed`)
  const volumes = deployment.spec.template.spec.volumes as Doc[]
  t.notOk(volumes.some((v) => v.persistentVolumeClaim !== undefined), 'no ReadWriteOnce volume shared by the replicas: their state is in Redis')

  // cluster.advertiseUrl is this pod's own address and the port it listens on.
  t.equal(config.cluster.advertiseUrl, `http://${SAMPLE_POD_IP}:${config.listen.port}`, 'each replica advertises its pod IP and listen port')

  // store.redis names the Redis Service here, its port, and the password Redis requires.
  const url = new URL(config.store.redis ?? '')
  const redisSet = docs.find((d) => d.kind === 'StatefulSet')
  if (redisSet === undefined) throw new Error('no Redis StatefulSet beside the replicas')
  const service = selecting('Service', redisSet).find((s) => s.metadata.name === url.hostname)
  const container = (redisSet.spec.template.spec.containers as Doc[])[0] ?? {}
  t.ok(service !== undefined, `store.redis's host ${url.hostname} is the Redis Service`)
  const servicePort = (service?.spec.ports as Doc[] | undefined)?.find((p) => p.port === Number(url.port))
  t.ok(servicePort !== undefined && (container.ports as Doc[]).some((p) => p.name === servicePort.targetPort), `port ${url.port} reaches the Redis container`)
  const requirepass = (container.args as string[]).indexOf('--requirepass')
  const passwordVar = /^\$\((\w+)\)$/.exec((container.args as string[])[requirepass + 1] ?? '')?.[1]
  const passwordRef = ((container.env ?? []) as Doc[]).find((e) => e.name === passwordVar)?.valueFrom?.secretKeyRef
  t.ok(passwordRef !== undefined && ((gateway.envFrom ?? []) as Doc[]).some((e) => e.secretRef?.name === passwordRef.name), 'Redis requires a password from the Secret the gateway loads')
  t.equal(decodeURIComponent(url.password), env[passwordRef?.key as string], '...the same one store.redis carries')
  t.ok((container.args as string[]).includes('--appendonly'), 'Redis persists (clients, refresh tokens, signing keys survive its restart)')
  t.ok(redisSet.spec.volumeClaimTemplates?.some((v: Doc) => (container.volumeMounts as Doc[]).some((m) => m.name === v.metadata.name)), '...on a volume')
  for (const policy of selecting('NetworkPolicy', redisSet)) {
    const from = (policy.spec.ingress as Doc[]).flatMap((rule) => (rule.from ?? []) as Doc[])
    t.ok(from.length > 0 && from.every((f) => isSubset(f.podSelector?.matchLabels ?? {}, deployment.spec.template.metadata.labels)), 'only the gateway\'s pods may reach Redis')
  }
}

for (const layout of ['standalone', 'sidecar', 'replicas'] as const) {
  t.test(`kubernetes/${layout}: manifests agree with each other, the image and the config`, async (t) => {
    const docs = loadDir(join(DEPLOY, 'kubernetes', layout))
    for (const doc of docs) t.ok(typeof doc.apiVersion === 'string' && typeof doc.kind === 'string' && typeof doc.metadata?.name === 'string', `${String(doc.kind)} ${String(doc.metadata?.name)} has apiVersion, kind and name`)
    const ofKind = (kind: string): Doc[] => docs.filter((d) => d.kind === kind)
    const [deployment] = ofKind('Deployment')
    if (deployment === undefined) throw new Error('no Deployment')
    const pod = deployment.spec.template
    // Every workload selects its own pods; every Service, budget and policy selects exactly one workload's.
    const workloads = [deployment, ...ofKind('StatefulSet')]
    for (const w of workloads) t.ok(isSubset(w.spec.selector.matchLabels, w.spec.template.metadata.labels), `${String(w.kind)} ${String(w.metadata.name)} selects its own pods`)
    const targetOf = (doc: Doc): Doc | undefined => {
      const selector = doc.kind === 'Service' ? doc.spec.selector : doc.kind === 'NetworkPolicy' ? doc.spec.podSelector.matchLabels : doc.spec.selector.matchLabels
      const matched = workloads.filter((w) => isSubset(selector, w.spec.template.metadata.labels))
      t.equal(matched.length, 1, `${String(doc.kind)} ${String(doc.metadata.name)} selects the pods of exactly one workload`)
      return matched[0]
    }
    const selecting = (kind: string, workload: Doc): Doc[] => ofKind(kind).filter((d) => targetOf(d) === workload)
    t.equal(selecting('PodDisruptionBudget', deployment).length, 1, 'a PodDisruptionBudget for the gateway')

    const containers = pod.spec.containers as Doc[]
    const gateway = containers.find((c) => String(c.image).includes('portcullis'))
    if (gateway === undefined) throw new Error('no portcullis container')
    for (const c of workloads.flatMap((w) => [...w.spec.template.spec.containers, ...(w.spec.template.spec.initContainers ?? [])] as Doc[])) {
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
    for (const e of (gateway.env ?? []) as Doc[]) {
      if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name as string] = SAMPLE_POD_IP
      else if (typeof e.value === 'string') env[e.name as string] = e.value
      else throw new Error(`env ${String(e.name)}: a source this test does not know`)
    }
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
    for (const service of selecting('Service', deployment)) {
      t.same(service.spec.ports.map((p: Doc) => p.targetPort), ['http'], `Service ${String(service.metadata.name)} targets the gateway's port only`)
    }
    for (const ingress of ofKind('Ingress')) {
      const backend = ingress.spec.rules[0].http.paths[0].backend.service
      const service = ofKind('Service').find((s) => s.metadata.name === backend.name)
      t.ok(service?.spec.ports.some((p: Doc) => p.name === backend.port.name), 'the Ingress routes to the Service\'s named port')
      t.equal(`https://${String(ingress.spec.tls[0].hosts[0])}`, config.publicUrl, 'the Ingress host is the publicUrl')
    }
    const gatewayPolicies = selecting('NetworkPolicy', deployment)
    for (const policy of gatewayPolicies) {
      t.same(policy.spec.ingress.flatMap((rule: Doc) => rule.ports.map((p: Doc) => p.port)), ['http'], 'only the gateway\'s port admits traffic')
    }
    // trustProxy believes X-Forwarded-For from private addresses: only the ingress controller (and,
    // for replicas, the others forwarding a session's request) may reach the port, or any pod could name any client address.
    t.ok(gatewayPolicies.length > 0, 'a NetworkPolicy guards the gateway\'s pods')
    for (const policy of gatewayPolicies) {
      t.same(policy.spec.policyTypes, ['Ingress'])
      for (const rule of policy.spec.ingress as Doc[]) {
        const from = (rule.from ?? []) as Doc[]
        t.ok(from.length > 0, `NetworkPolicy ${String(policy.metadata.name)}: the gateway's port admits named peers only, never the whole cluster`)
        for (const peer of from) {
          const isIngressController = peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'] === 'ingress-nginx' && peer.podSelector === undefined
          const isReplica = config.store.redis !== undefined && peer.namespaceSelector === undefined && isSubset(peer.podSelector?.matchLabels ?? {}, pod.metadata.labels)
          t.ok(isIngressController || isReplica, `NetworkPolicy ${String(policy.metadata.name)} admits ${JSON.stringify(peer)}: the ingress controller${config.store.redis === undefined ? '' : ' or another replica'}`)
        }
      }
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
    } else {
      checkReplicas(t, { docs, deployment, gateway, config, env, selecting })
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
    }
    const stdio = config.servers.find((s) => s.transport === 'stdio')
    if (layout === 'sidecar') t.ok(stdio !== undefined, 'the sidecar layout shows a stdio server too')
    if (stdio?.transport === 'stdio') {
      // stdio in the pod: the init container installs into the volume the gateway spawns from.
      const init = (pod.spec.initContainers as Doc[] | undefined)?.[0]
      if (init === undefined) throw new Error('expected an init container that installs the stdio server')
      const script = stdio.args[0] ?? ''
      const gatewayMount = mounts.find((m) => script.startsWith(`${String(m.mountPath)}/`))
      const initMount = (init.volumeMounts as Doc[]).find((m) => m.name === gatewayMount?.name)
      t.ok(gatewayMount !== undefined && initMount !== undefined, `the stdio server's script (${script}) is on a volume the init container fills`)
      t.ok((init.command as string[]).includes(initMount?.mountPath as string), 'the init container installs into that mount')
      t.equal(gatewayMount?.readOnly, true, 'the gateway only reads it')
    }
  })
}

const COMPOSE_LAYOUTS = [
  { file: 'docker-compose.yml', upstreamConf: 'upstream.conf', upstreamText: UPSTREAM_CONF },
  { file: 'docker-compose.replicas.yml', upstreamConf: 'upstream-replicas.conf', upstreamText: REPLICAS_UPSTREAM_CONF },
] as const

for (const { file, upstreamConf, upstreamText } of COMPOSE_LAYOUTS) {
  t.test(`${file}: gateways, nginx and Redis agree with the image, the nginx config and each other`, async (t) => {
    const compose = parseYaml(readFileSync(join(DEPLOY, file), 'utf8'), { merge: true }) as Doc
    const services = compose.services as Record<string, Doc>
    const { nginx, redis } = services
    const gatewayNames = Object.keys(services).filter((name) => services[name]?.image === 'portcullis:local')
    if (nginx === undefined || redis === undefined || gatewayNames.length === 0) throw new Error('expected gateway, nginx and redis services')
    for (const [name, service] of Object.entries(services)) {
      for (const volume of (service.volumes ?? []) as string[]) {
        const source = volume.split(':')[0] ?? ''
        if (source.startsWith('./') && source !== './tls') t.ok(existsSync(join(DEPLOY, source)), `${name}: ${source} exists`) // ./tls: the operator's certificate
      }
    }
    t.same((redis.command as string[]).slice(0, 3), ['redis-server', '--requirepass', '${REDIS_PASSWORD:?set REDIS_PASSWORD in deploy/.env}'], 'Redis requires the password from .env')
    t.ok((redis.command as string[]).includes('--appendonly'), 'and persists what it holds')

    // Each gateway's config, resolved as compose would with an .env (${VAR:-default}, ${VAR:?error}).
    const resolve = (value: string): string => value.replace(/\$\{(\w+)(?::[-?][^}]*)?\}/g, (_m, name: string) => name === 'REDIS_PASSWORD' ? 'compose-redis-password' : 'https://localhost')
    const configs = gatewayNames.map((name) => {
      const gateway = services[name] as Doc
      const configVolume = (gateway.volumes as string[]).find((v) => v.split(':')[1] === IMAGE_CONFIG_PATH)
      t.ok(configVolume !== undefined, `${name}: the config is mounted at the image's ${IMAGE_CONFIG_PATH}`)
      const configFile = join(DEPLOY, configVolume?.split(':')[0] ?? '')
      const env = Object.fromEntries(Object.entries(gateway.environment as Record<string, string>).map(([k, v]) => [k, resolve(v)]))
      const config = parseConfig(readFileSync(configFile, 'utf8'), configFile, env)
      t.equal(config.store.redis, 'redis://:compose-redis-password@redis:6379/0', `${name}: the store is the redis service, with the password from .env`)
      t.equal(gateway.depends_on?.redis?.condition, 'service_healthy', `${name}: starts once Redis answers`)
      return { name, gateway, config }
    })
    const [first] = configs
    if (first === undefined) throw new Error('no gateway')

    // nginx runs the shipped site and upstream files.
    t.ok((nginx.volumes as string[]).includes('./nginx/portcullis.conf:/etc/nginx/conf.d/default.conf:ro'), 'nginx runs the shipped site')
    t.ok((nginx.volumes as string[]).includes(`./nginx/${upstreamConf}:/etc/nginx/conf.d/upstream.conf:ro`), `...and ${upstreamConf}`)
    const tlsMount = (nginx.volumes as string[]).find((v) => v.startsWith('./tls:'))?.split(':')[1]
    for (const path of NGINX_CONF.match(/^\s*ssl_certificate(?:_key)?\s+(\S+);/gm) ?? []) t.match(path, `${String(tlsMount)}/`, 'certificates come from the tls mount')
    const upstreamServers = [...upstreamText.matchAll(/^\s*server (\S+);/gm)].map((m) => m[1])
    const listens = [...NGINX_CONF.matchAll(/^\s*listen (\d+)\b/gm)].map((m) => m[1])

    if (gatewayNames.length === 1) {
      // nginx shares the gateway's network namespace (the sidecar pattern) and publishes for it.
      t.equal(nginx.network_mode, `service:${first.name}`)
      t.same(upstreamServers, [`${first.config.listen.host}:${first.config.listen.port}`], 'nginx\'s upstream is where the gateway listens')
      t.same(first.config.trustProxy, ['loopback'], 'and the gateway trusts exactly that hop')
      const published = (first.gateway.ports as string[]).map((p) => p.split(':')[1])
      t.same(published.sort(), listens.sort(), 'published ports are the ones nginx listens on')
      t.notOk(published.includes(String(first.config.listen.port)), 'the gateway\'s own port is not published')
    } else {
      // Replicas: nginx reaches each by its service name; each tells the others the same address.
      t.same(upstreamServers, configs.map((c) => `${c.name}:${c.config.listen.port}`), 'nginx\'s upstream lists every replica, where it listens')
      t.match(upstreamText, /^\s*hash \$http_mcp_session_id consistent;/m, 'and keeps a session on its replica')
      for (const { name, gateway, config } of configs) {
        t.equal(config.cluster.advertiseUrl, `http://${name}:${config.listen.port}`, `${name} advertises the address nginx and the others use`)
        t.equal(config.listen.host, '0.0.0.0', `${name} listens on the compose network`)
        t.ok(Array.isArray(config.trustProxy) && config.trustProxy.includes('uniquelocal'), `${name} trusts nginx on the private network`)
        t.equal(gateway.ports, undefined, `${name}'s own port is not published`)
        t.equal(nginx.depends_on?.[name]?.condition, 'service_healthy', `nginx starts after ${name} is healthy (it resolves the names once)`)
      }
      t.same((nginx.ports as string[]).map((p) => p.split(':')[1]).sort(), listens.sort(), 'published ports are the ones nginx listens on')
    }

    // The example upstream is a service of this file, on the port it is told to use.
    const http = first.config.servers.find((s) => s.transport === 'http')
    if (http?.transport !== 'http') throw new Error('expected an http server')
    const url = new URL(http.url)
    t.equal(services[url.hostname]?.environment?.PORT, url.port, `the ${url.hostname} service listens where the config points`)
    t.equal(Number(/^\s*client_max_body_size (\d+)m;/m.exec(NGINX_CONF)?.[1]) * 1024 * 1024, first.config.bodyLimit, 'nginx\'s body limit is the gateway\'s')
  })
}
