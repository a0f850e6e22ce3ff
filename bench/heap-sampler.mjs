// Preloaded into a gateway by bench/profile-http.mjs (PROFILE_HEAP=1): V8's sampling heap
// profiler, counting objects the garbage collector has already taken too (what a request
// allocates, not what it keeps). SIGUSR2 starts the count again (the measured window begins);
// the profile is written to HEAP_PROFILE_OUT when the process exits.
import { Session } from 'node:inspector'
import { writeFileSync } from 'node:fs'

const OPTIONS = { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }
const session = new Session()
session.connect()
session.post('HeapProfiler.enable')
session.post('HeapProfiler.startSampling', OPTIONS)
process.on('SIGUSR2', () => {
  session.post('HeapProfiler.stopSampling', () => { session.post('HeapProfiler.startSampling', OPTIONS) })
})
process.on('exit', () => {
  // An in-thread inspector session answers synchronously: the file is written before the process ends.
  session.post('HeapProfiler.stopSampling', (err, result) => {
    if (err === null && process.env.HEAP_PROFILE_OUT !== undefined) writeFileSync(process.env.HEAP_PROFILE_OUT, JSON.stringify(result.profile))
  })
})
