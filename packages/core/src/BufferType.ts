/**
 * The kinds of buffer a send takes and a receive delivers (websocket.h `WEB_SOCKET_BUFFER_TYPE`),
 * with the C numeric values.
 *
 * @since 0.1.0
 */

/**
 * Buffer types with their websocket.h values.
 *
 * | member | websocket.h | on send | on receive |
 * | --- | --- | --- | --- |
 * | `Utf8Message` | `WEB_SOCKET_UTF8_MESSAGE_BUFFER_TYPE` 0x80000000 | last text frame (FIN) | last chunk of a text message |
 * | `Utf8Fragment` | `WEB_SOCKET_UTF8_FRAGMENT_BUFFER_TYPE` 0x80000001 | text frame, more follow | a chunk of a text message, more follow |
 * | `BinaryMessage` | `WEB_SOCKET_BINARY_MESSAGE_BUFFER_TYPE` 0x80000002 | last binary frame | last chunk of a binary message |
 * | `BinaryFragment` | `WEB_SOCKET_BINARY_FRAGMENT_BUFFER_TYPE` 0x80000003 | binary frame, more follow | a chunk of a binary message, more follow |
 * | `Close` | `WEB_SOCKET_CLOSE_BUFFER_TYPE` 0x80000004 | Close frame | the peer's Close (or 1006 when the transport ended) |
 * | `PingPong` | `WEB_SOCKET_PING_PONG_BUFFER_TYPE` 0x80000005 | Ping frame | a Pong arrived |
 * | `UnsolicitedPong` | `WEB_SOCKET_UNSOLICITED_PONG_BUFFER_TYPE` 0x80000006 | unsolicited Pong (keepalive) | (not delivered) |
 *
 * @see websocket.h `WEB_SOCKET_BUFFER_TYPE`
 * @category constants
 * @since 0.1.0
 */
export const BufferType = {
  /** `WEB_SOCKET_UTF8_MESSAGE_BUFFER_TYPE` */
  Utf8Message: 0x80000000,
  /** `WEB_SOCKET_UTF8_FRAGMENT_BUFFER_TYPE` */
  Utf8Fragment: 0x80000001,
  /** `WEB_SOCKET_BINARY_MESSAGE_BUFFER_TYPE` */
  BinaryMessage: 0x80000002,
  /** `WEB_SOCKET_BINARY_FRAGMENT_BUFFER_TYPE` */
  BinaryFragment: 0x80000003,
  /** `WEB_SOCKET_CLOSE_BUFFER_TYPE` */
  Close: 0x80000004,
  /** `WEB_SOCKET_PING_PONG_BUFFER_TYPE`: a Ping when sent, a Pong when received. */
  PingPong: 0x80000005,
  /** `WEB_SOCKET_UNSOLICITED_PONG_BUFFER_TYPE` */
  UnsolicitedPong: 0x80000006
} as const

/**
 * One of the {@link BufferType} values.
 *
 * @category models
 * @since 0.1.0
 */
export type BufferType = (typeof BufferType)[keyof typeof BufferType]

/**
 * The name of a buffer type, e.g. `"Utf8Message"`.
 *
 * @category models
 * @since 0.1.0
 */
export type BufferTypeName = keyof typeof BufferType

/**
 * A buffer type value as this module holds it, unsigned: C code holds the enum as a signed 32-bit
 * integer (`-2147483648` for `0x80000000`), the same value. Other numbers are returned as given.
 *
 * @category getters
 * @since 0.1.0
 */
export const unsigned = (value: number): number => Number.isInteger(value) && isSigned(value) ? value + 2 ** 32 : value

/** Whether `value` is in the range of a signed 32-bit integer's negative values (see {@link unsigned}). */
const isSigned = (value: number): boolean => value < 0 && value >= -(2 ** 31)

/**
 * The name of a buffer type value (signed or not, see {@link unsigned}), or `undefined` when
 * `value` is not one.
 *
 * @category getters
 * @since 0.1.0
 */
export const nameOf = (value: number): BufferTypeName | undefined => {
  const wanted = unsigned(value)
  return (Object.keys(BufferType) as Array<BufferTypeName>).find((name) => BufferType[name] === wanted)
}

/**
 * Whether a buffer type carries message data (text or binary, fragment or message).
 *
 * @category guards
 * @since 0.1.0
 */
export const isData = (type: number): boolean =>
  // (as the engine hands them out first: a connection asks this of every message)
  (type >= BufferType.Utf8Message && type <= BufferType.BinaryFragment) ||
  (isSigned(type) && isData(type + 2 ** 32))

/**
 * Whether a buffer type is text (`Utf8Message` or `Utf8Fragment`).
 *
 * @category guards
 * @since 0.1.0
 */
export const isText = (type: number): boolean =>
  type === BufferType.Utf8Message || type === BufferType.Utf8Fragment ||
  (isSigned(type) && isText(type + 2 ** 32))

/**
 * Whether a buffer type ends a message (`Utf8Message` or `BinaryMessage`).
 *
 * @category guards
 * @since 0.1.0
 */
export const isMessageEnd = (type: number): boolean =>
  type === BufferType.Utf8Message || type === BufferType.BinaryMessage ||
  (isSigned(type) && isMessageEnd(type + 2 ** 32))
