/**
 * The life cycle of a websocket.h handle (spec section 1.1) as integer states.
 *
 * @since 0.1.0
 */

/**
 * Handle states. `Failed` follows a failed `End*Handshake` / `BeginServerHandshake` and accepts
 * only abort and delete; `Deleted` follows `WebSocketDeleteHandle`.
 *
 * @since 0.1.0
 */
export const HandleState = {
  Created: 0,
  HandshakeStarted: 1,
  Open: 2,
  CloseSent: 3,
  CloseReceived: 4,
  Closed: 5,
  Aborted: 6,
  Failed: 7,
  Deleted: 8
} as const

/**
 * One of the {@link HandleState} values.
 *
 * @since 0.1.0
 */
export type HandleState = (typeof HandleState)[keyof typeof HandleState]

/**
 * Names of the states, indexed by value, for error messages.
 *
 * @since 0.1.0
 */
export const stateNames: ReadonlyArray<string> = [
  "Created",
  "HandshakeStarted",
  "Open",
  "CloseSent",
  "CloseReceived",
  "Closed",
  "Aborted",
  "Failed",
  "Deleted"
]
