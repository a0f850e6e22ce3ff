/**
 * What every doctor check returns, and the one HTTP client the checks share.
 *
 * The doctor is the operator's own command: it contacts the gateway at the
 * address the operator gives (--url, else publicUrl) and the upstreams the
 * operator configured, nothing an outsider chose. URLs the gateway hands back
 * (metadata, registration) are followed only on the gateway's own origins.
 * The guarded fetch (src/net/guarded-fetch.ts) exists for URLs outsiders
 * choose and refuses private addresses and reads bodies whole; the doctor must
 * reach a gateway on 127.0.0.1 and time an event stream as it arrives, so it
 * uses undici's fetch with this origin rule instead.
 */

export interface CheckResult {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
  /** What to change when the check failed. */
  readonly fix?: string
}

export const pass = (name: string, detail: string): CheckResult => ({ name, ok: true, detail })
export const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, ok: false, detail, fix })

/** One request's bound: a doctor that hangs helps nobody. */
export const DOCTOR_REQUEST_TIMEOUT_MS = 10_000

export type DoctorFetch = (url: string, init?: RequestInit) => Promise<Response>

export function createDoctorFetch (allowedOrigins: readonly string[], timeoutMs = DOCTOR_REQUEST_TIMEOUT_MS): DoctorFetch {
  const origins = new Set(allowedOrigins.map((o) => new URL(o).origin))
  return async (url, init = {}) => {
    if (!origins.has(new URL(url).origin)) throw new Error(`not the gateway's origin: ${new URL(url).origin}`)
    return fetch(url, { ...init, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) })
  }
}

/** A fetch failure as an operator reads it: the system error code when there is one. */
export function describeFetchError (err: unknown): string {
  const cause = (err as { cause?: { code?: string, message?: string } }).cause
  if (cause?.code !== undefined) return cause.code
  if ((err as Error).name === 'TimeoutError') return 'no answer in time'
  return cause?.message ?? (err as Error).message
}
