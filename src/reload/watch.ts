/**
 * `portcullis start --watch`: a change to the configuration file reloads it. The directory is
 * watched, not the file: editors (vim, most IDEs) and Kubernetes ConfigMaps replace a file by
 * renaming another over it, after which a watch on the old file hears nothing more. Bursts of
 * events (write, chmod, rename) settle into one reload.
 */
import { watch } from 'node:fs'
import { basename, dirname } from 'node:path'

/** Events closer together than this are one change. */
export const WATCH_DEBOUNCE_MS = 300

/** A ConfigMap swaps a `..data` symlink in the directory; the file's own name never changes. */
const CONFIGMAP_DATA_LINK = '..data'

export function watchConfigFile (path: string, onChange: () => void, onError: (err: Error) => void): () => void {
  const name = basename(path)
  let timer: NodeJS.Timeout | undefined
  const watcher = watch(dirname(path), { persistent: false }, (_event, file) => {
    if (file !== null && file !== name && file !== CONFIGMAP_DATA_LINK) return
    clearTimeout(timer)
    timer = setTimeout(onChange, WATCH_DEBOUNCE_MS)
  })
  watcher.on('error', onError)
  return () => {
    clearTimeout(timer)
    watcher.close()
  }
}
