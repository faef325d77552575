// A chat room: every message a client sends goes to every other client in the room. Each member
// has an outbox that a fiber of its own sends from, so a broadcast never waits for anyone; a
// member with more than `backlog` bytes not yet sent (what waits in its outbox and what its
// socket still holds: it stopped reading) is cut off, as `ws` users terminate a client whose
// `bufferedAmount` keeps growing. Counted in bytes, not messages: many members talking at once
// fill outboxes with many small messages before their fibers run, and a few large ones are
// what costs memory. One slow client neither stalls the room nor holds more than `backlog`.
import type { Client, Connection } from "@effect-websocket/core"
import { NodeServer } from "@effect-websocket/platform-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Queue, Stream } from "effect"

interface Member {
  readonly connection: Connection.Connection
  readonly outbox: Queue.Queue<Connection.Message>
  /** Bytes in the outbox (a string counts its length). */
  queued: number
}

const sizeOf = (message: Connection.Message) => typeof message === "string" ? message.length : message.byteLength

export const chatRoom = (backlog = 4 * 1024 * 1024) =>
  Effect.sync(() => {
    const members = new Set<Member>() // what `ws` keeps in `server.clients`
    const offer = (member: Member, message: Connection.Message) => {
      const size = sizeOf(message)
      if (member.queued + member.connection.bufferedAmount + size > backlog) return member.connection.abort
      member.queued += size
      return Queue.offer(member.outbox, message)
    }
    const handler: Client.Handler<Connection.ConnectionError> = (connection) =>
      Effect.scoped(Effect.gen(function*() {
        // (bounded by `backlog`: `offer` takes no more)
        const me: Member = { connection, outbox: yield* Queue.unbounded<Connection.Message>(), queued: 0 }
        yield* Effect.acquireRelease(Effect.sync(() => members.add(me)), () => Effect.sync(() => members.delete(me)))
        yield* Effect.forkScoped(Stream.runForEach(Stream.fromQueue(me.outbox), (message) =>
          Effect.andThen(
            Effect.sync(() => {
              me.queued -= sizeOf(message)
            }),
            connection.send(message)
          )))
        yield* Stream.runForEach(connection.messages, (message) =>
          Effect.forEach(members, (other) => other === me ? Effect.void : offer(other, message), { discard: true }))
      }))
    return handler
  })

if (import.meta.main) {
  Effect.gen(function*() {
    // (messages of at most 64 KiB: a chat needs no more, and a member's backlog is then many messages)
    const server = yield* NodeServer.serve(yield* chatRoom(), { host: "127.0.0.1", port: 8080, maxMessageSize: 64 * 1024 })
    yield* Console.log(`chat room on ${server.url}`)
    return yield* Effect.never
  }).pipe(Effect.scoped, NodeRuntime.runMain)
}
