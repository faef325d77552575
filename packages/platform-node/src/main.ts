/**
 * The demo behind `pnpm demo`: a client handle and a server handle run the websocket.h opening
 * handshake against each other, negotiating a subprotocol, and the HTTP request and response they
 * produce are printed.
 *
 * @since 0.1.0
 */
import { WebSocket } from "@effect-websocket/core"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Option } from "effect"

const printHeaders = (title: string, startLine: string, headers: ReadonlyArray<{ name: string; value: string }>) =>
  Console.log([`${title}:`, `  ${startLine}`, ...headers.map((h) => `  ${h.name}: ${h.value}`), ""].join("\n"))

const program = Effect.gen(function*() {
  const client = yield* WebSocket.createClientHandle()
  const server = yield* WebSocket.createServerHandle()

  const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
    subprotocols: ["chat.v2", "chat.v1"],
    initialHeaders: [{ name: "Host", value: "127.0.0.1:8080" }, { name: "Origin", value: "http://127.0.0.1:8080" }]
  })
  yield* printHeaders("client request (WebSocketBeginClientHandshake)", "GET /chat HTTP/1.1", requestHeaders)

  const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, {
    requestHeaders,
    subprotocol: "chat.v1"
  })
  yield* WebSocket.endServerHandshake(server)
  yield* printHeaders(
    "server response (WebSocketBeginServerHandshake)",
    "HTTP/1.1 101 Switching Protocols",
    responseHeaders
  )

  const result = yield* WebSocket.endClientHandshake(client, { responseHeaders })
  yield* Console.log(
    `client accepted the response (WebSocketEndClientHandshake): subprotocol ${
      Option.getOrElse(result.subprotocol, () => "(none)")
    } at index ${Option.getOrElse(result.selectedSubprotocol, () => -1)}`
  )

  const bad = yield* Effect.flip(
    WebSocket.beginServerHandshake(yield* WebSocket.createServerHandle(), {
      requestHeaders: requestHeaders.map((h) =>
        h.name === "Sec-WebSocket-Version" ? { name: h.name, value: "8" } : h
      )
    })
  )
  yield* Console.log(`a version-8 request fails with ${bad._tag} (0x${bad.hresult.toString(16)}): ${bad.message}`)
})

NodeRuntime.runMain(Effect.scoped(program))
