/**
 * Opening client connections as a service, so that a program written against {@link Client} runs
 * over real sockets (`NodeClient.layer` in `@effect-websocket/platform-node`) or in memory
 * ({@link layerMemory}) with no change. Also the pieces servers share across platforms: the
 * request a handler sees ({@link UpgradeRequest}) and the handler type.
 *
 * @since 0.1.0
 */
import { HandshakeHeaders, HttpHeader, Options, Property } from "@effect-websocket/schema"
import { Cause, Context, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Layer, Metric, Option, Predicate, Result, Schema, Scope, Tracer } from "effect"
import * as Connection from "./Connection.ts"
import {
  checkRequest,
  decodeParameter,
  decodeSubprotocolOffer,
  describeValue,
  readOptions,
  refuseOfferHeaders,
  refuseReservedHeaders
} from "./internal/handshake.ts"
import { isTransport, makeMemoryEnds, memoryHighWaterMark, type Transport } from "./Transport.ts"
import * as WebSocket from "./WebSocket.ts"
import type { InvalidProtocolFormat, InvalidProtocolOperation, UnsupportedExtension, UnsupportedProtocolVersion } from "./WebSocketError.ts"
import { InvalidParameter, UnsupportedSubprotocol } from "./WebSocketError.ts"
import * as Metrics from "./Metrics.ts"
import * as Targets from "./internal/target.ts"
import { utf8ByteLength } from "./internal/runtime.ts"
import { acquireHandle } from "./internal/handle.ts"
import { onClosedUnsafe } from "./internal/closeListener.ts"
import * as TraceContext from "./internal/traceContext.ts"

/**
 * A string identifying this module's errors.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId = "~@effect-websocket/core/Client"

/**
 * The connection could not be opened: `reason` says why (`"Refused"`, `"HostNotFound"`,
 * `"Timeout"` for the connect or the handshake, `"Tls"`, `"InvalidUrl"`, `"Unknown"`); `cause`
 * keeps the platform error.
 *
 * @category errors
 * @since 0.1.0
 */
export class ConnectError extends Schema.TaggedError<ConnectError>()("ConnectError", {
  reason: Schema.Literals(["Refused", "HostNotFound", "Timeout", "Tls", "InvalidUrl", "Unknown"]),
  url: Schema.String,
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * The server answered the upgrade request with something other than `101 Switching Protocols`.
 *
 * @category errors
 * @since 0.1.0
 */
export class HandshakeRejected extends Schema.TaggedError<HandshakeRejected>()("HandshakeRejected", {
  url: Schema.String,
  status: Schema.Number,
  statusText: Schema.String,
  headers: Schema.Array(Schema.Struct({ name: Schema.String, value: Schema.String })),
  /** Why, as the server said it: the start of its answer's text body (when there is one). */
  reason: Schema.optionalKey(Schema.String),
  message: Schema.String
}) {
  /** @internal */
  readonly [TypeId] = TypeId

  /**
   * The answer's header `name` (any case; repeated fields joined with `, `), `undefined` when it
   * has none: `rejected.header("Retry-After")`, `rejected.header("WWW-Authenticate")`.
   *
   * @since 0.1.0
   */
  header(name: string): string | undefined {
    return HttpHeader.getCombined(this.headers, name)
  }
}

/**
 * Why {@link Client.connect} failed.
 *
 * @category errors
 * @since 0.1.0
 */
export type ConnectFailure =
  | ConnectError
  | HandshakeRejected
  | InvalidProtocolFormat
  | UnsupportedSubprotocol
  | UnsupportedExtension
  | InvalidParameter

/**
 * What a client may ask for when it connects.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectOptions {
  /** Subprotocols to offer, in order of preference. */
  readonly protocols?: ReadonlyArray<string> | undefined
  /**
   * Extra request headers; not the offers (`Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`:
   * give subprotocols in `protocols`), which are an `InvalidParameter`.
   */
  readonly headers?: ReadonlyArray<HttpHeader.HttpHeader> | Readonly<Record<string, string>> | undefined
  /**
   * The `Origin` header, as browsers send it; it replaces an `Origin` in `headers` (as with
   * `ws`). An empty one is not given.
   */
  readonly origin?: string | undefined
  /** Limit for opening the connection and completing the handshake. Default 10 seconds. */
  readonly handshakeTimeout?: Duration.Input | undefined
  /** Largest message accepted, in bytes (close code 1009 beyond). Default 64 MiB. */
  readonly maxMessageSize?: number | undefined
  /**
   * Further handle properties (`receiveBufferSize`, `sendBufferSize`, ...). An `allocatedBuffer`
   * becomes the memory of this connection's handle: give each connection one of its own.
   */
  readonly properties?: WebSocket.HandleProperties | undefined
  /** Connection settings: keepalive, close timeout, message buffer. */
  readonly connection?: Connection.Options | undefined
  /**
   * Wraps the transport of the connection, e.g. with `Transport.tap` to watch the bytes. One that
   * throws or returns no `Transport` fails the attempt with `InvalidParameter`.
   */
  readonly wrapTransport?: ((transport: Transport) => Transport) | undefined
}

/**
 * Where a WebSocket URL leads: scheme, host, port, request path, the credentials of its userinfo.
 *
 * @category models
 * @since 0.1.0
 */
export type Target = Targets.Target

/**
 * The {@link Target} of a URL (`ws:`, `wss:`, `http:`, `https:`, `ws+unix:`), or why it is not a
 * WebSocket URL; the rule every client applies, so that they accept the same URLs.
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseTarget: (url: string | URL, shown: string, socketPath: string | undefined) => Target | string = Targets.parseTarget

/**
 * A URL with the user name and password of its userinfo replaced, and the values of query
 * parameters that carry credentials as a rule (a name with `token`, `key`, `secret`, `auth`,
 * `sig`, `session`, ... in it) and any fragment, as errors and spans show it (without control
 * characters or line separators; a value that is neither a string nor a `URL` is named by its
 * type).
 *
 * @category constructors
 * @since 0.1.0
 */
export const redactedUrl: (url: string | URL) => string = Targets.redacted

/**
 * Request headers with the Basic authorization of a target's credentials added (as `ws` sends
 * them), unless they have an `Authorization` header already.
 *
 * @category constructors
 * @since 0.1.0
 */
export const withCredentials = Targets.withCredentials

/**
 * Request headers with the current span (the `WebSocket.connect` span) added as `traceparent` and
 * `b3`, as effect's `HttpClient` adds them to its requests: a server that reads them (ours, or
 * effect's `HttpMiddleware.tracer`) continues the trace. Off, as for that client, with
 * `Tracer.DisablePropagation` or when `HttpClient.TracerPropagationEnabled` is `false` (and with
 * a disabled tracer); a trace context in the caller's headers is kept.
 *
 * @category constructors
 * @since 0.1.0
 */
export const withTraceContext = TraceContext.withTraceContext

/**
 * The parent of a server's `WebSocket.accept` span: the span the upgrade request carries
 * (`traceparent`, or B3), as effect's `HttpMiddleware.tracer` reads it; `undefined` without one.
 *
 * @category constructors
 * @since 0.1.0
 */
export const requestParent = TraceContext.requestParent

/**
 * Opens client connections.
 *
 * @category models
 * @since 0.1.0
 */
export interface Client {
  /**
   * Opens a connection to `url` (`ws://`, `wss://`, `http://`, `https://`; a string or a `URL`),
   * owned by the current scope: closing the scope closes it (1001). A connection that ends first is released then (see
   * {@link releaseOnEnd}); the messages that came before the end can still be taken.
   */
  readonly connect: (
    url: string | URL,
    options?: ConnectOptions
  ) => Effect.Effect<Connection.Connection, ConnectFailure, Scope.Scope>
}

/**
 * The client service.
 *
 * @category services
 * @since 0.1.0
 */
export const Client: Context.Service<Client, Client> = Context.Service<Client>("@effect-websocket/core/Client")

/**
 * Opens a connection with the {@link Client} in context.
 *
 * @category accessors
 * @since 0.1.0
 */
export const connect = (
  url: string | URL,
  options?: ConnectOptions
): Effect.Effect<Connection.Connection, ConnectFailure, Client | Scope.Scope> =>
  Effect.flatMap(Client, (client) => client.connect(url, options))

/**
 * The upgrade request a server handler sees. A server makes one object per request and hands that
 * same object to `authorize`, `selectProtocol`, `responseHeaders` and the handler, so what a hook
 * found out (the user behind a token) can reach the handler in a `WeakMap` keyed by it, where
 * `ws` users put it on `req` in `verifyClient`.
 *
 * @category models
 * @since 0.1.0
 */
export interface UpgradeRequest {
  /** The request target as path and query, e.g. `/chat?room=1` (also for a target in absolute form). */
  readonly url: string
  readonly headers: ReadonlyArray<HttpHeader.HttpHeader>
  /** The subprotocols the client offered, in order. */
  readonly protocols: ReadonlyArray<string>
  /** The client's address (`"memory"` in memory), as `ws` users read `req.socket.remoteAddress`. */
  readonly remoteAddress: string | undefined
  /** The client's port, when it has one (`req.socket.remotePort` for `ws` users). */
  readonly remotePort?: number | undefined
}

/**
 * What a server runs for every connection, in its own fiber; the connection closes when it
 * returns (1000), or with 1011 when it fails. Its `Scope` is the connection's, which the server
 * provides: what it acquires (`Effect.acquireRelease`, `Effect.forkScoped`) is released once it
 * returns and its connection is closed. Servers that keep their connections (`NodeServer.serve`
 * and `NodeServer.layer`, {@link layerMemory}) provide their {@link Server} too (to broadcast);
 * `NodeServer.makeUpgradeHandler` does not.
 *
 * @category models
 * @since 0.1.0
 */
export type Handler<E = unknown, R = never> = (
  connection: Connection.Connection,
  request: UpgradeRequest
) => Effect.Effect<unknown, E, R>

/**
 * A running server's open connections, whatever its platform: `NodeServer.layer` (in
 * `@effect-websocket/platform-node`) and {@link layerMemory} provide it, so a program that looks at
 * them (to broadcast, to count) runs over sockets and in memory alike.
 *
 * @category models
 * @since 0.1.0
 */
export interface Server {
  /**
   * A URL that reaches the server: `ws://host:port/path` (or `wss://`) over sockets, and
   * `ws://memory/path` in memory (where any URL does), the `path` option's or `/`.
   */
  readonly url: string
  /** Connections currently open. */
  readonly connections: Effect.Effect<number>
  /**
   * The connections currently open (whose handler runs; one that has closed is no longer listed,
   * even while its handler goes on), as `ws`'s `server.clients`: for example to broadcast,
   * `Effect.forEach(yield* server.clients, (c) => Effect.ignore(c.send(m)), { concurrency: "unbounded" })`
   * (a connection that is closing refuses sends).
   */
  readonly clients: Effect.Effect<ReadonlyArray<Connection.Connection>>
}

/**
 * The running server's open connections, as a service (see {@link Server}).
 *
 * @category services
 * @since 0.1.0
 */
export const Server: Context.Service<Server, Server> = Context.Service<Server>("@effect-websocket/core/Client/Server")

/**
 * Keeps the open connections of a server that runs `handler` with `options`: the returned handler
 * lists each connection from when it starts until the connection closes or the handler ends, and
 * `server` tells them. The returned handler and `authorize` hook (the one of `options`) get that
 * {@link Server} as a service (to broadcast, to count), so a server's own requirements never
 * include it. Shared by the servers over sockets and in memory.
 *
 * @category constructors
 * @since 0.1.0
 */
export const trackConnections = <E, R, RA>(handler: Handler<E, R>, options: ServeOptions<RA> | undefined): {
  readonly handler: Handler<E, Exclude<R, Server>>
  readonly authorize: ServeOptions<Exclude<RA, Server>>["authorize"]
  readonly server: Server
  /** Sets the server's `url`, once it is known (a socket server's port, say). */
  readonly listening: (url: string) => void
} => {
  const live = new Set<Connection.Connection>()
  let url = ""
  const server: Server = {
    get url() {
      return url
    },
    connections: Effect.sync(() => live.size),
    clients: Effect.sync(() => Array.from(live))
  }
  const authorize = options?.authorize
  return {
    handler: (connection, request) =>
      Effect.suspend(() => {
        live.add(connection)
        const remove = () => {
          live.delete(connection)
        }
        const forget = Effect.sync(remove)
        const run = Effect.provideService(runCallback("handler", () => handler(connection, request)), Server, server)
        // (the library's connections call back as they close: no fiber waits for it)
        const listed = onClosedUnsafe(connection, remove)
          ? run
          : Effect.andThen(Effect.forkChild(Effect.andThen(connection.closed, forget)), run)
        return Effect.ensuring(listed, forget)
      }),
    // (one that is no function is left as it is, for the options' check to refuse)
    authorize: typeof authorize !== "function" ? authorize : (request) =>
      Effect.provideService(runCallback("authorize hook", () => authorize(request)), Server, server),
    server,
    listening: (at) => {
      url = at
    }
  }
}

/**
 * Runs an application callback that must return an Effect (a server's handler, an `authorize`
 * hook). A callback that throws, or returns something else (the Promise of an `async` function,
 * say), becomes a defect that says so: the runtime would otherwise stop the fiber on the spot,
 * without running its finalizers, and leave its connection open forever.
 *
 * @category combinators
 * @since 0.1.0
 */
export const runCallback = <A, E, R>(name: string, callback: () => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    const result: unknown = callback()
    if (Effect.isEffect(result)) return result as Effect.Effect<A, E, R>
    const what = Predicate.hasProperty(result, "then") && typeof result.then === "function"
      ? "a Promise (run async code with Effect.promise or Effect.tryPromise)"
      : result === null ? "null" : typeof result
    return Effect.die(new TypeError(`the ${name} returned ${what}, not an Effect`))
  })

