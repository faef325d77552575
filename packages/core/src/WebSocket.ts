/**
 * The websocket.h WebSocket Protocol Component API as Effect functions. Handles are scoped
 * resources; the handshake functions build and check the WebSocket-specific HTTP headers while
 * the application (or `@effect-websocket/platform-node`) moves the HTTP request and response.
 *
 * | websocket.h | here |
 * | --- | --- |
 * | `WebSocketCreateClientHandle` / `WebSocketCreateServerHandle` | {@link createClientHandle} / {@link createServerHandle} |
 * | `WebSocketBeginClientHandshake` / `WebSocketEndClientHandshake` | {@link beginClientHandshake} / {@link endClientHandshake} |
 * | `WebSocketBeginServerHandshake` / `WebSocketEndServerHandshake` | {@link beginServerHandshake} / {@link endServerHandshake} |
 * | `WebSocketDeleteHandle` | closing the handle's scope, or {@link deleteHandle} |
 * | `WebSocketGetGlobalProperty` | {@link getGlobalProperty} |
 *
 * @since 0.1.0
 */
import { HandshakeHeaders, HttpHeader, Property, Token } from "@effect-websocket/schema"
import { Config, Effect, Option, Predicate } from "effect"
import type { Pipeable } from "effect/Pipeable"
import type { Scope } from "effect/Scope"
import { dual } from "effect/Function"
import * as Action from "./Action.ts"
import * as BufferType from "./BufferType.ts"
import { isDetached } from "./internal/bytes.ts"
import { ActionRecord, Status } from "./internal/engine/engine.ts"
import { HandleState } from "./internal/engine/state.ts"
import { engineError } from "./internal/engineError.ts"
import * as Handshake from "./internal/handshake.ts"
import { acquireHandle, deleteHandle as deleteImpl, HandleImpl, TypeId as HandleTypeId } from "./internal/handle.ts"
import {
  InvalidParameter,
  InvalidProtocolFormat,
  InvalidProtocolOperation,
  UnsupportedExtension,
  UnsupportedProtocolVersion,
  UnsupportedSubprotocol
} from "./WebSocketError.ts"

/**
 * A string identifying handles.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId: typeof HandleTypeId = HandleTypeId

/**
 * A WebSocket session handle. It is a scoped resource: closing the scope it was created in
 * deletes it, after which every call on it fails with `InvalidProtocolOperation`.
 *
 * @see websocket.h `WEB_SOCKET_HANDLE`
 * @category models
 * @since 0.1.0
 */
export interface Handle extends Pipeable {
  readonly [TypeId]: typeof TypeId
  /** `"client"` masks what it sends and checks the server's response; `"server"` the reverse. */
  readonly kind: "client" | "server"
}

/**
 * A client-side handle, from {@link createClientHandle}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientHandle extends Handle {
  readonly kind: "client"
}

/**
 * A server-side handle, from {@link createServerHandle}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerHandle extends Handle {
  readonly kind: "server"
}

/**
 * Whether `u` is a {@link Handle}.
 *
 * @category guards
 * @since 0.1.0
 */
export const isHandle = (u: unknown): u is Handle => Predicate.hasProperty(u, TypeId)

/**
 * The properties a handle can be created with (websocket.h `WEB_SOCKET_PROPERTY` array) as a
 * plain object. Every key is optional.
 *
 * | key | websocket.h | range, default |
 * | --- | --- | --- |
 * | `receiveBufferSize` | `WEB_SOCKET_RECEIVE_BUFFER_SIZE_PROPERTY_TYPE` | 256-65536, 4096 |
 * | `sendBufferSize` | `WEB_SOCKET_SEND_BUFFER_SIZE_PROPERTY_TYPE` | 16-65536, 4096 client / 16 server |
 * | `disableMasking` | `WEB_SOCKET_DISABLE_MASKING_PROPERTY_TYPE` | false |
 * | `allocatedBuffer` | `WEB_SOCKET_ALLOCATED_BUFFER_PROPERTY_TYPE` | at least receive + send + 256 bytes |
 * | `disableUtf8Verification` | `WEB_SOCKET_DISABLE_UTF8_VERIFICATION_PROPERTY_TYPE` | false |
 * | `maxMessageSize` | (none: an addition) | 1 to 2^53-1 bytes, 64 MiB |
 *
 * @category models
 * @since 0.1.0
 */
export type HandleProperties = Property.HandlePropertiesInput

const makeHandle = (kind: "client" | "server", properties: HandleProperties | undefined) =>
  Effect.flatMap(
    Handshake.decodeParameter(
      kind === "client" ? Property.ClientHandleProperties : Property.ServerHandleProperties,
      "properties",
      properties ?? {}
    ),
    (decoded) => acquireHandle(kind, decoded)
  )

/**
 * Creates a client handle configured by `properties`, owned by the current scope: closing the
 * scope deletes it (`WebSocketDeleteHandle`). Masking keys and `Sec-WebSocket-Key` come from the
 * `WebCrypto` reference of `effect/crypto`, which tests can replace.
 *
 * **Example**
 *
 * ```ts
 * import { Effect } from "effect"
 * import { WebSocket } from "@effect-websocket/core"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function*() {
 *     const client = yield* WebSocket.createClientHandle({ receiveBufferSize: 8192 })
 *     const { additionalHeaders } = yield* WebSocket.beginClientHandshake(client, { subprotocols: ["chat"] })
 *     return additionalHeaders
 *   })
 * )
 * ```
 *
 * @see websocket.h `WebSocketCreateClientHandle`
 * @category constructors
 * @since 0.1.0
 */
export const createClientHandle = (
  properties?: HandleProperties
): Effect.Effect<ClientHandle, InvalidParameter, Scope> =>
  makeHandle("client", properties) as Effect.Effect<ClientHandle, InvalidParameter, Scope>

