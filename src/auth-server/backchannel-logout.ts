/**
 * OpenID Connect Back-Channel Logout 1.0 as the IdP's relying party: the IdP
 * POSTs a logout token (`logout_token`, a JWT it signs) to
 * <publicUrl>/oauth/idp/<name>/backchannel-logout when a user's session there
 * ends (logout, disablement, an administrator's "sign out everywhere"). The
 * gateway then offboards that user at once (offboarding.ts): the same as an IdP
 * refusal at revalidation.
 *
 * The token is validated as section 2.6 asks: signature against the IdP's JWKS
 * (asymmetric algorithms only), iss = the provider's issuer, aud includes its
 * clientId, iat present and recent, exp when present, a jti never seen before
 * (kept in the store, shared by replicas), the back-channel logout event, no
 * nonce, and a sub or a sid. Answers: 200 when done (also for a user the
 * gateway does not know: nothing to end), 400 with an OAuth error otherwise.
 */
import type { FastifyInstance } from 'fastify'
import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose'
import type { IdentityProviderConfig } from '../config/schema.js'
import type { Store } from '../store/types.js'
import { IdpKeysUnavailableError, type IdpKeySets } from './idp-keys.js'
import type { IdpSignIn } from './idp-sign-in.js'
import type { Offboarding } from './offboarding.js'

export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'
/** How old a logout token may be (its iat); its jti is remembered that long (plus the clock tolerance). */
const MAX_LOGOUT_TOKEN_AGE_S = 10 * 60
const CLOCK_TOLERANCE_S = 60
const MAX_LOGOUT_BODY_BYTES = 16 * 1024
const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']
const USED_JTI_PREFIX = 'idp-logout-jti:'

export function idpBackchannelLogoutPath (name: string): string {
  return `/oauth/idp/${name}/backchannel-logout`
}

/** Whom a valid logout token names: the user (sub), their IdP session (sid), or both. */
export interface LogoutSubject {
  readonly sub?: string
  readonly sid?: string
}

/** A logout token the gateway refuses; the message is the error_description. */
export class LogoutTokenError extends Error {
  override readonly name = 'LogoutTokenError'
}

/** Checks a logout token of `idp` and uses its jti up; throws LogoutTokenError when it is not valid. */
export async function verifyLogoutToken (token: string, idp: IdentityProviderConfig, keys: IdpKeySets, store: Store, nowMs: number): Promise<LogoutSubject> {
  if (idp.issuer === undefined) throw new LogoutTokenError('this identity provider has no issuer')
  let payload: JWTPayload
  try {
    ({ payload } = await jwtVerify(token, keys.keysOf(idp.issuer), {
      issuer: idp.issuer,
      audience: idp.clientId,
      algorithms: ASYMMETRIC_ALGORITHMS,
      requiredClaims: ['iat', 'jti', 'events'],
      maxTokenAge: MAX_LOGOUT_TOKEN_AGE_S,
      clockTolerance: CLOCK_TOLERANCE_S,
      currentDate: new Date(nowMs),
    }))
  } catch (err) {
    if (err instanceof IdpKeysUnavailableError) throw new LogoutTokenError('the identity provider\'s signing keys cannot be read right now')
    if (err instanceof joseErrors.JOSEError) throw new LogoutTokenError(`the logout token is not valid (${err.code})`)
    throw err
  }
  const events = payload.events as Record<string, unknown> | undefined
  const event = events?.[BACKCHANNEL_LOGOUT_EVENT]
  if (event === null || typeof event !== 'object' || Array.isArray(event)) throw new LogoutTokenError(`the logout token's events claim lacks ${BACKCHANNEL_LOGOUT_EVENT}`)
  if ('nonce' in payload) throw new LogoutTokenError('a logout token must not carry a nonce')
  const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : undefined
  const sid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : undefined
  if (sub === undefined && sid === undefined) throw new LogoutTokenError('the logout token names neither sub nor sid')
  const expiresAtMs = nowMs + (MAX_LOGOUT_TOKEN_AGE_S + 2 * CLOCK_TOLERANCE_S) * 1000
  if (!await store.kvSetIfAbsent(`${USED_JTI_PREFIX}${idp.name}:${String(payload.jti)}`, '1', expiresAtMs)) throw new LogoutTokenError('this logout token was already used')
  return { ...(sub === undefined ? {} : { sub }), ...(sid === undefined ? {} : { sid }) }
}

export interface BackchannelLogoutOptions {
  readonly idp: IdpSignIn
  readonly keys: IdpKeySets
  readonly store: Store
  readonly offboarding: Offboarding
  readonly now: () => number
}

export async function backchannelLogoutRoutes (app: FastifyInstance, opts: BackchannelLogoutOptions): Promise<void> {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: MAX_LOGOUT_BODY_BYTES }, (_request, body, done) => {
    done(null, new URLSearchParams(String(body)))
  })
  app.post<{ Params: { name: string } }>(idpBackchannelLogoutPath(':name'), async (request, reply) => {
    void reply.header('cache-control', 'no-store')
    const refuse = async (description: string): Promise<never> => reply.code(400).send({ error: 'invalid_request', error_description: description })
    const { name } = request.params
    if (!opts.idp.has(name)) return await refuse('no identity provider of that name')
    const token = request.body instanceof URLSearchParams ? request.body.get('logout_token') : null
    if (token === null || token === '') return await refuse('send logout_token as an application/x-www-form-urlencoded body')
    const idp = opts.idp.relyingParty(name).idp
    let subject: LogoutSubject
    try {
      subject = await verifyLogoutToken(token, idp, opts.keys, opts.store, opts.now())
    } catch (err) {
      if (!(err instanceof LogoutTokenError)) throw err
      request.log.info({ provider: name, reason: err.message }, 'identity provider logout token refused')
      return await refuse(err.message)
    }
    const ended = await opts.offboarding.logout(name, subject)
    request.log.info({ provider: name, users: ended }, 'identity provider logged a user out (back-channel)')
    return await reply.code(200).send()
  })
}
