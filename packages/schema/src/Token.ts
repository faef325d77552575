/**
 * RFC 7230 tokens and comma-separated token lists (`1#token`), the building blocks of the
 * WebSocket handshake headers (RFC 6455 section 4.3).
 *
 * @since 0.1.0
 */
import { Schema, SchemaTransformation } from "effect"

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
  for (const part of value.split(",")) {
    const element = part.replace(/^[ \t]+|[ \t]+$/g, "")
    if (element.length > 0) out.push(element)
  }
  return out
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
    if (!isToken(element)) return `has ${JSON.stringify(element)}, which is not a token`
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
  Schema.makeFilter((s: string) => isToken(s) || `must be a token, got ${JSON.stringify(s)}`)
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
