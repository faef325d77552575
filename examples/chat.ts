// A chat room: every message a client sends goes to every other client in the room. Each member
// has an outbox that a fiber of its own sends from, so a broadcast never waits for anyone; a
// member that falls `backlog` messages behind (it stopped reading) is cut off, as `ws` users
// terminate a client whose `bufferedAmount` keeps growing. One slow client neither stalls the
// room nor makes memory grow.
import type { Client, Connection } from "@effect-websocket/core"
import { NodeServer } from "@effect-websocket/platform-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Queue, Stream } from "effect"

interface Member {
  readonly connection: Connection.Connection
  readonly outbox: Queue.Queue<Connection.Message>
}

export const chatRoom = (backlog = 256) =>
  Effect.sync(() => {
    const members = new Set<Member>() // what `ws` keeps in `server.clients`
    const handler: Client.Handler<Connection.ConnectionError> = (connection) =>
      Effect.scoped(Effect.gen(function*() {
        const me: Member = { connection, outbox: yield* Queue.dropping<Connection.Message>(backlog) }
        yield* Effect.acquireRelease(Effect.sync(() => members.add(me)), () => Effect.sync(() => members.delete(me)))
        yield* Effect.forkScoped(Stream.runForEach(Stream.fromQueue(me.outbox), connection.send))
        yield* Stream.runForEach(connection.messages, (message) =>
          Effect.forEach(members, (other) =>
            other === me
              ? Effect.void
              // a full outbox takes nothing (`false`): that member is too far behind
              : Effect.flatMap(Queue.offer(other.outbox, message), (queued) => queued ? Effect.void : other.connection.abort),
            { discard: true }))
      }))
    return handler
  })

if (import.meta.main) {
  Effect.gen(function*() {
    const server = yield* NodeServer.serve(yield* chatRoom(), { host: "127.0.0.1", port: 8080 })
    yield* Console.log(`chat room on ${server.url}`)
    return yield* Effect.never
  }).pipe(Effect.scoped, NodeRuntime.runMain)
}