/** Headers that would frame a response's content (lower case): a refusal frames its own text body, and a 101 has none. */
const FRAMING_HEADERS = ["content-length", "transfer-encoding"]

/** Headers a {@link Rejection} may not set, with why. */
const REJECTION_RESERVED = new Map(FRAMING_HEADERS.map((name) => [name, "the refusal frames its text body itself"]))

/** Headers a client's `headers` may not set, with why (besides the offers). */
const REQUEST_RESERVED = new Map(FRAMING_HEADERS.map((name) => [name, "an upgrade request has no body"]))

/**
 * Whether `headers` is a record: an object read by its own entries (a plain object, or one of
 * `effect`'s `Headers`), not a collection read by iteration (a `Map`, a WHATWG `Headers`), whose
 * entries would send nothing.
 */
const isRecord = (headers: unknown): headers is object =>
  typeof headers === "object" && headers !== null && !(Symbol.iterator in headers)

/** A refusal's status: a redirect or an error, as {@link Rejection} checks it. */
const RejectionStatus = Schema.Int.check(Schema.isBetween({ minimum: 300, maximum: 599 }))

/**
 * Returned by an `authorize` hook to refuse a request with an HTTP status (401, 403, ...): the
 * answer carries `message` as its text body (a 304 goes without: it has no body) and `headers`.
 *
 * @category errors
 * @since 0.1.0
 */
export class Rejection extends Schema.TaggedError<Rejection>()("Rejection", {
  /** An HTTP status from 300 to 599 (a redirect or an error). */
  status: RejectionStatus,
  message: Schema.String,
  /**
   * Extra response headers: token names, values without control characters (no response
   * splitting). One named like a header the server sends (`Content-Type`, `Connection`) replaces
   * it, as with `ws`. Not `Content-Length` or `Transfer-Encoding`: the refusal frames its text body
   * (the message) itself, and a server answers such a Rejection with 500, logging why.
   */
  headers: Schema.optionalKey(HttpHeader.HttpHeaders)
}) {}

/**
 * A {@link Rejection} as a server answers it: its status, message and extra headers, checked
 * again (a `Rejection` made with `disableChecks` skipped its own checks: a status that is not
 * one of a refusal, or a header value with a line break, would break the response). An
 * `InvalidParameter` for those, and for headers that would frame its body a second time: the
 * server's fault, a 500.
 *
 * @category constructors
 * @since 0.1.0
 */
export const rejectionAnswer = (rejection: Rejection): Effect.Effect<{
  readonly status: number
  readonly message: string
  readonly headers: ReadonlyArray<HttpHeader.HttpHeader>
}, InvalidParameter> =>
  Effect.gen(function*() {
    const status = yield* decodeParameter(RejectionStatus, "Rejection.status", rejection.status)
    const decoded = yield* decodeParameter(HttpHeader.HttpHeaders, "Rejection.headers", rejection.headers ?? [])
    const headers = yield* refuseReservedHeaders("Rejection.headers", decoded, REJECTION_RESERVED)
    return { status, message: String(rejection.message), headers }
  })

