/**
 * Sign-in for the /account pages: the gateway is an OAuth client of its own
 * embedded authorization server — a first-party client registered internally,
 * authorization code + PKCE S256, `prompt=login` (every account sign-in asks
 * for the password or the identity provider again, so "sign out" means it),
 * OpenID scope only, no resource (its tokens reach no MCP server). So the
 * account pages sign in exactly as MCP clients do, local users and
 * identity-provider users alike, and never see a password.
 *
 * The code goes to /oauth/token in-process (Fastify inject: no socket, no
 * outbound fetch), and the ID token is checked against the gateway's own keys:
 * issuer, audience, nonce (OIDC Core 3.1.3.7).
 */
import { createHash, randomBytes } from 'node:crypto'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import type { ClientMetadata } from 'oidc-provider'
import { isForbiddenRedirect } from '../auth-server/redirect-rule.js'
import { ACCOUNT_PATH, type PendingLogin } from './session.js'

export const ACCOUNT_CLIENT_ID = 'portcullis-account'
export const CALLBACK_PATH = `${ACCOUNT_PATH}/callback`

/**
 * The client the provider knows the account pages by (registered beside the YAML clients), or
 * undefined when publicUrl is plain http on a non-loopback host (allowInsecurePublicUrl): the
 * one redirect rule (redirect-rule.ts) forbids such a redirect, and the pages say so.
 */
export function accountClientMetadata (publicUrl: string): ClientMetadata | undefined {
  const callback = `${publicUrl}${CALLBACK_PATH}`
  if (isForbiddenRedirect(callback)) return undefined
  const isLoopbackHttp = publicUrl.startsWith('http:')
  return {
    client_id: ACCOUNT_CLIENT_ID,
    client_name: 'your Portcullis account',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [callback],
    // oidc-provider allows http redirects only for native clients; publicUrl is http only on loopback
    // (or with allowInsecurePublicUrl, where the whole gateway is plain http anyway).
    application_type: isLoopbackHttp ? 'native' : 'web',
  }
}

/** Where the sign-in starts, and what the callback must find again. */
export function startSignIn (publicUrl: string, returnTo: string): { url: string, pending: PendingLogin } {
  const pending: PendingLogin = { state: random(), verifier: random(32), nonce: random(), returnTo }
  const params = new URLSearchParams({
    client_id: ACCOUNT_CLIENT_ID,
    response_type: 'code',
    redirect_uri: `${publicUrl}${CALLBACK_PATH}`,
    scope: 'openid',
    prompt: 'login',
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: createHash('sha256').update(pending.verifier).digest('base64url'),
    code_challenge_method: 'S256',
  })
  return { url: `/oauth/authorize?${params.toString()}`, pending }
}

/**
 * Sends a form to the token endpoint and returns its answer (status and JSON body). `clientIp`:
 * the signed-in person's address, so the token endpoint's per-IP limit counts them, not the gateway.
 */
export type TokenExchange = (form: URLSearchParams, clientIp: string) => Promise<{ status: number, body: unknown }>

export class SignInError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'SignInError'
  }
}

/** The signed-in user's id, from the callback's query and the pending sign-in. */
export async function finishSignIn (query: Record<string, string | undefined>, pending: PendingLogin, deps: { publicUrl: string, jwks: JSONWebKeySet, exchange: TokenExchange, clientIp: string, now: () => number }): Promise<string> {
  if (query.state !== pending.state) throw new SignInError('the sign-in state does not match')
  // RFC 9207: the response names its issuer; only ours is accepted.
  if (query.iss !== deps.publicUrl) throw new SignInError('the sign-in came back from another issuer')
  if (query.error !== undefined) throw new SignInError(`the sign-in ended: ${query.error.slice(0, 100)}`)
  if (query.code === undefined) throw new SignInError('the sign-in returned no code')
  const answer = await deps.exchange(new URLSearchParams({
    grant_type: 'authorization_code',
    code: query.code,
    redirect_uri: `${deps.publicUrl}${CALLBACK_PATH}`,
    client_id: ACCOUNT_CLIENT_ID,
    code_verifier: pending.verifier,
  }), deps.clientIp)
  const idToken = (answer.body as { id_token?: unknown } | null)?.id_token
  if (answer.status !== 200 || typeof idToken !== 'string') throw new SignInError(`the code exchange failed (${answer.status})`)
  const { payload } = await jwtVerify(idToken, createLocalJWKSet(deps.jwks), { issuer: deps.publicUrl, audience: ACCOUNT_CLIENT_ID, algorithms: ['ES256'], currentDate: new Date(deps.now()) })
    .catch(() => { throw new SignInError('the ID token is not valid') })
  if (payload.nonce !== pending.nonce || typeof payload.sub !== 'string') throw new SignInError('the ID token does not belong to this sign-in')
  return payload.sub
}

function random (bytes = 16): string {
  return randomBytes(bytes).toString('base64url')
}
