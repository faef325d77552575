// A chat room: every message a client sends goes to every other client in the room. The room is
// an Effect `PubSub`, bounded: a client that does not keep up slows the room down instead of
// making memory grow. Each connection is subscribed for as long as its handler runs.
import type { Client, Connection } from "@effect-websocket/core"
import { NodeServer } from "@effect-websocket/platform-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, PubSub, Stream } from "effect"

interface Said {
  readonly from: number
  readonly message: Connection.Message
}

export const chatRoom = Effect.gen(function*() {
  const room = yield* PubSub.bounded<Said>(256)
  let joined = 0
  const handler: Client.Handler<Connection.ConnectionError> = (connection) =>
    Effect.scoped(Effect.gen(function*() {
      const me = joined++
      const heard = yield* PubSub.subscribe(room)
      yield* Effect.forkScoped(
        Stream.fromSubscription(heard).pipe(
          Stream.filter((said) => said.from !== me),
          Stream.runForEach((said) => connection.send(said.message))
        )
      )
      yield* Stream.runForEach(connection.messages, (message) => PubSub.publish(room, { from: me, message }))
    }))
  return handler
})

if (import.meta.main) {
  Effect.gen(function*() {
    const server = yield* NodeServer.serve(yield* chatRoom, { host: "127.0.0.1", port: 8080 })
    yield* Console.log(`chat room on ${server.url}`)
    return yield* Effect.never
  }).pipe(Effect.scoped, NodeRuntime.runMain)
}
