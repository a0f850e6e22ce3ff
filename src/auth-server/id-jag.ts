/**
 * Enterprise-managed authorization (the MCP auth extension
 * io.modelcontextprotocol/enterprise-managed-authorization): a client exchanges
 * an Identity Assertion JWT Authorization Grant (ID-JAG,
 * draft-ietf-oauth-identity-assertion-authz-grant) that the organisation's
 * identity provider signed, through the RFC 7523 JWT-bearer grant, for an
 * ordinary access token for one server:
 *
 *   POST /oauth/token  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<ID-JAG>
 *
 * The IdP has already decided (its policy) that this user may use this client
 * with this server; the gateway checks that the assertion is genuine, meant for
 * it, for this client, for one of its servers, fresh and not seen before, then
 * applies its own admission rules (allowedDomains, requiredGroups) as at an
 * interactive sign-in. No refresh token: the client asks the IdP for a new ID-JAG.
 *
 * Each check is a small step below; every refusal is an RFC 6749 5.2 error with
 * a description that says which check failed (never the assertion itself).
 */
import { createHash } from 'node:crypto'
import { decodeJwt, jwtVerify, type errors as joseErrors, type JWTPayload } from 'jose'
import { errors, type Client, type KoaContextWithOIDC, type Provider, type ResourceServer } from 'oidc-provider'
import type { IdentityProviderConfig } from '../config/schema.js'
import type { Store } from '../store/types.js'
import type { ExternalAccounts } from './external-accounts.js'
import { admissionRefusal, identityFromClaims } from './idp-identity.js'
import { IdpKeysUnavailableError, type IdpKeySets } from './idp-keys.js'
import type { ResourceCatalog, ResourceTarget } from './resources.js'

/** RFC 7523 2.1. */
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
/** The ID-JAG's JWT header typ (draft-ietf-oauth-identity-assertion-authz-grant, explicit typing per RFC 8725 3.11). */
export const ID_JAG_TYP = 'oauth-id-jag+jwt'
/** Asymmetric algorithms only: a shared-secret (HS*) signature would let anyone holding the secret mint grants. */
const ASSERTION_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']
/** The IdP's clock and ours may disagree by this much (exp, iat, nbf). */
export const ID_JAG_CLOCK_SKEW_S = 60
/**
 * The oldest assertion accepted, whatever its exp: ID-JAGs are meant to be used at once (the
 * draft's examples live 5 minutes), and this also bounds how long a jti is remembered.
 */
export const ID_JAG_MAX_AGE_S = 60 * 60
/** Claims the draft requires (section "ID-JAG" claims); `scope` and `email` are optional. */
const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'client_id', 'jti', 'exp', 'iat', 'resource']

export interface IdJagDeps {
  readonly identityProviders: readonly IdentityProviderConfig[]
  readonly catalog: ResourceCatalog
  readonly store: Store
  readonly keySets: IdpKeySets
  readonly accounts: ExternalAccounts
  readonly now: () => number
  /** What the server at this (canonical) resource grants this client: the same answer as for an interactive sign-in. */
  readonly resourceServerInfo: (audience: string, clientId: string) => ResourceServer
  /** Told why the IdP's keys could not be read (an operator's problem, not the client's). */
  readonly onKeysUnavailable: (issuer: string, reason: string) => void
}

interface VerifiedAssertion {
  readonly idp: IdentityProviderConfig
  readonly claims: JWTPayload & { client_id: string, resource: string, jti: string, exp: number, sub: string }
}

/**
 * invalid_grant with a description the client sees (oidc-provider's InvalidGrant keeps its
 * detail to the server and answers only "grant request is invalid").
 */
function invalidGrant (description: string): Error {
  return new errors.CustomOIDCProviderError('invalid_grant', description)
}

/** Whether any identity provider is trusted for ID-JAGs (the grant is offered only then). */
export function hasIdJagProvider (identityProviders: readonly IdentityProviderConfig[]): boolean {
  return identityProviders.some((idp) => idp.idJag)
}

