/**
 * The /admin page's HTML (README "Administration"): the lists the admin API has, their
 * filters and paging, and each action as a POST form carrying the page's CSRF token. The frame,
 * the look and the escaping are the sign-in pages' (auth-server/pages.ts): no script, every
 * value escaped.
 */
import { escapeHtml, layout } from '../auth-server/pages.js'
import type { Notice } from '../account/session.js'
import type { ReloadReport } from '../reload/report.js'
import type { ApiKeyItem, ClientItem, GrantItem, LinkedAccountItem, SessionItem, UserItem } from './lists.js'
import type { BucketState } from '../rate-limit/limiter.js'
import type { Page } from './paging.js'

export const ADMIN_PAGE_PATH = '/admin'

/** What every admin page shows around its content. */
export interface Frame {
  /** The signed-in administrator's name. */
  readonly admin: string
  readonly csrf: string
  readonly notice?: Notice
  /** Show "Reload configuration" (the gateway was given a reload). */
  readonly canReload: boolean
}

/** A pinned server's review: its pending changes. */
export interface ToolsReview {
  readonly server: string
  readonly pinTools: string
  /** A tool listing has been seen through the gateway (there is something to compare). */
  readonly hasListing: boolean
  readonly changes: readonly ToolChangeView[]
}

/** One pending change as the review shows it (server-tools.ts `changeView`). */
export interface ToolChangeView {
  readonly name: string
  readonly change: string
  /** The definition's fingerprint now (absent: removed): sent back with the approval. */
  readonly to?: string
  /** changed: the fields that differ. */
  readonly fields?: ReadonlyArray<{ readonly field: string, readonly before?: unknown, readonly after?: unknown }>
  /** added: its whole definition. */
  readonly definition?: unknown
}

const NAV = [['Users', ''], ['Clients', '/clients'], ['Sessions', '/sessions'], ['Tools', '/tools']] as const

function hidden (csrf: string): string {
  return `<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">`
}

/** One action: a POST form with the CSRF token and a single button. */
export function actionForm (path: string, label: string, csrf: string): string {
  return `<form method="post" action="${escapeHtml(path)}">${hidden(csrf)}<button type="submit">${escapeHtml(label)}</button></form>`
}

function noticeOf (notice: Notice | undefined): string {
  if (notice === undefined) return ''
  return notice.isError
    ? `<p class="error" role="alert" id="notice">${escapeHtml(notice.text)}</p>`
    : `<p class="secret" role="status" id="notice">${escapeHtml(notice.text)}</p>`
}

/** The admin frame: who is signed in, the navigation, the notice left by the last action. */
function adminPage (title: string, frame: Frame, body: string): string {
  const nav = NAV.map(([label, path]) => `<a href="${ADMIN_PAGE_PATH}${path}">${label}</a>`).join(' · ')
  const reload = frame.canReload ? actionForm(`${ADMIN_PAGE_PATH}/reload`, 'Reload configuration', frame.csrf) : ''
  return layout(`${title} · Admin`, `<h1>${escapeHtml(title)}</h1>
<p>Signed in as <strong>${escapeHtml(frame.admin)}</strong> (administrator).</p>
<nav>${nav}</nav>
<div class="actions">${reload}${actionForm(`${ADMIN_PAGE_PATH}/logout`, 'Sign out', frame.csrf)}</div>
${noticeOf(frame.notice)}
${body}`, true)
}

function when (iso: string | null | undefined): string {
  return iso === null || iso === undefined ? '—' : escapeHtml(iso.replace('T', ' ').slice(0, 16) + ' UTC')
}

function list (values: readonly string[]): string {
  return values.length === 0 ? '—' : escapeHtml(values.join(', '))
}

/** A table, or a sentence when there is nothing in it. */
function table (headings: readonly string[], rows: readonly string[], empty: string): string {
  if (rows.length === 0) return `<p class="muted">${escapeHtml(empty)}</p>`
  return `<table><thead><tr>${headings.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead>
<tbody>
${rows.join('\n')}
</tbody></table>`
}

