/** Who a request, session or child process belongs to. */
export interface UserIdentity {
  /** Stable subject identifier (the token's `sub`). */
  readonly id: string
  /** Human-facing login name. */
  readonly name: string
  readonly email?: string
  readonly groups?: readonly string[]
  /** A machine client (client_credentials): `id` is `client:<client id>`, no person behind it. */
  readonly isClient?: boolean
}

/** Until a request is authenticated, every caller is this one user. */
export const ANONYMOUS: UserIdentity = Object.freeze({ id: 'anonymous', name: 'anonymous' })
