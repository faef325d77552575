/**
 * effect's `effect/socket` over this library's Node.js client: a `Socket.WebSocketConstructor`
 * whose sockets connect with {@link NodeClient.connect}, so that code written against
 * `Socket.makeWebSocket(url)` runs unchanged, and a `Socket.Socket` layer mirroring
 * `NodeSocket.layerWebSocket` of `@effect/platform-node`.
 *
 * The WebSocket-like objects are those of `EffectSocket.makeWebSocketConstructor`: each runs its
 * connection in a fiber of the layer (closing the layer closes the open sockets with 1001), and
 * supports `pause` / `resume`, so `Socket.fromWebSocket` applies its `highWaterMark` (64 KiB by
 * default) by pausing the message events; the connection then stops reading once its message
 * buffer is full, which slows the server down through TCP.
 *
 * @since 0.1.0
 */
import { Client, EffectSocket } from "@effect-websocket/core"
import { HttpHeader } from "@effect-websocket/schema"
import type { Duration } from "effect"
import { Effect, Layer } from "effect"
import { flow } from "effect/Function"
import * as Socket from "effect/socket/Socket"
import * as NodeClient from "./NodeClient.ts"

/**
 * A layer with a `Socket.WebSocketConstructor` whose sockets connect with
 * {@link NodeClient.connect}, with `options` (TLS settings, handshake timeout, connection
 * settings, headers, ...) under the subprotocols and headers each socket asks for: a socket's
 * headers are added to those of `options` (replacing those of the same name).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWebSocketConstructorWith = (
  options?: NodeClient.ConnectOptions
): Layer.Layer<Socket.WebSocketConstructor> =>
  Layer.effect(
    Socket.WebSocketConstructor,
    EffectSocket.makeWebSocketConstructor((url, connectOptions) => {
      if (options === undefined) return NodeClient.connect(url, connectOptions)
      const merged = { ...options, ...connectOptions }
      if (options.headers === undefined || connectOptions.headers === undefined) return NodeClient.connect(url, merged)
      // (both checked as `connect` checks its own: a malformed one is refused, not merged away)
      return Effect.flatMap(
        Effect.all([Client.decodeRequestHeaders(options.headers), Client.decodeRequestHeaders(connectOptions.headers)]),
        ([base, own]) => NodeClient.connect(url, { ...merged, headers: HttpHeader.merge(base, own) })
      )
    })
  )

/**
 * A layer with a `Socket.WebSocketConstructor` whose sockets connect with
 * {@link NodeClient.connect}: `Socket.makeWebSocket(url, { protocols, headers })` then dials
 * through this library. A failed connect (refused, handshake rejected, ...) shows as an `error`
 * then a `close` event (1006), which the socket's reader reports as `SocketOpenError`.
 *
 * **Example**
 *
 * ```ts
 * import { NodeSocketAdapter } from "@effect-websocket/platform-node"
 * import { Effect } from "effect"
 * import { Socket } from "effect/socket"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const socket = yield* Socket.makeWebSocket("ws://127.0.0.1:8080/chat", { protocols: ["chat"] })
 *   const writer = yield* socket.writer
 *   const reader = yield* socket.reader
 *   yield* writer.write("hello")
 *   return yield* reader.pull
 * })).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWebSocketConstructor: Layer.Layer<Socket.WebSocketConstructor> = layerWebSocketConstructorWith()

/**
 * A layer with a `Socket.Socket` for a WebSocket URL: `Socket.makeWebSocket(url, options)` over
 * {@link layerWebSocketConstructor}. Like every WebSocket `Socket`, each acquisition of its
 * `reader` opens a new connection.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWebSocket: (
  url: string | Effect.Effect<string>,
  options?: {
    readonly openTimeout?: Duration.Input | undefined
    readonly protocols?: string | Array<string> | undefined
    readonly headers?: Readonly<Record<string, string>> | undefined
    readonly highWaterMark?: number | undefined
  } | undefined
) => Layer.Layer<Socket.Socket> = flow(
  Socket.makeWebSocket,
  Layer.effect(Socket.Socket),
  Layer.provide(layerWebSocketConstructor)
)
