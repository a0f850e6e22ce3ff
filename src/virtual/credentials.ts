/**
 * The in-process credential a virtual server's request to a member route carries (README
 * "Virtual servers"). The caller's token was checked once, against the virtual server's own
 * resource; the member route must still know who is calling, to apply its own access, scopes,
 * policy, limits and audit. Its `x-portcullis-virtual` header names a handle: 32 random bytes,
 * a key in this map, issued for one inner request and one member, removed when that request
 * ends. It is never sent to a client and never leaves the process, so a socket request can
 * only name a handle it guessed: anything not in the map is refused as a bad token is (401).
 */
import { randomBytes } from 'node:crypto'
import type { RequestIdentity } from '../resource-server/verify-token.js'

export const VIRTUAL_CREDENTIAL_HEADER = 'x-portcullis-virtual'

/** 256 bits: not guessable while it lives. */
const HANDLE_BYTES = 32

export interface VirtualGrant {
  /** The caller as the virtual route verified it; null with auth off. */
  readonly identity: RequestIdentity | null
  readonly virtualServer: string
  /** The one server whose route may accept it. */
  readonly member: string
}

export class VirtualCredentials {
  private readonly grants = new Map<string, VirtualGrant>()

  issue (grant: VirtualGrant): string {
    const handle = randomBytes(HANDLE_BYTES).toString('base64url')
    this.grants.set(handle, grant)
    return handle
  }

  /** The grant a member route's request names, only for that member. */
  accept (handle: unknown, member: string): VirtualGrant | undefined {
    if (typeof handle !== 'string') return undefined
    const grant = this.grants.get(handle)
    return grant?.member === member ? grant : undefined
  }

  revoke (handle: string): void {
    this.grants.delete(handle)
  }

  get size (): number {
    return this.grants.size
  }
}