/**
 * Creates a server handle configured by `properties`, owned by the current scope: closing the
 * scope deletes it (`WebSocketDeleteHandle`).
 *
 * @see websocket.h `WebSocketCreateServerHandle`
 * @category constructors
 * @since 0.1.0
 */
export const createServerHandle = (
  properties?: HandleProperties
): Effect.Effect<ServerHandle, InvalidParameter, Scope> =>
  makeHandle("server", properties) as Effect.Effect<ServerHandle, InvalidParameter, Scope>

/**
 * Deletes a handle before its scope closes. Idempotent; later calls on the handle fail with
 * `InvalidProtocolOperation` (where C would have undefined behaviour).
 *
 * @see websocket.h `WebSocketDeleteHandle`
 * @category destructors
 * @since 0.1.0
 */
export const deleteHandle = (handle: Handle): Effect.Effect<void> => Effect.sync(() => deleteImpl(impl(handle)))

const impl = (handle: Handle): HandleImpl => handle as unknown as HandleImpl

/** Fails unless the handle is in one of `states`. */
const requireState = (
  handle: HandleImpl,
  operation: string,
  ...states: ReadonlyArray<HandleState>
): Effect.Effect<void, InvalidProtocolOperation> => {
  if (states.includes(handle.state)) return Effect.void
  const why = handle.state === HandleState.Deleted
    ? "the handle was deleted"
    : handle.state === HandleState.Failed
    ? "the handshake failed; only abortHandle and deleteHandle are allowed"
    : `the handle is in state ${handle.stateName}`
  return Effect.fail(
    new InvalidProtocolOperation({ operation, state: handle.stateName, message: `${operation} is not allowed: ${why}` })
  )
}

/**
 * Runs a handshake call that may wait (for the accept digest, where it is awaited) unless another
 * one on the handle is under way: the second of two calls at once fails at once with
 * `InvalidProtocolOperation`, whichever digest would come first, and the first call's outcome holds.
 */
const oneCallAtATime = <A, E, R>(
  handle: HandleImpl,
  operation: string,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | InvalidProtocolOperation, R> =>
  Effect.suspend((): Effect.Effect<A, E | InvalidProtocolOperation, R> => {
    if (handle.handshakeCallUnderWay) {
      return Effect.fail(
        new InvalidProtocolOperation({
          operation,
          state: handle.stateName,
          message: `${operation} is not allowed: another handshake call on this handle is under way`
        })
      )
    }
    handle.handshakeCallUnderWay = true
    return Effect.ensuring(effect, Effect.sync(() => void (handle.handshakeCallUnderWay = false)))
  })

/**
 * Marks the handle failed when `effect` fails, if it is still in the state `from` the call started
 * in: one deleted or aborted meanwhile stays as that left it.
 */
const failsHandle = <A, E, R>(
  handle: HandleImpl,
  from: HandleState,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.tapError(effect, () =>
    Effect.sync(() => {
      if (handle.state === from) handle.state = HandleState.Failed
    }))

/**
 * What {@link beginClientHandshake} takes: the subprotocols and extensions to offer, in order of
 * preference, and the headers the application already means to send.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientHandshakeOptions {
  /** Subprotocol names (tokens), e.g. `["chat", "superchat"]`. */
  readonly subprotocols?: ReadonlyArray<string> | undefined
  /**
   * Extensions, each with its parameters, e.g. `["permessage-deflate; client_max_window_bits"]`.
   * The engine implements no extension: one the server selects is the application's to implement
   * (as websocket.h leaves it), and the session still refuses a frame with a reserved bit set
   * (RSV1-3) with 1002.
   */
  readonly extensions?: ReadonlyArray<string> | undefined
  /**
   * Headers of the request already chosen, such as `Host` and `Origin`; not the offers
   * (`Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`: give them in `subprotocols` and
   * `extensions`, else a server's pick of them would be refused as never offered).
   */
  readonly initialHeaders?: ReadonlyArray<HttpHeader.HttpHeader> | undefined
}

/**
 * What {@link beginClientHandshake} returns.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientHandshakeRequest {
  /**
   * The headers to add to the HTTP request: `Connection`, `Upgrade`, `Sec-WebSocket-Version`,
   * `Sec-WebSocket-Key`, and `Sec-WebSocket-Protocol` / `Sec-WebSocket-Extensions` when offered.
   */
  readonly additionalHeaders: ReadonlyArray<HttpHeader.HttpHeader>
  /** `initialHeaders` with `additionalHeaders` merged in (an additional header replaces an initial one of the same name). */
  readonly requestHeaders: ReadonlyArray<HttpHeader.HttpHeader>
}

const beginClient = Effect.fnUntraced(function*(handle: HandleImpl, given: ClientHandshakeOptions) {
  yield* requireState(handle, "beginClientHandshake", HandleState.Created)
  yield* requireKind(handle, "client", "beginClientHandshake")
  const options = yield* Handshake.readOptions("options", given, ["subprotocols", "extensions", "initialHeaders"])
  const subprotocols = yield* Handshake.decodeSubprotocolOffer("subprotocols", options.subprotocols)
  const extensions: Array<HandshakeHeaders.Extension> = []
  for (const [i, extension] of (yield* Handshake.listParameter("extensions", options.extensions)).entries()) {
    extensions.push(yield* Handshake.decodeExtensionParameter(`extensions[${i}]`, extension))
  }
  const initialHeaders = yield* Effect.flatMap(
    Handshake.appHeaders("initialHeaders", options.initialHeaders),
    (headers) => Handshake.refuseOfferHeaders("initialHeaders", headers)
  )
  const key = Handshake.generateKey(handle.crypto)
  const additionalHeaders: Array<HttpHeader.HttpHeader> = [
    { name: "Connection", value: "Upgrade" },
    { name: "Upgrade", value: "websocket" },
    { name: "Sec-WebSocket-Version", value: String(HandshakeHeaders.SUPPORTED_VERSION) },
    { name: "Sec-WebSocket-Key", value: key }
  ]
  if (subprotocols.length > 0) additionalHeaders.push({ name: "Sec-WebSocket-Protocol", value: subprotocols.join(", ") })
  if (extensions.length > 0) {
    additionalHeaders.push({
      name: "Sec-WebSocket-Extensions",
      value: extensions.map(HandshakeHeaders.formatExtension).join(", ")
    })
  }
  handle.key = key
  handle.offeredSubprotocols = subprotocols
  handle.offeredExtensions = extensions.map((e) => e.name)
  handle.state = HandleState.HandshakeStarted
  return {
    additionalHeaders,
    requestHeaders: HttpHeader.merge(initialHeaders, additionalHeaders)
  } satisfies ClientHandshakeRequest
})

