/**
 * The WebSocket opening-handshake headers of RFC 6455 section 4 and their grammars (section 4.3,
 * 9.1, 11.3), as schemas that decode a header's (combined) value into a checked value. A failure
 * message says what is wrong with the value; the caller adds the header name.
 *
 * @since 0.1.0
 */
import { Schema, SchemaTransformation } from "effect"
import { firstRepeated, isToken, isTokenChar, splitList, Token, TokenList, TokenString } from "./Token.ts"
import { quote } from "./internal/quote.ts"

const problemFilter = (problem: (s: string) => string | undefined) =>
  Schema.makeFilter((s: string) => problem(s) ?? true)

/**
 * Whether `s` is the token `wanted` (lower case) in any ASCII case. (A token is ASCII, so
 * `toLowerCase` folds nothing else into it: `"websoc\u212Aet"`, with the Kelvin sign, is no match.)
 */
const isTokenIgnoringCase = (s: string, wanted: string): boolean => isToken(s) && s.toLowerCase() === wanted

const containsToken = (value: string, wanted: string): boolean =>
  splitList(value).some((element) => isTokenIgnoringCase(element, wanted))

/**
 * Whether `s` is an RFC 9110 `protocol` (section 7.8): `protocol-name [ "/" protocol-version ]`,
 * both tokens, such as `websocket` or `HTTP/2.0`.
 */
const isProtocol = (s: string): boolean => {
  const slash = s.indexOf("/")
  return slash === -1 ? isToken(s) : isToken(s.slice(0, slash)) && isToken(s.slice(slash + 1))
}

/** A decoded list element: what encoding writes must decode to the same list (no empty or padded elements). */
const listOf = (problem: (element: string) => string | undefined) =>
  Schema.Array(Schema.String.check(problemFilter(problem)))

/**
 * `Upgrade`: a list of protocols (RFC 9110 section 7.8: `#protocol`, each `name` or
 * `name/version`) that must include `websocket` (ASCII case-insensitive, RFC 6455 section 4.2.1
 * item 3). Decodes to the listed protocols.
 *
 * @category schemas
 * @since 0.1.0
 */
export const Upgrade = Schema.String.check(
  problemFilter((s) => {
    if (!containsToken(s, "websocket")) return `must include "websocket", got ${quote(s)}`
    const bad = splitList(s).find((protocol) => !isProtocol(protocol))
    return bad === undefined ? undefined : `has ${quote(bad)}, which is not a protocol (a token, or token/token)`
  })
).pipe(
  Schema.decodeTo(
    listOf((protocol) => isProtocol(protocol) ? undefined : `has ${quote(protocol)}, which is not a protocol (a token, or token/token)`),
    SchemaTransformation.transform({ decode: splitList, encode: (protocols) => protocols.join(", ") })
  )
)

/**
 * `Upgrade` in a `101 Switching Protocols` response: `websocket` and nothing else (ASCII
 * case-insensitive). RFC 6455 section 4.1: if the field "contains a value that is not an ASCII
 * case-insensitive match for the value "websocket", the client MUST _Fail the WebSocket
 * Connection_", so `websocket, h2c` (or a second `Upgrade` field naming another protocol) is
 * refused, where a request's {@link Upgrade} may list other protocols. Decodes to the listed
 * protocols.
 *
 * @category schemas
 * @since 0.1.0
 */
export const UpgradeResponse = Schema.String.check(
  problemFilter((s) => {
    const protocols = splitList(s)
    return protocols.length > 0 && protocols.every((protocol) => isTokenIgnoringCase(protocol, "websocket"))
      ? undefined
      : `must be "websocket" alone, got ${quote(s)}`
  })
).pipe(
  Schema.decodeTo(
    listOf((protocol) => isTokenIgnoringCase(protocol, "websocket") ? undefined : `must be "websocket" alone, got ${quote(protocol)}`),
    SchemaTransformation.transform({ decode: splitList, encode: (protocols) => protocols.join(", ") })
  )
)

/**
 * `Connection`: a token list that must include `Upgrade` (case-insensitive, RFC 6455 section 4.2.1
 * item 4), so `keep-alive, Upgrade` is accepted.
 *
 * @category schemas
 * @since 0.1.0
 */
export const Connection = TokenList.check(
  Schema.makeFilter((tokens: ReadonlyArray<string>) =>
    tokens.some((t) => isTokenIgnoringCase(t, "upgrade")) ||
    `must include the "Upgrade" token, got ${quote(tokens.join(", "))}`
  )
)