/** The token endpoint's handler for the JWT-bearer grant (Provider.registerGrantType). */
export function idJagGrant (deps: IdJagDeps): (ctx: KoaContextWithOIDC) => Promise<void> {
  return async (ctx) => {
    const { client, provider, params } = ctx.oidc as KoaContextWithOIDC['oidc'] & { client: Client, params: Record<string, unknown> }
    const assertion = params.assertion
    if (typeof assertion !== 'string' || assertion === '') throw new errors.InvalidRequest('missing required parameter \'assertion\' (the ID-JAG)')
    const { idp, claims } = await verifyAssertion(deps, assertion, provider.issuer)
    // Draft 5.1 / RFC 7521 5.2: the grant was issued to the client that presents it.
    if (claims.client_id !== client.clientId) throw invalidGrant('the assertion was issued to another client (its client_id is not the authenticated client)')
    const { audience, server } = serverOf(deps.catalog, claims.resource)
    const info = deps.resourceServerInfo(audience, client.clientId)
    const scope = grantedScope(info, deps.catalog.challengeScopes(server), claims.scope, params.scope)
    await consumeOnce(deps, idp, claims)
    const accountId = await admit(deps, idp, claims)
    const grantId = await createGrant(provider, accountId, client.clientId, audience, scope)
    const token = new provider.AccessToken({ accountId, client, grantId, gty: 'jwt_bearer', scope })
    token.resourceServer = new provider.ResourceServer(audience, info)
    ctx.oidc.entity('AccessToken', token)
    const accessToken = await token.save()
    ctx.body = { access_token: accessToken, token_type: 'Bearer', expires_in: token.expiration, scope }
  }
}

/** Header typ, signature against the IdP's published keys, iss, aud, exp/iat and the required claims. */
async function verifyAssertion (deps: IdJagDeps, assertion: string, gatewayIssuer: string): Promise<VerifiedAssertion> {
  const idp = trustedIssuer(deps.identityProviders, unverifiedIssuer(assertion))
  const issuer = idp.issuer as string
  try {
    const { payload } = await jwtVerify(assertion, deps.keySets.keysOf(issuer), {
      typ: ID_JAG_TYP,
      issuer,
      audience: gatewayIssuer,
      algorithms: ASSERTION_ALGORITHMS,
      requiredClaims: REQUIRED_CLAIMS,
      clockTolerance: ID_JAG_CLOCK_SKEW_S,
      maxTokenAge: ID_JAG_MAX_AGE_S,
      currentDate: new Date(deps.now()),
    })
    return { idp, claims: checkedClaims(payload) }
  } catch (err) {
    throw assertionError(deps, issuer, err)
  }
}

/** The `iss` of an assertion not yet verified: only to choose whose keys verify it (then checked again by jwtVerify). */
function unverifiedIssuer (assertion: string): string {
  let claims: JWTPayload
  try {
    claims = decodeJwt(assertion)
  } catch {
    throw invalidGrant('the assertion is not a JWT')
  }
  if (typeof claims.iss !== 'string') throw invalidGrant('the assertion has no iss claim')
  return claims.iss
}

function trustedIssuer (identityProviders: readonly IdentityProviderConfig[], iss: string): IdentityProviderConfig {
  const idp = identityProviders.find((candidate) => candidate.issuer === iss)
  if (idp === undefined) throw invalidGrant('the assertion\'s issuer is not an identity provider this gateway trusts')
  if (!idp.idJag) throw invalidGrant(`identity provider "${idp.name}" is not trusted for ID-JAG assertions (idJag is not set)`)
  return idp
}

/** Types of the claims the steps below read (presence was checked by requiredClaims). */
function checkedClaims (payload: JWTPayload): VerifiedAssertion['claims'] {
  for (const name of ['client_id', 'resource', 'jti', 'sub'] as const) {
    if (typeof payload[name] !== 'string' || payload[name] === '') throw invalidGrant(`the assertion's ${name} claim must be a non-empty string`)
  }
  if (payload.scope !== undefined && typeof payload.scope !== 'string') throw invalidGrant('the assertion\'s scope claim must be a space-separated string')
  return payload as VerifiedAssertion['claims']
}