const requireKind = (
  handle: HandleImpl,
  kind: "client" | "server",
  operation: string
): Effect.Effect<void, InvalidProtocolOperation> =>
  handle.kind === kind
    ? Effect.void
    : Effect.fail(
      new InvalidProtocolOperation({
        operation,
        state: handle.stateName,
        message: `${operation} needs a ${kind} handle, got a ${handle.kind} handle`
      })
    )

/**
 * Starts the client side of the opening handshake: checks the offer and returns the headers to
 * add to the HTTP upgrade request, with a fresh random `Sec-WebSocket-Key`. The application sends
 * `GET <path> HTTP/1.1` with them and a `Host` header itself.
 *
 * Fails with `InvalidParameter` for a subprotocol that is not a token, an extension that does not
 * parse, a malformed header, or an option of another name; with `InvalidProtocolOperation` unless
 * the handle was just created.
 *
 * @see websocket.h `WebSocketBeginClientHandshake`
 * @category handshake
 * @since 0.1.0
 */
export const beginClientHandshake: {
  /** Data-last: `handle.pipe(WebSocket.beginClientHandshake(options))`. */
  (options?: ClientHandshakeOptions): (
    handle: ClientHandle
  ) => Effect.Effect<ClientHandshakeRequest, InvalidParameter | InvalidProtocolOperation>
  /** Data-first: `WebSocket.beginClientHandshake(handle, options)`. */
  (
    handle: ClientHandle,
    options?: ClientHandshakeOptions
  ): Effect.Effect<ClientHandshakeRequest, InvalidParameter | InvalidProtocolOperation>
} = dual(
  (args) => isHandle(args[0]),
  (handle: ClientHandle, options?: ClientHandshakeOptions) => beginClient(impl(handle), options ?? {})
)

/**
 * What {@link endClientHandshake} takes: the headers of the server's `101 Switching Protocols`
 * response (the application has checked the status line).
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientHandshakeResponse {
  readonly responseHeaders: ReadonlyArray<HttpHeader.HttpHeader>
}

/**
 * What the server selected, as indices into what {@link beginClientHandshake} offered, plus the
 * names.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientHandshakeResult {
  /** Index of the selected subprotocol in `subprotocols`; none when the server selected none. */
  readonly selectedSubprotocol: Option.Option<number>
  /** Indices of the selected extensions in `extensions`, in the server's order. */
  readonly selectedExtensions: ReadonlyArray<number>
  /** The selected subprotocol's name. */
  readonly subprotocol: Option.Option<string>
  /** The selected extensions as the server returned them, with their parameters. */
  readonly extensions: ReadonlyArray<HandshakeHeaders.Extension>
}

const endClient = Effect.fnUntraced(function*(handle: HandleImpl, given: ClientHandshakeResponse) {
  yield* requireState(handle, "endClientHandshake", HandleState.HandshakeStarted)
  yield* requireKind(handle, "client", "endClientHandshake")
  // (untyped callers may give nothing: the missing header list is malformed, not a crash)
  const response = yield* Handshake.readOptions("response", given ?? ({} as ClientHandshakeResponse), ["responseHeaders"])
  // (a call that is not allowed, on a server handle, or with an option of another name is the
  // caller's mistake and leaves the handle as it was; what the server sent fails the handle)
  return yield* oneCallAtATime(
    handle,
    "endClientHandshake",
    failsHandle(handle, HandleState.HandshakeStarted, checkResponse(handle, response))
  )
})

/** The server's response checked (see {@link endClientHandshake}), and the session opened. */
const checkResponse = Effect.fnUntraced(function*(handle: HandleImpl, response: ClientHandshakeResponse) {
  const headers = yield* Handshake.peerHeaders(() => response.responseHeaders)
  yield* Handshake.checkUpgradeHeaders(headers, "response")
  const accept = yield* Handshake.decodeRequired(HandshakeHeaders.SecWebSocketAccept, headers, "Sec-WebSocket-Accept")
  const expected = yield* Handshake.computeAccept(handle.crypto, handle.key!)
  // (the digest may take a turn of the event loop: the handle may have been deleted or aborted
  // meanwhile; this call then fails and leaves it as it is)
  yield* requireState(handle, "endClientHandshake", HandleState.HandshakeStarted)
  if (accept !== expected) {
    return yield* new InvalidProtocolFormat({
      header: "Sec-WebSocket-Accept",
      message: `Sec-WebSocket-Accept is ${accept}, expected ${expected} for the key sent`
    })
  }
  let selectedSubprotocol = Option.none<number>()
  const protocol = yield* Handshake.singleHeader(headers, "Sec-WebSocket-Protocol")
  if (protocol !== undefined) {
    const name = yield* Handshake.decodeHeader(
      HandshakeHeaders.SecWebSocketProtocolResponse,
      "Sec-WebSocket-Protocol",
      protocol
    )
    const index = handle.offeredSubprotocols.indexOf(name)
    if (index === -1) {
      return yield* new UnsupportedSubprotocol({
        offered: handle.offeredSubprotocols,
        selected: name,
        message: handle.offeredSubprotocols.length === 0
          ? `the server selected subprotocol "${name}" but none was offered`
          : `the server selected subprotocol "${name}", which is not one of those offered: ${handle.offeredSubprotocols.join(", ")}`
      })
    }
    selectedSubprotocol = Option.some(index)
  }
  const extensions =
    (yield* Handshake.decodeOptionalList(HandshakeHeaders.SecWebSocketExtensions, headers, "Sec-WebSocket-Extensions")) ??
      []
  // (indices into the offer would repeat too, and `ws` refuses such a response as well)
  const repeated = Token.firstRepeated(extensions.map((e) => e.name))
  if (repeated !== -1) {
    return yield* new InvalidProtocolFormat({
      header: "Sec-WebSocket-Extensions",
      message: `Sec-WebSocket-Extensions selects extension ${JSON.stringify(extensions[repeated]!.name)} twice`
    })
  }
  const selectedExtensions: Array<number> = []
  for (const extension of extensions) {
    const index = handle.offeredExtensions.indexOf(extension.name)
    if (index === -1) {
      return yield* new UnsupportedExtension({
        offered: handle.offeredExtensions,
        selected: extension.name,
        message: `the server selected extension "${extension.name}", which was not offered`
      })
    }
    selectedExtensions.push(index)
  }
  handle.key = undefined
  handle.state = HandleState.Open
  return {
    selectedSubprotocol,
    selectedExtensions,
    subprotocol: Option.map(selectedSubprotocol, (i) => handle.offeredSubprotocols[i]!),
    extensions
  } satisfies ClientHandshakeResult
})

