/**
 * `portcullis migrate-store`: copies every live OAuth record (clients, grants,
 * sessions, refresh tokens…) and key-value (signing keys, consent, first-run
 * account) from one store into another, each with its remaining lifetime,
 * and the revoked-grant list: without it, access tokens of a grant revoked
 * before the move would be honoured again after it, until they expire.
 * Rate-limit counters are not copied: they are windows of minutes.
 */
import type { Store } from './types.js'

export interface MigrationReport {
  /** Records copied, by model. */
  readonly records: ReadonlyMap<string, number>
  readonly keyValues: number
  /** Grants still listed as revoked (their access tokens stay void in the destination). */
  readonly revokedGrants: number
}

export class MigrationError extends Error {}

export async function copyStore (from: Store, to: Store, nowMs: number): Promise<MigrationReport> {
  for await (const entry of to.entries()) {
    const what = entry.kind === 'record' ? `${entry.model} ${entry.id.slice(0, 8)}…` : `key ${entry.key}`
    throw new MigrationError(`the destination (${to.location}) already holds data (${what}): migrate into an empty store or another prefix`)
  }
  const records = new Map<string, number>()
  let keyValues = 0
  for await (const entry of from.entries()) {
    if (entry.kind === 'record') {
      await to.upsert(entry.model, entry.id, entry.payload, entry.expiresAtMs)
      records.set(entry.model, (records.get(entry.model) ?? 0) + 1)
    } else {
      await to.kvSet(entry.key, entry.value, entry.expiresAtMs)
      keyValues++
    }
  }
  // Copied after the records: revoking deletes the grant's records, and none of them were live.
  const revoked = await from.revokedGrants(nowMs)
  for (const grant of revoked) await to.revokeByGrantId(grant.grantId, grant.untilMs)
  return { records, keyValues, revokedGrants: revoked.length }
}
