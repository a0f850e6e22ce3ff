/**
 * The sign-in and consent pages at /interaction/<uid>.
 *
 * CSRF: every form carries HMAC(key, uid), and oidc-provider's interaction
 * cookie (SameSite=Lax, path-scoped to this uid) must match too, so a form
 * posted from elsewhere, or for another browser's interaction, is refused.
 * Throttling (sign-in-throttle.ts): a growing delay per (account, client IP),
 * ceilings per IP and per account; while one holds the password is not checked.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type Provider from 'oidc-provider'
import type { Config } from '../config/schema.js'
import { isStoreUnavailable, type Store } from '../store/types.js'
import type { KeyMaterial } from './keys.js'
import { consentPage, loginPage, messagePage, PAGE_HEADERS } from './pages.js'
import { isLoopbackRedirect } from './redirect-rule.js'
import { consentKey, INTERACTION_PATH, presentAsPublic, STORE_RETRY_AFTER_S, STORE_UNAVAILABLE_PAGE } from './provider.js'
import type { ResourceCatalog } from './resources.js'
import type { UserDirectory } from './users.js'
import type { RateLimiter } from '../rate-limit/limiter.js'
import { PAIR_BUSY_RETRY_MS, SignInThrottle, type SignInRefusal } from './sign-in-throttle.js'
import type { IdpSignIn } from './idp-sign-in.js'
import { ExternalAccounts } from './external-accounts.js'
import { idpCallbackPath } from './oidc-relying-party.js'

export interface InteractionRoutesOptions {
  readonly provider: Provider
  readonly config: Config
  readonly store: Store
  readonly keys: KeyMaterial
  readonly users: UserDirectory
  readonly catalog: ResourceCatalog
  readonly limiter: RateLimiter
  /** Sign-in through the identity providers (auth.identityProviders). */
  readonly idp: IdpSignIn
  /** Users an administrator blocked (admin/blocked-users.ts): refused here with a page that says so. */
  readonly isUserBlocked?: (accountId: string) => boolean
  /**
   * The gateway's clock (BuildOptions.now), the one the store expires entries by: the sign-in
   * throttle's waits and the remembered consent's expiry are compared with the store's times.
   */
  readonly now?: () => number
}

const BLOCKED_PAGE = messagePage('Not allowed', 'Your account is blocked on this gateway.', 'Ask the gateway operator if you think you should have access.')

type Form = Record<string, string | undefined>
const MAX_FORM_BYTES = 16 * 1024

type InteractionDetails = Awaited<ReturnType<Provider['interactionDetails']>>

function csrfFor (key: Buffer, uid: string): string {
  return createHmac('sha256', key).update(uid).digest('base64url')
}

function isCsrfValid (key: Buffer, uid: string, token: string | undefined): boolean {
  if (token === undefined) return false
  const expected = Buffer.from(csrfFor(key, uid))
  const given = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

function sendPage (reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).send(html)
}

/** Where the user returns to, as a person reads it: scheme and host (custom schemes included). */
function redirectHost (redirectUri: unknown): string {
  try {
    const url = new URL(String(redirectUri))
    return url.host === '' ? `${url.protocol}//` : `${url.protocol}//${url.host}`
  } catch {
    return 'the application'
  }
}

function asList (value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String)
  return typeof value === 'string' && value !== '' ? [value] : []
}

function minutes (ms: number): number {
  return Math.max(1, Math.ceil(ms / 60_000))
}