/**
 * Completes the client side of the opening handshake: checks the server's response headers
 * (`Upgrade: websocket` naming no other protocol, `Connection: Upgrade`, the
 * `Sec-WebSocket-Accept` that matches the key sent, and the selected subprotocol and extensions)
 * and opens the session.
 *
 * Fails with `InvalidProtocolFormat` (the header at fault in `header`) for a missing or malformed
 * header, a wrong accept value or an extension selected twice; `UnsupportedSubprotocol` /
 * `UnsupportedExtension` when the server selected something that was not offered;
 * `InvalidParameter` for an option of another name (a misspelt `responseHeaders`);
 * `InvalidProtocolOperation` unless {@link beginClientHandshake} came first, or while another
 * `endClientHandshake` on the handle is under way (the first call's outcome holds). An
 * `InvalidParameter` or `InvalidProtocolOperation` leaves the handle as it was; after any other
 * failure the handle accepts only `abortHandle` and `deleteHandle`.
 *
 * @see websocket.h `WebSocketEndClientHandshake`
 * @category handshake
 * @since 0.1.0
 */
export const endClientHandshake: {
  /** Data-last. */
  (response: ClientHandshakeResponse): (
    handle: ClientHandle
  ) => Effect.Effect<
    ClientHandshakeResult,
    InvalidProtocolFormat | UnsupportedSubprotocol | UnsupportedExtension | InvalidParameter | InvalidProtocolOperation
  >
  /** Data-first. */
  (handle: ClientHandle, response: ClientHandshakeResponse): Effect.Effect<
    ClientHandshakeResult,
    InvalidProtocolFormat | UnsupportedSubprotocol | UnsupportedExtension | InvalidParameter | InvalidProtocolOperation
  >
} = dual(
  (args) => isHandle(args[0]),
  (handle: ClientHandle, response: ClientHandshakeResponse) => endClient(impl(handle), response)
)

/**
 * What {@link beginServerHandshake} takes: every header of the client's upgrade request (the
 * application has checked the method, target and HTTP version), and the subprotocol and
 * extensions the application selected from the client's offer.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerHandshakeOptions {
  readonly requestHeaders: ReadonlyArray<HttpHeader.HttpHeader>
  /** The selected subprotocol; it must be one the client offered. */
  readonly subprotocol?: string | undefined
  /**
   * The selected extensions with their response parameters; each must have been offered, and
   * selected once. The engine implements no extension: one selected here is the application's to
   * implement (websocket.h leaves the selection to it), and the session still refuses a frame
   * with a reserved bit set (RSV1-3) with 1002.
   */
  readonly extensions?: ReadonlyArray<string> | undefined
}

/**
 * What {@link beginServerHandshake} returns.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerHandshakeResponse {
  /**
   * The headers of the `101 Switching Protocols` response: `Connection`, `Upgrade`,
   * `Sec-WebSocket-Accept`, and `Sec-WebSocket-Protocol` / `Sec-WebSocket-Extensions` when
   * selected. The application writes the status line itself.
   */
  readonly responseHeaders: ReadonlyArray<HttpHeader.HttpHeader>
}

const beginServer = Effect.fnUntraced(function*(handle: HandleImpl, given: ServerHandshakeOptions) {
  yield* requireState(handle, "beginServerHandshake", HandleState.Created)
  yield* requireKind(handle, "server", "beginServerHandshake")
  // (untyped callers may give nothing: the missing header list is malformed, not a crash)
  const selection = yield* readSelection(given ?? ({} as ServerHandshakeOptions))
  // (the application's own mistakes above leave the handle as it was; the request fails it)
  return yield* oneCallAtATime(
    handle,
    "beginServerHandshake",
    failsHandle(handle, HandleState.Created, answerRequest(handle, selection))
  )
})

/** The options of {@link beginServerHandshake} with the application's selection decoded. */
interface ServerSelection {
  readonly options: ServerHandshakeOptions
  readonly subprotocol: string | undefined
  readonly extensions: ReadonlyArray<HandshakeHeaders.Extension>
}

/** Checks what the application gives {@link beginServerHandshake}, before the request. */
const readSelection = Effect.fnUntraced(function*(given: ServerHandshakeOptions) {
  const options = yield* Handshake.readOptions("options", given, ["requestHeaders", "subprotocol", "extensions"])
  const subprotocol = options.subprotocol === undefined
    ? undefined
    : yield* Handshake.decodeParameter(HandshakeHeaders.SecWebSocketProtocolResponse, "subprotocol", options.subprotocol)
  const extensions: Array<HandshakeHeaders.Extension> = []
  for (const [i, value] of (yield* Handshake.listParameter("extensions", options.extensions)).entries()) {
    extensions.push(yield* Handshake.decodeExtensionParameter(`extensions[${i}]`, value))
  }
  const repeated = Token.firstRepeated(extensions.map((e) => e.name))
  if (repeated !== -1) {
    const name = JSON.stringify(extensions[repeated]!.name)
    return yield* new InvalidParameter({ parameter: `extensions[${repeated}]`, message: `extension ${name} is selected twice` })
  }
  return { options, subprotocol, extensions } satisfies ServerSelection
})

