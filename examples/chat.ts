// A chat room: every message a client sends goes to every other client in the room. Each member
// has an outbox that a fiber of its own sends from, so a broadcast never waits for anyone. A
// member that has owed more than `backlog` bytes (in its outbox and its send under way) for
// longer than `patience` (it stopped reading, or reads slower than the room talks) is cut off, as
// `ws` users terminate a client whose `bufferedAmount` keeps growing: a timer of its own, running
// while it owes that much, cuts it off even when the room goes quiet. Owing much for a moment is
// no reason: when many members talk at once, a healthy member's outbox fills before its fiber
// runs. One slow client neither stalls the room nor holds more than `backlog` and what arrives
// within `patience`.
import type { Client, Connection } from "@effect-websocket/core"
import { NodeServer } from "@effect-websocket/platform-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Queue, type Scope, Stream } from "effect"

interface Member {
  readonly connection: Connection.Connection
  readonly outbox: Queue.Queue<Connection.Message>
  /** Bytes in the outbox and in the send under way (a string counts its length). */
  owed: number
  /** Since when the member owes more than the backlog (meaningful only while it does). */
  since: number
  /** Whether its timer runs (while it owes more than the backlog). */
  watched: boolean
  /** The scope of its connection, where its timer runs. */
  readonly scope: Scope.Scope
}

const sizeOf = (message: Connection.Message) => typeof message === "string" ? message.length : message.byteLength

export const chatRoom = (backlog = 4 * 1024 * 1024, patience = 5000) =>
  Effect.sync(() => {
    const members = new Set<Member>() // what `ws` keeps in `server.clients`
    // cuts the member off once it has owed more than the backlog for `patience`; ends when it owes less
    const watch = (member: Member): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (member.owed <= backlog) {
          member.watched = false
          return Effect.void
        }
        const left = member.since + patience - Date.now()
        return left <= 0 ? member.connection.abort : Effect.andThen(Effect.sleep(left), watch(member))
      })
    const offer = (member: Member, message: Connection.Message) => {
      if (member.owed <= backlog) member.since = Date.now()
      member.owed += sizeOf(message)
      const queued = Queue.offer(member.outbox, message)
      if (member.owed <= backlog || member.watched) return queued
      member.watched = true
      return Effect.andThen(Effect.forkIn(watch(member), member.scope), queued)
    }
    const sent = (member: Member, message: Connection.Message) =>
      Effect.sync(() => {
        member.owed -= sizeOf(message)
      })
    const handler: Client.Handler<Connection.ConnectionError> = (connection) =>
      Effect.scoped(Effect.gen(function*() {
        const outbox = yield* Queue.unbounded<Connection.Message>()
        const me: Member = { connection, outbox, owed: 0, since: 0, watched: false, scope: yield* Effect.scope }
        yield* Effect.acquireRelease(Effect.sync(() => members.add(me)), () => Effect.sync(() => members.delete(me)))
        yield* Effect.forkScoped(
          Stream.runForEach(Stream.fromQueue(me.outbox), (message) => Effect.andThen(connection.send(message), sent(me, message)))
        )
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
