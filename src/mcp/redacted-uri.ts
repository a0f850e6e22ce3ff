/**
 * A resource URI fit for the audit trail, spans and refusal messages: what a client sends as a
 * URI may carry credentials (userinfo, a presigned query).
 */
/** Semantic conventions url.md: credentials become REDACTED:REDACTED; we go further and redact every query value. */
const REDACTED = 'REDACTED'

/**
 * mcp.resource.uri as url.md asks url.full to be scrubbed: credentials in the userinfo and every
 * query value replaced by REDACTED (a resource URI's query is as likely to hold a token as a
 * presigned URL's), the fragment dropped. A URI that does not parse is not exported at all.
 */
export function redactedUri (uri: string): string | undefined {
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return undefined
  }
  if (url.username !== '' || url.password !== '') {
    url.username = REDACTED
    url.password = REDACTED
  }
  for (const key of [...url.searchParams.keys()]) url.searchParams.set(key, REDACTED)
  url.hash = ''
  return url.toString()
}

/** A target as it may be recorded: a resource's URI redacted (as sent when it does not parse as a URL), any other name as it is. */
export function recordableTarget (kind: string | undefined, name: string): string {
  return kind === 'resource' ? redactedUri(name) ?? name : name
}

/** An audit record's target: its kind, and its name as recordableTarget gives it. */
export function auditTarget (kind: string, name: string): { kind: string, name: string } {
  return { kind, name: recordableTarget(kind, name) }
}
