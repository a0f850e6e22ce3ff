/**
 * Child processes that do not run Portcullis start without tap's coverage hook.
 *
 * tap (`@tapjs/processinfo`) adds its `--import` hook to the NODE_OPTIONS of every process a test
 * starts, so that coverage follows the gateway into child processes: the CLI, a gateway started
 * as `portcullis start`. Most children are not Portcullis, though: the fixture servers under
 * `test/fixtures/`, the SDK's example servers, mcp-remote, `sh`, nginx, browsers. In a node
 * child the hook measures nothing that is reported (coverage is of `src/` only) and costs about
 * 0.35 CPU-seconds (a module loader thread that every import passes through, and a coverage
 * session), on some 250 fixture processes per run of the suite (docs/benchmarks.md, 2026-12-01).
 *
 * How: processinfo edits each spawn's environment from a listener of `process-on-spawn`, which
 * keeps its listeners in a global singleton and calls them in order. The listener added here
 * (after processinfo's, which is registered before any test code runs) takes the hook and its
 * `_TAPJS_PROCESSINFO_*` variables back out unless an argument of the spawn names this checkout's
 * `dist/` or `src/`. Should tap stop using that singleton, nothing breaks: children keep the
 * hook, and the suite is only slower.
 */
import { join, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

interface Spawn { readonly args: readonly string[], env: Record<string, string> }
interface SpawnHooks { listeners: Array<(spawn: Spawn) => void> }

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const PORTCULLIS = [join(ROOT, 'dist') + sep, join(ROOT, 'src') + sep]
const HOOK = /@tapjs[\\/]processinfo/
const HOOK_VARIABLE = /^_TAPJS_PROCESSINFO_/

/** Whether `spawn` starts Portcullis' own code (directly, or through `sh -c` and the like). */
function runsPortcullis (spawn: Spawn): boolean {
  return spawn.args.some((arg) => PORTCULLIS.some((dir) => arg.includes(dir)))
}

/** NODE_OPTIONS without processinfo's hook: `--import=<it>`, `--import <it>` (quoted or not). */
export function withoutHook (options: string): string {
  const tokens = options.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? []
  return tokens
    .filter((token, i) => !HOOK.test(token) && !(/^"?--(?:import|loader|experimental-loader)"?$/.test(token) && HOOK.test(tokens[i + 1] ?? '')))
    .join(' ')
}

function leaveHookOut (spawn: Spawn): void {
  const options = spawn.env.NODE_OPTIONS
  if (options === undefined || !HOOK.test(options) || runsPortcullis(spawn)) return
  const env = Object.fromEntries(Object.entries(spawn.env).filter(([name]) => !HOOK_VARIABLE.test(name)))
  const kept = withoutHook(options)
  if (kept === '') delete env.NODE_OPTIONS
  else env.NODE_OPTIONS = kept
  spawn.env = env
}

const hooks = (globalThis as Record<symbol, SpawnHooks | undefined>)[Symbol.for('process-on-spawn@*:singletonId')]
if (hooks !== undefined && Array.isArray(hooks.listeners) && !hooks.listeners.includes(leaveHookOut)) {
  hooks.listeners.push(leaveHookOut)
}
