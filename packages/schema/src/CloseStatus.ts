/**
 * Close codes and close reasons as a `WebSocketSend` of the `CLOSE` buffer type accepts them
 * (RFC 6455 section 7.4, the IANA close-code registry, websocket.h `WEB_SOCKET_CLOSE_STATUS` and
 * `WEB_SOCKET_MAX_CLOSE_REASON_LENGTH`).
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The longest close reason in UTF-8 bytes: the 125-byte control payload less the 2-byte code.
 *
 * @see websocket.h `WEB_SOCKET_MAX_CLOSE_REASON_LENGTH`
 * @category constants
 * @since 0.1.0
 */
export const MAX_CLOSE_REASON_LENGTH = 123

/**
 * Whether `code` may travel in a Close frame (RFC 6455 section 7.4): 1000-1003, 1007-1014 and
 * 3000-4999. 1004 is reserved; 1005, 1006 and 1015 are local indications that "MUST NOT be set as
 * a status code in a Close control frame by an endpoint".
 *
 * @category guards
 * @since 0.1.0
 */
export const isWireCloseCode = (code: number): boolean =>
  Number.isInteger(code) &&
  ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999))

/**
 * A close code that may be sent and received on the wire (see {@link isWireCloseCode}).
 *
 * @category schemas
 * @since 0.1.0
 */
export const CloseCode = Schema.Number.check(
  Schema.makeFilter((code: number) =>
    isWireCloseCode(code) ||
    `close code ${code} may not be sent: use 1000-1003, 1007-1014 or 3000-4999 (1004 is reserved; 1005, 1006 and 1015 are local only)`
  )
)

/**
 * A close code a connection may be asked to close with: one that travels on the wire
 * ({@link CloseCode}), or 1005 for an empty Close (no code, no reason: `websocket.h`'s NULL close
 * buffer), as `Connection.close(1005)` in `@effect-websocket/core` sends.
 *
 * @category schemas
 * @since 0.1.0
 */
export const CloseRequestCode = Schema.Number.check(
  Schema.makeFilter((code: number) =>
    isWireCloseCode(code) || code === 1005 ||
    `close code ${code} may not be sent: use 1000-1003, 1007-1014 or 3000-4999, or 1005 for an empty Close (1004 is reserved; 1006 and 1015 are local only)`
  )
)

const encoder = new TextEncoder()

/**
 * The UTF-8 length of `s` in bytes.
 *
 * @category combinators
 * @since 0.1.0
 */
export const utf8Length = (s: string): number => encoder.encode(s).length

/**
 * `reason` cut to at most {@link MAX_CLOSE_REASON_LENGTH} UTF-8 bytes, never inside a character,
 * with each lone surrogate as U+FFFD: a reason made from text of any length (an error's message,
 * say) that a Close frame can carry, where {@link CloseReason} refuses it.
 *
 * @category combinators
 * @since 0.1.0
 */
export const truncateReason = (reason: string): string => {
  // (each code unit is at least a byte: from the 124th on, none can be kept)
  const wellFormed = reason.slice(0, MAX_CLOSE_REASON_LENGTH + 1).toWellFormed()
  // The cut is counted here, not taken from `TextEncoder.encodeInto`'s `read`: from Node 25.4 that
  // can stop before a character that still fits (nodejs/node#65994).
  let bytes = 0
  let end = 0
  while (end < wellFormed.length) {
    const unit = wellFormed.charCodeAt(end)
    // (well formed: a high surrogate starts a pair, 4 bytes for 2 code units)
    const size = unit < 0x80 ? 1 : unit < 0x800 ? 2 : unit >= 0xd800 && unit <= 0xdbff ? 4 : 3
    if (bytes + size > MAX_CLOSE_REASON_LENGTH) break
    bytes += size
    end += size === 4 ? 2 : 1
  }
  return wellFormed.slice(0, end)
}

/**
 * A close reason: well-formed Unicode of at most {@link MAX_CLOSE_REASON_LENGTH} UTF-8 bytes
 * (RFC 6455 section 5.5: control frame payloads are at most 125 bytes).
 *
 * @category schemas
 * @since 0.1.0
 */
export const CloseReason = Schema.String.check(
  Schema.makeFilter((s: string) => {
    if (!s.isWellFormed()) return "close reason contains a lone surrogate, which has no UTF-8 encoding"
    const length = utf8Length(s)
    return length <= MAX_CLOSE_REASON_LENGTH ||
      `close reason is ${length} UTF-8 bytes, more than the ${MAX_CLOSE_REASON_LENGTH} allowed`
  })
)