/**
 * Options a server applies to every connection, shared by the platforms.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions<RA = never> {
  /**
   * Only this request path (without the query) is served; others get 404. Default: every path.
   * Written as clients send it (`/a%20b` for `/a b`: see `Options.RequestPath`), else refused.
   */
  readonly path?: string | undefined
  /**
   * Decides whether to accept a request (headers, `Origin`, path), as `ws`'s `verifyClient`: fail
   * with a {@link Rejection} to refuse. Asked only for a well-formed upgrade request (see
   * {@link checkUpgradeRequest}). The handler later gets the same request object (see
   * {@link UpgradeRequest}). It runs in the connection's scope: what it acquires
   * (`Effect.acquireRelease`, a per-user slot say) is released once the connection's handler is
   * done and the connection closed, or at once when the request is refused or the attempt fails.
   * It can read its server's {@link Server} (to refuse beyond a number of connections, say).
   */
  readonly authorize?: ((request: UpgradeRequest) => Effect.Effect<void, Rejection, RA>) | undefined
  /**
   * Picks the subprotocol from the client's offer; none when it returns `undefined`. Default: the
   * client's first offer, as `ws` selects without `handleProtocols` (clients, `ws`'s and browsers,
   * fail a connection whose server selected none of the subprotocols they offered). Called only
   * when the client offers subprotocols, as `ws`'s `handleProtocols` is; a pick that is not among
   * them is the server's fault: the request gets 500, and the error is logged.
   */
  readonly selectProtocol?: ((offered: ReadonlyArray<string>, request: UpgradeRequest) => string | undefined) | undefined
  /** Largest message accepted, in bytes (close code 1009 beyond). Default 64 MiB. */
  readonly maxMessageSize?: number | undefined
  /**
   * Further handle properties, for the handle of every connection. Not `allocatedBuffer`: that is
   * the memory of one handle, and a server makes one for every connection.
   */
  readonly properties?: Omit<WebSocket.HandleProperties, "allocatedBuffer"> | undefined
  /** Connection settings: keepalive, close timeout, message buffer. */
  readonly connection?: Connection.Options | undefined
  /**
   * Wraps the transport of each connection, e.g. with `Transport.tap` to watch the bytes. One that
   * throws or returns no `Transport` costs that connection (its socket is dropped) and is logged.
   */
  readonly wrapTransport?: ((transport: Transport) => Transport) | undefined
  /**
   * Extra headers for the `101 Switching Protocols` answer (a `Set-Cookie`, say, as `ws` users add
   * in its `headers` event): a list, or a function of the request. The headers of the handshake
   * itself (`Upgrade`, `Connection`, `Sec-WebSocket-*`) cannot be set, nor `Content-Length` and
   * `Transfer-Encoding` (a `101` has no content).
   */
  readonly responseHeaders?:
    | ReadonlyArray<HttpHeader.HttpHeader>
    | ((request: UpgradeRequest) => ReadonlyArray<HttpHeader.HttpHeader>)
    | undefined
}

/**
 * Options of {@link layerMemory}: a server's ({@link ServeOptions}), and how much each of its
 * connections buffers in memory.
 *
 * @category models
 * @since 0.1.0
 */
export interface MemoryServeOptions<RA = never> extends ServeOptions<RA> {
  /**
   * Bytes each connection's in-memory transport buffers each way before writers wait (default 64
   * KiB; at least 1, or `Infinity`), as `socketBuffers` bounds a socket's: a small one puts a test's
   * slow reader or large messages under backpressure; another value is an `InvalidParameter`
   * when the layer is built.
   */
  readonly highWaterMark?: number | undefined
  /**
   * Size of the request headers in bytes (the request target, and every header's name and value,
   * as a Node.js server counts them) from which a request gets 431, as over a socket. Default
   * 16 KiB (Node's, and `NodeServer`'s `maxHeaderBytes`).
   */
  readonly maxHeaderBytes?: number | undefined
}

/**
 * The subprotocol a server selects for `request` ({@link ServeOptions.selectProtocol}, by
 * default the client's first offer): none without asking when the client offered none.
 *
 * @category constructors
 * @since 0.1.0
 */
export const selectProtocolFor = (
  options: Pick<ServeOptions, "selectProtocol"> | undefined,
  request: UpgradeRequest
): string | undefined =>
  request.protocols.length === 0
    ? undefined
    : options?.selectProtocol === undefined
    ? request.protocols[0]
    : options.selectProtocol(request.protocols, request)

/**
 * Logs an upgrade that failed through the server's own fault (a hook that failed or threw, a
 * selection the client did not offer): the request gets 500.
 *
 * @category constructors
 * @since 0.1.0
 */
export const logServerFault = (cause: unknown): Effect.Effect<void> =>
  Effect.logError("WebSocket upgrade failed; the request gets 500", cause)

/** Headers `responseHeaders` may not set, with why: the handshake's own, and those of content (a 101 has none). */
const RESPONSE_RESERVED = new Map([
  ...["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions", "sec-websocket-version"]
    .map((name) => [name, "the handshake sets it"] as const),
  ...FRAMING_HEADERS.map((name) => [name, "a 101 has no content (RFC 9110 sections 6.1 and 8.6)"] as const)
])

const decodeResponseHeaders = (headers: unknown): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidParameter> =>
  Effect.flatMap(
    decodeParameter(HttpHeader.HttpHeaders, "responseHeaders", headers),
    (list) => refuseReservedHeaders("responseHeaders", list, RESPONSE_RESERVED)
  )

/**
 * The extra headers of a server's `101` answer for `request` ({@link ServeOptions.responseHeaders}),
 * checked: well-formed names and values, none of the handshake's own. An `InvalidParameter`
 * otherwise (the server answers 500); a function that throws is a defect.
 *
 * @category constructors
 * @since 0.1.0
 */
export const responseHeadersFor = (
  options: Pick<ServeOptions, "responseHeaders"> | undefined,
  request: UpgradeRequest
): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidParameter> => {
  const given = options?.responseHeaders
  if (given === undefined) return Effect.succeed([])
  return typeof given === "function"
    ? Effect.flatMap(Effect.sync(() => given(request)), decodeResponseHeaders)
    : decodeResponseHeaders(given)
}

/**
 * The transport a connection runs over: `transport` as the `wrapTransport` option wraps it
 * ({@link ConnectOptions.wrapTransport}, {@link ServeOptions.wrapTransport}). A wrapper that throws,
 * or returns something else than a {@link Transport} (nothing, a promise), is an `InvalidParameter`:
 * a client's attempt fails with it, a server logs it and drops only that connection.
 *
 * @category constructors
 * @since 0.1.0
 */
export const wrappedTransport = (
  wrap: ((transport: Transport) => Transport) | undefined,
  transport: Transport
): Effect.Effect<Transport, InvalidParameter> => {
  if (wrap === undefined) return Effect.succeed(transport)
  let wrapped: unknown
  try {
    wrapped = wrap(transport)
  } catch (cause) {
    const message = `wrapTransport threw: ${cause instanceof Error ? cause.message : describeValue(cause)}`
    return Effect.fail(new InvalidParameter({ parameter: "wrapTransport", message, cause }))
  }
  return isTransport(wrapped)
    ? Effect.succeed(wrapped)
    : Effect.fail(
      new InvalidParameter({ parameter: "wrapTransport", message: `wrapTransport returns a Transport, got ${describeValue(wrapped)}` })
    )
}

