/**
 * Paging for the admin lists: `limit` (1..MAX_PAGE_LIMIT, default DEFAULT_PAGE_LIMIT) and an
 * opaque `cursor` — the sort key of the last item of the previous page, base64url-encoded, so a
 * page stays right when items are added or removed between requests (an offset would skip or
 * repeat). Items are sorted by a unique string key.
 */
import { PortcullisError } from '../errors.js'

export const DEFAULT_PAGE_LIMIT = 50
export const MAX_PAGE_LIMIT = 500

export interface PageQuery {
  readonly limit: number
  /** The key after which this page starts. */
  readonly after: string | undefined
}

export interface Page<T> {
  readonly items: T[]
  /** Present when there are more items: send it back as `cursor`. */
  readonly nextCursor?: string
}

/** Reads and checks `limit` and `cursor` from a query string. */
export function pageQuery (query: Readonly<Record<string, unknown>>): PageQuery {
  const rawLimit = query.limit
  let limit = DEFAULT_PAGE_LIMIT
  if (rawLimit !== undefined) {
    limit = typeof rawLimit === 'string' && /^\d{1,4}$/.test(rawLimit) ? Number(rawLimit) : NaN
    if (!(limit >= 1 && limit <= MAX_PAGE_LIMIT)) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `limit: expected a whole number from 1 to ${MAX_PAGE_LIMIT}`)
  }
  const rawCursor = query.cursor
  if (rawCursor === undefined || rawCursor === '') return { limit, after: undefined }
  const after = typeof rawCursor === 'string' && /^[A-Za-z0-9_-]{1,2048}$/.test(rawCursor) ? decodeCursor(rawCursor) : undefined
  if (after === undefined) throw new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', 'cursor: not a cursor this API returned (send nextCursor from the previous page)')
  return { limit, after }
}

export function paginate<T> (items: readonly T[], keyOf: (item: T) => string, query: PageQuery): Page<T> {
  const sorted = [...items].sort((a, b) => compare(keyOf(a), keyOf(b)))
  const start = query.after === undefined ? 0 : sorted.findIndex((item) => compare(keyOf(item), query.after as string) > 0)
  const rest = start < 0 ? [] : sorted.slice(start)
  const page = rest.slice(0, query.limit)
  const last = page.at(-1)
  return rest.length > query.limit && last !== undefined ? { items: page, nextCursor: Buffer.from(`k:${keyOf(last)}`).toString('base64url') } : { items: page }
}

function decodeCursor (cursor: string): string | undefined {
  const text = Buffer.from(cursor, 'base64url').toString('utf8')
  return text.startsWith('k:') ? text.slice(2) : undefined
}

function compare (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
