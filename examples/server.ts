// An echo server: every message comes back to its sender, with the subprotocol the client prefers.
import { NodeServer } from "@effect-websocket/platform-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Stream } from "effect"

const EchoServer = NodeServer.layer(
  (connection, request) =>
    Effect.gen(function*() {
      yield* Console.log(`connection from ${request.remoteAddress} to ${request.url}`)
      yield* Stream.runForEach(connection.messages, (message) => connection.send(message))
    }),
  { host: "127.0.0.1", port: 8080, selectProtocol: (offered) => offered[0], maxMessageSize: 1024 * 1024 }
)

const main = Effect.gen(function*() {
  const server = yield* NodeServer.Server
  yield* Console.log(`listening on ${server.url}`)
  return yield* Effect.never
})

NodeRuntime.runMain(main.pipe(Effect.provide(EchoServer)))