/** The client's request checked against the selection, and the response headers rendered. */
const answerRequest = Effect.fnUntraced(function*(handle: HandleImpl, { extensions, options, subprotocol }: ServerSelection) {
  const { key, offeredExtensions, offeredSubprotocols } = yield* Handshake.checkRequest(() => options.requestHeaders)
  const accept = yield* Handshake.computeAccept(handle.crypto, key)
  // (as in checkResponse: a handle deleted meanwhile is left as it is)
  yield* requireState(handle, "beginServerHandshake", HandleState.Created)
  const responseHeaders: Array<HttpHeader.HttpHeader> = [
    { name: "Connection", value: "Upgrade" },
    { name: "Upgrade", value: "websocket" },
    { name: "Sec-WebSocket-Accept", value: accept }
  ]
  if (subprotocol !== undefined) {
    if (!offeredSubprotocols.includes(subprotocol)) {
      return yield* new UnsupportedSubprotocol({
        offered: offeredSubprotocols,
        selected: subprotocol,
        message: offeredSubprotocols.length === 0
          ? `subprotocol "${subprotocol}" was selected but the client offered none`
          : `subprotocol "${subprotocol}" was selected but the client offered only: ${offeredSubprotocols.join(", ")}`
      })
    }
    responseHeaders.push({ name: "Sec-WebSocket-Protocol", value: subprotocol })
  }
  for (const extension of extensions) {
    if (!offeredExtensions.includes(extension.name)) {
      return yield* new UnsupportedExtension({
        offered: offeredExtensions,
        selected: extension.name,
        message: `extension "${extension.name}" was selected but the client did not offer it`
      })
    }
  }
  if (extensions.length > 0) {
    responseHeaders.push({
      name: "Sec-WebSocket-Extensions",
      value: extensions.map(HandshakeHeaders.formatExtension).join(", ")
    })
  }
  handle.state = HandleState.HandshakeStarted
  return { responseHeaders } satisfies ServerHandshakeResponse
})

/**
 * Starts the server side of the opening handshake: checks the client's request headers
 * (`Host`, `Upgrade: websocket`, `Connection: Upgrade`, a `Sec-WebSocket-Key` of 16 bytes,
 * `Sec-WebSocket-Version: 13`, well-formed `Sec-WebSocket-Protocol` / `-Extensions`) and the
 * application's selection, and returns the headers of the 101 response.
 *
 * Fails with `InvalidProtocolFormat` (answer 400; `header` names the culprit),
 * `UnsupportedProtocolVersion` (answer 426 with `Sec-WebSocket-Version: 13` and
 * `Upgrade: websocket`; a missing or malformed version is an `InvalidProtocolFormat` naming
 * `Sec-WebSocket-Version`, answered 400 with `Sec-WebSocket-Version: 13`),
 * `UnsupportedSubprotocol` / `UnsupportedExtension` when the selection was not offered,
 * `InvalidParameter` when the selection is malformed, names an extension twice (or an option has
 * another name), and `InvalidProtocolOperation` unless the handle was just created, or while
 * another `beginServerHandshake` on it is under way (the first call's outcome holds). The
 * selection is checked before the request: an `InvalidParameter` or `InvalidProtocolOperation`
 * leaves the handle as it was; after any other failure the handle accepts only `abortHandle` and
 * `deleteHandle`.
 *
 * The engine implements no extension: one selected here is the application's to implement, and
 * the session refuses a frame with a reserved bit set (RSV1-3) with 1002 all the same.
 *
 * @see websocket.h `WebSocketBeginServerHandshake`
 * @category handshake
 * @since 0.1.0
 */
export const beginServerHandshake: {
  /** Data-last. */
  (options: ServerHandshakeOptions): (handle: ServerHandle) => Effect.Effect<
    ServerHandshakeResponse,
    | InvalidProtocolFormat
    | UnsupportedProtocolVersion
    | UnsupportedSubprotocol
    | UnsupportedExtension
    | InvalidParameter
    | InvalidProtocolOperation
  >
  /** Data-first. */
  (handle: ServerHandle, options: ServerHandshakeOptions): Effect.Effect<
    ServerHandshakeResponse,
    | InvalidProtocolFormat
    | UnsupportedProtocolVersion
    | UnsupportedSubprotocol
    | UnsupportedExtension
    | InvalidParameter
    | InvalidProtocolOperation
  >
} = dual(
  (args) => isHandle(args[0]),
  (handle: ServerHandle, options: ServerHandshakeOptions) => beginServer(impl(handle), options)
)

/**
 * Completes the server side of the opening handshake and opens the session; optional, since the
 * first session call does the same. Idempotent once the session is open.
 *
 * @see websocket.h `WebSocketEndServerHandshake`
 * @category handshake
 * @since 0.1.0
 */
export const endServerHandshake = (handle: ServerHandle): Effect.Effect<void, InvalidProtocolOperation> => {
  const h = impl(handle)
  return Effect.andThen(
    Effect.andThen(
      requireKind(h, "server", "endServerHandshake"),
      requireState(
        h,
        "endServerHandshake",
        HandleState.HandshakeStarted,
        HandleState.Open,
        HandleState.CloseSent,
        HandleState.CloseReceived,
        HandleState.Closed
      )
    ),
    Effect.sync(() => {
      if (h.state === HandleState.HandshakeStarted) h.state = HandleState.Open
    })
  )
}

