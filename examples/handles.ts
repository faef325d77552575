// The websocket.h layer: handles, the opening handshake and one turn of the action loop.
import { WebSocket } from "@effect-websocket/core"
import { Effect } from "effect"

export const program = Effect.scoped(
  Effect.gen(function*() {
    const client = yield* WebSocket.createClientHandle()
    const server = yield* WebSocket.createServerHandle({ receiveBufferSize: 8192 })

    // client: headers to add to `GET /chat HTTP/1.1`
    const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, {
      subprotocols: ["chat"],
      initialHeaders: [{ name: "Host", value: "127.0.0.1:8080" }]
    })
    // server: check the request, answer `HTTP/1.1 101 Switching Protocols` with these headers
    const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders, subprotocol: "chat" })
    yield* WebSocket.endServerHandshake(server)
    // client: check the response
    yield* WebSocket.endClientHandshake(client, { responseHeaders })

    // queue a send, then run the send queue: write what SendToNetwork hands out
    yield* WebSocket.send(client, "Utf8Message", new TextEncoder().encode("hi"))
    const action = yield* WebSocket.getAction(client, "Send") // SendToNetwork: header + masked payload
    if (action._tag === "SendToNetwork") {
      const bytes = action.buffers.reduce((n, b) => n + b.length, 0)
      yield* WebSocket.completeAction(client, action.token, bytes)
    }
  })
).pipe(
  Effect.catchTag("InvalidProtocolFormat", (e) => Effect.logError(`bad ${e.header}: ${e.message}`))
)
