/**
 * A Content-Type's media type, lower case and without parameters: type and subtype are
 * case-insensitive (RFC 9110 8.3.1), and clients read `Text/Event-Stream` as an event stream
 * (the MCP SDK parses the header). Every reader of an answer's form asks here: one judged by its
 * exact spelling was passed unedited, or failed where the member's own URL served it.
 */
export function mediaTypeOf (contentType: unknown): string {
  return typeof contentType === 'string' ? (contentType.split(';', 1)[0] ?? '').trim().toLowerCase() : ''
}

export const EVENT_STREAM = 'text/event-stream'

/** Whether a Content-Type names an event stream, however it is spelled. */
export function isEventStream (contentType: unknown): boolean {
  return mediaTypeOf(contentType) === EVENT_STREAM
}
