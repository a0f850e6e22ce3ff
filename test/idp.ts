/**
 * A real corporate identity provider for tests: a second oidc-provider on its
 * own port, reached as `localhost` while the gateway is `127.0.0.1` (two
 * sites, so the two servers' cookies stay apart as in a browser). It has
 * accounts (sub, password, email, email_verified, groups), a plain login form
 * (`data-idp-login`, which HeadlessBrowser fills in), groups in the ID token or
 * only at userinfo, refresh tokens, and accounts that tests change or disable
 * while it runs (revalidation tests need that). With `tokenExchange` it also takes RFC 8693
 * token exchange at its token endpoint: an access token it issued in, a JWT access token for
 * one of the audiences it knows out (issue 14, servers[].upstreamAuth tokenExchange).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { randomUUID } from 'node:crypto'
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose'
import Provider, { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider'
import { escapeHtml } from '../src/auth-server/pages.js'
import { freePort, startGateway, type RunningGateway, type Teardown } from './helpers.js'
import type { BuildOptions } from '../src/app.js'

export interface IdpAccount {
  readonly sub: string
  readonly password: string
  readonly email?: string
  readonly email_verified?: boolean
  readonly preferred_username?: string
  readonly name?: string
  readonly groups?: readonly string[]
  /** Any further claims (Google's hd, Keycloak's realm_access, Entra's _claim_names …). */
  readonly extra?: Readonly<Record<string, unknown>>
  /** A disabled account cannot sign in, and its tokens stop being honoured (userinfo, refresh). */
  readonly disabled?: boolean
}

export interface TestIdpOptions {
  readonly accounts: readonly IdpAccount[]
  readonly redirectUris: readonly string[]
  readonly clientId?: string
  readonly clientSecret?: string
  /** Where the profile, email and groups claims are: in the ID token (default) or only at userinfo. */
  readonly claimsIn?: 'id_token' | 'userinfo'
  /**
   * The gateway's back-channel logout endpoint: registered for the client with
   * backchannel_logout_session_required, so that ID tokens carry the IdP session (`sid`).
   */
  readonly backchannelLogoutUri?: string
  /**
   * The client authenticates with private_key_jwt (RFC 7523) signed by one of these public
   * keys, instead of client_secret_basic.
   */
  readonly clientJwks?: { readonly keys: readonly JWK[] }
  /** Register the RFC 8693 token-exchange grant for the client, issuing tokens for these audiences only (others: invalid_target). */
  readonly tokenExchange?: { readonly audiences: readonly string[], readonly lifetimeS?: number }
  /** Rotate the refresh token at every refresh (a reused one is then a replay: the grant is revoked). */
  readonly rotateRefreshTokens?: boolean
}

/** One token exchange the IdP granted. */
export interface IdpExchange {
  readonly sub: string
  readonly audience: string
  readonly scope?: string
  readonly clientId: string
}