/**
 * The connection properties used when none are given: 64 KiB buffers, so that the driver moves
 * data in large pieces.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultProperties: WebSocket.HandleProperties = { receiveBufferSize: 65536, sendBufferSize: 65536 }

/**
 * The handle properties from options: the defaults, the given ones, then `maxMessageSize`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const handleProperties = (
  options: { readonly properties?: WebSocket.HandleProperties | undefined; readonly maxMessageSize?: number | undefined } | undefined
): WebSocket.HandleProperties => ({
  ...defaultProperties,
  ...options?.properties,
  ...(options?.maxMessageSize === undefined ? {} : { maxMessageSize: options.maxMessageSize })
})

/**
 * Decodes an option with its schema (from `@effect-websocket/schema`), failing with an
 * `InvalidParameter` that names it: the check every platform runs on its own options.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeOption: <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  name: string,
  value: unknown
) => Effect.Effect<S["Type"], InvalidParameter> = decodeParameter

/**
 * Decodes a timeout option (`handshakeTimeout`, `shutdownTimeout`, ...): `fallback` when absent,
 * else a duration that must be finite and, unless `zero` allows it, positive.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeTimeout = (
  name: string,
  input: Duration.Input | undefined,
  fallback: Duration.Duration,
  zero: "zero" | "positive" = "positive"
): Effect.Effect<Duration.Duration, InvalidParameter> =>
  input === undefined
    ? Effect.succeed(fallback)
    : decodeParameter(Options.DurationInput(name, { minimum: zero, finite: true }), name, input)

/**
 * The handle options of a client or a server (`maxMessageSize` and `properties`), decoded with
 * `schema` as the handle will be made. `maxMessageSize` is first decoded on its own, so that a bad
 * one is named as the caller wrote it, and `properties` as given, so that a value that is not an
 * object (`5`, `null`, `true`, an array) is an `InvalidParameter`, not spread as `{}` by
 * {@link handleProperties} and silently ignored.
 */
const decodeHandleOptions = (
  schema: typeof Property.ClientHandleProperties | typeof Property.ServerHandleProperties,
  options: Pick<ConnectOptions, "maxMessageSize" | "properties"> | undefined
): Effect.Effect<Property.HandleProperties, InvalidParameter> =>
  Effect.gen(function*() {
    const maxMessageSize: unknown = options?.maxMessageSize
    if (maxMessageSize !== undefined) {
      yield* decodeParameter(Property.HandlePropertiesInput, "maxMessageSize", { maxMessageSize })
    }
    const properties: unknown = options?.properties
    if (properties !== undefined) yield* decodeParameter(Property.HandlePropertiesInput, "properties", properties)
    return yield* decodeParameter(schema, "properties", handleProperties(options))
  })

/**
 * Decodes a server's handle options (`properties`, `maxMessageSize`) once, giving what makes each
 * connection's handle: the handle `WebSocket.createServerHandle(handleProperties(options))`
 * would make, owned by the current scope, without decoding the options again for every connection.
 *
 * @see websocket.h `WebSocketCreateServerHandle`
 * @category constructors
 * @since 0.1.0
 */
export const serverHandleMaker = (
  options: Pick<ServeOptions<unknown>, "maxMessageSize" | "properties"> | undefined
): Effect.Effect<Effect.Effect<WebSocket.ServerHandle, never, Scope.Scope>, InvalidParameter> =>
  Effect.map(
    decodeHandleOptions(Property.ServerHandleProperties, options),
    (properties) => acquireHandle("server", properties) as unknown as Effect.Effect<WebSocket.ServerHandle, never, Scope.Scope>
  )

/**
 * A hook option (`authorize`, `selectProtocol`, `wrapTransport`) is a function when given: checked
 * before anything is served or sent, where it would otherwise fail each connection (a 500, or a
 * 1006 after the 101).
 */
const checkHook = (name: string, hook: unknown, required = false): Effect.Effect<void, InvalidParameter> =>
  (hook === undefined && !required) || typeof hook === "function"
    ? Effect.void
    : Effect.fail(
      new InvalidParameter({ parameter: name, message: `${name} is a function, got ${hook === null ? "null" : typeof hook}` })
    )

/**
 * Checks what a server applies to every connection before it accepts any: its handler (a
 * function), the handle properties (with `maxMessageSize`), the connection options, the response
 * headers and the hooks. A server that starts with a bad option would otherwise fail every
 * connection.
 *
 * @category constructors
 * @since 0.1.0
 */
export const checkServeOptions = (
  given: ServeOptions<any> | undefined,
  handler: unknown
): Effect.Effect<void, InvalidParameter> =>
  Effect.gen(function*() {
    const options = yield* readOptions("options", given)
    yield* checkHook("handler", handler, true)
    if (options?.path !== undefined) yield* decodeParameter(Options.RequestPath, "path", options.path)
    yield* decodeHandleOptions(Property.ServerHandleProperties, options)
    if (Predicate.hasProperty(options?.properties, "allocatedBuffer") && options.properties.allocatedBuffer !== undefined) {
      // every connection's handle would work in the same memory
      return yield* new InvalidParameter({
        parameter: "properties",
        message: "properties.allocatedBuffer is the memory of one handle, and a server makes a handle for every connection: leave it out (each handle then allocates its own)"
      })
    }
    yield* Connection.decodeOptions(options?.connection)
    const responseHeaders: unknown = options?.responseHeaders
    if (responseHeaders !== undefined && typeof responseHeaders !== "function") yield* decodeResponseHeaders(responseHeaders)
    yield* checkHook("authorize", options?.authorize)
    yield* checkHook("selectProtocol", options?.selectProtocol)
    yield* checkHook("wrapTransport", options?.wrapTransport)
  })

/**
 * The {@link ConnectError} of a connect that did not complete within its handshake timeout
 * (`reason: "Timeout"`), on every platform alike.
 *
 * @category constructors
 * @since 0.1.0
 */
export const connectTimedOut = (shown: string, timeout: Duration.Duration): ConnectError =>
  new ConnectError({ reason: "Timeout", url: shown, message: `connecting to ${shown} timed out after ${Duration.format(timeout)}` })

/**
 * Checks the options of a connection attempt (the request headers and `origin`, the handle
 * properties and the connection options), so that a bad one fails the attempt, with an
 * `InvalidParameter` that names it, before it reaches the network; and decodes its handshake
 * timeout (default 10 seconds).
 *
 * @category constructors
 * @since 0.1.0
 */
export const checkConnectOptions = (given: ConnectOptions | undefined): Effect.Effect<Duration.Duration, InvalidParameter> =>
  Effect.gen(function*() {
    const options = yield* readOptions("options", given)
    if (options?.headers !== undefined) yield* decodeRequestHeaders(options.headers)
    yield* decodeSubprotocolOffer("protocols", options?.protocols)
    if (options?.origin !== undefined) yield* decodeParameter(HttpHeader.HeaderValue, "origin", options.origin)
    yield* decodeHandleOptions(Property.ClientHandleProperties, options)
    yield* Connection.decodeOptions(options?.connection)
    yield* checkHook("wrapTransport", options?.wrapTransport)
    return yield* decodeTimeout("handshakeTimeout", options?.handshakeTimeout, Duration.seconds(10))
  })

/**
 * The `headers` option of a connection attempt (a list of `{ name, value }` or a record) as a
 * header list, checked as `connect` checks it: malformed names and values (a value that is not a
 * string is refused, not sent as `"undefined"`), anything else than a list or a record, and the
 * headers the handshake sets itself are an `InvalidParameter` naming `headers`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeRequestHeaders = (headers: unknown): Effect.Effect<ReadonlyArray<HttpHeader.HttpHeader>, InvalidParameter> =>
  Effect.gen(function*() {
    const list = Array.isArray(headers)
      ? yield* decodeParameter(HttpHeader.HttpHeaders, "headers", headers)
      : isRecord(headers)
      // (the values as given: one that is not a string is refused, not sent as "undefined")
      ? yield* decodeParameter(
        HttpHeader.HttpHeaders,
        "headers",
        Object.entries(yield* readOptions("headers", headers)).map(([name, value]: [string, unknown]) => ({ name, value }))
      )
      : yield* new InvalidParameter({ parameter: "headers", message: `headers are a list of { name, value } or a record, got ${describeValue(headers)}` })
    yield* refuseOfferHeaders("headers", list)
    yield* refuseReservedHeaders("headers", list, REQUEST_RESERVED)
    return list
  })

/**
 * Normalizes request headers given as a list or a record.
 *
 * @category constructors
 * @since 0.1.0
 */
export const headerList = (
  headers: ConnectOptions["headers"]
): ReadonlyArray<HttpHeader.HttpHeader> =>
  headers === undefined
    ? []
    : Array.isArray(headers)
    ? headers as ReadonlyArray<HttpHeader.HttpHeader>
    : Object.entries(headers).map(([name, value]) => ({ name, value: String(value) }))