/** jose's refusals as OAuth errors that say which check failed; key trouble is logged for the operator. */
function assertionError (deps: IdJagDeps, issuer: string, err: unknown): Error {
  if (err instanceof errors.OIDCProviderError) return err
  if (err instanceof IdpKeysUnavailableError) {
    deps.onKeysUnavailable(issuer, err.message)
    return invalidGrant('the identity provider\'s signing keys cannot be read right now; try again later')
  }
  const code = (err as { code?: string }).code
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      if ((err as joseErrors.JWTExpired).claim === 'iat') return invalidGrant(`the assertion was issued more than ${ID_JAG_MAX_AGE_S / 60} minutes ago`)
      return invalidGrant('the assertion has expired')
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const { claim, reason } = err as joseErrors.JWTClaimValidationFailed
      if (claim === 'aud') return invalidGrant('the assertion\'s aud is not this authorization server\'s issuer')
      if (claim === 'typ') return invalidGrant(`the assertion's JWT header typ must be ${ID_JAG_TYP}`)
      if (claim === 'iat' && reason === 'check_failed') return invalidGrant('the assertion\'s iat is in the future')
      return invalidGrant(reason === 'missing' ? `the assertion has no ${claim} claim` : `the assertion's ${claim} claim is not acceptable (${reason})`)
    }
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return invalidGrant('the assertion\'s signature does not verify with the identity provider\'s keys')
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return invalidGrant('the assertion is signed with an algorithm that is not accepted (asymmetric algorithms only)')
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return invalidGrant('the assertion is not a well-formed signed JWT')
    default:
      // The key set's fetch failed (timeout, HTTP error, refused by the outbound guard).
      deps.onKeysUnavailable(issuer, (err as Error).message)
      return invalidGrant('the identity provider\'s signing keys cannot be read right now; try again later')
  }
}

/** The assertion's `resource` must be exactly one of the gateway's servers or virtual servers (not the gateway as a whole). */
function serverOf (catalog: ResourceCatalog, resource: string): { audience: string, server: ResourceTarget } {
  const audience = catalog.canonical(resource)
  const virtual = audience === undefined ? undefined : catalog.virtualServerAt(audience)
  const server = audience === undefined ? undefined : catalog.serverAt(audience) ?? (virtual === undefined ? undefined : catalog.virtualTarget(virtual))
  if (audience === undefined || server === undefined) throw new errors.InvalidTarget('the assertion\'s resource is not one MCP server of this gateway')
  return { audience, server }
}

/**
 * The token's scope: what the IdP put in the assertion (or, when it put none, what a 401
 * challenge for this server asks for), optionally narrowed by the request's own `scope`
 * (RFC 7521 4.1). Every scope must be one the server (and, for a YAML client with `scopes`,
 * that client) may have.
 */
function grantedScope (info: ResourceServer, fallback: readonly string[], assertionScope: unknown, requestScope: unknown): string {
  const grantable = new Set((info.scope ?? '').split(' ').filter((s) => s !== ''))
  const words = (value: unknown): string[] | undefined => typeof value === 'string' ? value.split(' ').filter((s) => s !== '') : undefined
  const asserted = words(assertionScope)
  const notOffered = asserted?.find((s) => !grantable.has(s))
  if (notOffered !== undefined) throw new errors.InvalidScope(`scope "${notOffered}" is not offered by this server to this client`, notOffered)
  const ceiling = asserted ?? fallback.filter((s) => grantable.has(s))
  const requested = words(requestScope)
  const beyond = requested?.find((s) => !ceiling.includes(s))
  if (beyond !== undefined) throw new errors.InvalidScope(`scope "${beyond}" is more than the assertion grants`, beyond)
  return [...new Set(requested ?? ceiling)].join(' ')
}

/** RFC 7523 3 item 7: a jti is accepted once, remembered until the assertion could no longer be accepted anyway. */
async function consumeOnce (deps: IdJagDeps, idp: IdentityProviderConfig, claims: VerifiedAssertion['claims']): Promise<void> {
  const key = `id-jag:jti:${createHash('sha256').update(`${idp.issuer ?? ''}\n${claims.jti}`).digest('base64url')}`
  const forgetAtMs = (claims.exp + ID_JAG_CLOCK_SKEW_S) * 1000
  if (!await deps.store.kvSetIfAbsent(key, idp.name, forgetAtMs)) throw invalidGrant('the assertion has already been used (its jti was seen before)')
}

/** The user the IdP vouches for, mapped and admitted as at an interactive sign-in, and recorded (token claims read it). */
async function admit (deps: IdJagDeps, idp: IdentityProviderConfig, claims: VerifiedAssertion['claims']): Promise<string> {
  const identity = identityFromClaims(idp, claims)
  const refusal = admissionRefusal(idp, identity, claims)
  if (refusal !== undefined) throw invalidGrant(`the user may not use this gateway: ${refusal}`)
  await deps.accounts.save(identity, deps.now())
  return identity.id
}

/**
 * A grant of its own, so revoking the token (or the grant) works as for an interactive sign-in
 * (its lifetime: ttl.Grant in provider.ts, that of the access token for this grant type).
 */
async function createGrant (provider: Provider, accountId: string, clientId: string, audience: string, scope: string): Promise<string> {
  const grant = new provider.Grant({ accountId, clientId })
  grant.addResourceScope(audience, scope)
  return grant.save()
}
