/**
 * Node.js transports, WebSocket clients and servers for `@effect-websocket/core`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as NodeClient from "./NodeClient.ts"
/** @since 0.1.0 */
export * as NodeTransport from "./NodeTransport.ts"
/** @since 0.1.0 */
export * as NodeServer from "./NodeServer.ts"
/** @since 0.1.0 */
export * as NodeSocketAdapter from "./NodeSocketAdapter.ts"
