/**
 * While the store (Redis) does not answer, whatever needed it is refused with a 503 and told
 * to retry shortly: nothing is broken, and the gateway recovers when the store returns.
 */
import { PortcullisError } from '../errors.js'

/** How long a client (or a person, on a page) is told to wait. */
export const STORE_RETRY_AFTER_S = 5

/** The MCP routes' answer: 503 PORTCULLIS_ERR_STORE_UNAVAILABLE with Retry-After. */
export function storeUnavailableError (cause?: unknown): PortcullisError {
  return new PortcullisError('PORTCULLIS_ERR_STORE_UNAVAILABLE', undefined, { cause, headers: { 'retry-after': String(STORE_RETRY_AFTER_S) } })
}
