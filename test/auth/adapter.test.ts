// The oidc-provider adapter's single-use rules, driven the way oidc-provider drives it (find, then
// consume) with the interleavings that replicas produce. The end-to-end race through three
// gateway processes is in test/e2e/replicas.test.ts; these pin each interleaving down.
import t from 'tap'
import { createAdapter } from '../../src/auth-server/adapter.js'
import { MemoryStore } from '../../src/store/memory-store.js'

interface TestAdapter {
  upsert: (id: string, payload: Record<string, unknown>, expiresIn?: number) => Promise<void>
  find: (id: string) => Promise<Record<string, unknown> | undefined>
  consume: (id: string) => Promise<void>
}

function setup (graceS = 0): { tokens: TestAdapter, revoked: string[], store: MemoryStore, advance: (ms: number) => void } {
  let now = 1_700_000_000_000
  const store = new MemoryStore(() => now)
  const revoked: string[] = []
  const Adapter = createAdapter(store, {
    refreshGraceS: graceS,
    registeredClientTtlMs: 86_400_000,
    unusedClientTtlMs: 3_600_000,
    now: () => now,
    revokeGrant: async (grantId) => {
      revoked.push(grantId)
      await store.revokeByGrantId(grantId, now + 60_000)
    },
  })
  return { tokens: new Adapter('RefreshToken') as TestAdapter, revoked, store, advance: (ms) => { now += ms } }
}

t.test('of two requests that both read a refresh token unused, the second to consume it is refused and the family revoked', async (t) => {
  const { tokens, revoked } = setup()
  await tokens.upsert('rt', { grantId: 'g', clientId: 'c' }, 3600)
  t.notOk((await tokens.find('rt'))?.consumed, 'both requests read it unused')
  await tokens.consume('rt')
  await t.rejects(tokens.consume('rt'), { name: 'InvalidGrant', error_description: 'grant request is invalid' }, 'the second is refused')
  t.same(revoked, ['g'], 'and the race revoked the grant, as a replay does')
})

t.test('a third request that read it unused, consuming after the second revoked the grant, is refused too', async (t) => {
  // The interleaving CI caught with three replicas: 1 consumes; 2 finds it consumed and revokes
  // the grant (deleting the record); 3, which read the record before either, consumes nothing.
  const { tokens, revoked } = setup()
  await tokens.upsert('rt', { grantId: 'g', clientId: 'c' }, 3600)
  t.ok(await tokens.find('rt'), 'the third request has read the record')
  await tokens.consume('rt')
  await t.rejects(tokens.consume('rt'), { name: 'InvalidGrant' })
  t.equal(await tokens.find('rt'), undefined, 'the revocation deleted the record')
  await t.rejects(tokens.consume('rt'), { name: 'InvalidGrant' }, 'a record that is gone is won by nobody')
  t.same(revoked, ['g'])
})

t.test('within the reuse grace a concurrent refresh is allowed; after it, it is a replay', async (t) => {
  const { tokens, revoked, advance } = setup(10)
  await tokens.upsert('rt', { grantId: 'g', clientId: 'c' }, 3600)
  await tokens.consume('rt')
  await tokens.consume('rt')
  t.same(revoked, [], 'a client refreshing twice in parallel keeps its grant')
  advance(10_000)
  await t.rejects(tokens.consume('rt'), { name: 'InvalidGrant' })
  t.same(revoked, ['g'], 'past the grace it is reuse')
})
