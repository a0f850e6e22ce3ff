/**
 * Failed sign-ins, throttled so that guessing is slow but nobody can lock an
 * owner out (OWASP Authentication Cheat Sheet, "Account lockout": a lockout
 * anyone can trigger is a denial of service).
 *
 * - per (account, client IP): after `maxFailures` failures each further attempt
 *   waits 1 s, 2 s, 4 s … (at most `window`) after the last failure;
 * - per client IP: at most `maxFailuresPerIp` failures per window, any account;
 * - per account: at most `maxFailuresPerAccount` per window from all addresses
 *   together — much higher, so spraying from many addresses is still bounded,
 *   while an owner signing in from a clean address gets in.
 *
 * While a rule holds, the password is not even checked. A successful sign-in
 * clears its own (account, IP) pair only. One password of a pair is checked at a
 * time (`lockPair`, in the store: every replica): the rules count failures once a
 * check has ended, so attempts sent at once would all pass the check before any
 * of them counted.
 */
import type { Store } from '../store/types.js'

export interface SignInRules {
  readonly maxFailures: number
  readonly maxFailuresPerIp: number
  readonly maxFailuresPerAccount: number
  readonly window: number
}

export interface SignInRefusal {
  /** Which rule holds: this account from this address, this address, or this account. */
  readonly rule: 'pair' | 'ip' | 'account'
  readonly retryAfterMs: number
}

/** The wait after `failures` failures of one (account, IP) pair: 0 below maxFailures, then 1 s doubling, capped. */
export function pairDelayMs (failures: number, maxFailures: number, capMs: number): number {
  if (failures < maxFailures) return 0
  return Math.min(capMs, 1000 * 2 ** Math.min(failures - maxFailures, 30))
}

export class SignInThrottle {
  constructor (private readonly store: Store, private readonly rules: SignInRules, private readonly now: () => number) {}

  async check (username: string, ip: string): Promise<SignInRefusal | undefined> {
    const now = this.now()
    const [waitUntil, perIp, perAccount] = await Promise.all([
      this.store.kvGet(waitKey(username, ip)),
      this.store.hit(ipKey(ip), this.rules.window, 0),
      this.store.hit(accountKey(username), this.rules.window, 0),
    ])
    const pairWaitMs = Number(waitUntil ?? 0) - now
    if (pairWaitMs > 0) return { rule: 'pair', retryAfterMs: pairWaitMs }
    if (perIp.count >= this.rules.maxFailuresPerIp) return { rule: 'ip', retryAfterMs: perIp.resetAtMs - now }
    if (perAccount.count >= this.rules.maxFailuresPerAccount) return { rule: 'account', retryAfterMs: perAccount.resetAtMs - now }
    return undefined
  }

  async recordFailure (username: string, ip: string): Promise<void> {
    const [pair] = await Promise.all([
      this.store.hit(pairKey(username, ip), this.rules.window),
      this.store.hit(ipKey(ip), this.rules.window),
      this.store.hit(accountKey(username), this.rules.window),
    ])
    const delayMs = pairDelayMs(pair.count, this.rules.maxFailures, this.rules.window)
    if (delayMs > 0) {
      const until = this.now() + delayMs
      await this.store.kvSet(waitKey(username, ip), String(until), until)
    }
  }

  async recordSuccess (username: string, ip: string): Promise<void> {
    await this.store.resetCounter(pairKey(username, ip))
  }

  /**
   * Takes the pair's turn to have a password checked: false while another attempt of the same
   * account from the same address is being checked (it answers within the lock's life; a
   * replica that died holding it frees it then).
   */
  async lockPair (username: string, ip: string): Promise<boolean> {
    return await this.store.kvSetIfAbsent(lockKey(username, ip), '1', this.now() + PAIR_LOCK_MS)
  }

  async unlockPair (username: string, ip: string): Promise<void> {
    await this.store.kvDelete(lockKey(username, ip))
  }
}

/** The longest a password check may hold its pair's turn (a check takes ~100 ms: scrypt). */
const PAIR_LOCK_MS = 10_000
/** What a refused concurrent attempt is told to wait. */
export const PAIR_BUSY_RETRY_MS = 1_000

const norm = (username: string): string => username.toLowerCase()
const pairKey = (username: string, ip: string): string => `login:pair:${norm(username)}:${ip}`
const waitKey = (username: string, ip: string): string => `login:wait:${norm(username)}:${ip}`
const ipKey = (ip: string): string => `login:ip:${ip}`
const accountKey = (username: string): string => `login:user:${norm(username)}`
const lockKey = (username: string, ip: string): string => `login:busy:${norm(username)}:${ip}`
