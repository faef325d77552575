/**
 * The failures of the websocket.h functions, one tagged error class per HRESULT, so callers can
 * `Effect.catchTag("InvalidProtocolFormat", ...)` and each function's error channel lists exactly
 * what it can fail with. Every error carries its winerror.h value as `hresult` and a `message`
 * that says what was wrong.
 *
 * @since 0.1.0
 */
import { Predicate, Schema } from "effect"

/**
 * The HRESULT values of websocket.h failures, from winerror.h, as unsigned 32-bit numbers.
 *
 * @category constants
 * @since 0.1.0
 */
export const HRESULT = {
  /** `E_INVALID_PROTOCOL_OPERATION`: the call is not allowed in the handle's state. */
  E_INVALID_PROTOCOL_OPERATION: 0x83760001,
  /** `E_INVALID_PROTOCOL_FORMAT`: malformed handshake headers or frames. */
  E_INVALID_PROTOCOL_FORMAT: 0x83760002,
  /** `E_PROTOCOL_EXTENSIONS_NOT_SUPPORTED` (documented as `E_UNSUPPORTED_EXTENSION`). */
  E_PROTOCOL_EXTENSIONS_NOT_SUPPORTED: 0x83760003,
  /** `E_SUBPROTOCOL_NOT_SUPPORTED` (documented as `E_UNSUPPORTED_SUBPROTOCOL`). */
  E_SUBPROTOCOL_NOT_SUPPORTED: 0x83760004,
  /** `E_PROTOCOL_VERSION_NOT_SUPPORTED`: the peer speaks another protocol version. */
  E_PROTOCOL_VERSION_NOT_SUPPORTED: 0x83760005,
  /** `E_INVALIDARG`: a parameter is out of range or malformed. */
  E_INVALIDARG: 0x80070057
} as const

/**
 * A string identifying the errors of this module.
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId = "~@effect-websocket/core/WebSocketError"

/**
 * Received data (handshake headers or frames) violates RFC 6455: a missing or malformed
 * header, a wrong `Sec-WebSocket-Accept`, a bad frame (frames out of order are an
 * {@link InvalidProtocolOperation}). `header` names the header at fault during the handshake;
 * `closeStatus` is the close code to send where one applies (1002, 1007, 1009).
 *
 * @see websocket.h `E_INVALID_PROTOCOL_FORMAT` (0x83760002)
 * @category errors
 * @since 0.1.0
 */
export class InvalidProtocolFormat extends Schema.TaggedError<InvalidProtocolFormat>()("InvalidProtocolFormat", {
  message: Schema.String,
  header: Schema.optionalKey(Schema.String),
  closeStatus: Schema.optionalKey(Schema.Number),
  cause: Schema.optionalKey(Schema.Defect())
}) {
  /** `E_INVALID_PROTOCOL_FORMAT` */
  readonly hresult = HRESULT.E_INVALID_PROTOCOL_FORMAT
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * The call is not allowed now: out of order (`endClientHandshake` before
 * `beginClientHandshake`), a second outstanding operation, data after a Close was sent, or a
 * handle that was deleted or aborted. The caller's doing, but for one case of the peer's: frames
 * out of order (a continuation with no message to continue, a new message inside a fragmented
 * one), which the receive queue reports with `closeStatus` 1002 (websocket.h reports every other
 * bad frame as `InvalidProtocolFormat`).
 *
 * @see websocket.h `E_INVALID_PROTOCOL_OPERATION` (0x83760001)
 * @category errors
 * @since 0.1.0
 */
export class InvalidProtocolOperation extends Schema.TaggedError<InvalidProtocolOperation>()(
  "InvalidProtocolOperation",
  {
    message: Schema.String,
    operation: Schema.String,
    state: Schema.String,
    closeStatus: Schema.optionalKey(Schema.Number)
  }
) {
  /** `E_INVALID_PROTOCOL_OPERATION` */
  readonly hresult = HRESULT.E_INVALID_PROTOCOL_OPERATION
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * A subprotocol was selected that the other side did not offer.
 *
 * @see websocket.h `E_SUBPROTOCOL_NOT_SUPPORTED` (0x83760004), documented as
 * `E_UNSUPPORTED_SUBPROTOCOL`
 * @category errors
 * @since 0.1.0
 */
export class UnsupportedSubprotocol extends Schema.TaggedError<UnsupportedSubprotocol>()("UnsupportedSubprotocol", {
  message: Schema.String,
  offered: Schema.Array(Schema.String),
  selected: Schema.String
}) {
  /** `E_SUBPROTOCOL_NOT_SUPPORTED` */
  readonly hresult = HRESULT.E_SUBPROTOCOL_NOT_SUPPORTED
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * An extension was selected that the other side did not offer.
 *
 * @see websocket.h `E_PROTOCOL_EXTENSIONS_NOT_SUPPORTED` (0x83760003), documented as
 * `E_UNSUPPORTED_EXTENSION`
 * @category errors
 * @since 0.1.0
 */
export class UnsupportedExtension extends Schema.TaggedError<UnsupportedExtension>()("UnsupportedExtension", {
  message: Schema.String,
  offered: Schema.Array(Schema.String),
  selected: Schema.String
}) {
  /** `E_PROTOCOL_EXTENSIONS_NOT_SUPPORTED` */
  readonly hresult = HRESULT.E_PROTOCOL_EXTENSIONS_NOT_SUPPORTED
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * The client asked for a protocol version this implementation does not speak. A server answers
 * `426 Upgrade Required` with `Sec-WebSocket-Version` listing `supported` (RFC 6455 section 4.4)
 * and `Upgrade: websocket` (RFC 9110 section 15.5.22).
 *
 * @see websocket.h `E_PROTOCOL_VERSION_NOT_SUPPORTED` (0x83760005)
 * @category errors
 * @since 0.1.0
 */
export class UnsupportedProtocolVersion extends Schema.TaggedError<UnsupportedProtocolVersion>()(
  "UnsupportedProtocolVersion",
  {
    message: Schema.String,
    received: Schema.Number,
    supported: Schema.Array(Schema.Number)
  }
) {
  /** `E_PROTOCOL_VERSION_NOT_SUPPORTED` */
  readonly hresult = HRESULT.E_PROTOCOL_VERSION_NOT_SUPPORTED
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * A parameter given by the application is out of range or malformed: a handle property, a
 * subprotocol name, a close code. `parameter` names it.
 *
 * @see websocket.h `E_INVALIDARG` (0x80070057)
 * @category errors
 * @since 0.1.0
 */
export class InvalidParameter extends Schema.TaggedError<InvalidParameter>()("InvalidParameter", {
  message: Schema.String,
  parameter: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  /** `E_INVALIDARG` */
  readonly hresult = HRESULT.E_INVALIDARG
  /** @internal */
  readonly [TypeId] = TypeId
}

/**
 * Any failure of a websocket.h function.
 *
 * @category models
 * @since 0.1.0
 */
export type WebSocketError =
  | InvalidProtocolFormat
  | InvalidProtocolOperation
  | UnsupportedSubprotocol
  | UnsupportedExtension
  | UnsupportedProtocolVersion
  | InvalidParameter

/**
 * Whether `u` is one of the {@link WebSocketError}s.
 *
 * @category guards
 * @since 0.1.0
 */
export const isWebSocketError = (u: unknown): u is WebSocketError => Predicate.hasProperty(u, TypeId)
