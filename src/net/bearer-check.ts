/** The check of a shared bearer token (metrics.bearerToken): compared as digests, in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto'

/** Whether an Authorization header carries `token`; always false when no token is set. */
export function bearerCheck (token: string | undefined): (authorization: string | undefined) => boolean {
  if (token === undefined) return () => false
  const expected = digest(token)
  return (authorization) => {
    const presented = /^Bearer +(\S+) *$/i.exec(authorization ?? '')?.[1]
    return presented !== undefined && timingSafeEqual(digest(presented), expected)
  }
}

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}
