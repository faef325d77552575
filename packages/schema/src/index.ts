/**
 * `effect/Schema` definitions for the WebSocket opening handshake and the other boundary data of
 * websocket.h: header fields, close codes and reasons, handle properties.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as CloseStatus from "./CloseStatus.ts"
/** @since 0.1.0 */
export * as HandshakeHeaders from "./HandshakeHeaders.ts"
/** @since 0.1.0 */
export * as HttpHeader from "./HttpHeader.ts"
/** @since 0.1.0 */
export * as Options from "./Options.ts"
/** @since 0.1.0 */
export * as Property from "./Property.ts"
/** @since 0.1.0 */
export * as Token from "./Token.ts"