/**
 * The headers a client starts its upgrade request with: `Host`, the caller's `headers` (a `Host`
 * there replaces the URL's), then `Origin` when the `origin` option gives one (it replaces an
 * `Origin` in `headers`), as with `ws`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const requestHeaderList = (
  host: string,
  options: Pick<ConnectOptions, "headers" | "origin"> | undefined
): ReadonlyArray<HttpHeader.HttpHeader> => {
  const headers = HttpHeader.merge([{ name: "Host", value: host }], headerList(options?.headers))
  return options?.origin === undefined || options.origin === ""
    ? headers
    : HttpHeader.merge(headers, [{ name: "Origin", value: options.origin }])
}

/**
 * Whether `u` is a {@link ConnectError} or a {@link HandshakeRejected}.
 *
 * @category guards
 * @since 0.1.0
 */
export const isClientError = (u: unknown): u is ConnectError | HandshakeRejected => Predicate.hasProperty(u, TypeId)

/**
 * Runs a connection attempt in a scope of its own, forked from the caller's: what the attempt
 * acquired (its handle, socket, fibers, buffers) is released at once when it fails (or is
 * interrupted), and once the connection it made has ended (its `closed` completed: closed by
 * either side, aborted, lost), rather than when the caller's scope closes. Retries and reconnects
 * in a long-lived scope (a layer's) then pile nothing up. The caller's scope closing while the
 * attempt runs (closed by another fiber, or before it started) interrupts it. The attempt runs in
 * a fiber of its own: a fiber it forks with `Effect.forkChild` ends with it, so what must outlive
 * it goes in its scope (`Effect.forkScoped`). Every {@link Client.connect} runs its attempt this way.
 *
 * @category combinators
 * @since 0.1.0
 */
export const releaseOnEnd = <A extends { readonly closed: Effect.Effect<unknown> }, E, R>(
  attempt: Effect.Effect<A, E, R>
): Effect.Effect<A, E, Exclude<R, Scope.Scope> | Scope.Scope> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const caller = yield* Effect.scope
      if (caller.state._tag === "Closed") return yield* Effect.interrupt
      const scope = yield* Scope.fork(caller)
      // The attempt runs in a fiber of its own, in a scope inside `scope`: the caller's scope
      // closing while it runs (from another fiber) interrupts it first, then releases what it
      // acquired, as when its own fiber is interrupted (rather than it going on with a handle
      // deleted under it); and the caller sees an interruption.
      const inner = yield* Scope.fork(scope)
      const attempting = yield* Effect.forkChild(restore(Scope.provide(attempt, inner)), { startImmediately: true })
      yield* Scope.addFinalizer(scope, Fiber.interrupt(attempting))
      const exit = yield* Effect.exit(Effect.onInterrupt(restore(Fiber.join(attempting)), () => Fiber.interrupt(attempting)))
      if (Exit.isFailure(exit)) {
        yield* Scope.close(scope, exit)
        return yield* exit
      }
      // (closing a scope that the caller's closed first does nothing)
      yield* Effect.forkDetach(Effect.andThen(exit.value.closed, Scope.close(scope, Exit.void)))
      return exit.value
    })
  )

/**
 * The subprotocol of a client's connection: the server's selection, or `""` when the client
 * offered none. A server that selects none of the offered ones fails the connection with
 * `UnsupportedSubprotocol`, as with `ws` and browsers (RFC 6455 leaves it to the client).
 *
 * @category constructors
 * @since 0.1.0
 */
export const selectedProtocol = (
  offered: ReadonlyArray<string> | undefined,
  result: WebSocket.ClientHandshakeResult
): Effect.Effect<string, UnsupportedSubprotocol> =>
  Option.isSome(result.subprotocol)
    ? Effect.succeed(result.subprotocol.value)
    : offered === undefined || offered.length === 0
    ? Effect.succeed("")
    : Effect.fail(
      new UnsupportedSubprotocol({
        offered: [...offered],
        selected: "",
        message: `the server selected none of the offered subprotocols (${offered.join(", ")})`
      })
    )

/**
 * `Connection.make`, with `tookOver` run in the same uninterruptible step: an interruption held
 * back while the connection is made lands as soon as it is, and whoever held the socket must know
 * by then that the connection owns it (and releases it after its closing handshake).
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeTakingOver = (
  handle: WebSocket.Handle,
  transport: Transport,
  options: Connection.Options | undefined,
  tookOver: () => void
): Effect.Effect<Connection.Connection, InvalidParameter, Scope.Scope> =>
  Effect.uninterruptible(Effect.tap(Connection.make(handle, transport, options), () => Effect.sync(tookOver)))

/**
 * The errors a handler gets from its connection when the connection ends: its own, and those of
 * the connection seen as an `effect/socket` `Socket` (see `EffectSocket.toSocket`), whose reader
 * ends with a `SocketError` however the connection closed.
 */
const CONNECTION_ERRORS = new Set(["InvalidProtocolFormat", "InvalidProtocolOperation", "TransportError", "SocketError"])

/**
 * Ends a server's connection once its handler has: 1000 when it returned, 1011 when it failed
 * (logged). A failure that is the connection's own (the peer broke the protocol, the transport
 * dropped, or the `effect/socket` reader of `EffectSocket.toSocket` ended with the connection),
 * passed on by the handler, is logged at debug level only: the connection already ended with its
 * code. A connection error while the connection is still open is the handler's
 * own (another connection's, a proxy's upstream), and logged as an error. An interrupted handler
 * leaves the connection to its scope (1001).
 *
 * @category combinators
 * @since 0.1.0
 */
export const closeAfterHandler = <E>(connection: Connection.Connection, exit: Exit.Exit<unknown, E>): Effect.Effect<void> => {
  if (Exit.isSuccess(exit)) return Effect.asVoid(Effect.ignore(connection.close(1000)))
  if (Exit.hasInterrupts(exit)) return Effect.void
  const failure = Cause.findErrorOption(exit.cause)
  const tag = Option.isSome(failure) && Predicate.hasProperty(failure.value, "_tag") ? String(failure.value._tag) : undefined
  const log = (own: boolean) =>
    own && Option.isSome(failure)
      ? Effect.logDebug("WebSocket connection failed", failure.value)
      : Effect.logError("WebSocket handler failed; closing its connection with 1011", exit.cause)
  const close = Effect.ignore(connection.close(1011))
  if (tag === undefined || !CONNECTION_ERRORS.has(tag)) return Effect.andThen(log(false), close)
  // A broken frame, a lost transport or a send refused because the connection closed come with
  // the connection's end: such an error while the connection is still open is the handler's own
  // (from a proxy's upstream connection, say).
  // (`closed` of an ended connection completes at once, before the zero timeout)
  const own = Effect.map(Effect.timeoutOption(connection.closed, 0), Option.isSome)
  return Effect.andThen(Effect.flatMap(own, log), close)
}

/**
 * Annotates a server's own log lines about a request (a failed handler, a failed upgrade) with the
 * request path (`url.path`, without the query) and the client's address (`client.address`), as
 * the `WebSocket.accept` span is: an operator can tell which request a line is about.
 *
 * @category combinators
 * @since 0.1.0
 */
export const annotateRequestLogs = (url: string, remoteAddress: string | undefined) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.annotateLogs(self, { "url.path": url.split("?")[0]!, "client.address": remoteAddress ?? "" })

/**
 * Runs a server's `handler` on its accepted `connection`, then ends the connection as
 * {@link closeAfterHandler} does. The handler runs after the `WebSocket.accept` span has ended
 * (that span covers the upgrade only, however long the connection lasts), as a child of `span`
 * (the accept span), so that its own spans and logs stay in the request's trace. Shared by the
 * servers over sockets and in memory.
 *
 * @category combinators
 * @since 0.1.0
 */
export const runHandler = <E, R>(
  handler: Handler<E, R>,
  connection: Connection.Connection,
  request: UpgradeRequest,
  span: Option.Option<Tracer.AnySpan>
): Effect.Effect<void, never, R> => {
  const run = Effect.flatMap(
    Effect.exit(runCallback("handler", () => handler(connection, request))),
    (exit) => annotateRequestLogs(request.url, request.remoteAddress)(closeAfterHandler(connection, exit))
  )
  // (no stack trace: it would point into this module, and taking one costs every connection)
  return Option.isSome(span) ? Effect.withParentSpan(run, span.value, { captureStackTrace: false }) : run
}

/**
 * Runs a client's connection attempt to `shown` (the URL with its credentials redacted) in a
 * `WebSocket.connect` span, and counts its failure in {@link Metrics.handshakeFailures} (side
 * `client`, the error's tag as reason; a malformed option is no attempt and does not count).
 *
 * @category combinators
 * @since 0.1.0
 */
