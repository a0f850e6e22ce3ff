/**
 * What servers[].redactResults (issue 18, section 3) turns the fixtures' `leak` tool answer into,
 * and how to read and check it: shared by the member-URL test (e2e/redact-results) and the
 * virtual-server one (e2e/virtual-guardrails), which must see the same masking.
 */
import type { Test } from 'tap'
import { INIT_BODY, postJson, type RunningGateway } from './helpers.js'
import { FAKE } from './fixtures/fake-secrets.mjs'

export const REDACT = ['secrets', 'emails', { name: 'employee-id', pattern: 'EMP-\\d{6}' }]

export const MASKED_TEXT = [
  'aws [redacted:cloud-keys]', 'github [redacted:github-tokens]', 'slack [redacted:slack-tokens]', 'jwt [redacted:jwts]',
  'auth [redacted:bearer]', '[redacted:private-keys]', 'card [redacted:credit-cards]', `order ${FAKE.notCard}`, 'mail [redacted:emails]', 'staff [redacted:employee-id]',
].join('\n')
export const MASKED_STRUCTURED = { owner: '[redacted:emails]', keys: [{ github: '[redacted:github-tokens]' }, { count: 2 }] }
/** What the `leak` tool's answer holds, by kind: the text's one of each, plus the structured content's email and token. */
export const LEAK_COUNTS = { 'cloud-keys': 1, 'github-tokens': 2, 'slack-tokens': 1, jwts: 1, bearer: 1, 'private-keys': 1, 'credit-cards': 1, emails: 2, 'employee-id': 1 }
export const SECRET_VALUES = [FAKE.github, FAKE.slack, FAKE.jwt, FAKE.card, FAKE.email, FAKE.gitlab, 'EMP-123456', 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC']

export type Json = Record<string, unknown>
export const records = (gw: RunningGateway): Json[] => gw.audit.lines.map((l) => JSON.parse(l) as Json)

/** No secret value in the operational log or the audit trail (counts only). */
export function assertNothingLogged (t: Test, gw: RunningGateway): void {
  const everything = `${gw.logs.text()}\n${gw.audit.text()}`
  for (const value of SECRET_VALUES) t.notOk(everything.includes(value), `${value.slice(0, 12)}... appears in no log`)
}

/** initialize and notifications/initialized by hand: the headers of the session opened. */
export async function session (url: string, headers: Record<string, string> = {}): Promise<Record<string, string>> {
  const init = await postJson(url, INIT_BODY, headers)
  // A stateless server (or a gateway route in front of one) assigns no session: none is sent.
  const id = init.headers.get('mcp-session-id')
  const withSession = { ...headers, ...(id === null ? {} : { 'mcp-session-id': id }), 'mcp-protocol-version': '2025-11-25' }
  await postJson(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, withSession)
  return withSession
}

/** Messages of a JSON or SSE answer (batch answers flattened). */
export function messagesOf (res: { text: string, json: unknown }): Json[] {
  if (!res.text.includes('event:')) return (Array.isArray(res.json) ? res.json : [res.json]) as Json[]
  return res.text.split('\n\n').filter((e) => e.includes('data:')).flatMap((e) => {
    const m = JSON.parse(e.slice(e.indexOf('data:') + 5)) as Json | Json[]
    return Array.isArray(m) ? m : [m]
  })
}
