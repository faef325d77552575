/**
 * Close status codes (websocket.h `WEB_SOCKET_CLOSE_STATUS`, RFC 6455 section 7.4) with the C
 * numeric values.
 *
 * @since 0.1.0
 */
import { CloseStatus as Schema } from "@effect-websocket/schema"

/**
 * Close status codes with their websocket.h names. `Empty` (1005), `Aborted` (1006) and
 * `SecureHandshakeError` (1015) are local indications that never travel on the wire.
 *
 * @see websocket.h `WEB_SOCKET_CLOSE_STATUS`
 * @category constants
 * @since 0.1.0
 */
export const CloseStatus = {
  /** 1000 `WEB_SOCKET_SUCCESS_CLOSE_STATUS`: normal closure. */
  Success: 1000,
  /** 1001 `WEB_SOCKET_ENDPOINT_UNAVAILABLE_CLOSE_STATUS`: going away. */
  EndpointUnavailable: 1001,
  /** 1002 `WEB_SOCKET_PROTOCOL_ERROR_CLOSE_STATUS` */
  ProtocolError: 1002,
  /** 1003 `WEB_SOCKET_INVALID_DATA_TYPE_CLOSE_STATUS`: a data type the endpoint cannot accept. */
  InvalidDataType: 1003,
  /** 1005 `WEB_SOCKET_EMPTY_CLOSE_STATUS`: the Close frame had no status (local only). */
  Empty: 1005,
  /** 1006 `WEB_SOCKET_ABORTED_CLOSE_STATUS`: closed without a Close frame (local only). */
  Aborted: 1006,
  /** 1007 `WEB_SOCKET_INVALID_PAYLOAD_CLOSE_STATUS`: e.g. text that is not UTF-8. */
  InvalidPayload: 1007,
  /** 1008 `WEB_SOCKET_POLICY_VIOLATION_CLOSE_STATUS` */
  PolicyViolation: 1008,
  /** 1009 `WEB_SOCKET_MESSAGE_TOO_BIG_CLOSE_STATUS` */
  MessageTooBig: 1009,
  /** 1010 `WEB_SOCKET_UNSUPPORTED_EXTENSIONS_CLOSE_STATUS`: the client expected extensions. */
  UnsupportedExtensions: 1010,
  /** 1011 `WEB_SOCKET_SERVER_ERROR_CLOSE_STATUS`: an unexpected condition. */
  ServerError: 1011,
  /** 1015 `WEB_SOCKET_SECURE_HANDSHAKE_ERROR_CLOSE_STATUS`: TLS failed (local only). */
  SecureHandshakeError: 1015
} as const

/**
 * One of the {@link CloseStatus} values.
 *
 * @category models
 * @since 0.1.0
 */
export type CloseStatus = (typeof CloseStatus)[keyof typeof CloseStatus]

/**
 * Whether `code` may travel in a Close frame: 1000-1003, 1007-1014, 3000-4999 (RFC 6455 section
 * 7.4).
 *
 * @category guards
 * @since 0.1.0
 */
export const isWireCloseCode: (code: number) => boolean = Schema.isWireCloseCode

/**
 * The longest close reason in UTF-8 bytes.
 *
 * @see websocket.h `WEB_SOCKET_MAX_CLOSE_REASON_LENGTH`
 * @category constants
 * @since 0.1.0
 */
export const MAX_CLOSE_REASON_LENGTH: number = Schema.MAX_CLOSE_REASON_LENGTH

/**
 * `reason` cut to at most {@link MAX_CLOSE_REASON_LENGTH} UTF-8 bytes, never inside a character,
 * with each lone surrogate as U+FFFD: a close reason made from text of any length, which `close`
 * would refuse (`InvalidParameter`), fits then, e.g.
 * `connection.close(1011, CloseStatus.truncateReason(error.message))`.
 *
 * @see websocket.h `WEB_SOCKET_MAX_CLOSE_REASON_LENGTH`
 * @category combinators
 * @since 0.1.0
 */
export const truncateReason: (reason: string) => string = Schema.truncateReason