/**
 * Whether `s` is padded base64: groups of four alphabet characters, the last one ending in `=` or
 * `==` (a loop, not a regular expression with a repeated group: that one overflows the stack on a
 * value of a few million characters).
 */
const isBase64 = (s: string): boolean => {
  if (s.length % 4 !== 0) return false
  const padding = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0
  for (let i = 0; i < s.length - padding; i++) {
    const c = s.charCodeAt(i)
    const ok = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2f
    if (!ok) return false
  }
  return true
}

const base64Length = (s: string): number => (s.length / 4) * 3 - (s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0)

const base64Problem = (bytes: number) => (s: string): string | undefined => {
  if (!isBase64(s)) return `must be base64, got ${quote(s)}`
  const length = base64Length(s)
  return length === bytes ? undefined : `must be the base64 encoding of ${bytes} bytes, got ${length} bytes`
}

/**
 * `Sec-WebSocket-Key`: the base64 encoding of 16 bytes (RFC 6455 section 4.1 item 7: "MUST be a
 * nonce consisting of a randomly selected 16-byte value that has been base64-encoded").
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecWebSocketKey = Schema.String.check(problemFilter(base64Problem(16))).pipe(
  Schema.brand("SecWebSocketKey")
)

/**
 * A {@link SecWebSocketKey} value.
 *
 * @category models
 * @since 0.1.0
 */
export type SecWebSocketKey = typeof SecWebSocketKey.Type

/**
 * `Sec-WebSocket-Accept`: the base64 encoding of a 20-byte SHA-1 digest (RFC 6455 section 4.2.2).
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecWebSocketAccept = Schema.String.check(problemFilter(base64Problem(20))).pipe(
  Schema.brand("SecWebSocketAccept")
)

/**
 * A {@link SecWebSocketAccept} value.
 *
 * @category models
 * @since 0.1.0
 */
export type SecWebSocketAccept = typeof SecWebSocketAccept.Type

/**
 * The protocol version this implementation speaks (RFC 6455 section 4.1 item 9: "MUST be 13").
 *
 * @see websocket.h `WEB_SOCKET_SUPPORTED_VERSIONS_PROPERTY_TYPE`
 * @category constants
 * @since 0.1.0
 */
export const SUPPORTED_VERSION = 13

/**
 * `Sec-WebSocket-Version` in a request: one version number 0-255 without leading zeros
 * (RFC 6455 section 11.3.5), decoded to a number. Whether the number is supported is a separate
 * question (see {@link SUPPORTED_VERSION}), so a server can answer 426 instead of 400.
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecWebSocketVersion = Schema.String.check(
  problemFilter((s) =>
    /^(?:0|[1-9][0-9]{0,2})$/.test(s) && Number(s) <= 255
      ? undefined
      : `must be one version number from 0 to 255, got ${quote(s)}`
  )
).pipe(
  Schema.decodeTo(Schema.Int, SchemaTransformation.transform({ decode: Number, encode: String }))
)

/**
 * `Sec-WebSocket-Protocol` in a request: the subprotocols the client offers, a `1#token` list in
 * order of preference, each named once (RFC 6455 section 4.1 item 10: "MUST all be unique
 * strings"; `ws` answers an offer that repeats one with 400 too).
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecWebSocketProtocol = TokenList.check(
  Schema.makeFilter((tokens: ReadonlyArray<string>) => {
    const repeated = firstRepeated(tokens)
    return repeated === -1 ? true : `must name each subprotocol once, ${quote(tokens[repeated]!)} is offered twice`
  })
)

/**
 * `Sec-WebSocket-Protocol` in a response: exactly one token, the subprotocol the server selected
 * (RFC 6455 section 4.2.2 item 5.4).
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecWebSocketProtocolResponse = Token

/**
 * One extension parameter: `name` or `name=value` (RFC 6455 section 9.1).
 *
 * @category schemas
 * @since 0.1.0
 */
export const ExtensionParam = Schema.Struct({ name: TokenString, value: Schema.optionalKey(TokenString) })

/**
 * One extension parameter.
 *
 * @category models
 * @since 0.1.0
 */
export type ExtensionParam = typeof ExtensionParam.Type

/**
 * One extension with its parameters, such as `permessage-deflate; client_max_window_bits`.
 *
 * @category schemas
 * @since 0.1.0
 */
