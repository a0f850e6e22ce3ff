/** Name patterns in policy rules: `*` is any run of characters, `?` one character; the rest is literal. */

export type Matcher = (name: string) => boolean

export function compileGlob (pattern: string): Matcher {
  if (!pattern.includes('*') && !pattern.includes('?')) return (name) => name === pattern
  const source = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  const re = new RegExp(`^${source}$`, 's')
  return (name) => re.test(name)
}

/** The first pattern that matches, for messages that name the rule. */
export function firstMatch (patterns: ReadonlyArray<{ pattern: string, matches: Matcher }>, name: string): string | undefined {
  for (const p of patterns) if (p.matches(name)) return p.pattern
  return undefined
}
