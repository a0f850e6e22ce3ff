/**
 * The built-in detectors for `servers[].redactResults`: shapes of secrets and
 * personal data that must not reach a model's context through a tool result.
 * Each is a regex source (joined into one alternation per string, see
 * redactor.ts), a cheap hint that says whether the string can hold one at all
 * (so a 1 KB result without a `@` never runs the email pattern), and for card
 * numbers a check the regex cannot express (Luhn).
 *
 * Shapes follow the issuers' own documentation: AWS access key ids (IAM
 * "Understanding unique ID prefixes"), GitHub's token prefixes (ghp_, gho_,
 * ghu_, ghs_, ghr_, github_pat_), GitLab's (glpat- and kin), Slack's (xox?-,
 * xapp-, incoming-webhook URLs), RFC 7519 JWS compact form, RFC 6750 bearer
 * credentials, PEM private keys (RFC 7468), ISO/IEC 7812 card numbers.
 */

import safeRegex from 'safe-regex2'

export interface Detector {
  /** The kind named in `[redacted:<kind>]`, the audit record and the metric. */
  readonly kind: string
  /** Regex source; no capture groups of its own (the combined scan numbers one group per detector). */
  readonly source: string
  /** False when the string cannot hold a match (the detector is skipped for it); absent: always tried. */
  readonly hint?: (text: string) => boolean
  /** A match the regex found but that is not one (a card number failing Luhn): kept as it was. */
  readonly confirm?: (match: string) => boolean
}

const contains = (...needles: string[]) => (text: string): boolean => needles.some((n) => text.includes(n))
const hints = (re: RegExp) => (text: string): boolean => re.test(text)

/** ISO/IEC 7812 check digit (the Luhn algorithm) over the digits of a candidate. */
export function isLuhnValid (candidate: string): boolean {
  const digits = candidate.replace(/[ -]/g, '')
  if (digits.length < 13 || digits.length > 19) return false
  let sum = 0
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48
    if (i % 2 === 1) {
      d *= 2
      if (d > 9) d -= 9
    }
    sum += d
  }
  return sum % 10 === 0
}

/** RFC 7468 label of any private key: PRIVATE KEY, RSA/EC/OPENSSH/ENCRYPTED PRIVATE KEY, PGP PRIVATE KEY BLOCK. */
const PEM_PRIVATE_LABEL = '(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----'

export const BUILT_IN_DETECTORS: readonly Detector[] = [
  {
    kind: 'private-keys',
    // The whole block when it ends; a block cut short (a truncated file) up to where base64 stops.
    source: `-----BEGIN ${PEM_PRIVATE_LABEL}(?:[\\s\\S]*?-----END ${PEM_PRIVATE_LABEL}|[A-Za-z0-9+/=\\s\\\\]*)`,
    hint: contains('-----BEGIN'),
  },
  {
    kind: 'cloud-keys',
    // AWS access key ids (long-term AKIA, temporary ASIA, and kin); an AWS secret key only
    // beside its name (40 base64 characters alone are any hash); Google API keys.
    source: '\\b(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\\b' +
      '|\\b(?:aws_secret_access_key|AWS_SECRET_ACCESS_KEY|SecretAccessKey|secretAccessKey)["\']?\\s*[:=]\\s*["\']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])' +
      '|\\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])',
    hint: hints(/A(?:KIA|SIA|BIA|CCA|IDA|ROA|IPA|NPA|NVA|PKA|Iza)|ecret_?[Aa]ccess_?[Kk]ey/i),
  },
  {
    kind: 'github-tokens',
    source: '\\bgh[pousr]_[A-Za-z0-9]{36,251}(?![A-Za-z0-9])|\\bgithub_pat_[A-Za-z0-9_]{22,244}(?![A-Za-z0-9_])',
    hint: hints(/gh[pousr]_|github_pat_/),
  },
  {
    kind: 'gitlab-tokens',
    source: '\\bgl(?:pat|dt|rt|ptt|cbt|ft|imt|agent|soat|oas|ffct)-[A-Za-z0-9_-]{20,}',
    hint: hints(/\bgl[a-z]{1,5}-/),
  },
  {
    kind: 'slack-tokens',
    source: '\\bxox[abposer]-[A-Za-z0-9-]{10,}|\\bxapp-[0-9]-[A-Za-z0-9-]{10,}|https://hooks\\.slack\\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}',
    hint: contains('xox', 'xapp-', 'hooks.slack.com'),
  },
  {
    kind: 'jwts',
    // A JWS in compact form: base64url header and payload, both JSON objects ("eyJ" is `{"`).
    source: '\\beyJ[A-Za-z0-9_-]{4,}\\.eyJ[A-Za-z0-9_-]{4,}\\.[A-Za-z0-9_-]*',
    hint: contains('eyJ'),
  },
  {
    kind: 'bearer',
    // RFC 6750 section 2.1 b64token after the scheme; 16 characters so prose ("bearer of bad news") stays.
    source: '\\b[Bb]earer[ \\t]+[A-Za-z0-9._~+/-]{16,}=*',
    hint: contains('earer'),
  },
  {
    kind: 'credit-cards',
    // 13-19 digits, grouped by spaces or dashes or not, starting as the card networks do
    // (2-6: Mastercard, Amex, Visa, Discover, JCB, Diners); Luhn decides.
    source: '\\b[2-6](?:[ -]?[0-9]){12,18}\\b',
    hint: hints(/[0-9]{4}/),
    confirm: isLuhnValid,
  },
  {
    kind: 'emails',
    source: '\\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\\.[A-Za-z0-9-]{1,63})*\\.[A-Za-z]{2,24}\\b',
    hint: contains('@'),
  },
]

