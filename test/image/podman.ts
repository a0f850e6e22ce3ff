// podman from the image tests (test/image/*.test.ts), run through deploy/ci/image.sh, which
// exports the CI run's podman configuration (deploy/ci/podman-env.sh).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

export const run = promisify(execFile)

/** A podman command's standard output, trimmed; rejects when it fails. */
export async function podman (...args: string[]): Promise<string> {
  const { stdout } = await run('podman', args, { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

/** Exit code of a podman command (0 or the failure's code), for checks that expect failure. */
export async function podmanStatus (...args: string[]): Promise<number> {
  return run('podman', args).then(() => 0, (err: { code?: number }) => err.code ?? -1)
}
