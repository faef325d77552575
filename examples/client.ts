// A client: sends a greeting, prints the reply, closes cleanly. Written against the `Client`
// service, so the same program runs over sockets (NodeClient.layer) or in memory (Client.layerMemory).
import { Client } from "@effect-websocket/core"
import { NodeClient } from "@effect-websocket/platform-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Stream } from "effect"

export const greet = (url: string) =>
  Effect.scoped(Effect.gen(function*() {
    const connection = yield* Client.connect(url, { protocols: ["chat.v1"] })
    yield* connection.send("hello")
    const [reply] = yield* Stream.runCollect(Stream.take(connection.messages, 1))
    const closed = yield* connection.close(1000, "bye")
    return { reply, protocol: connection.protocol, closed }
  }))

if (import.meta.main) {
  greet("ws://127.0.0.1:8080/").pipe(
    Effect.flatMap((result) => Console.log(result)),
    Effect.provide(NodeClient.layer),
    NodeRuntime.runMain
  )
}
