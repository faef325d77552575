/**
 * HTTP header fields as websocket.h passes them (`WEB_SOCKET_HTTP_HEADER`: a name/value pair of
 * byte strings), and lookups over header lists with RFC 7230 semantics: names match
 * case-insensitively and repeated fields of a list header combine with commas.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { isToken } from "./Token.ts"
import { quote } from "./internal/quote.ts"

const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/
const BEYOND_LATIN1 = /[^\x00-\xff]/

/**
 * A header field name: an RFC 7230 token (so it never contains `:`, as `WEB_SOCKET_HTTP_HEADER`
 * requires).
 *
 * @category schemas
 * @since 0.1.0
 */
export const HeaderName = Schema.String.check(
  Schema.makeFilter((s: string) => isToken(s) || `header name ${quote(s)} is not a token`)
)

/**
 * What is wrong with a header field value, if anything: where the first character it may not
 * hold is, and which (the value itself is not repeated: it may be a credential).
 */
const valueProblem = (s: string): string | undefined => {
  const control = CONTROL.exec(s)
  const wrong = control ?? BEYOND_LATIN1.exec(s)
  if (wrong === null) return undefined
  const code = `U+${wrong[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`
  return `contains ${control === null ? "a character above U+00FF" : "a control character"} (${code} at index ${wrong.index} of ${s.length})`
}

/**
 * A header field value: visible ASCII, spaces, tabs and obsolete Latin-1 text; never CR, LF or NUL.
 * An error says where the character it may not hold is, without repeating the value (it may be a
 * credential, and errors reach logs and spans).
 *
 * @category schemas
 * @since 0.1.0
 */
export const HeaderValue = Schema.String.check(
  Schema.makeFilter((s: string) => {
    const problem = valueProblem(s)
    return problem === undefined ? true : `header value ${problem}`
  })
)

/**
 * One header field. An error about its value names the header, not the value.
 *
 * @see websocket.h `WEB_SOCKET_HTTP_HEADER` (`pcName`/`ulNameLength`, `pcValue`/`ulValueLength`)
 * @category schemas
 * @since 0.1.0
 */
export const HttpHeader = Schema.Struct({ name: HeaderName, value: Schema.String }).check(
  Schema.makeFilter((header: { readonly name: string; readonly value: string }) => {
    const problem = valueProblem(header.value)
    return problem === undefined ? true : `the value of header ${header.name} ${problem}`
  })
)

/**
 * One header field.
 *
 * @see websocket.h `WEB_SOCKET_HTTP_HEADER`
 * @category models
 * @since 0.1.0
 */
export interface HttpHeader {
  readonly name: string
  readonly value: string
}

/**
 * A list of header fields in wire order; names may repeat.
 *
 * @see websocket.h `PWEB_SOCKET_HTTP_HEADER` with its count
 * @category schemas
 * @since 0.1.0
 */
export const HttpHeaders = Schema.Array(HttpHeader)

/**
 * Every value of the fields named `name` (case-insensitive), in order.
 *
 * @category combinators
 * @since 0.1.0
 */
export const getAll = (headers: ReadonlyArray<HttpHeader>, name: string): ReadonlyArray<string> => {
  const wanted = name.toLowerCase()
  const out: Array<string> = []
  for (const header of headers) {
    if (header.name.toLowerCase() === wanted) out.push(header.value)
  }
  return out
}

/**
 * The combined value of a list header (RFC 9110 section 5.3: repeated fields joined with `, `),
 * or `undefined` when no field has that name. `Cookie` lines are joined with `; `, the separator
 * of its pairs (RFC 6265 section 4.2.1, RFC 9113 section 8.2.3), as Node's `req.headers.cookie`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const getCombined = (headers: ReadonlyArray<HttpHeader>, name: string): string | undefined => {
  const values = getAll(headers, name)
  return values.length === 0 ? undefined : values.join(name.toLowerCase() === "cookie" ? "; " : ", ")
}

/**
 * Replaces the fields named like those in `overrides` (case-insensitive) and appends the rest:
 * the merge websocket.h describes for `WebSocketBeginClientHandshake`, where an additional header
 * replaces an initial header of the same name.
 *
 * @category combinators
 * @since 0.1.0
 */
export const merge = (
  headers: ReadonlyArray<HttpHeader>,
  overrides: ReadonlyArray<HttpHeader>
): ReadonlyArray<HttpHeader> => {
  const replaced = new Set(overrides.map((h) => h.name.toLowerCase()))
  return [...headers.filter((h) => !replaced.has(h.name.toLowerCase())), ...overrides]
}

/**
 * Builds a header list from Node-style raw headers (`[name, value, name, value, ...]`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromRawHeaders = (raw: ReadonlyArray<string>): ReadonlyArray<HttpHeader> => {
  const out: Array<HttpHeader> = []
  for (let i = 0; i + 1 < raw.length; i += 2) out.push({ name: raw[i]!, value: raw[i + 1]! })
  return out
}