export interface TestIdp {
  /** http://localhost:<port> */
  readonly issuer: string
  readonly clientId: string
  readonly clientSecret: string
  /** Replaces fields of an account (groups, email, disabled …) while the IdP runs. */
  readonly update: (sub: string, patch: Partial<IdpAccount>) => void
  /** Sign-ins completed at this IdP, by sub. */
  readonly signIns: string[]
  /** Refresh tokens the IdP issued (opaque strings), newest last. */
  readonly refreshTokens: string[]
  /** Grants served at the token endpoint, by grant_type, in order (refresh_token, token exchange …). */
  readonly grants: string[]
  /** Access tokens the IdP issued (opaque strings), newest last: none may reach a log. */
  readonly accessTokens: string[]
  /** Token exchanges granted (tokenExchange), in order. */
  readonly exchanges: IdpExchange[]
  /** The JWKS that verifies what this IdP signs (exchanged tokens among them). */
  readonly jwksUrl: string
  /**
   * A Back-Channel Logout 1.0 logout token for `sub`, signed with this IdP's own key (iss, aud =
   * its client, iat, jti, the logout event); `claims` replace or add claims (undefined drops one).
   */
  readonly logoutToken: (sub: string, claims?: Readonly<Record<string, unknown>>) => Promise<string>
  /** Stops the IdP (an outage): its port refuses connections from then on. */
  readonly stop: () => Promise<void>
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

function loginForm (uid: string, error?: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Corp IdP sign-in</title></head><body>
<h1>Corp IdP</h1>${error === undefined ? '' : `<p role="alert">${escapeHtml(error)}</p>`}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" data-idp-login>
<label for="idp-username">IdP username</label><input id="idp-username" name="username" autocomplete="username">
<label for="idp-password">IdP password</label><input id="idp-password" type="password" name="password">
<button type="submit">Continue</button>
</form></body></html>`
}

async function readForm (req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
}

export async function startTestIdp (t: Teardown, options: TestIdpOptions): Promise<TestIdp> {
  const accounts = new Map(options.accounts.map((a) => [a.sub, a]))
  const clientId = options.clientId ?? 'portcullis-gateway'
  const clientSecret = options.clientSecret ?? 'test-idp-client-secret-0123456789abcdef'
  const signIns: string[] = []
  const refreshTokens: string[] = []
  const grants: string[] = []
  const accessTokens: string[] = []
  const exchanges: IdpExchange[] = []
  const port = await freePort()
  const issuer = `http://localhost:${port}`
  const { privateKey } = await generateKeyPair('RS256', { extractable: true })
  const jwk = { ...await exportJWK(privateKey), alg: 'RS256', use: 'sig', kid: 'test-idp' }

  const liveAccount = (sub: string): IdpAccount | undefined => {
    const account = accounts.get(sub)
    return account === undefined || account.disabled === true ? undefined : account
  }
  const configuration: Configuration = {
    clients: [{
      client_id: clientId,
      ...(options.clientJwks === undefined ? { client_secret: clientSecret } : { jwks: { keys: [...options.clientJwks.keys] } }),
      redirect_uris: [...options.redirectUris],
      grant_types: ['authorization_code', 'refresh_token', ...(options.tokenExchange === undefined ? [] : [TOKEN_EXCHANGE])],
      response_types: ['code'],
      token_endpoint_auth_method: options.clientJwks === undefined ? 'client_secret_basic' : 'private_key_jwt',
      ...(options.backchannelLogoutUri === undefined ? {} : { backchannel_logout_uri: options.backchannelLogoutUri, backchannel_logout_session_required: true }),
    }],
    jwks: { keys: [jwk] } as Configuration['jwks'],
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username', 'hd', 'realm_access', '_claim_names', '_claim_sources'], groups: ['groups'] },
    conformIdTokenClaims: options.claimsIn === 'userinfo',
    findAccount: async (_ctx: KoaContextWithOIDC, sub: string) => {
      const account = liveAccount(sub)
      if (account === undefined) return undefined
      return {
        accountId: sub,
        claims: () => {
          const current = liveAccount(sub) ?? account
          return {
            sub,
            ...current.extra,
            ...(current.email === undefined ? {} : { email: current.email, email_verified: current.email_verified ?? false }),
            ...(current.preferred_username === undefined ? {} : { preferred_username: current.preferred_username }),
            ...(current.name === undefined ? {} : { name: current.name }),
            ...(current.groups === undefined ? {} : { groups: [...current.groups] }),
          }
        },
      }
    },
    features: { devInteractions: { enabled: false }, userinfo: { enabled: true }, backchannelLogout: { enabled: options.backchannelLogoutUri !== undefined } },
    // Refresh tokens for this client whatever the prompt (the gateway asks offline_access without prompt=consent).
    issueRefreshToken: async (_ctx: KoaContextWithOIDC, client: { grantTypeAllowed: (g: string) => boolean }) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    ...(options.rotateRefreshTokens === true ? { rotateRefreshToken: true } : {}),
    interactions: { url: (_ctx: KoaContextWithOIDC, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['test-idp-cookie-key-0123456789'] },
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Grant: 86_400, RefreshToken: 86_400, Session: 86_400 },
  }
  const provider = new Provider(issuer, configuration)
  provider.on('refresh_token.saved', (token: { jti: string }) => { refreshTokens.push(token.jti) })
  provider.on('access_token.saved', (token: { jti: string }) => { accessTokens.push(token.jti) })
  provider.on('grant.success', (ctx: KoaContextWithOIDC) => { grants.push(String((ctx.oidc.params as { grant_type?: unknown } | undefined)?.grant_type)) })
  const exchange = options.tokenExchange
  if (exchange !== undefined) {
    /**
     * RFC 8693 2.1 as an IdP implements it: the subject token must be an access token this IdP
     * issued, unexpired, of an account still live; the audience one it knows (invalid_target
     * otherwise, 2.2.2); out comes a JWT access token (RFC 9068) for that audience naming the user.
     */
    const tokenExchange = async (ctx: KoaContextWithOIDC): Promise<void> => {
      const params = ctx.oidc.params as Record<string, string | undefined>
      if (params.subject_token_type !== ACCESS_TOKEN_TYPE || params.subject_token === undefined) throw new errors.InvalidRequest('subject_token must be an access token')
      if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) throw new errors.InvalidRequest('this IdP exchanges for access tokens only')
      const subject = await provider.AccessToken.find(params.subject_token)
      const account = subject === undefined || subject.isExpired ? undefined : liveAccount(String(subject.accountId))
      if (subject === undefined || account === undefined) throw new errors.InvalidRequest('the subject token is not a live access token of this IdP')
      const audience = params.audience ?? ''
      if (!exchange.audiences.includes(audience)) throw new errors.InvalidTarget(`this IdP issues no tokens for audience ${audience}`)
      const clientId = String(ctx.oidc.client?.clientId)
      exchanges.push({ sub: account.sub, audience, clientId, ...(params.scope === undefined ? {} : { scope: params.scope }) })
      const lifetimeS = exchange.lifetimeS ?? 300
      const accessToken = await new SignJWT({ client_id: clientId, jti: randomUUID(), ...(params.scope === undefined ? {} : { scope: params.scope }), ...(account.email === undefined ? {} : { email: account.email }) })
        .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt' })
        .setIssuer(issuer).setSubject(account.sub).setAudience(audience).setIssuedAt().setExpirationTime(`${lifetimeS}s`).sign(privateKey)
      ctx.body = { access_token: accessToken, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: lifetimeS, ...(params.scope === undefined ? {} : { scope: params.scope }) }
    }
    provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope'])
  }

