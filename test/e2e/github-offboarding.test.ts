// Offboarding of GitHub users, end to end: real users sign in with GitHub through the gateway's
// whole OAuth flow (the official MCP SDK client); at the next refresh of the gateway's tokens after
// revalidateEvery the gateway re-reads the user at GitHub with the access token it kept (GitHub's
// OAuth app tokens come without a refresh token). GitHub itself cannot run here: its endpoints are
// the local stand-in of test/github.ts, which can change an account, revoke its tokens or fail
// (502) at runtime; the gateway and the upstream are real. revalidateEvery is 1s, so the tests wait
// just past it before each refresh.
import t from 'tap'
import { decodeJwt } from 'jose'
import { refreshTokens, signInForTokens, type SignedInTokens } from '../oauth-helpers.js'
import { eventually, INIT_BODY, postJson, startUpstream, type RunningGateway, type Teardown } from '../helpers.js'
import { githubEntry, startGatewayWithGitHub, type GitHubAccount } from '../github.js'

const ALICE: GitHubAccount = { id: 1001, login: 'octo-alice', password: 'alice-at-github', emails: [{ email: 'alice@acme.example', primary: true, verified: true }], orgs: ['acme'], teams: ['acme/platform'] }
const BOB: GitHubAccount = { id: 2002, login: 'octo-bob', password: 'bob-at-github', emails: [{ email: 'bob@acme.example', primary: true, verified: true }], orgs: ['acme'], teams: [] }
const CAROL: GitHubAccount = { id: 3003, login: 'octo-carol', password: 'carol-at-github', emails: [{ email: 'carol@acme.example', primary: true, verified: true }], orgs: ['acme'], teams: [] }
const REVALIDATE_EVERY_MS = 1_000

/** Just past revalidateEvery: the next refresh re-checks the user at GitHub. */
const pastRevalidation = async (): Promise<void> => new Promise((resolve) => setTimeout(resolve, REVALIDATE_EVERY_MS + 100))

async function startGateway (t: Teardown, accounts: readonly GitHubAccount[]): Promise<Awaited<ReturnType<typeof startGatewayWithGitHub>>> {
  const upstream = await startUpstream(t)
  return await startGatewayWithGitHub(t, accounts, (gh) => ({
    auth: { identityProviders: [githubEntry(gh, { requiredGroups: ['acme'], revalidateEvery: `${REVALIDATE_EVERY_MS}ms` })] },
    servers: [{ name: 'tools', transport: 'http', url: upstream.url }],
  }))
}

async function signIn (t: Teardown, gw: RunningGateway, account: GitHubAccount): Promise<SignedInTokens> {
  return await signInForTokens(t, gw.mcpUrl('tools'), { username: account.login, password: account.password, idp: 'github', issuer: gw.baseUrl })
}

async function refresh (gw: RunningGateway, user: SignedInTokens): Promise<{ status: number, body: Record<string, unknown> }> {
  return await refreshTokens(gw.baseUrl, user, gw.mcpUrl('tools'))
}

/** An MCP initialize with the access token: 200 while it is honoured, 401 once refused. */
async function initializeStatus (gw: RunningGateway, accessToken: string): Promise<number> {
  return (await postJson(gw.mcpUrl('tools'), INIT_BODY, { authorization: `Bearer ${accessToken}` })).status
}

async function disabledReason (gw: RunningGateway, id: number): Promise<string | undefined> {
  const account = JSON.parse(await gw.app.portcullis.store.kvGet(`idp-account:github:${id}`) ?? '{}') as { disabled?: { reason: string } }
  return account.disabled?.reason
}

t.test('GitHub users are re-checked at refresh: a team change reaches the token; leaving the org or a revoked token offboards', async (t) => {
  const { gh, gw } = await startGateway(t, [ALICE, BOB, CAROL])
  const alice = await signIn(t, gw, ALICE)
  const bob = await signIn(t, gw, BOB)
  const carol = await signIn(t, gw, CAROL)
  t.same(decodeJwt(alice.accessToken).groups, ['acme', 'acme/platform'], 'orgs and teams as groups at sign-in')

  // (d) Still in acme, moved to another team: the refresh goes on with the new groups.
  gh.update(ALICE.id, { teams: ['acme/infra'] })
  await pastRevalidation()
  t.equal((await refresh(gw, alice)).status, 200, 'a user GitHub still vouches for refreshes after revalidateEvery')
  t.same(decodeJwt(alice.accessToken).groups, ['acme', 'acme/infra'], 'the team change at GitHub is in the new access token')
  t.match(gw.logs.text(), /"user":"github:1001".*"msg":"identity provider re-checked the user"/, 'GitHub was asked')

  // (a) Removed from the org: requiredGroups [acme] no longer admits him.
  gh.update(BOB.id, { orgs: [], teams: [] })
  const bobToken = bob.accessToken
  t.equal(await initializeStatus(gw, bobToken), 200, 'until the next revalidation his access token still works')
  await pastRevalidation()
  const bobRefused = await refresh(gw, bob)
  t.match(bobRefused, { status: 400, body: { error: 'invalid_grant', error_description: /not in a group allowed to use this gateway/ } }, 'out of the org: the refresh is refused')
  t.ok(await eventually(async () => await initializeStatus(gw, bobToken) === 401), 'his access token is refused')
  t.match(await disabledReason(gw, BOB.id), /not in a group allowed/, 'his account is disabled at the gateway')
  t.equal(await gw.app.portcullis.idpSessions?.idpSession('github:2002'), undefined, 'his kept GitHub token is forgotten')

  // (b) Her token revoked at GitHub (the API answers 401): a refusal, not an outage.
  gh.revokeTokensOf(CAROL.id)
  const carolToken = carol.accessToken
  await pastRevalidation()
  const carolRefused = await refresh(gw, carol)
  t.match(carolRefused, { status: 400, body: { error: 'invalid_grant', error_description: /GitHub refused the account at revalidation/ } }, 'a revoked GitHub token: the refresh is refused')
  t.ok(await eventually(async () => await initializeStatus(gw, carolToken) === 401), 'her access token is refused')
  t.match(await disabledReason(gw, CAROL.id), /GitHub refused the account at revalidation/, 'her account is disabled at the gateway')

  t.equal((await refresh(gw, alice)).status, 200, 'the user GitHub vouches for carries on')
  t.equal(await initializeStatus(gw, alice.accessToken), 200, 'with a working access token')
  t.equal(await disabledReason(gw, ALICE.id), undefined)
  t.ok(gh.accessTokens.every((token) => !gw.logs.text().includes(token)), 'no GitHub token is logged')
})

t.test('GitHub unreachable at revalidation (502): the refresh is refused for now and nobody is disabled', async (t) => {
  const { gh, gw } = await startGateway(t, [ALICE])
  const alice = await signIn(t, gw, ALICE)
  gh.failApi(502)
  await pastRevalidation()
  const res = await refresh(gw, alice)
  t.match(res, { status: 503, body: { error: 'temporarily_unavailable', error_description: /GitHub cannot be reached to re-check your account; retry shortly/ } }, 'no new tokens without GitHub\'s word')
  t.equal(await initializeStatus(gw, alice.accessToken), 200, 'the current access token keeps working')
  t.equal(await disabledReason(gw, ALICE.id), undefined, 'the account is not disabled')
  t.ok((await gw.app.portcullis.idpSessions?.idpSession('github:1001'))?.accessToken !== undefined, 'the GitHub token is kept for the next try')

  gh.failApi(undefined)
  t.equal((await refresh(gw, alice)).status, 200, 'GitHub back: the same refresh token works')
})