/** Names that stand for several detectors. */
export const DETECTOR_GROUPS: Readonly<Record<string, readonly string[]>> = {
  secrets: ['private-keys', 'cloud-keys', 'github-tokens', 'gitlab-tokens', 'slack-tokens', 'jwts', 'bearer', 'credit-cards'],
}

/** Every name `redactResults` accepts as a string. */
export const DETECTOR_NAMES: readonly string[] = [...Object.keys(DETECTOR_GROUPS), ...BUILT_IN_DETECTORS.map((d) => d.kind)]

/** The built-in detectors a list of names selects, each once, in table order. */
export function builtInDetectors (names: readonly string[]): Detector[] {
  const wanted = new Set(names.flatMap((n) => DETECTOR_GROUPS[n] ?? [n]))
  return BUILT_IN_DETECTORS.filter((d) => wanted.has(d.kind))
}

/** An operator's pattern: always tried (no hint can be derived from an arbitrary regex). */
export function operatorDetector (kind: string, pattern: string): Detector {
  return { kind, source: pattern }
}

/** Longest operator pattern accepted: a longer one is a word list, better served by a tool of its own. */
const MAX_PATTERN_CHARS = 1000

/**
 * Why an operator's pattern cannot be used, or undefined when it can. Patterns run
 * on every result of the server, joined into one alternation with the others: so
 * no backreferences or named groups (their numbers and names would collide), no
 * lookbehind (the safety check cannot parse it), no
 * pattern that matches the empty string, and none that safe-regex2 finds able to
 * backtrack catastrophically (nested quantifiers, ReDoS) — an upstream controls
 * the text it is run on.
 */
export function patternProblem (pattern: string): string | undefined {
  if (pattern.length > MAX_PATTERN_CHARS) return `a pattern is at most ${MAX_PATTERN_CHARS} characters`
  if (/^\(\?[a-z]+\)/.test(pattern)) return 'inline flags such as (?i) are not supported: patterns are case-sensitive (write [Ee][Mm][Pp] for either case)'
  let re: RegExp
  try {
    re = new RegExp(pattern, 'g')
  } catch (err) {
    return `not a valid regular expression: ${(err as Error).message}`
  }
  if (/\\[1-9]|\\k<|\(\?<(?![=!])/.test(pattern)) return 'backreferences and named groups are not supported (use (?:...) for grouping)'
  // safe-regex2's parser cannot read lookbehind, and an unread pattern is not a checked one.
  if (/\(\?<[=!]/.test(pattern)) return 'lookbehind (?<= and (?<! is not supported: match the context too, or use a lookahead'
  if (!safeRegex(pattern)) return 'this pattern can take exponential time on some inputs (nested quantifiers such as (a+)+); rewrite it without a repetition inside a repetition'
  if (re.test('')) return 'this pattern matches the empty string; it must match at least one character'
  return undefined
}