/** A GET form over the list's filters (empty fields: no filter); the page size asked for is kept. */
function filterForm (path: string, fields: ReadonlyArray<{ name: string, label: string, value: string }>, limit: string | undefined): string {
  const inputs = fields.map((f) => `<label class="choice">${escapeHtml(f.label)} <input type="text" name="${f.name}" value="${escapeHtml(f.value)}"></label>`).join('\n')
  const keep = limit === undefined ? '' : `\n<input type="hidden" name="limit" value="${escapeHtml(limit)}">`
  return `<form method="get" action="${escapeHtml(path)}" class="filters">
${inputs}${keep}
<button type="submit">Filter</button>
</form>`
}

/** "Next page": the same filters, and the cursor the shared paging returned. */
function nextLink (path: string, filters: Readonly<Record<string, string>>, page: Page<unknown>): string {
  if (page.nextCursor === undefined) return ''
  const query = new URLSearchParams({ ...filters, cursor: page.nextCursor })
  return `<p><a href="${escapeHtml(`${path}?${query.toString()}`)}" rel="next">Next page</a></p>`
}

function userLink (id: string): string {
  return `<a href="${ADMIN_PAGE_PATH}/users/${encodeURIComponent(id)}">${escapeHtml(id)}</a>`
}

export function usersPage (frame: Frame, page: Page<UserItem>, filters: Readonly<Record<string, string>>): string {
  const rows = page.items.map((u) => `<tr><td>${userLink(u.id)}</td><td>${escapeHtml(u.provider ?? '—')}</td><td>${list(u.groups)}</td><td>${when(u.lastSeen)}</td><td>${u.sessions}</td><td>${u.blocked ? '<strong>blocked</strong>' : ''}</td></tr>`)
  return adminPage('Users', frame, `${filterForm(ADMIN_PAGE_PATH, [
    { name: 'provider', label: 'Provider', value: filters.provider ?? '' },
    { name: 'group', label: 'Group', value: filters.group ?? '' },
    { name: 'blocked', label: 'Blocked (true / false)', value: filters.blocked ?? '' },
  ], filters.limit)}
${table(['User', 'Provider', 'Groups', 'Last seen', 'Live sessions', ''], rows, 'No users match.')}
${nextLink(ADMIN_PAGE_PATH, filters, page)}`)
}

function sessionRow (s: SessionItem, csrf: string): string {
  const end = actionForm(`${ADMIN_PAGE_PATH}/sessions/${encodeURIComponent(s.server)}/${encodeURIComponent(s.sessionId)}/end`, 'End', csrf)
  return `<tr><td>${escapeHtml(s.server)}</td><td>${userLink(s.user)}</td><td><code>${escapeHtml(s.client)}</code></td><td>${s.ageS} s</td><td>${s.pid ?? '—'}</td><td>${escapeHtml(s.replica)}</td><td><code>${escapeHtml(s.sessionId)}</code></td><td>${end}</td></tr>`
}

function sessionsTable (items: readonly SessionItem[], csrf: string): string {
  return table(['Server', 'User', 'Client', 'Age', 'Process', 'Replica', 'Session', ''], items.map((s) => sessionRow(s, csrf)), 'No live sessions on this replica.')
}

export function sessionsPage (frame: Frame, page: Page<SessionItem>, filters: Readonly<Record<string, string>>): string {
  const path = `${ADMIN_PAGE_PATH}/sessions`
  return adminPage('Live sessions', frame, `<p class="muted">MCP sessions this replica holds (2026-07-28 clients have none).</p>
${filterForm(path, [{ name: 'server', label: 'Server', value: filters.server ?? '' }, { name: 'user', label: 'User', value: filters.user ?? '' }], filters.limit)}
${sessionsTable(page.items, frame.csrf)}
${nextLink(path, filters, page)}`)
}

export function clientsPage (frame: Frame, page: Page<ClientItem>, filters: Readonly<Record<string, string>>): string {
  const path = `${ADMIN_PAGE_PATH}/clients`
  const rows = page.items.map((c) => {
    const revoke = c.source === 'registered' ? actionForm(`${path}/${encodeURIComponent(c.clientId)}/revoke`, 'Revoke', frame.csrf) : '<span class="muted">in the YAML</span>'
    return `<tr><td>${escapeHtml(c.name ?? '—')}</td><td><code>${escapeHtml(c.clientId)}</code></td><td>${list(c.redirectHosts)}</td><td>${escapeHtml(c.source)}</td><td>${when(c.createdAt)}</td><td>${when(c.expiresAt)}</td><td>${c.grants}</td><td>${revoke}</td></tr>`
  })
  return adminPage('Clients', frame, `${filterForm(path, [{ name: 'source', label: 'Source (config / registered)', value: filters.source ?? '' }], filters.limit)}
${table(['Name', 'Client ID', 'Redirect hosts', 'Source', 'Created', 'Expires', 'Grants', ''], rows, 'No clients match.')}
${nextLink(path, filters, page)}`)
}