/**
 * The global properties {@link getGlobalProperty} reads.
 *
 * @see websocket.h `WEB_SOCKET_KEEPALIVE_INTERVAL_PROPERTY_TYPE` (5),
 * `WEB_SOCKET_SUPPORTED_VERSIONS_PROPERTY_TYPE` (6)
 * @category models
 * @since 0.1.0
 */
export type GlobalProperty = "KeepaliveInterval" | "SupportedVersions"

/**
 * Reads a global property.
 *
 * - `"SupportedVersions"`: the protocol versions spoken, `[13]`.
 * - `"KeepaliveInterval"`: milliseconds between keepalive frames, from the config value
 *   `WEBSOCKET_KEEPALIVE_INTERVAL` (the registry value `KeepaliveInterval` of Windows), 30000 by
 *   default, raised to 15000 when lower. An unreadable value fails with `InvalidParameter`.
 *
 * @see websocket.h `WebSocketGetGlobalProperty`
 * @category getters
 * @since 0.1.0
 */
export const getGlobalProperty: {
  (property: "SupportedVersions"): Effect.Effect<ReadonlyArray<number>>
  (property: "KeepaliveInterval"): Effect.Effect<number, InvalidParameter>
  (property: GlobalProperty): Effect.Effect<number | ReadonlyArray<number>, InvalidParameter>
} = ((property: GlobalProperty) => {
  switch (property) {
    case "SupportedVersions":
      return Effect.succeed([HandshakeHeaders.SUPPORTED_VERSION])
    case "KeepaliveInterval":
      return Effect.flatMap(
        Effect.mapError(
          Config.Int("WEBSOCKET_KEEPALIVE_INTERVAL").pipe(
            Config.withDefault(Property.DEFAULT_KEEPALIVE_INTERVAL)
          ),
          (cause: Config.ConfigError) =>
            new InvalidParameter({
              parameter: "KeepaliveInterval",
              message: `WEBSOCKET_KEEPALIVE_INTERVAL: ${cause.message}`,
              cause
            })
        ),
        (value) => Handshake.decodeParameter(Property.KeepaliveInterval, "KeepaliveInterval", value)
      )
    default:
      return Effect.fail(
        new InvalidParameter({
          parameter: "property",
          message: `${String(property)} is not a global property: use "KeepaliveInterval" or "SupportedVersions"`
        })
      )
  }
}) as never

// ---------------------------------------------------------------------------------------------
// Session functions
// ---------------------------------------------------------------------------------------------

/**
 * The body of a Close send: the status code and an optional reason (a string, or UTF-8 bytes) of
 * at most 123 bytes.
 *
 * @see websocket.h `WEB_SOCKET_BUFFER.CloseStatus` (`usStatus`, `pbReason`, `ulReasonLength`)
 * @category models
 * @since 0.1.0
 */
export interface CloseBuffer {
  readonly status: number
  readonly reason?: string | Uint8Array | undefined
}

const utf8 = new TextEncoder()

/**
 * The C value of a buffer type given by name or value (signed or not: `BufferType.unsigned`),
 * `undefined` for what names none: a string that is not a member's own name (a typo, or
 * `"toString"`), or a value that is no member's.
 */
const bufferTypeOf = (type: unknown): number | undefined => {
  if (typeof type === "string") {
    return Object.hasOwn(BufferType.BufferType, type) ? BufferType.BufferType[type as BufferType.BufferTypeName] : undefined
  }
  return typeof type === "number" && BufferType.nameOf(type) !== undefined ? BufferType.unsigned(type) : undefined
}

const describeBufferType = (type: unknown): string =>
  typeof type === "string"
    ? JSON.stringify(type)
    : Number.isInteger(type) && (type as number) >= 0
    ? `0x${(type as number).toString(16)}`
    : String(type)

const isCloseBuffer = (u: unknown): u is CloseBuffer =>
  typeof u === "object" && u !== null && typeof (u as CloseBuffer).status === "number" &&
  ((u as CloseBuffer).reason === undefined || typeof (u as CloseBuffer).reason === "string" ||
    (u as CloseBuffer).reason instanceof Uint8Array)

const sendImpl = (
  handle: Handle,
  bufferType: BufferType.BufferTypeName | BufferType.BufferType,
  buffer: Uint8Array | CloseBuffer | undefined,
  context: unknown
): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter> =>
  Effect.suspend(() => {
    const h = impl(handle)
    const type = bufferTypeOf(bufferType)
    if (type === undefined) {
      return Effect.fail(
        new InvalidParameter({
          parameter: "bufferType",
          message: `${describeBufferType(bufferType)} is not a buffer type: use ${Object.keys(BufferType.BufferType).map((name) => JSON.stringify(name)).join(", ")} (or its C value, 0x80000000-0x80000006, signed or not)`
        })
      )
    }
    let payload: Uint8Array | undefined
    let closeStatus: number | undefined
    if (buffer instanceof Uint8Array || buffer === undefined) {
      payload = buffer
    } else if (!isCloseBuffer(buffer)) {
      return Effect.fail(
        new InvalidParameter({
          parameter: "buffer",
          message: "a buffer is a Uint8Array, or for a Close { status: number, reason?: string | Uint8Array }"
        })
      )
    } else if (type === BufferType.BufferType.Close) {
      closeStatus = buffer.status
      payload = typeof buffer.reason === "string" ? utf8.encode(buffer.reason) : buffer.reason
    } else {
      return Effect.fail(new InvalidParameter({ parameter: "buffer", message: "a close buffer goes with the Close buffer type only" }))
    }
    if (payload !== undefined && isDetached(payload.buffer)) return Effect.fail(detachedError("buffer", "send"))
    return h.engine.send(type, payload, closeStatus, context) === Status.Ok
      ? Effect.void
      : Effect.fail(engineError(h.engine, "send", "buffer") as InvalidProtocolOperation | InvalidParameter)
  })

