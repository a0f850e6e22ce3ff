/**
 * Key material for the authorization server: the ES256 keys that sign access
 * tokens, and the keys that sign its cookies. Supplied by a JWKS file, or
 * generated on first start and kept in the store — written with
 * set-if-absent, so replicas racing at first start end up with the same keys
 * — and never logged.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import type { Store } from '../store/types.js'

const SIGNING_KEYS_KEY = 'auth:signing-keys'
const COOKIE_KEYS_KEY = 'auth:cookie-keys'
export const SIGNING_ALG = 'ES256'

export interface KeyMaterial {
  /** Private JWKs; the first signs, the rest are still published (rotation). */
  readonly signingKeys: readonly JWK[]
  readonly publicJwks: { readonly keys: readonly JWK[] }
  readonly cookieKeys: readonly string[]
  /** Binds login and consent forms to their interaction (CSRF). */
  readonly csrfKey: Buffer
  /** Keys mcp.session.id in traces (request-trace.ts hashSessionId): stored, so the same on every replica. */
  readonly sessionHashKey: Buffer
}

export class KeyFileError extends Error {
  readonly code = 'PORTCULLIS_ERR_CONFIG'
}

function publicPart (jwk: JWK): JWK {
  const { d: _private, ...rest } = jwk
  void _private
  return rest
}

function checkSigningKey (jwk: JWK, where: string): JWK {
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string') {
    throw new KeyFileError(`${where}: expected a private EC P-256 key (kty "EC", crv "P-256", with "d") for ES256`)
  }
  return { ...jwk, alg: SIGNING_ALG, use: 'sig', kid: jwk.kid ?? `key-${randomBytes(6).toString('hex')}` }
}

async function generateSigningKey (): Promise<JWK> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true })
  const jwk = await exportJWK(privateKey)
  return { ...jwk, alg: SIGNING_ALG, use: 'sig', kid: `${new Date().toISOString().slice(0, 10)}-${randomBytes(4).toString('hex')}` }
}

/** Reads a value from the store, creating it once (first writer wins) when absent. */
export async function getOrCreate (store: Store, key: string, create: () => Promise<string>): Promise<string> {
  const existing = await store.kvGet(key)
  if (existing !== undefined) return existing
  await store.kvSetIfAbsent(key, await create())
  const settled = await store.kvGet(key)
  if (settled === undefined) throw new Error(`the store lost ${key} right after writing it`)
  return settled
}

export async function loadKeys (store: Store, signingKeysFile: string | undefined): Promise<KeyMaterial> {
  let signingKeys: JWK[]
  if (signingKeysFile !== undefined) {
    let parsed: unknown
    try {
      parsed = JSON.parse(readFileSync(signingKeysFile, 'utf8'))
    } catch (err) {
      throw new KeyFileError(`auth.signingKeysFile ${signingKeysFile}: cannot read a JWKS (${(err as Error).message})`)
    }
    const keys = (parsed as { keys?: unknown } | null)?.keys
    if (!Array.isArray(keys) || keys.length === 0) throw new KeyFileError(`auth.signingKeysFile ${signingKeysFile}: expected {"keys": [<private JWK>, ...]}`)
    signingKeys = keys.map((k, i) => checkSigningKey(k as JWK, `auth.signingKeysFile keys[${i}]`))
  } else {
    const stored = await getOrCreate(store, SIGNING_KEYS_KEY, async () => JSON.stringify({ keys: [await generateSigningKey()] }))
    signingKeys = (JSON.parse(stored) as { keys: JWK[] }).keys
  }
  const cookieKeys = JSON.parse(await getOrCreate(store, COOKIE_KEYS_KEY, async () => JSON.stringify([randomBytes(32).toString('base64url')]))) as string[]
  const firstCookieKey = cookieKeys[0]
  if (firstCookieKey === undefined) throw new Error('no cookie key')
  return {
    signingKeys,
    publicJwks: { keys: signingKeys.map(publicPart) },
    cookieKeys,
    csrfKey: createHmac('sha256', firstCookieKey).update('portcullis interaction csrf').digest(),
    sessionHashKey: createHmac('sha256', firstCookieKey).update('portcullis trace session id').digest(),
  }
}
