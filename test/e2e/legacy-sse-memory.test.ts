// What a 2024-11-05 session holds while its event stream stays open (minutes, hours): what
// reopening its server stream needs of the client's latest POST (headers, address, logger),
// never that POST itself, whose body and parsed body are up to bodyLimit (4 MB) several times over.
import t from 'tap'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { openRaw } from '../legacy-sse-helpers.js'
import { INIT_BODY, postJson, startGateway, startUpstream } from '../helpers.js'

// A collection on demand, for this process only (the gateway runs in it): what is still held is what is reachable.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const STREAMS = 6
/** ~0.9 MB of JSON whose parse is ~300 000 objects: kept, each session pinned ~19 MB. */
const PAD = 300_000
const BIG_CALL = `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"slow","arguments":{"pad":[${'{},'.repeat(PAD)}{}]}}}`

function usedBytes (): number {
  gc()
  gc()
  const memory = process.memoryUsage()
  return memory.heapUsed + memory.arrayBuffers
}

const pause = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

t.test('a legacy session keeps nothing of its POSTs once answered, a refused one included', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startGateway(t, { servers: [{ name: 'fx', transport: 'http', url: upstream.url, tools: { deny: ['slow'] } }] })
  const sessions = []
  for (let i = 0; i < STREAMS; i++) {
    const legacy = await openRaw(t, `${gw.baseUrl}/fx/sse`, '')
    const init = await postJson(legacy.endpoint, { ...INIT_BODY, params: { ...INIT_BODY.params, protocolVersion: '2024-11-05' } })
    t.equal(init.status, 202)
    await legacy.next()
    await postJson(legacy.endpoint, { jsonrpc: '2.0', method: 'notifications/initialized' })
    sessions.push(legacy)
  }
  await pause(300)
  const before = usedBytes()
  for (const legacy of sessions) t.equal((await postJson(legacy.endpoint, BIG_CALL)).status, 403, 'refused by the member policy')
  await pause(500)
  const grownMb = (usedBytes() - before) / 1024 / 1024
  t.ok(grownMb < 10, `the POSTs are not kept once answered (${grownMb.toFixed(1)} MB still held by ${STREAMS} open sessions)`)
  for (const legacy of sessions) legacy.close()
})