/**
 * Queues one send: a data frame (`Utf8Message`, `Utf8Fragment`, `BinaryMessage`,
 * `BinaryFragment`; a fragment leaves the message open, the next data send continues it), a Ping
 * (`PingPong`), an unsolicited Pong (`UnsolicitedPong`), or a Close (`Close` with a
 * {@link CloseBuffer}, or no buffer for an empty body). websocket.h sends pings and pongs without
 * a body (its buffer must be NULL); here they may carry one of up to 125 bytes, as RFC 6455 allows
 * (section 5.5.2), and none is the same empty frame. Nothing is written until the driver runs the
 * send queue; `buffer` must stay untouched until the matching `IndicateSendComplete`.
 *
 * Fails with `InvalidProtocolOperation` when another send is outstanding, data follows a sent
 * Close, text and binary mix within a message, or the handle is not open (a server handle whose
 * handshake began is opened implicitly); with `InvalidParameter` for an unknown buffer type, a
 * control payload over 125 bytes, a close status that may not be sent, or a reason over 123 bytes.
 *
 * @see websocket.h `WebSocketSend`
 * @category session
 * @since 0.1.0
 */
export const send: {
  /** Data-last. */
  (
    bufferType: BufferType.BufferTypeName | BufferType.BufferType,
    buffer?: Uint8Array | CloseBuffer,
    context?: unknown
  ): (handle: Handle) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter>
  /** Data-first. */
  (
    handle: Handle,
    bufferType: BufferType.BufferTypeName | BufferType.BufferType,
    buffer?: Uint8Array | CloseBuffer,
    context?: unknown
  ): Effect.Effect<void, InvalidProtocolOperation | InvalidParameter>
} = dual((args) => isHandle(args[0]), sendImpl)

/**
 * Queues one receive. It completes with exactly one `IndicateReceiveComplete`: a chunk of a
 * message (never larger than the receive buffer size, text split only between code points), a
 * Pong, or a Close. Pings are answered on the receive queue without completing it. With `buffer`,
 * data is copied there (at most its length per chunk; text is split between code points when the
 * buffer holds at least 4 bytes, the longest one), and so is a Pong's payload or a close reason
 * when it fits (else `data` is a view of it in the handle's receive buffer: it is never cut);
 * without, `data` is a view into the handle's receive buffer.
 *
 * Fails with `InvalidProtocolOperation` when another receive is outstanding, the peer's Close was
 * already received, or the handle is not open; with `InvalidParameter` for an empty buffer.
 *
 * @see websocket.h `WebSocketReceive`
 * @category session
 * @since 0.1.0
 */
export const receive: {
  /** Data-last. */
  (buffer?: Uint8Array, context?: unknown): (
    handle: Handle
  ) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter>
  /** Data-first. */
  (handle: Handle, buffer?: Uint8Array, context?: unknown): Effect.Effect<
    void,
    InvalidProtocolOperation | InvalidParameter
  >
} = dual((args) => isHandle(args[0]), (handle: Handle, buffer?: Uint8Array, context?: unknown) =>
  Effect.suspend(() => {
    const h = impl(handle)
    if (buffer !== undefined && !(buffer instanceof Uint8Array)) {
      return Effect.fail(new InvalidParameter({ parameter: "buffer", message: "a receive buffer is a Uint8Array (or none)" }))
    }
    if (buffer !== undefined && isDetached(buffer.buffer)) return Effect.fail(detachedError("buffer", "receive"))
    return h.engine.receive(buffer, context) === Status.Ok
      ? Effect.void
      : Effect.fail(engineError(h.engine, "receive", "buffer") as InvalidProtocolOperation | InvalidParameter)
  }))

/** The failure for a buffer given to `operation` that was detached (transferred): its bytes are gone. */
const detachedError = (parameter: string, operation: "send" | "receive", when = "") =>
  new InvalidParameter({
    parameter,
    message: `the buffer given to ${operation} was detached (transferred)${when}: its bytes are gone`
  })

const NO_ACTION: Action.NoAction = { _tag: "NoAction", action: Action.ActionCode.NoAction }

class TokenImpl implements Action.ActionToken {
  readonly [Action.TokenTypeId] = Action.TokenTypeId
  readonly id: number
  readonly owner: HandleImpl
  constructor(id: number, owner: HandleImpl) {
    this.id = id
    this.owner = owner
  }
}

/** Turns the engine's action record into an `Action` value. */
const toAction = (handle: HandleImpl, record: ActionRecord): Action.Action => {
  const token = new TokenImpl(record.id, handle)
  switch (record.action) {
    case Action.ActionCode.SendToNetwork:
      return {
        _tag: "SendToNetwork",
        action: Action.ActionCode.SendToNetwork,
        queue: record.queue === Action.ActionQueue.Send ? "Send" : "Receive",
        bufferType: record.bufferType as BufferType.BufferType,
        buffers: record.bufferCount === 2 ? [record.buffer0, record.buffer1] : [record.buffer0],
        applicationContext: record.context,
        token
      }
    case Action.ActionCode.IndicateSendComplete:
      return {
        _tag: "IndicateSendComplete",
        action: Action.ActionCode.IndicateSendComplete,
        bufferType: record.bufferType as BufferType.BufferType,
        applicationContext: record.context,
        token
      }
    case Action.ActionCode.ReceiveFromNetwork:
      return {
        _tag: "ReceiveFromNetwork",
        action: Action.ActionCode.ReceiveFromNetwork,
        buffer: record.buffer0,
        applicationContext: record.context,
        token
      }
    case Action.ActionCode.IndicateReceiveComplete:
      return {
        _tag: "IndicateReceiveComplete",
        action: Action.ActionCode.IndicateReceiveComplete,
        bufferType: record.bufferType as BufferType.BufferType,
        data: record.buffer0,
        closeStatus: record.bufferType === BufferType.BufferType.Close ? record.closeStatus : undefined,
        applicationContext: record.context,
        token
      }
    default:
      return NO_ACTION
  }
}

