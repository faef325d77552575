/**
 * Opening-handshake checks shared by the client and server functions: header list validation,
 * single and list header lookups, schema decoding mapped to the websocket.h errors, and the
 * `Sec-WebSocket-Accept` computation (RFC 6455 section 4.2.2).
 *
 * @since 0.1.0
 */
import { HandshakeHeaders, HttpHeader, Token } from "@effect-websocket/schema"
import { Cause, Effect, Result, Schema, SchemaIssue } from "effect"
import * as Base64 from "effect/encoding/Base64"
import type { WebCryptoApi } from "./handle.ts"
import { nativeSha1Base64 } from "./runtime.ts"
import { InvalidParameter, InvalidProtocolFormat, UnsupportedProtocolVersion } from "../WebSocketError.ts"

/** The GUID of RFC 6455 section 1.3, appended to the key before hashing. */
export const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const encoder = new TextEncoder()

/**
 * `base64(SHA-1(key + GUID))` (RFC 6455 section 4.2.2 item 5.4): with the runtime's own SHA-1 when
 * it has one and `crypto` is the global Web Crypto (a replaced one is always used), else with
 * `crypto.subtle`.
 */
export const computeAccept = (crypto: WebCryptoApi, key: string): Effect.Effect<string> =>
  nativeSha1Base64 !== undefined && crypto === globalThis.crypto
    ? Effect.sync(() => nativeSha1Base64!(key + ACCEPT_GUID))
    : Effect.map(
      Effect.promise(() => crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID))),
      (digest) => Base64.encode(new Uint8Array(digest))
    )

/** A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes (RFC 6455 section 4.1 item 7). */
export const generateKey = (crypto: WebCryptoApi): string => Base64.encode(crypto.getRandomValues(new Uint8Array(16)))

const HeaderList = Schema.Array(HttpHeader.HttpHeader)

/**
 * A header list received from the peer (`read` gives it): malformed entries are the peer's fault,
 * and so is a list that throws as it is read (a getter, a proxy): malformed too, never a defect.
 * The error is one line that says which entry is at fault, and its `header` names that entry's
 * header when the name is well-formed (a value with a control character, say); the value is never
 * repeated, as it may be a credential.
 */
