/**
 * Reading an upstream's `WWW-Authenticate: Bearer …` challenge (RFC 6750 3, RFC 9110 11.6.1)
 * for what a spec-following MCP client needs from it (MCP 2025-11-25 basic/authorization,
 * "Protected Resource Metadata Discovery Requirements" and "Scope Selection Strategy"):
 * `resource_metadata` (RFC 9728 5.1), `scope` and `error`.
 *
 * Pure: no I/O. A header with several challenges (`Basic realm="x", Bearer …`) is read for its
 * Bearer challenge only; anything unparseable yields no parameters (discovery then falls back
 * to the well-known URIs, as the spec says).
 */

export interface BearerChallenge {
  readonly resourceMetadata?: string
  readonly scope?: string
  readonly error?: string
}

/** token68-free auth-param list: name=token or name="quoted string" separated by commas. */
const PARAM_RE = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9!#$%&'*+.^_`|~/:-]+))\s*(,|$)/y
const SCHEME_RE = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s+|$)/y

/** The Bearer challenge's parameters (names lower-cased; the first of a repeated name wins). */
export function parseBearerChallenge (header: string | undefined): BearerChallenge {
  if (header === undefined) return {}
  const params = bearerParams(header)
  if (params === undefined) return {}
  const pick = (name: string): string | undefined => {
    const value = params.get(name)
    return value === undefined || value === '' ? undefined : value
  }
  const resourceMetadata = pick('resource_metadata')
  const scope = pick('scope')
  const error = pick('error')
  return {
    ...(resourceMetadata === undefined ? {} : { resourceMetadata }),
    ...(scope === undefined ? {} : { scope }),
    ...(error === undefined ? {} : { error }),
  }
}

function bearerParams (header: string): Map<string, string> | undefined {
  let at = 0
  while (at < header.length) {
    SCHEME_RE.lastIndex = at
    const scheme = SCHEME_RE.exec(header)
    if (scheme === null) return undefined
    at = SCHEME_RE.lastIndex
    const params = new Map<string, string>()
    // A scheme's parameters run until the next token that is not followed by "=" (the next scheme).
    for (;;) {
      PARAM_RE.lastIndex = at
      const param = PARAM_RE.exec(header)
      if (param === null) break
      const name = (param[1] ?? '').toLowerCase()
      const value = param[2] === undefined ? param[3] ?? '' : param[2].replace(/\\(.)/g, '$1')
      if (!params.has(name)) params.set(name, value)
      at = PARAM_RE.lastIndex
    }
    if (scheme[1]?.toLowerCase() === 'bearer') return params
    // A parameter list ends at the next scheme (its comma consumed); a token68 is skipped to its comma.
    if (params.size === 0) {
      const comma = header.indexOf(',', at)
      if (comma < 0) return undefined
      at = comma + 1
    }
  }
  return undefined
}