export async function interactionRoutes (app: FastifyInstance, opts: InteractionRoutesOptions): Promise<void> {
  const { provider, config, store, keys, users, catalog, idp } = opts
  const now = opts.now ?? Date.now
  const externalAccounts = new ExternalAccounts(store)
  const throttle = new SignInThrottle(store, config.auth.login, now)

  // These pages hand their requests to oidc-provider (interactionDetails/Finished): same public origin.
  const publicOrigin = new URL(config.publicUrl)
  app.addHook('onRequest', async (request) => { presentAsPublic(request.raw, publicOrigin, request.ip) })

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    if (isStoreUnavailable(error)) {
      request.log.warn({ err: { message: error.message } }, 'sign-in page: store unreachable')
      return sendPage(reply.header('retry-after', String(STORE_RETRY_AFTER_S)), 503, STORE_UNAVAILABLE_PAGE)
    }
    const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status === 500) request.log.error({ err: error }, 'sign-in page failed')
    return sendPage(reply, status, messagePage('Sign-in could not continue', status === 500 ? 'Something went wrong on our side.' : 'The request was not understood.', 'Return to the application and try again.'))
  })

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: MAX_FORM_BYTES }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })

  const details = async (request: FastifyRequest, reply: FastifyReply): Promise<InteractionDetails | undefined> => {
    try {
      return await provider.interactionDetails(request.raw, reply.raw)
    } catch (err) {
      if (isStoreUnavailable(err)) throw err
      // No interaction cookie, or the interaction expired: nothing to continue.
      request.log.info({ err: { name: (err as Error).name, message: (err as Error).message } }, 'interaction not found')
      sendPage(reply, 400, messagePage('Sign-in expired', 'This sign-in page is no longer valid.', 'Go back to the application and start again.'))
      return undefined
    }
  }

  const clientNameOf = async (clientId: string): Promise<string> => {
    const client = await provider.Client.find(clientId).catch(() => undefined)
    return client?.clientName ?? clientId
  }
  /** Every redirect URI of the client is loopback: the code goes to whatever listens on that port. */
  const isLoopbackOnly = async (clientId: string): Promise<boolean> => {
    const client = await provider.Client.find(clientId).catch(() => undefined)
    const uris = client?.redirectUris ?? []
    return uris.length > 0 && uris.every(isLoopbackRedirect)
  }

  const renderLogin = async (reply: FastifyReply, interaction: InteractionDetails, status = 200, error?: string, username?: string): Promise<FastifyReply> => {
    return sendPage(reply, status, loginPage({
      action: `${INTERACTION_PATH}/${interaction.uid}/login`,
      csrf: csrfFor(keys.csrfKey, interaction.uid),
      clientName: await clientNameOf(String(interaction.params.client_id)),
      ...(error === undefined ? {} : { error }),
      ...(username === undefined ? {} : { username }),
      providers: idp.providers.map((p) => ({ label: p.displayName ?? p.name, action: `${INTERACTION_PATH}/${interaction.uid}/idp/${p.name}` })),
      hasPasswordForm: users.hasAccounts,
    }))
  }

  /** The scopes an authorization request asks of its resources (the base scope included). */
  const requestedScopes = (interaction: InteractionDetails): string[] => {
    const grantable = new Set(asList(interaction.params.resource).flatMap((url) => {
      const canonical = catalog.canonical(url)
      return canonical === undefined ? [] : catalog.grantableScopes(canonical)
    }))
    return [...new Set(String(interaction.params.scope ?? '').split(' ').filter((s) => grantable.has(s)))]
  }

  /** Who the consent page speaks to: a local username, or an IdP user's name and provider. */
  const accountLabel = async (accountId: string): Promise<string> => {
    const external = users.find(accountId) === undefined ? await externalAccounts.find(accountId) : undefined
    return external === undefined ? accountId : `${external.name} (${external.provider})`
  }

  /** With exactly one identity provider and no local users there is nothing to choose: straight to the IdP. */
  const onlyProvider = (): string | undefined => {
    const [only, ...others] = idp.providers
    return only !== undefined && others.length === 0 && !users.hasAccounts ? only.name : undefined
  }

  /**
   * Every attempt counts, right or wrong: a ceiling on how fast one address can guess passwords,
   * or start identity-provider sign-ins (each start stores a pending sign-in for 10 minutes, and
   * one interaction could be looped on). The sign-in page again, with a 429, when it is reached.
   */
  const isSignInLimited = async (request: FastifyRequest, reply: FastifyReply, interaction: InteractionDetails, username?: string): Promise<boolean> => {
    const limited = await opts.limiter.consume([{ kind: 'ip-login', key: request.ip, rate: config.rateLimits.login, cost: 1, subject: 'sign-in attempts from your address' }])
    if (limited === undefined) return false
    const retryS = limited === 'store-unavailable' ? STORE_RETRY_AFTER_S : limited.retryAfterS
    reply.header('retry-after', String(retryS))
    logSignIn(request.log, 'sign-in rate limited', username ?? '', request.ip)
    await renderLogin(reply, interaction, 429, `Too many sign-in attempts from your network. Try again in ${retryS} second${retryS === 1 ? '' : 's'}.`, username)
    return true
  }

  const toIdentityProvider = async (request: FastifyRequest, reply: FastifyReply, name: string, interaction: InteractionDetails): Promise<FastifyReply> => {
    if (await isSignInLimited(request, reply, interaction)) return reply
    const url = await idp.begin(name, interaction.uid)
    reply.log.info({ provider: name }, 'sign-in sent to identity provider')
    return reply.redirect(url.href, 303)
  }

  app.get<{ Params: { uid: string } }>(`${INTERACTION_PATH}/:uid`, async (request, reply) => {
    const interaction = await details(request, reply)
    if (interaction === undefined) return reply
    if (interaction.prompt.name === 'login') {
      const only = onlyProvider()
      return only === undefined ? renderLogin(reply, interaction) : toIdentityProvider(request, reply, only, interaction)
    }
    if (interaction.prompt.name === 'consent') {
      const promptDetails = interaction.prompt.details as { missingResourceScopes?: Record<string, string[]>, missingOIDCScope?: string[] }
      const resources = Object.keys(promptDetails.missingResourceScopes ?? {})
      const missing = [...new Set([...Object.values(promptDetails.missingResourceScopes ?? {}).flat(), ...(promptDetails.missingOIDCScope ?? []).filter((s) => s !== 'openid')])]
      // Asked again though everything was granted before (a client whose identity cannot be
      // proven, provider.ts): the page names what this request would grant.
      const scopes = missing.length > 0 ? missing : requestedScopes(interaction)
      const servers = (resources.length > 0 ? resources : asList(interaction.params.resource)).map((url) => {
        const canonical = catalog.canonical(url) ?? url
        const server = catalog.serverAt(canonical) ?? catalog.virtualServerAt(canonical)
        return { name: server?.name ?? (canonical === catalog.adminUrl ? 'the gateway\'s admin API' : 'every MCP server behind this gateway'), url }
      })
      return sendPage(reply, 200, consentPage({
        action: `${INTERACTION_PATH}/${interaction.uid}/confirm`,
        abortAction: `${INTERACTION_PATH}/${interaction.uid}/abort`,
        csrf: csrfFor(keys.csrfKey, interaction.uid),
        clientName: await clientNameOf(String(interaction.params.client_id)),
        clientId: String(interaction.params.client_id),
        redirectHost: redirectHost(interaction.params.redirect_uri),
        isLoopbackOnly: await isLoopbackOnly(String(interaction.params.client_id)),
        username: await accountLabel(interaction.session?.accountId ?? ''),
        servers,
        scopes,
      }))
    }
    return sendPage(reply, 400, messagePage('Sign-in could not continue', `Unexpected step: ${interaction.prompt.name}`))
  })

  app.post<{ Params: { uid: string }, Body: Form }>(`${INTERACTION_PATH}/:uid/login`, async (request, reply) => {
    const interaction = await details(request, reply)
    if (interaction === undefined) return reply
    if (interaction.uid !== request.params.uid || !isCsrfValid(keys.csrfKey, interaction.uid, request.body?.csrf)) {
      return sendPage(reply, 403, messagePage('Request refused', 'This form was not sent from this sign-in page.', 'Go back to the application and start again.'))
    }
    if (interaction.prompt.name !== 'login') return reply.redirect(`${INTERACTION_PATH}/${interaction.uid}`, 303)
    const username = (request.body?.username ?? '').trim()
    if (await isSignInLimited(request, reply, interaction, username)) return reply
    const password = request.body?.password ?? ''
    // One check at a time per (account, address): parallel guesses would all pass the throttle
    // before the first failure counted.
    if (!await throttle.lockPair(username, request.ip)) {
      logSignIn(request.log, 'sign-in throttled', username, request.ip, 'pair')
      reply.header('retry-after', String(PAIR_BUSY_RETRY_MS / 1000))
      return renderLogin(reply, interaction, 429, 'Another sign-in for this account from your network is being checked. Try again in a second.', username)
    }
    let account: Awaited<ReturnType<typeof users.authenticate>>
    try {
      const refusal = await throttle.check(username, request.ip)
      if (refusal !== undefined) {
        logSignIn(request.log, 'sign-in throttled', username, request.ip, refusal.rule)
        reply.header('retry-after', String(Math.ceil(Math.max(refusal.retryAfterMs, 1000) / 1000)))
        return renderLogin(reply, interaction, 429, throttledMessage(refusal), username)
      }
      account = username === '' || password === '' ? undefined : await users.authenticate(username, password)
      if (account === undefined) {
        await throttle.recordFailure(username, request.ip)
        logSignIn(request.log, 'sign-in failed', username, request.ip)
        return renderLogin(reply, interaction, 401, 'Incorrect username or password.', username)
      }
      await throttle.recordSuccess(username, request.ip)
    } finally {
      await throttle.unlockPair(username, request.ip)
    }
    if (opts.isUserBlocked?.(account.username) === true) {
      request.log.info({ user: account.username, ip: request.ip }, 'sign-in refused: user blocked')
      return sendPage(reply, 403, BLOCKED_PAGE)
    }
    request.log.info({ user: account.username, ip: request.ip }, 'signed in')
    reply.hijack()
    await provider.interactionFinished(request.raw, reply.raw, { login: { accountId: account.username } }, { mergeWithLastSubmission: false })
    return reply
  })

  app.post<{ Params: { uid: string, name: string }, Body: Form }>(`${INTERACTION_PATH}/:uid/idp/:name`, async (request, reply) => {
    const interaction = await details(request, reply)
    if (interaction === undefined) return reply
    if (interaction.uid !== request.params.uid || !isCsrfValid(keys.csrfKey, interaction.uid, request.body?.csrf)) {
      return sendPage(reply, 403, messagePage('Request refused', 'This form was not sent from this sign-in page.', 'Go back to the application and start again.'))
    }
    if (interaction.prompt.name !== 'login' || !idp.has(request.params.name)) return reply.redirect(`${INTERACTION_PATH}/${interaction.uid}`, 303)
    return toIdentityProvider(request, reply, request.params.name, interaction)
  })

  // The redirect URI registered at the IdP. The interaction cookie is scoped to /interaction/<uid>,
  // so the browser is sent on there, where oidc-provider can tell whether it started this sign-in.
  app.get<{ Params: { name: string }, Querystring: Form }>(idpCallbackPath(':name'), async (request, reply) => {
    const { name } = request.params
    const pending = await idp.pending(name, request.query.state)
    if (pending === undefined) {
      request.log.info({ provider: name.slice(0, 32) }, 'identity provider callback refused: unknown or used state')
      return sendPage(reply, 400, messagePage('Sign-in could not continue', 'This answer from the identity provider is not valid here: it was already used, it expired, or it belongs to another sign-in.', 'Go back to the application and start again.'))
    }
    const query = new URLSearchParams(request.query as Record<string, string>)
    return reply.redirect(`${INTERACTION_PATH}/${pending.uid}/idp/${name}/callback?${query.toString()}`, 303)
  })

  app.get<{ Params: { uid: string, name: string }, Querystring: Form }>(`${INTERACTION_PATH}/:uid/idp/:name/callback`, async (request, reply) => {
    const { name } = request.params
    const interaction = await details(request, reply)
    if (interaction === undefined) return reply
    const pending = await idp.pending(name, request.query.state)
    if (pending === undefined || interaction.uid !== request.params.uid || pending.uid !== interaction.uid) {
      request.log.info({ provider: name.slice(0, 32) }, 'identity provider callback refused: not this browser\'s sign-in')
      return sendPage(reply, 403, messagePage('Request refused', 'This answer from the identity provider belongs to another sign-in.', 'Go back to the application and start again.'))
    }
    if (!await idp.use(pending)) {
      request.log.info({ provider: name }, 'identity provider callback refused: state already used')
      return sendPage(reply, 400, messagePage('Sign-in could not continue', 'This answer from the identity provider was already used.', 'Go back to the application and start again.'))
    }
    const label = idp.providers.find((p) => p.name === name)?.displayName ?? name
    const idpError = request.query.error
    if (idpError !== undefined) {
      request.log.info({ provider: name, error: idpError.slice(0, 64) }, 'identity provider sign-in not completed')
      const description = request.query.error_description
      return sendPage(reply, idpError === 'access_denied' ? 403 : 400, messagePage('Sign-in was not completed', `${label} did not sign you in (${idpError.slice(0, 64)}${description === undefined ? '' : `: ${description.slice(0, 200)}`}).`, 'Go back to the application and start again.'))
    }
    let outcome: Awaited<ReturnType<IdpSignIn['complete']>>
    try {
      outcome = await idp.complete(pending, new URLSearchParams(request.query as Record<string, string>))
    } catch (err) {
      if (isStoreUnavailable(err)) throw err
      const e = err as Error & { code?: string }
      request.log.warn({ provider: name, err: { name: e.name, code: e.code, message: e.message } }, 'identity provider sign-in failed')
      return sendPage(reply, 502, messagePage('Sign-in could not continue', `The answer from ${label} could not be verified.`, 'Go back to the application and start again; if it keeps happening, tell the gateway operator.'))
    }
    if (outcome.kind === 'refused') {
      request.log.info({ provider: name, user: outcome.identity.id, name: outcome.identity.name, reason: outcome.reason }, 'identity provider sign-in refused')
      return sendPage(reply, 403, messagePage('Not allowed', `You signed in at ${label} as ${outcome.identity.name}, but ${outcome.reason}.`, 'Ask the gateway operator if you think you should have access.'))
    }
    if (opts.isUserBlocked?.(outcome.accountId) === true) {
      request.log.info({ provider: name, user: outcome.accountId }, 'sign-in refused: user blocked')
      return sendPage(reply, 403, BLOCKED_PAGE)
    }
    request.log.info({ provider: name, user: outcome.accountId, name: outcome.identity.name }, 'signed in through identity provider')
    reply.hijack()
    await provider.interactionFinished(request.raw, reply.raw, { login: { accountId: outcome.accountId } }, { mergeWithLastSubmission: false })
    return reply
  })

  app.post<{ Params: { uid: string }, Body: Form }>(`${INTERACTION_PATH}/:uid/confirm`, async (request, reply) => {
    const interaction = await details(request, reply)
    if (interaction === undefined) return reply
    if (interaction.uid !== request.params.uid || !isCsrfValid(keys.csrfKey, interaction.uid, request.body?.csrf)) {
      return sendPage(reply, 403, messagePage('Request refused', 'This form was not sent from this consent page.'))
    }
    if (interaction.prompt.name !== 'consent' || interaction.session?.accountId === undefined) return reply.redirect(`${INTERACTION_PATH}/${interaction.uid}`, 303)
    const accountId = interaction.session.accountId
    const clientId = String(interaction.params.client_id)
    const grant = (interaction.grantId === undefined ? undefined : await provider.Grant.find(interaction.grantId)) ?? new provider.Grant({ accountId, clientId })
    const promptDetails = interaction.prompt.details as { missingOIDCScope?: string[], missingOIDCClaims?: string[], missingResourceScopes?: Record<string, string[]> }
    if (promptDetails.missingOIDCScope !== undefined) grant.addOIDCScope(promptDetails.missingOIDCScope.join(' '))
    if (promptDetails.missingOIDCClaims !== undefined) grant.addOIDCClaims(promptDetails.missingOIDCClaims)
    for (const [indicator, scopes] of Object.entries(promptDetails.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '))
    const grantId = await grant.save()
    // Remembered across browser sessions until the grant itself expires.
    await store.kvSet(consentKey(accountId, clientId), grantId, now() + config.auth.refreshTokenTtl)
    request.log.info({ user: accountId, clientId }, 'consent granted')
    reply.hijack()
    await provider.interactionFinished(request.raw, reply.raw, { consent: { grantId } }, { mergeWithLastSubmission: true })
    return reply
  })

  app.post<{ Params: { uid: string }, Body: Form }>(`${INTERACTION_PATH}/:uid/abort`, async (request, reply) => {
    const interaction = await details(request, reply)
    if (interaction === undefined) return reply
    if (interaction.uid !== request.params.uid || !isCsrfValid(keys.csrfKey, interaction.uid, request.body?.csrf)) {
      return sendPage(reply, 403, messagePage('Request refused', 'This form was not sent from this consent page.'))
    }
    request.log.info({ user: interaction.session?.accountId, clientId: interaction.params.client_id }, 'consent denied')
    reply.hijack()
    await provider.interactionFinished(request.raw, reply.raw, { error: 'access_denied', error_description: 'The user denied access' }, { mergeWithLastSubmission: false })
    return reply
  })
}

/**
 * Usernames of failed attempts are logged as a short hash, never verbatim: people type their
 * password into the username field. The hash still ties repeated attempts together.
 */
function logSignIn (log: FastifyBaseLogger, message: string, username: string, ip: string, rule?: SignInRefusal['rule']): void {
  log.info({ userHash: usernameHash(username), ip, ...(rule === undefined ? {} : { rule }) }, message)
}

export function usernameHash (username: string): string {
  return createHash('sha256').update(username.toLowerCase()).digest('base64url').slice(0, 12)
}

function throttledMessage (refusal: SignInRefusal): string {
  const seconds = Math.max(1, Math.ceil(refusal.retryAfterMs / 1000))
  const wait = seconds < 120 ? `${seconds} second${seconds === 1 ? '' : 's'}` : `${minutes(refusal.retryAfterMs)} minutes`
  const who = refusal.rule === 'pair' ? 'for this account from your network' : refusal.rule === 'ip' ? 'from your network' : 'for this account'
  return `Too many failed sign-in attempts ${who}. Try again in ${wait}.`
}
