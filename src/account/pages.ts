/** The /account pages' HTML: the API keys list, its create form, and a new key shown once. Every value escaped. */
import { escapeHtml, layout } from '../auth-server/pages.js'
import type { ApiKeyRecord } from './api-keys.js'
import type { Entitlements } from './key-owners.js'
import { ACCOUNT_PATH } from './session.js'

export interface KeysView {
  readonly username: string
  readonly csrf: string
  readonly keys: readonly ApiKeyRecord[]
  readonly entitled: Entitlements
  readonly defaultExpiry: string
  readonly maxExpiry: string
  /** A key created just now: its secret, shown this once. */
  readonly created?: { readonly record: ApiKeyRecord, readonly secret: string }
  readonly error?: string
}

function day (ms: number | undefined): string {
  return ms === undefined ? 'never' : new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC'
}

function hidden (csrf: string): string {
  return `<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">`
}

function keyRow (key: ApiKeyRecord, csrf: string): string {
  const revoke = `<form method="post" action="${ACCOUNT_PATH}/keys/${escapeHtml(key.keyId)}/revoke">${hidden(csrf)}<button type="submit">Revoke</button></form>`
  return `<tr><td>${escapeHtml(key.name)}</td><td><code>${escapeHtml(key.keyId)}</code></td><td>${escapeHtml(key.servers.join(', '))}</td><td>${escapeHtml(key.scopes.join(' '))}</td><td>${day(key.createdAtMs)}</td><td>${day(key.expiresAtMs)}</td><td>${day(key.lastUsedAtMs)}</td><td>${revoke}</td></tr>`
}

function createForm (view: KeysView): string {
  const servers = [...view.entitled.keys()].map((name) => `<label class="choice"><input type="checkbox" name="servers" value="${escapeHtml(name)}"> ${escapeHtml(name)}</label>`).join('\n')
  const scopes = [...new Set([...view.entitled.values()].flat())].map((scope) => `<label class="choice"><input type="checkbox" name="scopes" value="${escapeHtml(scope)}"> <code>${escapeHtml(scope)}</code></label>`).join('\n')
  if (view.entitled.size === 0) return '<p class="muted">No MCP server behind this gateway is open to you, so there is nothing a key could reach.</p>'
  return `<form method="post" action="${ACCOUNT_PATH}/keys">
${hidden(view.csrf)}
<label for="name">Name</label>
<input type="text" id="name" name="name" maxlength="100" placeholder="e.g. CI deploy job" required>
<fieldset><legend>Servers</legend>
${servers}
</fieldset>
<fieldset><legend>Scopes <span class="muted">(none ticked: every scope of the servers)</span></legend>
${scopes}
</fieldset>
<label for="expires">Expires in</label>
<input type="text" id="expires" name="expires" value="${escapeHtml(view.defaultExpiry)}" required>
<p class="muted">A duration such as 30d, 12h; at most ${escapeHtml(view.maxExpiry)}.</p>
<div class="actions"><button class="primary" type="submit">Create key</button></div>
</form>`
}

function createdNotice (created: NonNullable<KeysView['created']>): string {
  return `<div class="secret" role="status" id="new-key">
<p><strong>Your new key "${escapeHtml(created.record.name)}"</strong> (<code>${escapeHtml(created.record.keyId)}</code>). Copy it now: it is not shown again.</p>
<p><code id="secret">${escapeHtml(created.secret)}</code></p>
<p class="muted">Send it as <code>Authorization: Bearer &lt;key&gt;</code> to ${escapeHtml(created.record.servers.map((s) => `/${s}/mcp`).join(', '))}.</p>
</div>`
}

export function keysPage (view: KeysView): string {
  const error = view.error === undefined ? '' : `<p class="error" role="alert" id="error">${escapeHtml(view.error)}</p>`
  const rows = view.keys.map((k) => keyRow(k, view.csrf)).join('\n')
  const table = view.keys.length === 0
    ? '<p class="muted">You have no API keys.</p>'
    : `<table><thead><tr><th>Name</th><th>Key ID</th><th>Servers</th><th>Scopes</th><th>Created</th><th>Expires</th><th>Last used</th><th></th></tr></thead>
<tbody>
${rows}
</tbody></table>`
  return layout('API keys', `<h1>API keys</h1>
<p>Signed in as <strong>${escapeHtml(view.username)}</strong>.</p>
<form method="post" action="${ACCOUNT_PATH}/logout">${hidden(view.csrf)}<button type="submit">Sign out</button></form>
${view.created === undefined ? '' : createdNotice(view.created)}
${error}
<p>A key acts as you, limited to the servers and scopes you choose, for agents, CI jobs and scripts that cannot sign in with a browser.</p>
<h2>Your keys</h2>
${table}
<h2>New key</h2>
${createForm(view)}`, true)
}
