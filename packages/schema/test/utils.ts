/**
 * Shared assertions and generators for the schema tests.
 */
import { assert } from "@effect/vitest"
import { Arbitrary, Result, Schema } from "effect"
import type { SchemaAST } from "effect"

/**
 * Decodes `input` and returns the value, failing the test with the schema's message when it does
 * not decode.
 */
export const decodeOk = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  input: unknown,
  options?: SchemaAST.ParseOptions
): S["Type"] => {
  const result = Schema.decodeUnknownResult(schema)(input, options)
  if (Result.isFailure(result)) {
    return assert.fail(`expected ${show(input)} to decode, got: ${result.failure.message}`)
  }
  return result.success
}

/**
 * Decodes `input`, expects a failure and returns its message.
 */
export const decodeFailure = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  input: unknown,
  options?: SchemaAST.ParseOptions
): string => {
  const result = Schema.decodeUnknownResult(schema)(input, options)
  if (Result.isSuccess(result)) {
    return assert.fail(`expected ${show(input)} to be rejected, decoded to ${show(result.success)}`)
  }
  return result.failure.message
}

/**
 * Expects `input` to be rejected with a message containing every one of `fragments`.
 */
export const assertRejects = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  input: unknown,
  ...fragments: ReadonlyArray<string>
): void => {
  const message = decodeFailure(schema, input)
  for (const fragment of fragments) assert.include(message, fragment, `message for ${show(input)}`)
}

/** Whether `input` decodes. */
export const decodes = <S extends Schema.ConstraintDecoder<unknown>>(schema: S, input: unknown): boolean =>
  Result.isSuccess(Schema.decodeUnknownResult(schema)(input))

/** A readable rendering of a test input for failure messages. */
export const show = (u: unknown): string => {
  if (u instanceof Uint8Array) return `Uint8Array(${u.byteLength})`
  try {
    return JSON.stringify(u) ?? String(u)
  } catch {
    return String(u)
  }
}

/** The RFC 7230 `tchar` set, written out independently of the implementation. */
export const TCHAR = "!#$%&'*+\\-.^_`|~0-9A-Za-z"

/** Every `tchar` as a string. */
export const TCHARS: ReadonlyArray<string> = Array.from({ length: 128 }, (_, c) => String.fromCharCode(c)).filter(
  (c) => new RegExp(`^[${TCHAR}]$`).test(c)
)

/** Tokens of 1 to 10 characters over the whole `tchar` alphabet. */
export const tokenArbitrary: Arbitrary.Arbitrary<string> = Arbitrary.schema(
  Schema.String.check(Schema.isPattern(new RegExp(`^[${TCHAR}]{1,10}$`)))
)

/** Picks one of `values`. */
export const oneOf = <const A extends string>(values: readonly [A, ...Array<A>]): Arbitrary.Arbitrary<A> =>
  Arbitrary.schema(Schema.Literals(values))

/** Integers from `minimum` to `maximum`. */
export const intArbitrary = (minimum: number, maximum: number): Arbitrary.Arbitrary<number> =>
  Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

/** Strings built from `alphabet`, up to `maxLength` pieces long. */
export const stringOver = (
  alphabet: readonly [string, ...Array<string>],
  maxLength: number
): Arbitrary.Arbitrary<string> =>
  Arbitrary.map(Arbitrary.array(oneOf(alphabet), { maxLength }), (pieces) => pieces.join(""))

/** Strings of arbitrary UTF-16 code units, lone surrogates, controls and non-Latin-1 included. */
export const codeUnitString: Arbitrary.Arbitrary<string> = Arbitrary.map(
  Arbitrary.array(intArbitrary(0, 0xffff), { maxLength: 24 }),
  (units) => String.fromCharCode(...units)
)

/**
 * A cursor over generated numbers, used to make rendering choices (whitespace, quoting) that are
 * part of the generated input and therefore shrink and replay with it.
 */
export const choices = (noise: ReadonlyArray<number>) => {
  let k = 0
  return (n: number): number => noise.length === 0 ? 0 : noise[k++ % noise.length]! % n
}

/** Generated choice streams for {@link choices}. */
export const noiseArbitrary: Arbitrary.Arbitrary<Array<number>> = Arbitrary.array(intArbitrary(0, 1000), {
  minLength: 1,
  maxLength: 16
})

/** One edit of a string: insert, replace or delete at a position (taken modulo the length). */
export interface Edit {
  readonly at: number
  readonly op: number
  readonly ch: string
}

/** Up to `maxEdits` edits inserting or replacing characters from `alphabet`. */
export const editsArbitrary = (
  alphabet: readonly [string, ...Array<string>],
  maxEdits = 3
): Arbitrary.Arbitrary<Array<Edit>> =>
  Arbitrary.array(Arbitrary.all({ at: intArbitrary(0, 1000), op: intArbitrary(0, 2), ch: oneOf(alphabet) }), {
    maxLength: maxEdits
  })

/** Applies `edits` to `s`, so that near-valid inputs exercise the boundaries of a grammar. */
export const applyEdits = (s: string, edits: ReadonlyArray<Edit>): string =>
  edits.reduce((acc, { at, ch, op }) => {
    const i = at % (acc.length + 1)
    if (op === 0) return acc.slice(0, i) + ch + acc.slice(i)
    if (op === 1) return acc.slice(0, i) + ch + acc.slice(i + 1)
    return acc.slice(0, i) + acc.slice(i + 1)
  }, s)
