/**
 * The gateway's own pages: sign-in, consent, and errors. Plain HTML, no
 * script, no external asset; the one inline stylesheet is allowed by its
 * hash in the Content-Security-Policy. Every value is escaped.
 */
import { createHash } from 'node:crypto'

const STYLE = `
:root { color-scheme: light dark; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: Canvas; color: CanvasText; }
main { width: min(26rem, calc(100vw - 2rem)); padding: 2rem; border: 1px solid GrayText; border-radius: .75rem; }
h1 { font-size: 1.35rem; margin: 0 0 1rem; }
p, li { line-height: 1.45; }
label { display: block; font-weight: 600; margin: 1rem 0 .25rem; }
input[type=text], input[type=password] { box-sizing: border-box; width: 100%; padding: .6rem; font: inherit; border: 1px solid GrayText; border-radius: .4rem; }
button { font: inherit; padding: .6rem 1.2rem; margin-top: 1.25rem; border-radius: .4rem; border: 1px solid GrayText; cursor: pointer; }
button.primary { background: #1f5fbf; color: #fff; border-color: #1f5fbf; }
.actions { display: flex; gap: .75rem; flex-wrap: wrap; }
.error { border-left: .3rem solid #b00020; padding: .5rem .75rem; background: color-mix(in srgb, #b00020 12%, Canvas); }
.muted { color: GrayText; font-size: .9rem; }
code { font-size: .9em; word-break: break-all; }
main.wide { width: min(60rem, calc(100vw - 2rem)); }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid GrayText; vertical-align: top; }
td form button { margin-top: 0; padding: .3rem .8rem; }
label.choice { display: inline-block; font-weight: normal; margin: .25rem 1rem .25rem 0; }
.secret { border-left: .3rem solid #1f7a1f; padding: .5rem .75rem; background: color-mix(in srgb, #1f7a1f 12%, Canvas); }
`

const STYLE_HASH = `sha256-${createHash('sha256').update(STYLE).digest('base64')}`

/** Headers for every page: no framing, no caching, no sniffing, no referrer, and scripts nowhere. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': `default-src 'none'; style-src '${STYLE_HASH}'; base-uri 'none'; frame-ancestors 'none'`,
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
}

export function escapeHtml (value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** The page frame every gateway page shares; `wide` for tables (the account pages). */
export function layout (title: string, body: string, wide = false): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(title)} · Portcullis</title>
<style>${STYLE}</style>
</head>
<body>
<main${wide ? ' class="wide"' : ''}>
${body}
</main>
</body>
</html>`
}

export interface LoginView {
  readonly action: string
  readonly csrf: string
  readonly clientName: string
  readonly username?: string
  readonly error?: string
  /** The identity providers, one "Sign in with …" button each (a form POST carrying the CSRF token). */
  readonly providers?: ReadonlyArray<{ readonly label: string, readonly action: string }>
  /** The username and password form: only when there are local users (default true). */
  readonly hasPasswordForm?: boolean
}

function providerButtons (view: LoginView): string {
  return (view.providers ?? []).map((p) => `<form method="post" action="${escapeHtml(p.action)}" class="idp">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
<div class="actions"><button class="primary" type="submit">Sign in with ${escapeHtml(p.label)}</button></div>
</form>`).join('\n')
}

export function loginPage (view: LoginView): string {
  const error = view.error === undefined ? '' : `<p class="error" role="alert" id="error">${escapeHtml(view.error)}</p>`
  const describedBy = view.error === undefined ? '' : ' aria-describedby="error"'
  const buttons = providerButtons(view)
  const hasPasswordForm = view.hasPasswordForm ?? true
  const passwordForm = !hasPasswordForm
    ? ''
    : `${buttons === '' ? '' : '<p class="muted">Or with a gateway account:</p>\n'}<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required value="${escapeHtml(view.username ?? '')}"${describedBy}${view.username === undefined ? ' autofocus' : ''}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required${describedBy}${view.username === undefined ? '' : ' autofocus'}>
<div class="actions"><button${buttons === '' ? ' class="primary"' : ''} type="submit">Sign in</button></div>
</form>`
  return layout('Sign in', `<h1>Sign in</h1>
<p><strong>${escapeHtml(view.clientName)}</strong> wants to use MCP servers through this gateway.</p>
${error}
${buttons}${buttons === '' ? '' : '\n'}${passwordForm}`)
}

export interface ConsentView {
  readonly action: string
  readonly abortAction: string
  readonly csrf: string
  readonly clientName: string
  readonly clientId: string
  readonly redirectHost: string
  /** Every redirect URI of the client is a loopback address (warned about: see consentPage). */
  readonly isLoopbackOnly: boolean
  readonly username: string
  readonly servers: ReadonlyArray<{ name: string, url: string }>
  readonly scopes: readonly string[]
}

/**
 * MCP authorization (2025-11-25 and later), Security Considerations, "Localhost Redirect URI
 * Risks": a client name or metadata document URL proves nothing about the program listening
 * on a loopback port, so authorization servers SHOULD display additional warnings for
 * localhost-only redirect URIs.
 */
const LOOPBACK_WARNING = `<p class="error" role="note" id="loopback-warning"><strong>Check that you started this yourself.</strong> This application receives your approval through a port on this computer. Any program running here could claim to be it: allow access only if you just asked this application to connect.</p>
`

export function consentPage (view: ConsentView): string {
  const servers = view.servers.map((s) => `<li><strong>${escapeHtml(s.name)}</strong> <span class="muted"><code>${escapeHtml(s.url)}</code></span></li>`).join('\n')
  const scopes = view.scopes.map((s) => `<li><code>${escapeHtml(s)}</code></li>`).join('\n')
  return layout('Allow access?', `<h1>Allow access?</h1>
<p><strong>${escapeHtml(view.clientName)}</strong> wants to act on your behalf, <strong>${escapeHtml(view.username)}</strong>.</p>
<p>After you allow it, you are sent back to <strong>${escapeHtml(view.redirectHost)}</strong>.</p>
${view.isLoopbackOnly ? LOOPBACK_WARNING : ''}<h2>MCP servers</h2>
<ul>
${servers}
</ul>
<h2>Permissions</h2>
<ul>
${scopes}
</ul>
<p class="muted">Client ID: <code>${escapeHtml(view.clientId)}</code></p>
<div class="actions">
<form method="post" action="${escapeHtml(view.action)}"><input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}"><button class="primary" type="submit">Allow</button></form>
<form method="post" action="${escapeHtml(view.abortAction)}"><input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}"><button type="submit">Deny</button></form>
</div>`)
}

export function messagePage (title: string, message: string, detail?: string): string {
  return layout(title, `<h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(message)}</p>
${detail === undefined ? '' : `<p class="muted">${escapeHtml(detail)}</p>`}`)
}
