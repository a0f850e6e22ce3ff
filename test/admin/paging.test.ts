/** Admin list paging: an opaque cursor that survives items added or removed between pages. */
import t from 'tap'
import { MAX_PAGE_LIMIT, pageQuery, paginate } from '../../src/admin/paging.js'
import { PortcullisError } from '../../src/errors.js'

const ids = (page: { items: Array<{ id: string }> }): string[] => page.items.map((i) => i.id)

t.test('pages follow each other by cursor, sorted by key, and the last has none', async (t) => {
  const items = ['d', 'a', 'c', 'b', 'e'].map((id) => ({ id }))
  const first = paginate(items, (i) => i.id, pageQuery({ limit: '2' }))
  t.same(ids(first), ['a', 'b'])
  const second = paginate(items, (i) => i.id, pageQuery({ limit: '2', cursor: first.nextCursor }))
  t.same(ids(second), ['c', 'd'])
  // 'c' removed and 'bb' added between pages: nothing skipped, nothing repeated.
  const changed = [...items.filter((i) => i.id !== 'c'), { id: 'bb' }]
  t.same(ids(paginate(changed, (i) => i.id, pageQuery({ limit: '2', cursor: first.nextCursor }))), ['bb', 'd'])
  const last = paginate(items, (i) => i.id, pageQuery({ limit: '2', cursor: second.nextCursor }))
  t.same(ids(last), ['e'])
  t.equal(last.nextCursor, undefined)
  t.same(paginate(items, (i) => i.id, pageQuery({})).items.length, 5, 'default limit: all of a short list')
})

t.test('a bad limit or a made-up cursor is a 400 naming the parameter', async (t) => {
  for (const limit of ['0', String(MAX_PAGE_LIMIT + 1), 'ten', '-1', ['1', '2']]) {
    t.throws(() => pageQuery({ limit }), new PortcullisError('PORTCULLIS_ERR_ADMIN_BAD_REQUEST', `limit: expected a whole number from 1 to ${MAX_PAGE_LIMIT}`))
  }
  for (const cursor of ['not a cursor!', Buffer.from('x:abc').toString('base64url'), 'a'.repeat(3000)]) {
    t.throws(() => pageQuery({ cursor }), { code: 'PORTCULLIS_ERR_ADMIN_BAD_REQUEST', message: /cursor: not a cursor this API returned/ })
  }
})
