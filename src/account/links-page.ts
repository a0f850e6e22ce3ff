/**
 * The /account/links page: the servers behind the gateway that take each user's own account
 * (servers[].upstreamAuth oauth), which of them the user has linked, and "Link" / "Unlink"
 * (a POST with the page's CSRF token, like the API keys' "Revoke"). Every value escaped.
 */
import { escapeHtml, layout } from '../auth-server/pages.js'
import type { LinkState } from '../upstream-auth/upstream-links.js'
import { ACCOUNT_PATH } from './session.js'

export const LINKS_PATH = `${ACCOUNT_PATH}/links`

export interface LinksView {
  readonly username: string
  readonly csrf: string
  readonly links: readonly LinkState[]
  readonly hasKeys: boolean
  readonly error?: string
}

function when (ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC'
}

function row (link: LinkState, csrf: string): string {
  const name = escapeHtml(link.server)
  if (link.linkedAtMs === undefined) {
    return `<tr><td>${name}</td><td class="muted">not linked</td><td><a href="${LINKS_PATH}/${name}/connect">Link</a></td></tr>`
  }
  const unlink = `<form method="post" action="${LINKS_PATH}/${name}/unlink"><input type="hidden" name="csrf" value="${escapeHtml(csrf)}"><button type="submit">Unlink</button></form>`
  return `<tr><td>${name}</td><td>linked ${when(link.linkedAtMs)}</td><td>${unlink}</td></tr>`
}

/**
 * The confirmation before linking: a GET (a link from anywhere, perhaps another site) only shows
 * which server and which account; linking starts with this form's POST and its CSRF token, so a
 * page elsewhere cannot send a signed-in user off to link an account they did not mean to.
 */
export function connectPage (view: { readonly username: string, readonly server: string, readonly csrf: string }): string {
  const server = escapeHtml(view.server)
  return layout('Link your account', `<h1>Link your account</h1>
<p>Link your account at the provider of MCP server <strong>${server}</strong> to <strong>${escapeHtml(view.username)}</strong> on this gateway?</p>
<p>You will sign in at that provider; the gateway then keeps its token for you (encrypted) and uses it for your requests to ${server}.</p>
<form method="post" action="${LINKS_PATH}/${server}/connect"><input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}"><button type="submit">Link account</button></form>
<p><a href="${LINKS_PATH}">Cancel</a></p>`, true)
}

export function linksPage (view: LinksView): string {
  const error = view.error === undefined ? '' : `<p class="error" role="alert" id="error">${escapeHtml(view.error)}</p>`
  return layout('Linked accounts', `<h1>Linked accounts</h1>
<p>Signed in as <strong>${escapeHtml(view.username)}</strong>.${view.hasKeys ? ` <a href="${ACCOUNT_PATH}/keys">API keys</a>` : ''}</p>
<form method="post" action="${ACCOUNT_PATH}/logout"><input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}"><button type="submit">Sign out</button></form>
${error}
<p>These MCP servers act with your own account at their provider. Link it once; the gateway keeps the provider's token for you (encrypted) and renews it. Unlink to take the gateway's access away.</p>
<table><thead><tr><th>Server</th><th>Status</th><th></th></tr></thead>
<tbody>
${view.links.map((l) => row(l, view.csrf)).join('\n')}
</tbody></table>`, true)
}
