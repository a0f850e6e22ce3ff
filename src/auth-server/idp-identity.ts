/**
 * From an identity provider's claims to a gateway identity, and whether that
 * identity may sign in. Shared by every way an IdP vouches for a user: the
 * sign-in callback, revalidation at token refresh, and ID-JAG assertions, so
 * the same person always becomes the same `<provider>:<subject>` with the same
 * groups.
 */
import type { IdentityProviderConfig } from '../config/schema.js'

export interface ExternalIdentity {
  /** `<provider>:<subject>`: stable for as long as the IdP keeps the subject. */
  readonly id: string
  readonly provider: string
  readonly subject: string
  /** From `usernameClaim`, else preferred_username, else email, else sub. */
  readonly name: string
  readonly email?: string
  readonly emailVerified: boolean
  /** Gateway groups: the IdP's groups passed through `groupMap`, sorted, without duplicates. */
  readonly groups: readonly string[]
}

/** Reads a dotted claim path (`realm_access.roles`) from a claims object. */
export function claimAt (claims: Readonly<Record<string, unknown>>, path: string): unknown {
  let value: unknown = claims
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
    value = (value as Record<string, unknown>)[part]
  }
  return value
}

const nonEmptyString = (value: unknown): string | undefined =>
  typeof value === 'string' && value.trim() !== '' ? value : undefined

/** The IdP's raw group values: an array of strings, or one space/comma separated string (some IdPs send that). */
export function rawGroups (claims: Readonly<Record<string, unknown>>, path: string | undefined): string[] {
  if (path === undefined) return []
  const value = claimAt(claims, path)
  if (Array.isArray(value)) return value.filter((g): g is string => typeof g === 'string' && g !== '')
  if (typeof value === 'string') return value.split(/[\s,]+/).filter((g) => g !== '')
  return []
}

/** IdP groups (and, for Google, the user's email) mapped through `groupMap`; unmapped groups keep their name. */
export function mapGroups (idp: Pick<IdentityProviderConfig, 'groupMap'>, raw: readonly string[], email?: string): string[] {
  const out = new Set<string>()
  const add = (mapped: string | readonly string[]): void => {
    for (const g of typeof mapped === 'string' ? [mapped] : mapped) out.add(g)
  }
  for (const group of raw) add(idp.groupMap[group] ?? group)
  // groupMap keyed by an email gives that person groups where the IdP sends none (Google).
  if (email !== undefined) {
    const byEmail = idp.groupMap[email.toLowerCase()] ?? idp.groupMap[email]
    if (byEmail !== undefined) add(byEmail)
  }
  return [...out].sort()
}

export function identityFromClaims (idp: IdentityProviderConfig, claims: Readonly<Record<string, unknown>>, extraGroups: readonly string[] = []): ExternalIdentity {
  const subject = nonEmptyString(claims.sub)
  if (subject === undefined) throw new Error(`identity provider "${idp.name}" sent no sub claim`)
  // An address the IdP itself marks unverified is only the user's say-so (Keycloak and Auth0 let
  // users set theirs): it names nobody, maps no groups through groupMap and fills no ${user.email}.
  // An IdP that sends no email_verified (Entra ID) is taken at its word; allowedDomains alone
  // asks for email_verified: true (admissionRefusal).
  const isMarkedUnverified = claims.email_verified === false || claims.email_verified === 'false'
  const email = isMarkedUnverified ? undefined : nonEmptyString(claims.email)
  // usernameClaim: email reads the same unverified address: it names nobody there either.
  const isUnverifiedEmailClaim = idp.usernameClaim === 'email' && isMarkedUnverified
  const configured = idp.usernameClaim === undefined || isUnverifiedEmailClaim ? undefined : nonEmptyString(claimAt(claims, idp.usernameClaim))
  const name = configured ?? nonEmptyString(claims.preferred_username) ?? email ?? subject
  return {
    id: `${idp.name}:${subject}`,
    provider: idp.name,
    subject,
    name,
    ...(email === undefined ? {} : { email }),
    emailVerified: claims.email_verified === true || claims.email_verified === 'true',
    groups: mapGroups(idp, [...rawGroups(claims, idp.groupsClaim), ...extraGroups], email),
  }
}

/**
 * Why this identity may not sign in through this provider (a sentence for the
 * "not allowed" page and the log), or undefined when it may.
 */
export function admissionRefusal (idp: IdentityProviderConfig, identity: ExternalIdentity, claims: Readonly<Record<string, unknown>> = {}): string | undefined {
  if (idp.allowedDomains.length > 0) {
    const allowed = new Set(idp.allowedDomains.map((d) => d.toLowerCase()))
    const domain = (nonEmptyString(claims.email) ?? identity.email)?.split('@').pop()?.toLowerCase()
    const hd = nonEmptyString(claims.hd)?.toLowerCase()
    // Google's hd is the Workspace domain: when it is sent, it must match too (a personal account with a matching alias is not enough).
    if (domain === undefined || !allowed.has(domain) || (hd !== undefined && !allowed.has(hd))) {
      return `your account's email domain is not one of those allowed to sign in through ${idp.displayName ?? idp.name}`
    }
    if (!identity.emailVerified && idp.type === 'oidc') {
      return `your email address is not verified at ${idp.displayName ?? idp.name}`
    }
  }
  if (idp.requiredGroups.length > 0 && !idp.requiredGroups.some((g) => identity.groups.includes(g))) {
    return `you are not in a group allowed to use this gateway (one of: ${idp.requiredGroups.join(', ')})`
  }
  return undefined
}

/**
 * Microsoft Entra ID leaves the groups out of the token when a user is in more than its limit
 * (200 in a JWT) and says so with `_claim_names.groups` (or `hasgroups: true` in implicit
 * flows): the groups then have to be read from Microsoft Graph, which the gateway does not do.
 */
export function hasGroupsOverage (claims: Readonly<Record<string, unknown>>): boolean {
  const claimNames = claims._claim_names
  const isNamed = claimNames !== null && typeof claimNames === 'object' && 'groups' in claimNames
  return isNamed || claims.hasgroups === true || claims.hasgroups === 'true'
}
