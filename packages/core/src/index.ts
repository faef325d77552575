/**
 * The websocket.h WebSocket Protocol Component API as an Effect library.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Action from "./Action.ts"
/** @since 0.1.0 */
export * as BufferType from "./BufferType.ts"
/** @since 0.1.0 */
export * as CloseStatus from "./CloseStatus.ts"
/** @since 0.1.0 */
export * as WebSocket from "./WebSocket.ts"
/** @since 0.1.0 */
export * as WebSocketError from "./WebSocketError.ts"
/** @since 0.1.0 */
export * as Connection from "./Connection.ts"
/** @since 0.1.0 */
export * as Transport from "./Transport.ts"
/** @since 0.1.0 */
export * as Client from "./Client.ts"
/** @since 0.1.0 */
export * as EffectSocket from "./EffectSocket.ts"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.ts"
