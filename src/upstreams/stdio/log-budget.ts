/**
 * How many lines of a child's output reach the log. A stdio server that
 * prints noise (100 MB of non-JSON lines on stdout became 102k warnings and
 * +84 MB of gateway memory) must not flood it: each window logs its first
 * `perWindow` lines, counts the rest, and the count is reported once when the
 * window ends (on the next line, on a timer, or when the child exits).
 */
export class LogBudget {
  private windowStartMs = Number.NEGATIVE_INFINITY
  private loggedInWindow = 0
  private skipped = 0

  constructor (
    private readonly perWindow: number,
    readonly windowMs: number,
    private readonly now: () => number,
    /** Told how many lines were not logged in the window that just ended. */
    private readonly report: (skipped: number) => void,
  ) {}

  /** True when this line should be logged; false when it was only counted. */
  take (): boolean {
    this.rollIfDue()
    if (this.loggedInWindow < this.perWindow) {
      this.loggedInWindow++
      return true
    }
    this.skipped++
    return false
  }

  /** Lines counted and not yet reported. */
  get pending (): number {
    return this.skipped
  }

  /** Reports the count if the window is over (and starts the next one); true when it was. */
  rollIfDue (): boolean {
    const now = this.now()
    if (now - this.windowStartMs < this.windowMs) return false
    this.flush()
    this.windowStartMs = now
    this.loggedInWindow = 0
    return true
  }

  /** Reports whatever is counted (the child exited). */
  flush (): void {
    if (this.skipped === 0) return
    const skipped = this.skipped
    this.skipped = 0
    this.report(skipped)
  }
}
