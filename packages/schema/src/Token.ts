/**
 * RFC 7230 tokens and comma-separated token lists (`1#token`), the building blocks of the
 * WebSocket handshake headers (RFC 6455 section 4.3).
 *
 * @since 0.1.0
 */
import { Schema, SchemaTransformation } from "effect"
import { quote } from "./internal/quote.ts"

/**
 * Whether `code` is an RFC 7230 `tchar`: a visible ASCII character other than a separator.
 *
 * @category guards
 * @since 0.1.0
 */
export const isTokenChar = (code: number): boolean =>
  code > 0x20 && code < 0x7f && SEPARATORS.indexOf(String.fromCharCode(code)) === -1

const SEPARATORS = "()<>@,;:\\\"/[]?={}"

/**
 * Whether `s` is a non-empty RFC 7230 `token` (RFC 6455 section 4.3 uses it for subprotocol and
 * extension names).
 *
 * @category guards
 * @since 0.1.0
 */
export const isToken = (s: string): boolean => {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    if (!isTokenChar(s.charCodeAt(i))) return false
  }
  return true
}

/**
 * Splits an RFC 7230 list header value (`#element`) into its trimmed elements, dropping the empty
 * elements the list rule allows (`"a, , b"` is `["a", "b"]`). Quoted strings are not special here:
 * use it for token lists only.
 *
 * @category combinators
 * @since 0.1.0
 */
export const splitList = (value: string): ReadonlyArray<string> => {
  const out: Array<string> = []
  // (one pass over the value: a regular expression that trims both ends takes time quadratic in
  // a run of blanks inside an element, and the value comes from the peer)
  let start = 0
  while (start <= value.length) {
    let end = value.indexOf(",", start)
    if (end === -1) end = value.length
    const element = trimOws(value.slice(start, end))
    if (element.length > 0) out.push(element)
    start = end + 1
  }
  return out
}

/**
 * `value` without the optional whitespace (`OWS`: spaces and horizontal tabs) around it, which is
 * not part of a header field value (RFC 9110 section 5.5). Unlike `String.prototype.trim` it
 * leaves every other character alone (U+00A0 is obsolete text a value may hold), and it takes one
 * pass however long a run of blanks is (the value comes from the peer).
 *
 * @category combinators
 * @since 0.1.0
 */
export const trimOws = (value: string): string => {
  let from = 0
  let to = value.length
  while (from < to && isBlank(value.charCodeAt(from))) from++
  while (to > from && isBlank(value.charCodeAt(to - 1))) to--
  return from === 0 && to === value.length ? value : value.slice(from, to)
}

/** Optional whitespace (`OWS`) of RFC 7230: a space or a horizontal tab. */
const isBlank = (code: number): boolean => code === 0x20 || code === 0x09

/**
 * The index of the first element of `tokens` that repeats an earlier one (compared exactly, as
 * subprotocol names are), or -1 when each is there once; in time linear in their number.
 *
 * @category utils
 * @since 0.1.0
 */
export const firstRepeated = (tokens: ReadonlyArray<string>): number => {
  const seen = new Set<string>()
  for (let i = 0; i < tokens.length; i++) {
    if (seen.has(tokens[i]!)) return i
    seen.add(tokens[i]!)
  }
  return -1
}

/**
 * Describes what is wrong with a `1#token` list, or returns `undefined` when it is valid.
 *
 * @category guards
 * @since 0.1.0
 */
export const tokenListProblem = (value: string): string | undefined => {
  const elements = splitList(value)
  if (elements.length === 0) return "must list at least one token"
  for (const element of elements) {
    if (!isToken(element)) return `has ${quote(element)}, which is not a token`
  }
  return undefined
}

/**
 * A string that is a single RFC 7230 token, unbranded.
 *
 * @category schemas
 * @since 0.1.0
 */
export const TokenString = Schema.String.check(
  Schema.makeFilter((s: string) => isToken(s) || `must be a token, got ${quote(s)}`)
)

/**
 * A single RFC 7230 token, such as a subprotocol name (`chat`) or an extension name.
 *
 * @category schemas
 * @since 0.1.0
 */
export const Token = TokenString.pipe(Schema.brand("Token"))

/**
 * A {@link Token}.
 *
 * @category models
 * @since 0.1.0
 */
export type Token = typeof Token.Type

/**
 * A comma-separated list of at least one token (`1#token`), decoded to the tokens and encoded
 * back as `a, b, c`.
 *
 * @category schemas
 * @since 0.1.0
 */
export const TokenList = Schema.String.check(Schema.makeFilter((s: string) => tokenListProblem(s) ?? true)).pipe(
  Schema.decodeTo(
    Schema.NonEmptyArray(Token),
    SchemaTransformation.transform({
      decode: (s) => splitList(s) as readonly [string, ...Array<string>],
      encode: (tokens) => tokens.join(", ")
    })
  )
)