export const instrumentConnect = (shown: string) =>
<A, R>(attempt: Effect.Effect<A, ConnectFailure, R>): Effect.Effect<A, ConnectFailure, R> =>
  Effect.suspend(() => {
    // The span ends with a success that is not the connection: an ended span keeps its exit, and
    // every fiber forked under it (the connection's own) keeps the span, so whatever keeps one of
    // them after the connection ended (an error's stack trace, say) would keep the connection,
    // its buffers and its socket with it.
    let connection: A
    return attempt.pipe(
      Effect.tapError((error) =>
        error._tag === "InvalidParameter"
          ? Effect.void
          : Metric.update(Metric.withAttributes(Metrics.handshakeFailures, { side: "client", reason: error._tag }), 1)
      ),
      Effect.map((a) => {
        connection = a
      }),
      // (no stack trace: it would point into this module, not at the caller)
      Effect.withSpan("WebSocket.connect", { attributes: { "url.full": shown } }, { captureStackTrace: false }),
      Effect.map(() => connection)
    )
  })

/**
 * A {@link Client} whose connections reach `handler` in memory: each `connect` runs the opening
 * handshake between a client and a server handle, joins them with an in-memory transport, and
 * runs `handler` on the server side in its own fiber. The same program then runs in tests with
 * no sockets at all, with the outcomes of a real server: the same URLs are accepted (the
 * request's `remoteAddress` is `"memory"`), a failed server handshake is a `HandshakeRejected`
 * with the status, headers and reason a server answers (500 when a callback throws), and the
 * spans and metrics are those of sockets.
 *
 * The layer is the server as well as the client (it also provides {@link Server}, the server's
 * open connections): the server lives as long as the layer, and its connections with it. Provide
 * the layer around the whole program (as a server runs beside it), not around each `connect`:
 * once the layer's scope closes, its connections get 1001, as from a server that shuts down, an
 * attempt whose `authorize` is under way gets 503 at once (the hook is interrupted; one that
 * ignores interruption is waited for, as over a socket), and new ones are refused (`ConnectError`
 * with reason `Refused`).
 * Unlike over a socket, the server's side of an attempt is part of it: a client's handshake
 * timeout (or interruption) also interrupts the server's `authorize`, and its handler never runs.
 * Each connection buffers `highWaterMark` bytes each way (64 KiB by default), as a socket does.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = <E, R, RA = never>(
  handler: Handler<E, R>,
  options?: MemoryServeOptions<RA>
): Layer.Layer<Client | Server, InvalidParameter, Exclude<Exclude<R | RA, Server>, Scope.Scope>> =>
  Layer.effectContext(
    Effect.gen(function*() {
      yield* checkServeOptions(options, handler)
      const makeServerHandle = yield* serverHandleMaker(options)
      const highWaterMark = yield* memoryHighWaterMark(options?.highWaterMark)
      const maxHeaderBytes = yield* decodeMaxHeaderBytes(options?.maxHeaderBytes)
      const tracked = trackConnections(handler, options)
      tracked.listening(`ws://memory${options?.path ?? "/"}`)
      const context = yield* Effect.context<Exclude<R | RA, Server>>()
      /** The server's scope: each connection's server side lives in a scope of its own in it, as over a socket. */
      const serverScope = yield* Effect.scope
      /** The span the layer was built in: over a socket, the parent of a request's span that carries none. */
      const serverParent = Option.getOrUndefined(Context.getOption(context, Tracer.ParentSpan))
      // As the server stops (its finalizers run last added first): `stopping` below interrupts an
      // `authorize` under way (its request answered 503, as over a socket), then the handlers are
      // interrupted (1001), then the connections' scopes close (what a hook acquired is released
      // after the hook was interrupted).
      /** The scope of the connections' server sides. */
      const connectionsScope = yield* Scope.fork(serverScope)
      /** The handlers' fibers (interrupted together, as a server over a socket interrupts them). */
      const handlers = yield* FiberSet.make()
      const stopping: Stopping = { signal: yield* Deferred.make<void>(), hooks: new Set() }
      const connect = (url: string | URL, connectOptions?: ConnectOptions) => {
        const shown = Targets.redacted(url)
        return Effect.flatMap(checkConnectOptions(connectOptions), (handshakeTimeout) => releaseOnEnd(Effect.gen(function*() {
          const target = Targets.parseTarget(url, shown, undefined)
          if (typeof target === "string") return yield* new ConnectError({ reason: "InvalidUrl", url: shown, message: target })
          // A layer whose scope has closed is a server that stopped listening: the connection is
          // refused, as by a closed `NodeServer.serve` (nothing reaches the server)
          if (serverScope.state._tag === "Closed") {
            return yield* new ConnectError({ reason: "Refused", url: shown, message: `connecting to ${shown} failed: the server has stopped` })
          }
          const client = yield* WebSocket.createClientHandle(handleProperties(connectOptions))
          // The server's side of this connection is released when its handler is done (the
          // client's when its connection ends, see `releaseOnEnd`); with the attempt until the
          // handler runs.
          const connectionScope = yield* Scope.fork(connectionsScope)
          let serving = false
          yield* Effect.addFinalizer(() => serving ? Effect.void : Scope.close(connectionScope, Exit.void))
          const server = yield* Scope.provide(makeServerHandle, connectionScope)
          const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
            subprotocols: connectOptions?.protocols,
            initialHeaders: yield* withTraceContext(Targets.withCredentials(requestHeaderList(target.host, connectOptions), target))
          }).pipe(Effect.catchTag("InvalidProtocolOperation", (error) => Effect.die(error)))
          const offered = connectOptions?.protocols ?? []
          const request: UpgradeRequest = { url: target.path, headers: requestHeaders, protocols: offered, remoteAddress: "memory" }
          const { responseHeaders, selected, span } = yield* acceptInMemory(server, request, shown, { ...options, authorize: tracked.authorize }, { serverScope, stopping, maxHeaderBytes }, connectionScope, serverParent).pipe(
            // (the server's services, as its handler has them; the caller's where it has none, a
            // tracer; and the caller's span stays the parent: the accept span is the connect's child)
            Effect.updateContext((current: Context.Context<never>) => {
              const merged = Context.merge(current, context)
              const parent = Context.getOption(current, Tracer.ParentSpan)
              return Option.isSome(parent) ? Context.add(merged, Tracer.ParentSpan, parent.value) : merged
            })
          )
          // Each side closes its own end, as over a socket: the client's with its connection (this
          // attempt's scope), the server's with its (`connectionScope`); one that ends first
          // leaves what it sent for the other to read.
          const [a, b] = yield* makeMemoryEnds({ highWaterMark })
          yield* Effect.addFinalizer(() => a.close)
          yield* Scope.addFinalizer(connectionScope, b.close)
          const handshake = { requestHeaders, responseHeaders }
          // The server's side, accepted with its 101 as over a socket: its handler runs even when
          // the client then refuses the answer (its end closes: the server sees the end, 1006); a
          // setup that fails costs the connection only.
          yield* Effect.gen(function*() {
            const serverConnection = yield* Connection.make(server, yield* wrappedTransport(options?.wrapTransport, b), {
              ...options?.connection,
              protocol: selected ?? "",
              handshake
            })
            serving = true
            // (started at once: over a socket the handler runs from the 101 on, before the client
            // has read it, so what it sends at once, its Close included, is on its way first)
            yield* FiberSet.run(
              handlers,
              runHandler(tracked.handler, serverConnection, request, span).pipe(
                Effect.scoped, // the handler's scope is its connection's, as over a socket
                Effect.provideContext(context),
                Effect.ensuring(Scope.close(connectionScope, Exit.void))
              )
            )
          }).pipe(
            Scope.provide(connectionScope),
            Effect.catchCause((cause) =>
              Effect.andThen(
                // (logged as the server logs, as its handler's lines are)
                Effect.logError("WebSocket connection setup failed; its transport is closed", cause).pipe(
                  annotateRequestLogs(request.url, request.remoteAddress),
                  Effect.provideContext(context)
                ),
                b.close
              )
            )
          )
          const result = yield* WebSocket.endClientHandshake(client, { responseHeaders }).pipe(
            Effect.catchTag("InvalidProtocolOperation", (error) => Effect.die(error))
          )
          const protocol = yield* selectedProtocol(connectOptions?.protocols, result)
          const transport = yield* wrappedTransport(connectOptions?.wrapTransport, a)
          return yield* Connection.make(client, transport, { ...connectOptions?.connection, protocol, handshake })
        }).pipe(
          Effect.timeoutOrElse({
            duration: handshakeTimeout,
            orElse: () => Effect.fail(connectTimedOut(shown, handshakeTimeout))
          })
        ))).pipe(instrumentConnect(shown))
      }
      // (see `connectionsScope`)
      yield* Effect.addFinalizer(() =>
        Effect.andThen(
          Deferred.succeed(stopping.signal, undefined),
          Effect.forEach(stopping.hooks, Deferred.await, { discard: true })
        )
      )
      return Context.make(Client, Client.of({ connect })).pipe(Context.add(Server, tracked.server))
    })
  )