/** The C value of an action queue given by name or value (an own key only: not `"toString"`). */
const queueCode = (queue: unknown): number | undefined =>
  typeof queue === "string"
    ? Object.hasOwn(Action.ActionQueue, queue) ? Action.ActionQueue[queue as Action.ActionQueue] : undefined
    : queue === 1 || queue === 2 || queue === 3
    ? queue
    : undefined

const describeQueue = (queue: unknown): string => typeof queue === "string" ? JSON.stringify(queue) : String(queue)

/**
 * Hands out the next action of `queue` (`"Send"`, `"Receive"` or `"All"`, or its C value 1, 2 or 3;
 * anything else is an `InvalidParameter`): what the driver must do
 * next. At most one action per queue is out at a time; the next appears once it is completed with
 * {@link completeAction}. Buffers in the action are views valid until then.
 *
 * The pong that answers a ping is an action of the receive queue (`queue: "Receive"`). One that had
 * to wait for a send's frame to leave the wire (frames are never interleaved) is also handed out
 * by the send queue when that has nothing of its own: a receive queue that waits for the network
 * meanwhile would hold it until the peer sent more, and a peer that waits for the pong never
 * would. A driver writes it as any `SendToNetwork` (its `queue` says whose it is).
 *
 * Fails, on the receive side, when the peer broke RFC 6455: `InvalidProtocolFormat` for malformed
 * data (1002; 1007 for bad UTF-8; 1009 for a message over `maxMessageSize`) and
 * `InvalidProtocolOperation` for an illegal frame sequence (1002); `closeStatus` carries the close
 * code to send. The failure repeats until the handle is aborted ({@link abortHandle}), after which
 * the queues drain.
 *
 * @see websocket.h `WebSocketGetAction`
 * @category session
 * @since 0.1.0
 */
export const getAction: {
  /** Data-last. */
  (queue: Action.ActionQueue | Action.ActionQueueCode): (
    handle: Handle
  ) => Effect.Effect<Action.Action, InvalidProtocolFormat | InvalidProtocolOperation | InvalidParameter>
  /** Data-first. */
  (handle: Handle, queue: Action.ActionQueue | Action.ActionQueueCode): Effect.Effect<
    Action.Action,
    InvalidProtocolFormat | InvalidProtocolOperation | InvalidParameter
  >
} = dual(2, (handle: Handle, queue: Action.ActionQueue | Action.ActionQueueCode) =>
  Effect.suspend((): Effect.Effect<Action.Action, InvalidProtocolFormat | InvalidProtocolOperation | InvalidParameter> => {
    const h = impl(handle)
    const record = new ActionRecord()
    const code = queueCode(queue)
    if (code === undefined) {
      return Effect.fail(
        new InvalidParameter({
          parameter: "queue",
          message: `${describeQueue(queue)} is not an action queue: use "Send", "Receive" or "All" (or 1, 2, 3)`
        })
      )
    }
    // A buffer lent to the handle must stay until its operation completes: one transferred
    // meanwhile is the caller's mistake, reported rather than sent as garbage (or thrown)
    const detached = h.engine.detachedBuffer
    if (detached !== undefined) {
      return Effect.fail(detachedError("buffer", detached, `${detached === "send" ? " or shrunk" : ""} before its operation completed`))
    }
    return h.engine.getAction(code, record) === Status.Ok
      ? Effect.succeed(toAction(h, record))
      : Effect.fail(engineError(h.engine, "getAction", "queue") as InvalidProtocolFormat | InvalidProtocolOperation)
  }))

/**
 * Reports what the driver did with an action: the bytes written for `SendToNetwork` (fewer than
 * handed out cancels the send; when a frame went out in part, later sends fail, as no frame may
 * follow an incomplete one, while 0 bytes of a frame's first action leave the wire usable), the
 * bytes read for `ReceiveFromNetwork` (0: the transport ended, and the receive completes with a
 * `Close` of status 1006), 0 for the others. A token can be used
 * once: a second use, or a token of another handle, fails with `InvalidProtocolOperation`.
 *
 * @see websocket.h `WebSocketCompleteAction`
 * @category session
 * @since 0.1.0
 */
export const completeAction: {
  /** Data-last. */
  (token: Action.ActionToken, bytesTransferred: number): (
    handle: Handle
  ) => Effect.Effect<void, InvalidProtocolOperation | InvalidParameter>
  /** Data-first. */
  (handle: Handle, token: Action.ActionToken, bytesTransferred: number): Effect.Effect<
    void,
    InvalidProtocolOperation | InvalidParameter
  >
} = dual(3, (handle: Handle, token: Action.ActionToken, bytesTransferred: number) =>
  Effect.suspend(() => {
    const h = impl(handle)
    if (!(token instanceof TokenImpl) || token.owner !== h) {
      return Effect.fail(
        new InvalidProtocolOperation({
          operation: "completeAction",
          state: h.stateName,
          message: "completeAction is not allowed: the token does not belong to this handle"
        })
      )
    }
    if (h.state === HandleState.Deleted) {
      return Effect.fail(
        new InvalidProtocolOperation({
          operation: "completeAction",
          state: h.stateName,
          message: "completeAction is not allowed: the handle was deleted"
        })
      )
    }
    return h.engine.completeAction(token.id, bytesTransferred) === Status.Ok
      ? Effect.void
      : Effect.fail(engineError(h.engine, "completeAction", "bytesTransferred") as InvalidProtocolOperation | InvalidParameter)
  }))

/**
 * Aborts the session: no Close frame is sent; new sends and receives fail; queued operations stay
 * retrievable through {@link getAction} so the driver can finish them (the outstanding send
 * completes without being written, the outstanding receive completes with a `Close` of status
 * 1006). A no-op before the handshake completed.
 *
 * @see websocket.h `WebSocketAbortHandle`
 * @category session
 * @since 0.1.0
 */
export const abortHandle = (handle: Handle): Effect.Effect<void> => Effect.sync(() => impl(handle).engine.abort())