export interface UserDetail {
  readonly id: string
  /** Undefined: never seen and not blocked. */
  readonly item: UserItem | undefined
  readonly sessions: readonly SessionItem[]
  readonly apiKeys: Page<ApiKeyItem>
  readonly linked: readonly LinkedAccountItem[]
  readonly grants: readonly GrantItem[]
  readonly rateLimits: readonly BucketState[]
}

function userActions (detail: UserDetail, csrf: string): string {
  const base = `${ADMIN_PAGE_PATH}/users/${encodeURIComponent(detail.id)}`
  const block = detail.item?.blocked === true ? actionForm(`${base}/unblock`, 'Unblock', csrf) : actionForm(`${base}/block`, 'Block', csrf)
  return `<div class="actions">${actionForm(`${base}/revoke`, 'Revoke user', csrf)}${block}</div>
<p class="muted">Revoke: every grant, refresh token, API key and linked account; their sessions end. Block: refused at sign-in and at every request until unblocked.</p>`
}

export function userPage (frame: Frame, detail: UserDetail): string {
  const item = detail.item
  const path = `${ADMIN_PAGE_PATH}/users/${encodeURIComponent(detail.id)}`
  const facts = item === undefined
    ? '<p class="muted">Not seen by this gateway (no access token issued within auth.refreshTokenTtl).</p>'
    : `<p>Provider: ${escapeHtml(item.provider ?? '—')} · Groups: ${list(item.groups)} · Last seen: ${when(item.lastSeen)}${item.blocked ? ' · <strong>blocked</strong>' : ''}</p>`
  const keys = detail.apiKeys.items.map((k) => `<tr><td>${escapeHtml(k.name)}</td><td><code>${escapeHtml(k.keyId)}</code></td><td>${list(k.servers)}</td><td>${escapeHtml(k.scopes.join(' '))}</td><td>${when(k.createdAt)}</td><td>${when(k.expiresAt)}</td><td>${when(k.lastUsedAt)}</td></tr>`)
  const linked = detail.linked.map((l) => `<tr><td>${escapeHtml(l.server)}</td><td>${l.isLinked ? `linked ${when(l.linkedAt)}` : '<span class="muted">not linked</span>'}</td><td>${l.isLinked ? actionForm(`${path}/linked-accounts/${encodeURIComponent(l.server)}/unlink`, 'Unlink', frame.csrf) : ''}</td></tr>`)
  const grants = detail.grants.map((g) => `<tr><td>${escapeHtml(g.clientId ?? '—')}</td><td>${Object.entries(g.resources).map(([resource, scope]) => `${escapeHtml(resource)} <span class="muted">${escapeHtml(scope)}</span>`).join('<br>')}</td><td>${when(g.createdAt)}</td><td>${when(g.expiresAt)}</td><td>${g.refreshTokens.live} live, ${g.refreshTokens.rotations} rotation${g.refreshTokens.rotations === 1 ? '' : 's'}</td></tr>`)
  const limits = detail.rateLimits.map((b) => `<tr><td>${escapeHtml(b.on)}</td><td>${escapeHtml(b.subject)}</td><td>${b.remaining} of ${b.limit} per ${b.windowS} s</td><td>${when(b.resetsAt)}</td></tr>`)
  return adminPage(`User ${detail.id}`, frame, `${facts}
${userActions(detail, frame.csrf)}
<h2>Live sessions</h2>
${sessionsTable(detail.sessions, frame.csrf)}
<h2>API keys</h2>
${table(['Name', 'Key ID', 'Servers', 'Scopes', 'Created', 'Expires', 'Last used'], keys, 'No API keys.')}
${nextLink(path, {}, detail.apiKeys)}
${detail.linked.length === 0 ? '' : `<h2>Linked accounts</h2>\n${table(['Server', 'Status', ''], linked, '')}\n<p class="muted">Unlink: the user's tokens at that server are deleted here and revoked at its authorization server; their next call there asks them to link again.</p>`}
<h2>Grants</h2>
${table(['Client', 'Resources and scopes', 'Granted', 'Expires', 'Refresh tokens'], grants, 'No grants.')}
<h2>Rate limits <span class="muted">(as this replica last charged them)</span></h2>
${table(['Counted on', 'Limit', 'Left', 'Window resets'], limits, 'Not charged here since the gateway started.')}`)
}

function json (value: unknown): string {
  return value === undefined ? '<span class="muted">(absent)</span>' : `<pre>${escapeHtml(JSON.stringify(value, null, 2))}</pre>`
}

/** What changed, in full: an approval is only as good as what the approver could read. */
function changeDetail (c: ToolChangeView): string {
  if (c.change === 'added') return json(c.definition)
  if (c.change === 'removed') return '<span class="muted">no longer listed</span>'
  return (c.fields ?? []).map((f) => `<p><code>${escapeHtml(f.field)}</code></p>\n<p class="muted">before</p>${json(f.before)}\n<p class="muted">after</p>${json(f.after)}`).join('\n')
}

/**
 * Approves exactly the changes shown: each tool's name and the fingerprint it was shown at go
 * with the form, so a change listed (or changed again) after the page was drawn is refused, not
 * approved unseen.
 */
function approveForm (r: ToolsReview, csrf: string): string {
  const shown = r.changes.map((c) => `<input type="hidden" name="tool" value="${escapeHtml(c.name)}"><input type="hidden" name="to" value="${escapeHtml(c.to ?? '')}">`).join('')
  return `<form method="post" action="${escapeHtml(`${ADMIN_PAGE_PATH}/servers/${encodeURIComponent(r.server)}/tools/approve`)}">${hidden(csrf)}${shown}<button type="submit">${escapeHtml(`Approve these changes on ${r.server}`)}</button></form>`
}

export function toolsPage (frame: Frame, reviews: readonly ToolsReview[]): string {
  const sections = reviews.map((r) => {
    const rows = r.changes.map((c) => `<tr><td>${escapeHtml(c.name)}</td><td>${escapeHtml(c.change)}</td><td>${changeDetail(c)}</td></tr>`)
    const approve = r.changes.length === 0 ? '' : approveForm(r, frame.csrf)
    return `<h2>${escapeHtml(r.server)} <span class="muted">(pinTools: ${escapeHtml(r.pinTools)})</span></h2>
${table(['Tool', 'Change', 'What changed'], rows, r.hasListing ? 'No pending changes: the last listing matches what was approved.' : 'No tool listing seen through the gateway yet.')}
${approve}`
  })
  return adminPage('Pinned tools', frame, reviews.length === 0 ? '<p class="muted">No server pins its tool definitions (pinTools).</p>' : sections.join('\n'))
}

export function reloadPage (frame: Frame, report: ReloadReport): string {
  const items = (values: readonly string[]): string => `<ul>\n${values.map((v) => `<li>${escapeHtml(v)}</li>`).join('\n')}\n</ul>`
  const status = report.applied
    ? `<p class="secret" role="status" id="notice">The configuration was reloaded${report.changed.length === 0 ? ': nothing changed.' : '.'}</p>`
    : '<p class="error" role="alert" id="notice">The configuration file is invalid: nothing changed.</p>'
  return adminPage('Reload configuration', { ...frame, notice: undefined }, `${status}
${report.changed.length === 0 ? '' : `<h2>Changed</h2>\n${items(report.changed)}`}
${report.needsRestart.length === 0 ? '' : `<h2>Needs a restart</h2>\n${items(report.needsRestart)}`}
${report.errors.length === 0 ? '' : `<h2>Errors</h2>\n${items(report.errors)}`}
${report.warnings.length === 0 ? '' : `<h2>Not done</h2>\n<div class="error" role="alert">${items(report.warnings)}</div>`}
<p><a href="${ADMIN_PAGE_PATH}">Back to the admin page</a></p>`)
}