/**
 * The request header limits of a Node.js server's parser, which servers keep on every platform:
 * a request whose target and header names and values come to `maxHeaderBytes` bytes (16 KiB by
 * default) or more, or that has more than 1 000 header lines (Node's `maxHeadersCount`), is
 * answered 431 with {@link HEADERS_TOO_LARGE}.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_HEADER_BYTES = 16 * 1024

/**
 * Most header lines in a request, as a Node.js server takes them by default (its
 * `maxHeadersCount`); see {@link DEFAULT_MAX_HEADER_BYTES}.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_HEADERS_COUNT = 1000

/**
 * The reason of a 431 for request headers beyond the limits (see {@link DEFAULT_MAX_HEADER_BYTES}).
 *
 * @category constants
 * @since 0.1.0
 */
export const HEADERS_TOO_LARGE = "request headers too large"

/**
 * A server's `maxHeaderBytes` option: {@link DEFAULT_MAX_HEADER_BYTES} when absent, else a whole
 * number of bytes of at least 1; another value is an `InvalidParameter`.
 *
 * @category parsing
 * @since 0.1.0
 */
export const decodeMaxHeaderBytes = (given: number | undefined): Effect.Effect<number, InvalidParameter> =>
  decodeOption(Options.ByteLimit("maxHeaderBytes", 1, false), "maxHeaderBytes", given ?? DEFAULT_MAX_HEADER_BYTES)

/** The reason of a request's 503 from a server that stops. */
const SHUTTING_DOWN = "the server is shutting down"

/** A server in memory that stops: its signal, and the `authorize` hooks under way (each done once it ended). */
interface Stopping {
  readonly signal: Deferred.Deferred<void>
  readonly hooks: Set<Deferred.Deferred<void>>
}

/**
 * The server's half of an opening handshake in memory, as a server answers the upgrade request:
 * a failed handshake is the status it would answer (counted in the handshake failures), a
 * callback that throws a 500.
 */
const acceptInMemory = <RA>(
  server: WebSocket.ServerHandle,
  request: UpgradeRequest,
  shown: string,
  options: ServeOptions<RA> | undefined,
  { maxHeaderBytes, serverScope, stopping }: {
    readonly serverScope: Scope.Scope
    readonly stopping: Stopping
    readonly maxHeaderBytes: number
  },
  connectionScope: Scope.Scope,
  serverParent: Tracer.AnySpan | undefined
) => {
  /** Answers the request with `status`, as a server over a socket: counted and on the span. */
  const refuse = (reason: string, status: number, headers: ReadonlyArray<HttpHeader.HttpHeader>, why: string) =>
    Effect.gen(function*() {
      yield* serverHandshakeFailed(reason, status)
      // (the answer a server over a socket writes, as its client reads it)
      const response = refusalResponse(why, headers, status)
      return yield* Effect.fail(handshakeRejected(shown, status, STATUS_TEXT[status] ?? "Error", response.headers, response.body))
    })
  const refuseHandshake = (error: ServerHandshakeFailure | InvalidProtocolOperation) =>
    // (the layer's scope closed while the request was answered: its handle is gone, as a server
    // over a socket that shuts down answers)
    error._tag === "InvalidProtocolOperation" && serverScope.state._tag === "Closed"
      ? refuse("ShuttingDown", 503, [], SHUTTING_DOWN)
      : answerHandshakeFailure(error, (status, headers) => refuse(error._tag, status, headers, error.message))
  const pathname = request.url.split("?")[0]!
  return Effect.gen(function*() {
    // (the limits of Node's parser, which a server over a socket answers before anything else)
    if (
      request.headers.length > DEFAULT_MAX_HEADERS_COUNT ||
      request.headers.reduce((bytes, h) => bytes + h.name.length + h.value.length, request.url.length) >= maxHeaderBytes
    ) {
      return yield* refuse("HeaderTooLarge", 431, [], HEADERS_TOO_LARGE)
    }
    if (options?.path !== undefined && pathname !== options.path) {
      return yield* refuse("NotFound", 404, [], `no WebSocket endpoint at ${pathname}`)
    }
    yield* checkUpgradeRequest(request.headers).pipe(Effect.catch((error) => refuseHandshake(error)))
    const authorize = options?.authorize
    if (authorize !== undefined) {
      // (in the connection's scope, as over a socket: what it acquires is released once the
      // handler is done, or at once when the attempt fails)
      // (a server that starts to stop meanwhile interrupts it and answers 503, as over a socket)
      const verdict = yield* Effect.acquireUseRelease(
        Effect.tap(Deferred.make<void>(), (done) => Effect.sync(() => stopping.hooks.add(done))),
        () =>
          Effect.raceFirst(
            Effect.exit(Scope.provide(runCallback("authorize hook", () => authorize(request)), connectionScope)),
            Effect.as(Deferred.await(stopping.signal), "stopping" as const)
          ),
        (done) => Effect.andThen(Effect.sync(() => stopping.hooks.delete(done)), Deferred.succeed(done, undefined))
      )
      if (verdict === "stopping") return yield* refuse("ShuttingDown", 503, [], SHUTTING_DOWN)
      if (Exit.isFailure(verdict)) {
        const failure = Cause.findErrorOption(verdict.cause)
        if (Option.isSome(failure) && failure.value instanceof Rejection) {
          // (a refusal that cannot be sent is the server's fault: a 500 (see below))
          const { headers, message, status } = yield* Effect.orDie(rejectionAnswer(failure.value))
          return yield* refuse("Rejected", status, headers, message)
        }
        return yield* Effect.die(Cause.squash(verdict.cause)) // not a refusal: a 500 (see below)
      }
    }
    const selected = selectProtocolFor(options, request)
    const handshake = yield* WebSocket.beginServerHandshake(server, { requestHeaders: request.headers, subprotocol: selected }).pipe(
      Effect.catch(refuseHandshake)
    )
    // (malformed extra headers are the server's fault: a 500 (see below), as over a socket)
    const extra = yield* Effect.orDie(responseHeadersFor(options, request))
    return { responseHeaders: [...handshake.responseHeaders, ...extra], selected, span: yield* Effect.option(Effect.currentSpan) }
  }).pipe(
    // A refusal is an answer: the span ends as a success, as over a socket, and the client is
    // told after it (below). A callback that threw or failed otherwise is a 500 and the span's failure.
    Effect.map(Result.succeed),
    Effect.catch((rejection) => Effect.succeed(Result.fail(rejection))),
    Effect.catchDefect((defect) =>
      Effect.andThen(
        logServerFault(Cause.die(defect)), // (the log entry's cause, as over a socket)
        refuse("ServerError", 500, [], "the upgrade failed")
      )
    ),
    // (no stack trace: it would point into this module)
    (answer) =>
      Effect.flatMap(Effect.option(Effect.currentParentSpan), (current) => {
        // As over a socket, the parent is the span the request carries: the connect span, kept
        // as itself (the caller's context, see `layerMemory`) rather than as its copy in the
        // headers, or another (the caller's own `traceparent`); a request that carries none
        // (propagation off) is the child of the span the layer was built in, if any.
        const carried = requestParent(request.headers.map((header) => [header.name, header.value] as const))
        const known = carried !== undefined && Option.isSome(current) && current.value.spanId === carried.spanId
        const parent = known ? current.value : carried ?? serverParent
        return Effect.withSpan(answer, "WebSocket.accept", {
          attributes: { "url.path": pathname },
          ...(parent === undefined ? { root: true } : { parent }),
          captureStackTrace: false
        })
      }),
    annotateRequestLogs(request.url, request.remoteAddress),
    Effect.flatMap((answer) => Result.isSuccess(answer) ? Effect.succeed(answer.success) : Effect.fail(answer.failure))
  )
}

