/**
 * Tool arguments checked against the tool's own inputSchema before a call
 * leaves the gateway (servers[].validateArguments).
 *
 * Which JSON Schema dialect: the schema's own `$schema` decides. None, or
 * 2020-12, is JSON Schema 2020-12 (the MCP spec's default dialect for tool
 * schemas since 2025-11-25); draft-07 (what SDKs built on zod-to-json-schema
 * still send) and 2019-09 are validated as what they say they are. Any other
 * `$schema` (draft-04, an unknown URI) cannot be honoured, and a schema that
 * does not compile is no check at all: the call is refused (fail closed) with
 * a message naming the reason, and the operator turns validation off for that
 * server or fixes the upstream.
 *
 * Compiled once per definition fingerprint and cached, at most
 * MAX_COMPILED_SCHEMAS of them (least recently used dropped, and removed from
 * ajv's own cache too, so a server changing schemas cannot grow memory).
 */
import { Ajv, type ValidateFunction, type AnySchemaObject, type ErrorObject } from 'ajv'
import { Ajv2019 } from 'ajv/dist/2019.js'
import { Ajv2020 } from 'ajv/dist/2020.js'
import formats from 'ajv-formats'

export const MAX_COMPILED_SCHEMAS = 1000

const DRAFT_07 = /^https?:\/\/json-schema\.org\/draft-07\/schema#?$/
const DRAFT_2019 = /^https?:\/\/json-schema\.org\/draft\/2019-09\/schema#?$/
const DRAFT_2020 = /^https?:\/\/json-schema\.org\/draft\/2020-12\/schema#?$/

export type ArgumentProblem = {
  /** JSON Pointer into the arguments ('' for the arguments object itself). */
  readonly path: string
  readonly message: string
}

type Compiled = { readonly validate: ValidateFunction, readonly schema: AnySchemaObject, readonly ajv: Ajv } | { readonly error: string }

function createAjv<T extends Ajv> (Kind: new (options: object) => T): T {
  // strict: false: upstream schemas carry keywords ajv does not know (x-*, examples in odd places);
  // addUsedSchema: false: two tools' schemas with the same $id must not collide in one instance.
  const ajv = new Kind({ strict: false, allErrors: false, addUsedSchema: false, validateSchema: true })
  formats.default(ajv)
  return ajv
}

export class ArgumentValidator {
  private readonly compiled = new Map<string, Compiled>()
  private readonly dialects: { readonly draft07: Ajv, readonly draft2019: Ajv, readonly draft2020: Ajv }

  constructor (readonly maxCompiled = MAX_COMPILED_SCHEMAS) {
    this.dialects = { draft07: createAjv(Ajv), draft2019: createAjv(Ajv2019), draft2020: createAjv(Ajv2020) }
  }

  /** Problems with `args` under the schema of definition `fingerprint`; undefined when valid. */
  check (fingerprint: string, schema: unknown, args: unknown): ArgumentProblem | undefined {
    const compiled = this.compile(fingerprint, schema)
    if ('error' in compiled) return { path: '', message: compiled.error }
    if (compiled.validate(args ?? {})) return undefined
    return problemOf(compiled.validate.errors?.[0])
  }

  /** How many compiled schemas are held (bounded by MAX_COMPILED_SCHEMAS). */
  get size (): number {
    return this.compiled.size
  }

  private compile (fingerprint: string, schema: unknown): Compiled {
    const cached = this.compiled.get(fingerprint)
    if (cached !== undefined) {
      // Least recently used goes first: a hit moves to the end.
      this.compiled.delete(fingerprint)
      this.compiled.set(fingerprint, cached)
      return cached
    }
    const compiled = this.compileNew(schema)
    this.compiled.set(fingerprint, compiled)
    if (this.compiled.size > this.maxCompiled) this.evictOldest()
    return compiled
  }

  private compileNew (schema: unknown): Compiled {
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
      return { error: 'the tool lists no inputSchema object, so its arguments cannot be checked' }
    }
    const object = schema as AnySchemaObject
    const ajv = this.ajvFor(object.$schema)
    if (ajv === undefined) return { error: `the tool's inputSchema uses $schema ${JSON.stringify(object.$schema)}, which the gateway cannot validate (supported: 2020-12, 2019-09, draft-07)` }
    try {
      return { validate: ajv.compile(object), schema: object, ajv }
    } catch (err) {
      return { error: `the tool's inputSchema does not compile: ${(err as Error).message}` }
    }
  }

  private ajvFor (dialect: unknown): Ajv | undefined {
    if (dialect === undefined || (typeof dialect === 'string' && DRAFT_2020.test(dialect))) return this.dialects.draft2020
    if (typeof dialect !== 'string') return undefined
    if (DRAFT_07.test(dialect)) return this.dialects.draft07
    if (DRAFT_2019.test(dialect)) return this.dialects.draft2019
    return undefined
  }

  private evictOldest (): void {
    const oldest = this.compiled.keys().next()
    if (oldest.done === true) return
    const entry = this.compiled.get(oldest.value)
    this.compiled.delete(oldest.value)
    if (entry !== undefined && 'ajv' in entry) entry.ajv.removeSchema(entry.schema)
  }
}

function problemOf (error: ErrorObject | undefined): ArgumentProblem {
  if (error === undefined) return { path: '', message: 'the arguments do not match the tool\'s inputSchema' }
  // ajv's messages name what is wrong ("must have required property 'b'", "must be number").
  return { path: error.instancePath, message: error.message ?? 'is invalid' }
}