  const finish = async (req: IncomingMessage, res: ServerResponse, accountId: string): Promise<void> => {
    const details = await provider.interactionDetails(req, res)
    const grant = new provider.Grant({ accountId, clientId: String(details.params.client_id) })
    grant.addOIDCScope(String(details.params.scope))
    grant.addOIDCClaims(['email', 'email_verified', 'groups', 'preferred_username', 'name'])
    const grantId = await grant.save()
    signIns.push(accountId)
    await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false })
  }

  const interaction = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const match = /^\/interaction\/([^/?]+)(\/login)?/.exec(req.url ?? '')
    const uid = match?.[1] ?? ''
    const details = await provider.interactionDetails(req, res)
    if (req.method === 'GET') {
      // Consent is implied: a company IdP asks nothing of its own employees for its own gateway.
      if (details.prompt.name === 'consent' && details.session?.accountId !== undefined) return finish(req, res, details.session.accountId)
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginForm(uid))
      return
    }
    const form = await readForm(req)
    const username = form.get('username') ?? ''
    const account = [...accounts.values()].find((a) => a.preferred_username === username || a.sub === username)
    if (account === undefined || account.password !== form.get('password') || account.disabled === true) {
      res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' }).end(loginForm(uid, 'Wrong username or password.'))
      return
    }
    await finish(req, res, account.sub)
  }

  const callback = provider.callback()
  const server = createServer((req, res) => {
    if ((req.url ?? '').startsWith('/interaction/')) {
      interaction(req, res).catch((err: Error) => { res.writeHead(500).end(err.message) })
      return
    }
    callback(req, res)
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  const stop = async (): Promise<void> => new Promise<void>((resolve) => {
    if (!server.listening) return resolve()
    server.closeAllConnections()
    server.close(() => resolve())
  })
  t.teardown(stop)

  return {
    issuer,
    clientId,
    clientSecret,
    update: (sub, patch) => {
      const account = accounts.get(sub)
      if (account === undefined) throw new Error(`no IdP account ${sub}`)
      accounts.set(sub, { ...account, ...patch })
    },
    signIns,
    refreshTokens,
    grants,
    accessTokens,
    exchanges,
    jwksUrl: `${issuer}/jwks`,
    stop,
    logoutToken: async (sub, claims = {}) => {
      const all: Record<string, unknown> = { iss: issuer, aud: clientId, sub, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: { 'http://schemas.openid.net/event/backchannel-logout': {} }, ...claims }
      const payload = Object.fromEntries(Object.entries(all).filter(([, value]) => value !== undefined))
      return await new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'logout+jwt' }).sign(privateKey)
    },
  }
}

/** An identity provider entry for the gateway's config, pointing at a test IdP. */
export function idpEntry (idp: TestIdp, entry: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'corp', type: 'oidc', displayName: 'Corp SSO', issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, scopes: ['openid', 'email', 'profile', 'groups'], groupsClaim: 'groups', ...entry }
}

/**
 * A gateway and its IdP: the gateway's port is chosen first so the IdP can list the callback
 * (<publicUrl>/oauth/idp/<name>/callback) as its client's redirect URI.
 */
export async function startGatewayWithIdp (t: Teardown, idpOptions: Omit<TestIdpOptions, 'redirectUris' | 'backchannelLogoutUri'> & { readonly sessionIds?: boolean }, gateway: (idp: TestIdp) => Record<string, unknown>, options: Omit<BuildOptions, 'logger'> = {}): Promise<{ idp: TestIdp, gw: RunningGateway }> {
  const port = await freePort()
  const { sessionIds, ...rest } = idpOptions
  const idp = await startTestIdp(t, {
    ...rest,
    redirectUris: ['corp', 'other'].map((name) => `http://127.0.0.1:${port}/oauth/idp/${name}/callback`),
    // sessionIds: the IdP's ID tokens name its session (sid), as IdPs that send back-channel logout do.
    ...(sessionIds === true ? { backchannelLogoutUri: `http://127.0.0.1:${port}/oauth/idp/corp/backchannel-logout` } : {}),
  })
  const object = gateway(idp)
  const gw = await startGateway(t, { ...object, listen: { host: '127.0.0.1', port } }, {}, options)
  return { idp, gw }
}
