/**
 * Secrets the gateway keeps at rest for a user — an identity provider's refresh
 * token now, linked upstream credentials later — sealed with AES-256-GCM.
 *
 * The key comes from `auth.encryptionKeyFile` (32 bytes, base64 or hex; one key
 * per line: the first seals, the others still open what they sealed, so a key
 * can be rotated) or is generated once and kept in the store like the signing
 * keys (replicas racing at first start end up with the same key). A sealed
 * value names its key (`v1.<kid>.<iv>.<ciphertext>.<tag>`), and the caller's
 * context (which user, which slot) is authenticated data: a sealed value
 * copied into another user's slot does not open.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Store } from '../store/types.js'
import { getOrCreate, KeyFileError } from './keys.js'

const ENCRYPTION_KEYS_KEY = 'auth:encryption-keys'
const KEY_BYTES = 32
const IV_BYTES = 12
const TAG_BYTES = 16
const FORMAT = 'v1'

interface BoxKey {
  readonly kid: string
  readonly key: Buffer
}

/** A key id that names the key without revealing it: the first bytes of its SHA-256. */
function kidOf (key: Buffer): string {
  return createHash('sha256').update(key).digest('base64url').slice(0, 8)
}

/** 32 bytes written as base64 (standard or url-safe) or hex; anything else is refused with a clear message. */
export function parseKey (text: string, where: string): Buffer {
  const trimmed = text.trim()
  const key = /^[0-9a-f]{64}$/i.test(trimmed) ? Buffer.from(trimmed, 'hex') : /^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed) ? Buffer.from(trimmed, 'base64') : undefined
  if (key?.length !== KEY_BYTES) {
    throw new KeyFileError(`${where}: expected a 32-byte key written as base64 (44 characters) or hex (64 characters), e.g. the output of \`openssl rand -base64 32\``)
  }
  return key
}

function readKeyFile (path: string): BoxKey[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new KeyFileError(`auth.encryptionKeyFile ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  if (lines.length === 0) throw new KeyFileError(`auth.encryptionKeyFile ${path}: the file holds no key`)
  return lines.map((line, i) => {
    const key = parseKey(line, `auth.encryptionKeyFile ${path} line ${i + 1}`)
    return { kid: kidOf(key), key }
  })
}

export class SecretBox {
  private readonly byKid: ReadonlyMap<string, Buffer>

  /** keys[0] seals; every key opens what it sealed. */
  private constructor (private readonly keys: readonly BoxKey[]) {
    this.byKid = new Map(keys.map((k) => [k.kid, k.key]))
  }

  static async load (store: Store, keyFile: string | undefined): Promise<SecretBox> {
    if (keyFile !== undefined) return new SecretBox(readKeyFile(keyFile))
    const stored = await getOrCreate(store, ENCRYPTION_KEYS_KEY, async () => JSON.stringify([randomBytes(KEY_BYTES).toString('base64url')]))
    const keys = (JSON.parse(stored) as string[]).map((k) => Buffer.from(k, 'base64url'))
    return new SecretBox(keys.map((key) => ({ kid: kidOf(key), key })))
  }

  /** Test and tooling use: a box around given keys. */
  static fromKeys (keys: readonly Buffer[]): SecretBox {
    return new SecretBox(keys.map((key) => ({ kid: kidOf(key), key })))
  }

  /** `context` says where the value belongs (e.g. `idp-refresh:corp:1234`); opening needs the same context. */
  seal (plaintext: string, context: string): string {
    const current = this.keys[0]
    if (current === undefined) throw new Error('secret box without a key')
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', current.key, iv)
    cipher.setAAD(Buffer.from(context, 'utf8'))
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
    return [FORMAT, current.kid, iv.toString('base64url'), ciphertext.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.')
  }

  /** The plaintext; throws when the value is malformed, sealed with an unknown key, altered, or from another context. */
  open (sealed: string, context: string): string {
    const [format, kid, iv, ciphertext, tag, ...rest] = sealed.split('.')
    if (format !== FORMAT || kid === undefined || iv === undefined || ciphertext === undefined || tag === undefined || rest.length > 0) {
      throw new Error('not a sealed value')
    }
    const key = this.byKid.get(kid)
    if (key === undefined) throw new Error(`sealed with key ${kid}, which this gateway does not have (auth.encryptionKeyFile changed?)`)
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'))
    decipher.setAAD(Buffer.from(context, 'utf8'))
    const authTag = Buffer.from(tag, 'base64url')
    // A shortened GCM tag would be accepted by node:crypto and is far easier to forge.
    if (authTag.length !== TAG_BYTES) throw new Error('not a sealed value')
    decipher.setAuthTag(authTag)
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8')
  }
}