export const peerHeaders = (
  read: () => unknown
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidProtocolFormat> => {
  try {
    const list = read()
    const result = Schema.decodeUnknownResult(HeaderList)(list)
    if (Result.isSuccess(result)) return Effect.succeed(result.success)
    const [issue] = issueFormatter(result.failure.issue).issues
    const path = (issue?.path ?? []).map((segment) => typeof segment === "object" ? segment.key : segment)
    const header = path.length === 0 ? undefined : wellFormedName((list as ReadonlyArray<unknown>)[path[0] as number])
    return Effect.fail(
      new InvalidProtocolFormat({
        ...(header === undefined ? {} : { header }),
        message: `malformed header list${path.length === 0 ? "" : ` at ${formatPath(path)}`}: ${issue?.message ?? result.failure.message}`,
        cause: result.failure
      })
    )
  } catch (cause) {
    return Effect.fail(new InvalidProtocolFormat({ message: `the header list could not be read: ${thrownMessage(cause)}`, cause }))
  }
}

/** Schema failures as a message and a path each (the path apart: the message is one line). */
const issueFormatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** Where a schema failure is inside a value, as the schema's own messages say it: `[3]["name"]`. */
const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.map((key) => `[${typeof key === "number" ? key : JSON.stringify(String(key))}]`).join("")

/** The name of a header list entry when it is a header name (a token), else `undefined`. */
const wellFormedName = (entry: unknown): string | undefined => {
  const name = typeof entry === "object" && entry !== null ? (entry as { readonly name?: unknown }).name : undefined
  return typeof name === "string" && Token.isToken(name) ? name : undefined
}

/** A header list given by the application: malformed entries are an invalid parameter. */
export const appHeaders = (
  parameter: string,
  headers: unknown
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidParameter> => {
  if (headers === undefined) return Effect.succeed([])
  let result: Result.Result<ReadonlyArray<HttpHeader.HttpHeader>, Schema.SchemaError>
  try {
    result = Schema.decodeUnknownResult(HeaderList)(headers)
  } catch (cause) {
    return Effect.fail(unreadable(parameter, cause))
  }
  return Result.isSuccess(result)
    ? Effect.succeed(result.success)
    : Effect.fail(new InvalidParameter({ parameter, message: parameterMessage(parameter, result.failure.message), cause: result.failure }))
}

/**
 * A list parameter from an untyped caller, copied: absent is empty, anything but an array (or one
 * that throws as it is read, a proxy) is an InvalidParameter.
 */
export const listParameter = <A>(parameter: string, list: ReadonlyArray<A> | undefined): Effect.Effect<ReadonlyArray<A>, InvalidParameter> => {
  if (list === undefined) return Effect.succeed([])
  if (!Array.isArray(list)) {
    return Effect.fail(new InvalidParameter({ parameter, message: `${parameter} is a list (an array), got ${typeof list}` }))
  }
  try {
    return Effect.succeed(Array.from(list))
  } catch (cause) {
    return Effect.fail(unreadable(parameter, cause))
  }
}

/**
 * The options object of a call once each of its own fields has been read: what a getter or a
 * proxy throws as it is read is an InvalidParameter naming `parameter`, not a defect where the
 * field is used. The object itself is given back (fields it inherits are read where they are used).
 * With `known` (the option names), anything but an object (or nothing) and a field of another name
 * (a misspelt option, silently ignored otherwise) are InvalidParameters too.
 */
export const readOptions = <T>(parameter: string, options: T, known?: ReadonlyArray<string>): Effect.Effect<T, InvalidParameter> => {
  if (typeof options !== "object" || options === null) {
    return known === undefined || options === undefined
      ? Effect.succeed(options)
      : Effect.fail(new InvalidParameter({ parameter, message: `${parameter} is an object, got ${describeValue(options)}` }))
  }
  try {
    for (const key of Reflect.ownKeys(options)) {
      void (options as Record<PropertyKey, unknown>)[key]
      if (known !== undefined && !known.includes(key as string)) {
        return Effect.fail(
          new InvalidParameter({
            parameter,
            message: `${parameter} has no option ${typeof key === "string" ? JSON.stringify(key) : String(key)}: the options are ${known.join(", ")}`
          })
        )
      }
    }
    return Effect.succeed(options)
  } catch (cause) {
    return Effect.fail(unreadable(parameter, cause))
  }
}

/**
 * The subprotocols a client offers, named `parameter` in errors (`subprotocols`, or a client's
 * `protocols` option): tokens, each offered once (RFC 6455 section 4.1: they "MUST all be unique
 * strings").
 */
export const decodeSubprotocolOffer = (
  parameter: string,
  list: ReadonlyArray<string> | undefined
): Effect.Effect<ReadonlyArray<string>, InvalidParameter> =>
  Effect.gen(function*() {
    const subprotocols: Array<string> = []
    for (const [i, name] of (yield* listParameter(parameter, list)).entries()) {
      subprotocols.push(yield* decodeParameter(HandshakeHeaders.SecWebSocketProtocolResponse, `${parameter}[${i}]`, name))
    }
    const repeated = Token.firstRepeated(subprotocols)
    if (repeated !== -1) {
      const name = JSON.stringify(subprotocols[repeated])
      return yield* new InvalidParameter({ parameter: `${parameter}[${repeated}]`, message: `subprotocol ${name} is offered twice` })
    }
    return subprotocols
  })

/**
 * `headers` when none is named in `reserved` (lower-case names, each with why it may not be set);
 * otherwise an `InvalidParameter` naming `parameter`: "`parameter` may not set `Name`: why".
 */
export const refuseReservedHeaders = (
  parameter: string,
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  reserved: ReadonlyMap<string, string>
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidParameter> => {
  const found = headers.find((h) => reserved.has(h.name.toLowerCase()))
  return found === undefined
    ? Effect.succeed(headers)
    : Effect.fail(new InvalidParameter({ parameter, message: `${parameter} may not set ${found.name}: ${reserved.get(found.name.toLowerCase())}` }))
}

/**
 * The request headers that carry a client's offers: the handshake sets them from the offers it
 * makes, and a server's pick of an offer made behind its back would be refused as never offered.
 */
const OFFER_HEADERS = new Map([
  ["sec-websocket-protocol", "the handshake sets it from the subprotocols offered"],
  ["sec-websocket-extensions", "the handshake sets it from the extensions offered"]
])

/** `headers` (a client's extra request headers, named `parameter`) when none carries an offer. */
export const refuseOfferHeaders = (
  parameter: string,
  headers: ReadonlyArray<HttpHeader.HttpHeader>
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidParameter> => refuseReservedHeaders(parameter, headers, OFFER_HEADERS)

/** The value of a header that may appear at most once, or `undefined` when absent. */
export const singleHeader = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  name: string
): Effect.Effect<string | undefined, InvalidProtocolFormat> => {
  const values = HttpHeader.getAll(headers, name)
  return values.length <= 1
    ? Effect.succeed(values[0])
    : Effect.fail(
      new InvalidProtocolFormat({
        header: name,
        message: `${name} appears ${values.length} times; it must appear at most once`
      })
    )
}

/** The value of a header that must appear exactly once. */
export const requiredHeader = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  name: string
): Effect.Effect<string, InvalidProtocolFormat> =>
  Effect.flatMap(singleHeader(headers, name), (value) =>
    value === undefined
      ? Effect.fail(new InvalidProtocolFormat({ header: name, message: `${name} header is missing` }))
      : Effect.succeed(value))

/** The combined value of a list header that must be present. */
export const requiredListHeader = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  name: string
): Effect.Effect<string, InvalidProtocolFormat> => {
  const value = HttpHeader.getCombined(headers, name)
  return value === undefined
    ? Effect.fail(new InvalidProtocolFormat({ header: name, message: `${name} header is missing` }))
    : Effect.succeed(value)
}

/**
 * Decodes a header value, failing with `InvalidProtocolFormat` naming the header. The spaces and
 * tabs around the value are not part of it (RFC 9110 section 5.5), so they are dropped here, where
 * every header value from the peer is judged: `Sec-WebSocket-Version: " 13"` is version 13, as a
 * list header's elements are trimmed.
 */
export const decodeHeader = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  name: string,
  value: string
): Effect.Effect<S["Type"], InvalidProtocolFormat> => {
  const result = Schema.decodeUnknownResult(schema)(Token.trimOws(value))
  return Result.isSuccess(result)
    ? Effect.succeed(result.success)
    : Effect.fail(
      new InvalidProtocolFormat({ header: name, message: `${name} ${result.failure.message}`, cause: result.failure })
    )
}

