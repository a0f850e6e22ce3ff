/**
 * What a configuration reload did (README "Reloading"): SIGHUP, `portcullis start --watch`,
 * `POST /admin/api/v1/reload`, the admin page's button, and a notice from another replica all
 * produce one of these.
 */
export interface ReloadReport {
  /** The new file is in force (false: it was invalid, and nothing changed). */
  readonly applied: boolean
  /** What changed, one short phrase each ("server added: github", "rate limits of echo"). */
  readonly changed: readonly string[]
  /** Settings that cannot change live (listen, publicUrl, store, …): left as they were until a restart. */
  readonly needsRestart: readonly string[]
  /** Why nothing changed: the file's problems, `file:line: key: message` as `portcullis check` prints them. */
  readonly errors: readonly string[]
  /**
   * Applied, but something it implies could not be done: access the file takes away that could
   * not be revoked (the store failing), each with what to do about it.
   */
  readonly warnings: readonly string[]
}

/** Re-reads the configuration file and applies it (one reload at a time; a second caller waits for the first). */
export type Reload = () => Promise<ReloadReport>

/** The audit record's detail of a reload, the same from the admin API and the admin page. */
export function reloadAuditDetail (report: ReloadReport): { applied: boolean, changed: number, needsRestart: readonly string[], warnings?: number, code?: string } {
  const detail = { applied: report.applied, changed: report.changed.length, needsRestart: report.needsRestart, ...(report.warnings.length === 0 ? {} : { warnings: report.warnings.length }) }
  return report.applied ? detail : { ...detail, code: 'PORTCULLIS_ERR_RELOAD_INVALID_CONFIG' }
}
