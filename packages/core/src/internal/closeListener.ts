/**
 * A plain callback run as a connection closes, for bookkeeping that would otherwise take a fiber
 * of its own for every connection only to wait for `closed` (a server's list of its open
 * connections).
 *
 * @since 0.1.0
 */

/** The method of the library's connections that registers such a callback (see {@link onClosedUnsafe}). */
export const AddCloseListener: unique symbol = Symbol("@effect-websocket/core/Connection/AddCloseListener")

/** A connection that takes close listeners: every connection the library makes. */
export interface TakesCloseListeners {
  /**
   * Calls `listener` in the step that completes the connection's `closed`, or at once when it has
   * completed already. The listener must not throw.
   */
  readonly [AddCloseListener]: (listener: () => void) => void
}

/**
 * Calls `listener` once `connection` has closed, in the step that completes its `closed`, if the
 * connection takes close listeners (every connection the library makes does), and says whether it
 * does; for any other, nothing is registered and the caller waits for `closed` itself.
 */
export const onClosedUnsafe = (connection: object, listener: () => void): boolean => {
  const add = (connection as Partial<TakesCloseListeners>)[AddCloseListener]
  if (typeof add !== "function") return false
  add.call(connection, listener)
  return true
}