/** Decodes a value given by the application, failing with `InvalidParameter` naming it. */
export const decodeParameter = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  parameter: string,
  value: unknown
): Effect.Effect<S["Type"], InvalidParameter> => {
  let result: Result.Result<S["Type"], Schema.SchemaError>
  try {
    result = Schema.decodeUnknownResult(schema)(value, { onExcessProperty: "error" })
  } catch (cause) {
    return Effect.fail(unreadable(parameter, cause))
  }
  return Result.isSuccess(result)
    ? Effect.succeed(result.success)
    : Effect.fail(new InvalidParameter({ parameter, message: parameterMessage(parameter, result.failure.message), cause: result.failure }))
}

/** What a value is, for an error message: `null`, its class's name, or its `typeof`. */
export const describeValue = (value: unknown): string =>
  value === null ? "null" : typeof value === "object" ? (value.constructor?.name ?? "an object") : typeof value

/**
 * A parameter whose reading threw (a getter, a proxy): an invalid parameter too, never a defect.
 * The message is the thrown error's (the schema wraps it in errors of its own).
 */
const unreadable = (parameter: string, cause: unknown): InvalidParameter =>
  new InvalidParameter({ parameter, message: `${parameter} could not be read: ${thrownMessage(cause)}`, cause })

/** The message of what reading a value threw. */
const thrownMessage = (cause: unknown): string => {
  // (the schema throws an error of its own, its cause the Cause of what the getter threw)
  const inner = cause instanceof Error && Cause.isCause(cause.cause) ? Cause.squash(cause.cause) : cause
  const thrown = inner instanceof Error ? inner : cause
  return thrown instanceof Error ? thrown.message : "reading it threw"
}

/**
 * A schema's failure message as one line that names the parameter once: `parameter: ` in front
 * unless the message names it (or the option it is about) already, and where it is inside the
 * value (`at [0]["value"]`) unless the message names that too.
 */