export const Extension = Schema.Struct({ name: TokenString, params: Schema.Array(ExtensionParam) })

/**
 * One extension with its parameters.
 *
 * @category models
 * @since 0.1.0
 */
export type Extension = typeof Extension.Type

/** The result of scanning an extension list: the extensions, or what is wrong. */
type ExtensionsScan =
  | { readonly extensions: Array<{ name: string; params: Array<{ name: string; value?: string }> }> }
  | { readonly problem: string }

const isWhitespace = (c: string | undefined) => c === " " || c === "\t"

/**
 * Scans `1#extension` with `extension = token *( OWS ";" OWS param )` and
 * `param = token [ OWS "=" OWS ( token / quoted-string ) ]`, where a quoted value must be a token
 * once unescaped (RFC 6455 section 9.1).
 */
const scanExtensions = (s: string): ExtensionsScan => {
  const extensions: Array<{ name: string; params: Array<{ name: string; value?: string }> }> = []
  let i = 0
  const skipWhitespace = () => {
    while (isWhitespace(s[i])) i++
  }
  const readToken = (): string => {
    const start = i
    while (i < s.length && isTokenChar(s.charCodeAt(i))) i++
    return s.slice(start, i)
  }
  const at = () => (i < s.length ? `${quote(s[i]!)} at offset ${i}` : "the end")
  for (;;) {
    skipWhitespace()
    if (s[i] === ",") { // empty list elements are allowed by the #rule
      i++
      continue
    }
    if (i >= s.length) break
    const name = readToken()
    if (name.length === 0) return { problem: `expected an extension name, found ${at()}` }
    const params: Array<{ name: string; value?: string }> = []
    skipWhitespace()
    while (s[i] === ";") {
      i++
      skipWhitespace()
      const paramName = readToken()
      if (paramName.length === 0) return { problem: `expected a parameter name of "${name}", found ${at()}` }
      skipWhitespace()
      if (s[i] !== "=") {
        params.push({ name: paramName })
        continue
      }
      i++
      skipWhitespace()
      let value: string
      if (s[i] === "\"") {
        i++
        value = ""
        for (;;) {
          if (i >= s.length) return { problem: `unterminated quoted value of parameter "${paramName}"` }
          const c = s[i]!
          i++
          if (c === "\"") break
          if (c === "\\") {
            if (i >= s.length) return { problem: `unterminated quoted value of parameter "${paramName}"` }
            value += s[i]!
            i++
          } else {
            value += c
          }
        }
        if (!isToken(value)) {
          return { problem: `quoted value ${quote(value)} of parameter "${paramName}" is not a token` }
        }
      } else {
        value = readToken()
        if (value.length === 0) return { problem: `expected a value for parameter "${paramName}", found ${at()}` }
      }
      params.push({ name: paramName, value })
      skipWhitespace()
    }
    extensions.push({ name, params })
    if (i < s.length && s[i] !== ",") return { problem: `expected "," or ";", found ${at()}` }
  }
  if (extensions.length === 0) return { problem: "must list at least one extension" }
  return { extensions }
}

/**
 * Formats one extension as it appears in a header: `name; param; param=value`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const formatExtension = (extension: {
  readonly name: string
  readonly params: ReadonlyArray<{ readonly name: string; readonly value?: string }>
}): string =>
  [extension.name, ...extension.params.map((p) => p.value === undefined ? p.name : `${p.name}=${p.value}`)].join("; ")

/**
 * `Sec-WebSocket-Extensions`: a list of extensions with parameters, the full RFC 6455 section 9.1
 * grammar (token or quoted-string parameter values), decoded to {@link Extension}s and encoded in
 * the canonical `a; p=1, b` form.
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecWebSocketExtensions = Schema.String.check(
  problemFilter((s) => {
    const scan = scanExtensions(s)
    return "problem" in scan ? scan.problem : undefined
  })
).pipe(
  Schema.decodeTo(
    Schema.NonEmptyArray(Extension),
    SchemaTransformation.transform({
      decode: (s) => {
        const scan = scanExtensions(s)
        return ("extensions" in scan ? scan.extensions : []) as unknown as readonly [
          { name: string; params: ReadonlyArray<{ name: string; value?: string }> },
          ...Array<{ name: string; params: ReadonlyArray<{ name: string; value?: string }> }>
        ]
      },
      encode: (extensions) => extensions.map(formatExtension).join(", ")
    })
  )
)
