/**
 * scrypt password hashes: `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`.
 * The parameters travel with the hash, so stronger settings verify too.
 * Hashing runs on libuv's thread pool (async scrypt): a login never blocks
 * the event loop that is proxying everyone else's traffic.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/** ~120 ms on a 2-core VM: slow for guessing, fine for a login. */
export const SCRYPT_N = 32_768
export const SCRYPT_R = 8
export const SCRYPT_P = 1
const KEY_BYTES = 64
const SALT_BYTES = 16
const MAX_MEM_BYTES = 256 * 1024 * 1024
const HASH_RE = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/

function scrypt (password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password.normalize('NFC'), salt, keylen, options, (err, key) => err === null ? resolve(key) : reject(err))
  })
}

export async function hashPassword (password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const key = await scrypt(password, salt, KEY_BYTES, { N: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P, maxmem: MAX_MEM_BYTES })
  return `scrypt$${SCRYPT_N}$${SCRYPT_R}$${SCRYPT_P}$${salt.toString('base64')}$${key.toString('base64')}`
}

export function isPasswordHash (value: string): boolean {
  const m = HASH_RE.exec(value)
  if (m === null) return false
  const n = Number(m[1])
  // N must be a power of two above 1; parameters within what the process can afford.
  return n > 1 && (n & (n - 1)) === 0 && n <= 2 ** 20 && Number(m[2]) <= 32 && Number(m[3]) <= 16
}

/** Constant-time comparison; false for malformed hashes. */
export async function verifyPassword (password: string, hash: string): Promise<boolean> {
  const m = HASH_RE.exec(hash)
  if (m === null || !isPasswordHash(hash)) return false
  const expected = Buffer.from(m[5] ?? '', 'base64')
  const key = await scrypt(password, Buffer.from(m[4] ?? '', 'base64'), expected.length, { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]), maxmem: MAX_MEM_BYTES })
  return key.length === expected.length && timingSafeEqual(key, expected)
}

/** A hash of a random password: checked against when the user does not exist, so timing tells nothing. */
let decoyHash: Promise<string> | undefined
export function decoyPasswordHash (): Promise<string> {
  decoyHash ??= hashPassword(randomBytes(16).toString('base64'))
  return decoyHash
}

const PASSWORD_ALPHABET = 'abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789'
const GENERATED_PASSWORD_CHARS = 20

/** A password for a generated account: 20 characters from an unambiguous alphabet (~115 bits). */
export function generatePassword (): string {
  // Rejection sampling: bytes at or above the largest multiple of the alphabet size would bias it.
  const limit = 256 - (256 % PASSWORD_ALPHABET.length)
  let out = ''
  while (out.length < GENERATED_PASSWORD_CHARS) {
    for (const b of randomBytes(32)) {
      if (b < limit && out.length < GENERATED_PASSWORD_CHARS) out += PASSWORD_ALPHABET[b % PASSWORD_ALPHABET.length]
    }
  }
  return out
}