const parameterMessage = (parameter: string, message: string): string => {
  const [first = "", ...rest] = message.split("\n")
  const path = rest.map((line) => line.trim()).filter((line) => line.startsWith("at ")).map((line) => line.slice(3)).join(" ")
  const keys = Array.from(path.matchAll(/\["([^"]+)"\]/g), (match) => match[1]!)
  const last = keys[keys.length - 1]
  const namesTheOption = last !== undefined && (first.startsWith(last) || first.includes(`.${last}`))
  const head = first.includes(parameter) || namesTheOption ? first : `${parameter}: ${first}`
  return path === "" || namesTheOption ? head : `${head} (at ${path})`
}

/** One extension as the application names it (`name; param=value`), parsed. */
export const decodeExtensionParameter = (
  parameter: string,
  value: unknown
): Effect.Effect<HandshakeHeaders.Extension, InvalidParameter> =>
  Effect.flatMap(decodeParameter(HandshakeHeaders.SecWebSocketExtensions, parameter, value), (list) =>
    list.length === 1
      ? Effect.succeed(list[0])
      : Effect.fail(
        new InvalidParameter({ parameter, message: `${parameter} must name exactly one extension, got ${list.length}` })
      ))

/** Decodes a header that must appear exactly once. */
export const decodeRequired = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  name: string
): Effect.Effect<S["Type"], InvalidProtocolFormat> =>
  Effect.flatMap(requiredHeader(headers, name), (value) => decodeHeader(schema, name, value))

/** Decodes a list header when present (its fields combined), `undefined` when absent. */
export const decodeOptionalList = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  name: string
): Effect.Effect<S["Type"] | undefined, InvalidProtocolFormat> => {
  const value = HttpHeader.getCombined(headers, name)
  return value === undefined ? Effect.succeed(undefined) : decodeHeader(schema, name, value)
}

/**
 * `Upgrade: websocket` and `Connection: Upgrade`, required in the request and the response. A
 * request's `Upgrade` may list other protocols besides `websocket`; a response's names
 * `websocket` alone (RFC 6455 section 4.1).
 */
export const checkUpgradeHeaders = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  side: "request" | "response"
): Effect.Effect<void, InvalidProtocolFormat> =>
  Effect.andThen(
    Effect.flatMap(
      requiredListHeader(headers, "Upgrade"),
      (value) => decodeHeader(side === "request" ? HandshakeHeaders.Upgrade : HandshakeHeaders.UpgradeResponse, "Upgrade", value)
    ),
    Effect.flatMap(
      requiredListHeader(headers, "Connection"),
      (value) => decodeHeader(HandshakeHeaders.Connection, "Connection", value)
    )
  )

/** What a client's upgrade request offers, once checked (see {@link checkRequest}). */
export interface CheckedRequest {
  readonly key: string
  /** The subprotocols offered, in order. */
  readonly offeredSubprotocols: ReadonlyArray<string>
  /** The names of the extensions offered. */
  readonly offeredExtensions: ReadonlyArray<string>
}

/**
 * Checks a client's upgrade request headers (RFC 6455 section 4.2.1): `Host`, `Upgrade:
 * websocket`, `Connection: Upgrade`, a `Sec-WebSocket-Key` of 16 bytes, `Sec-WebSocket-Version:
 * 13`, well-formed `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`.
 */
export const checkRequest = Effect.fnUntraced(function*(requestHeaders: () => unknown) {
  const headers = yield* peerHeaders(requestHeaders)
  yield* requiredHeader(headers, "Host")
  yield* checkUpgradeHeaders(headers, "request")
  const key = yield* decodeRequired(HandshakeHeaders.SecWebSocketKey, headers, "Sec-WebSocket-Key")
  const version = yield* decodeRequired(HandshakeHeaders.SecWebSocketVersion, headers, "Sec-WebSocket-Version")
  if (version !== HandshakeHeaders.SUPPORTED_VERSION) {
    return yield* new UnsupportedProtocolVersion({
      received: version,
      supported: [HandshakeHeaders.SUPPORTED_VERSION],
      message: `Sec-WebSocket-Version ${version} is not supported; this server speaks version ${HandshakeHeaders.SUPPORTED_VERSION}`
    })
  }
  const offeredSubprotocols: ReadonlyArray<string> =
    (yield* decodeOptionalList(HandshakeHeaders.SecWebSocketProtocol, headers, "Sec-WebSocket-Protocol")) ?? []
  const offeredExtensions =
    ((yield* decodeOptionalList(HandshakeHeaders.SecWebSocketExtensions, headers, "Sec-WebSocket-Extensions")) ?? [])
      .map((e) => e.name)
  return { key, offeredSubprotocols, offeredExtensions } satisfies CheckedRequest
})
