import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { SecretBox } from '../../src/auth-server/secret-box.js'
import { IdpSessions } from '../../src/auth-server/idp-sessions.js'
import { MemoryStore } from '../../src/store/memory-store.js'

const dir = mkdtempSync(join(tmpdir(), 'portcullis-box-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.test('sealed values open only with their key and their context; they never contain the secret', async (t) => {
  const box = SecretBox.fromKeys([randomBytes(32)])
  const sealed = box.seal('rt-secret-value', 'idp-session:corp:a')
  t.match(sealed, /^v1\.[A-Za-z0-9_-]{8}\./, 'format and key id first')
  t.notOk(sealed.includes('rt-secret-value'))
  t.not(box.seal('rt-secret-value', 'idp-session:corp:a'), sealed, 'a fresh IV every time')
  t.equal(box.open(sealed, 'idp-session:corp:a'), 'rt-secret-value')
  t.throws(() => box.open(sealed, 'idp-session:corp:b'), 'another user\'s slot: refused (authenticated data)')
  const [v, kid, iv, ct, tag] = sealed.split('.')
  const flipped = Buffer.from(ct ?? '', 'base64url')
  flipped[0] = (flipped[0] ?? 0) ^ 1
  t.throws(() => box.open([v, kid, iv, flipped.toString('base64url'), tag].join('.'), 'idp-session:corp:a'), 'an altered ciphertext is refused')
  t.throws(() => box.open([v, kid, iv, ct, (tag ?? '').slice(0, 8)].join('.'), 'idp-session:corp:a'), /not a sealed value/, 'a shortened tag is refused')
  t.throws(() => SecretBox.fromKeys([randomBytes(32)]).open(sealed, 'idp-session:corp:a'), /does not have/, 'another key: a clear error')
})

t.test('auth.encryptionKeyFile: base64 or hex, one key per line, the first seals (rotation)', async (t) => {
  const store = new MemoryStore(() => Date.now())
  const oldKey = randomBytes(32)
  const newKey = randomBytes(32)
  const oldFile = join(dir, 'old.key')
  writeFileSync(oldFile, `${oldKey.toString('base64')}\n`)
  const sealedOld = (await SecretBox.load(store, oldFile)).seal('x', 'c')
  const rotated = join(dir, 'rotated.key')
  writeFileSync(rotated, `# current first\n${newKey.toString('hex')}\n${oldKey.toString('base64')}\n`)
  const box = await SecretBox.load(store, rotated)
  t.equal(box.open(sealedOld, 'c'), 'x', 'the old key still opens its values')
  t.equal(SecretBox.fromKeys([newKey]).open(box.seal('y', 'c'), 'c'), 'y', 'the first key seals')
  for (const [content, name] of [['too-short', 'short'], [randomBytes(16).toString('hex'), 'sixteen bytes'], ['', 'empty']] as const) {
    const file = join(dir, `${name}.key`)
    writeFileSync(file, content)
    await t.rejects(SecretBox.load(store, file), { code: 'PORTCULLIS_ERR_CONFIG', message: /auth\.encryptionKeyFile .*(32-byte key|holds no key)/ }, `${name}: a clear error`)
  }
  await t.rejects(SecretBox.load(store, join(dir, 'missing.key')), { message: /cannot read it \(ENOENT\)/ })
})

t.test('without a key file: generated once into the store, the same for every replica', async (t) => {
  const store = new MemoryStore(() => Date.now())
  const a = await SecretBox.load(store, undefined)
  const b = await SecretBox.load(store, undefined)
  t.equal(b.open(a.seal('shared', 'c'), 'c'), 'shared')
})

t.test('IdP sessions: the refresh token sealed per account; kept when a sign-in brings none', async (t) => {
  const store = new MemoryStore(() => Date.now())
  const sessions = new IdpSessions(store, SecretBox.fromKeys([randomBytes(32)]))
  await sessions.save('corp:a', { provider: 'corp', subject: 'a', refreshToken: 'rt-1', signedInAtMs: 1 })
  t.notOk((await store.kvGet('idp-session:corp:a'))?.includes('rt-1'))
  await sessions.save('corp:a', { provider: 'corp', subject: 'a', signedInAtMs: 2 })
  t.same(await sessions.idpSession('corp:a'), { provider: 'corp', subject: 'a', refreshToken: 'rt-1', signedInAtMs: 2 })
  // A copied record does not open in another account's slot.
  await store.kvSet('idp-session:corp:b', await store.kvGet('idp-session:corp:a') ?? '')
  await t.rejects(sessions.idpSession('corp:b'))
  await sessions.forget('corp:a')
  t.equal(await sessions.idpSession('corp:a'), undefined)
})