/**
 * Reason phrases of the statuses a server may refuse an upgrade with (RFC 9110 section 15), as a
 * Node.js server writes them; one without a phrase here gets `Error`, as there.
 */
const STATUS_TEXT: Readonly<Record<number, string>> = {
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  305: "Use Proxy",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  402: "Payment Required",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Payload Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  418: "I'm a Teapot",
  421: "Misdirected Request",
  422: "Unprocessable Entity",
  423: "Locked",
  424: "Failed Dependency",
  425: "Too Early",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  451: "Unavailable For Legal Reasons",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  506: "Variant Also Negotiates",
  507: "Insufficient Storage",
  508: "Loop Detected",
  509: "Bandwidth Limit Exceeded",
  510: "Not Extended",
  511: "Network Authentication Required"
}

/**
 * Counts an upgrade request refused with the HTTP `status` in {@link Metrics.handshakeFailures}
 * (side `server`), and records the status and reason on the current span, if any.
 *
 * @category constructors
 * @since 0.1.0
 */
export const serverHandshakeFailed = (reason: string, status: number): Effect.Effect<void> =>
  Effect.andThen(
    Metric.update(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason }), 1),
    Effect.annotateCurrentSpan({ "http.response.status_code": status, "websocket.refused": reason })
  )

/**
 * The HTTP answer to a failed server handshake: 426 with `Sec-WebSocket-Version: 13` and
 * `Upgrade: websocket` for an unsupported version (RFC 6455 section 4.4; RFC 9110 section 15.5.22:
 * a 426 "MUST send an Upgrade header field"), 500 for an `InvalidParameter`, an
 * `UnsupportedSubprotocol` or an `UnsupportedExtension` (the server's own selection is malformed
 * or was not offered: the fault is not the client's), 400 otherwise, with
 * `Sec-WebSocket-Version: 13` when the request's version is missing, repeated or malformed (RFC
 * 6455 section 4.2.2 item 4: a version the server does not understand is answered with "a
 * |Sec-WebSocket-Version| header field indicating the version(s) the server is capable of
 * understanding").
 *
 * **Gotchas**
 *
 * A server that writes these headers also sends `Connection: Upgrade` beside an `Upgrade` header
 * (RFC 9110 section 7.8).
 *
 * @category constructors
 * @since 0.1.0
 */
export const rejectionStatus = (
  error: ServerHandshakeFailure | InvalidProtocolOperation
): { readonly status: number; readonly statusText: string; readonly headers: ReadonlyArray<HttpHeader.HttpHeader> } =>
  error._tag === "UnsupportedProtocolVersion"
    ? {
      status: 426,
      statusText: "Upgrade Required",
      headers: [
        { name: "Sec-WebSocket-Version", value: error.supported.join(", ") },
        { name: "Upgrade", value: "websocket" }
      ]
    }
    : error._tag === "InvalidParameter" || error._tag === "UnsupportedSubprotocol" || error._tag === "UnsupportedExtension"
    ? { status: 500, statusText: "Internal Server Error", headers: [] }
    : error._tag === "InvalidProtocolFormat" && error.header?.toLowerCase() === "sec-websocket-version"
    ? {
      status: 400,
      statusText: "Bad Request",
      headers: [{ name: "Sec-WebSocket-Version", value: String(HandshakeHeaders.SUPPORTED_VERSION) }]
    }
    : { status: 400, statusText: "Bad Request", headers: [] }

/**
 * Checks a client's upgrade request headers as `beginServerHandshake` does (RFC 6455 section
 * 4.2.1) and gives the subprotocols offered, in order. Servers run it before any application hook
 * (`authorize`, `selectProtocol`) sees the request, as `ws` checks a request before `verifyClient`:
 * a malformed request is answered with its {@link rejectionStatus} (400, or 426 for another
 * version) and costs the application nothing.
 *
 * @category handshake
 * @since 0.1.0
 */
export const checkUpgradeRequest = (
  headers: ReadonlyArray<HttpHeader.HttpHeader>
): Effect.Effect<ReadonlyArray<string>, InvalidProtocolFormat | UnsupportedProtocolVersion> =>
  Effect.map(checkRequest(() => headers), (checked) => checked.offeredSubprotocols)

/**
 * Answers a failed server handshake: `answer` gets its {@link rejectionStatus} (status and
 * headers) to write. A fault of the server's own (a 500: its selection was not offered or is
 * malformed) is not answered here but is a defect, which the servers answer as every other fault
 * of theirs: logged, a 500 that says only that the upgrade failed, the accept span a failure.
 * Shared by the servers over sockets and in memory.
 *
 * @category handshake
 * @since 0.1.0
 */
export const answerHandshakeFailure = <A, E, R>(
  error: ServerHandshakeFailure | InvalidProtocolOperation,
  answer: (status: number, headers: ReadonlyArray<HttpHeader.HttpHeader>) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  const { headers, status } = rejectionStatus(error)
  return status >= 500 ? Effect.die(error) : answer(status, headers)
}

/** What a client is told of a refused upgrade in memory: what it would be told over a socket, and why. */
/**
 * How many characters of a refusal's text body become its {@link HandshakeRejected.reason}.
 *
 * @category constants
 * @since 0.1.0
 */
export const REJECTION_REASON_LENGTH = 200

/**
 * Whether a refusal with `headers` has a text body, which says why (`Content-Type` `text/*`, or
 * none).
 *
 * @category guards
 * @since 0.1.0
 */
export const hasTextBody = (headers: ReadonlyArray<HttpHeader.HttpHeader>): boolean =>
  /^text\//i.test(HttpHeader.getCombined(headers, "Content-Type") ?? "text/plain")

/**
 * The {@link HandshakeRejected} for a server's answer other than 101: the start of its body
 * becomes the reason when the body is text (see {@link hasTextBody}), with control characters as
 * spaces and at most {@link REJECTION_REASON_LENGTH} characters.
 *
 * @category constructors
 * @since 0.1.0
 */
export const handshakeRejected = (
  url: string,
  status: number,
  statusText: string,
  headers: ReadonlyArray<HttpHeader.HttpHeader>,
  body: string
): HandshakeRejected => {
  const why = hasTextBody(headers) ? body.replace(/[\x00-\x1f\x7f]+/g, " ").trim().slice(0, REJECTION_REASON_LENGTH) : ""
  return new HandshakeRejected({
    url,
    status,
    statusText,
    headers,
    ...(why === "" ? {} : { reason: why }),
    message: `the server answered ${status} ${statusText} instead of 101 Switching Protocols${why === "" ? "" : `: ${why}`}`
  })
}

/**
 * The headers and body a server refuses an upgrade request with: `message` as a line of text in
 * UTF-8 (a lone surrogate as U+FFFD), and `Connection: close` (with the `Upgrade` option when
 * `headers` name a protocol to upgrade to, RFC 9110 section 7.8: "A sender of Upgrade MUST also
 * send an "Upgrade" connection option"); a header of `headers` replaces the default of the same
 * name (`Content-Type`, `Connection`), as with `ws`. A `304 Not Modified` has no body (RFC 9110
 * section 15.4.5), so neither the message nor the headers that would describe it.
 *
 * @category constructors
 * @since 0.1.0
 */
export const refusalResponse = (
  message: string,
  headers: ReadonlyArray<HttpHeader.HttpHeader> = [],
  status?: number
): { readonly headers: ReadonlyArray<HttpHeader.HttpHeader>; readonly body: string } => {
  const upgrade = headers.some((h) => h.name.toLowerCase() === "upgrade")
  const connection: HttpHeader.HttpHeader = { name: "Connection", value: upgrade ? "Upgrade, close" : "close" }
  if (status === 304) return { headers: HttpHeader.merge([connection], headers), body: "" }
  const body = `${message.toWellFormed()}\n`
  const defaults: ReadonlyArray<HttpHeader.HttpHeader> = [
    connection,
    { name: "Content-Type", value: "text/plain; charset=utf-8" },
    { name: "Content-Length", value: String(utf8ByteLength(body)) }
  ]
  return { headers: HttpHeader.merge(defaults, headers), body }
}

/**
 * Errors of the opening handshake that a server turns into an HTTP status.
 *
 * @category errors
 * @since 0.1.0
 */
export type ServerHandshakeFailure =
  | InvalidProtocolFormat
  | UnsupportedProtocolVersion
  | UnsupportedSubprotocol
  | UnsupportedExtension
  | InvalidParameter
