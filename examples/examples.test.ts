import { Client } from "@effect-websocket/core"
import { NodeClient, NodeServer } from "@effect-websocket/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Logger, Option, Stream } from "effect"
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { chatRoom } from "./chat.ts"
import { greet } from "./client.ts"
import { program } from "./handles.ts"

const echo: Client.Handler<unknown> = (connection) => Stream.runForEach(connection.messages, (m) => connection.send(m))
const selectFirst = { selectProtocol: (offered: ReadonlyArray<string>) => offered[0] }

describe("the client example", () => {
  it.effect("runs in memory with Client.layerMemory", () =>
    Effect.gen(function*() {
      const result = yield* greet("ws://example.test/chat").pipe(Effect.provide(Client.layerMemory(echo, selectFirst)))
      assert.strictEqual(result.reply, "hello")
      assert.strictEqual(result.protocol, "chat.v1")
      assert.deepStrictEqual(result.closed, { code: 1000, reason: "bye", clean: true, initiator: "local" })
    }))

  it.live("runs unchanged over loopback with NodeClient.layer", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(echo, selectFirst)
      const result = yield* greet(server.url).pipe(Effect.provide(NodeClient.layer))
      assert.strictEqual(result.reply, "hello")
      assert.strictEqual(result.protocol, "chat.v1")
      assert.deepStrictEqual(result.closed, { code: 1000, reason: "bye", clean: true, initiator: "local" })
    }))
})

describe("the chat example", () => {
  it.live("relays every message to the other clients, never back to its sender", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(yield* chatRoom())
      const [alice, bob, carol] = yield* Effect.all([
        NodeClient.connect(server.url),
        NodeClient.connect(server.url),
        NodeClient.connect(server.url)
      ])
      // everyone is in the room once the three handlers run (and have subscribed)
      for (let i = 0; i < 200 && (yield* server.connections) < 3; i++) yield* Effect.sleep("5 millis")
      yield* Effect.sleep("50 millis")
      yield* alice.send("hello from alice")
      const next = (connection: typeof alice) => Effect.map(Stream.runCollect(Stream.take(connection.messages, 1)), (m) => m[0])
      assert.strictEqual(yield* next(bob), "hello from alice")
      assert.strictEqual(yield* next(carol), "hello from alice")
      yield* bob.send(new Uint8Array([1, 2, 3]))
      // alice's first message is bob's: her own never came back
      assert.deepStrictEqual(yield* next(alice), new Uint8Array([1, 2, 3]))
      assert.deepStrictEqual(yield* next(carol), new Uint8Array([1, 2, 3]))
    }))
})

describe("the chat example with many members talking at once", () => {
  it.live("cuts no one off: 300 members each say one thing at the same moment, and each hears the 299 others", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(yield* chatRoom())
      const count = 300
      const members = yield* Effect.all(Array.from({ length: count }, () => NodeClient.connect(server.url)), { concurrency: 50 })
      for (let i = 0; i < 400 && (yield* server.connections) < count; i++) yield* Effect.sleep("5 millis")
      yield* Effect.forEach(members, (member, i) => member.send(`hello from ${i}`), { concurrency: "unbounded", discard: true })
      const heard = yield* Effect.forEach(members, (member) => Stream.runCount(Stream.take(member.messages, count - 1)), {
        concurrency: "unbounded"
      }).pipe(Effect.timeout("20 seconds"))
      assert.deepStrictEqual(heard, members.map(() => count - 1))
      assert.strictEqual(yield* server.connections, count)
    }))

  it.live("cuts no one off when what each member is owed for a moment exceeds the backlog: 40 members say 8 KiB each, against 256 KiB", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(yield* chatRoom(256 * 1024))
      const count = 40
      const members = yield* Effect.all(Array.from({ length: count }, () => NodeClient.connect(server.url)), { concurrency: 20 })
      for (let i = 0; i < 400 && (yield* server.connections) < count; i++) yield* Effect.sleep("5 millis")
      const message = "x".repeat(8 * 1024)
      yield* Effect.forEach(members, (member) => member.send(message), { concurrency: "unbounded", discard: true })
      const heard = yield* Effect.forEach(members, (member) => Stream.runCount(Stream.take(member.messages, count - 1)), {
        concurrency: "unbounded"
      }).pipe(Effect.timeout("20 seconds"))
      assert.deepStrictEqual(heard, members.map(() => count - 1))
      assert.strictEqual(yield* server.connections, count)
    }))
})

describe("the chat example with a client that reads slower than the room talks", () => {
  it.live("cuts it off once it has owed more than its backlog for longer than the patience, though it keeps reading", () =>
    Effect.gen(function*() {
      const client = yield* Layer.build(Client.layerMemory(yield* chatRoom(64 * 1024, 1000)))
      const [talker, slow] = yield* Effect.all([Client.connect("ws://chat/"), Client.connect("ws://chat/")]).pipe(
        Effect.provideContext(client)
      )
      let read = 0
      yield* Effect.forkChild(Stream.runForEach(slow.messages, () => Effect.andThen(Effect.sleep("50 millis"), Effect.sync(() => read++))))
      const message = "x".repeat(4 * 1024)
      const talking = yield* Effect.forkChild(Effect.forever(Effect.andThen(talker.send(message), Effect.sleep("5 millis"))))
      // (it sees the end once it has read what it holds)
      const closed = yield* Effect.timeoutOption(slow.closed, "10 seconds")
      yield* Fiber.interrupt(talking)
      assert.isTrue(Option.isSome(closed), "the slow reader was cut off")
      assert.strictEqual(Option.getOrThrow(closed).code, 1006)
      assert.isAbove(read, 0, "it was reading")
    }), 20_000)
})

/** A client that completes the opening handshake on `port` and then reads nothing. */
const stalledClient = (port: number) => {
  const slow = Net.connect(port, "127.0.0.1")
  slow.on("error", () => {})
  slow.once("data", () => slow.pause())
  slow.write(
    ["GET / HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "", ""].join("\r\n")
  )
  return slow
}

describe("the chat example with a client that stops reading", () => {
  it.live("the others get every message, and the slow client is cut off once it owes its backlog and has taken nothing for a while", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(yield* chatRoom(1024 * 1024, 200))
      const slow = stalledClient(server.address.port)
      const [alice, bob] = yield* Effect.all([NodeClient.connect(server.url), NodeClient.connect(server.url)])
      for (let i = 0; i < 200 && (yield* server.connections) < 3; i++) yield* Effect.sleep("5 millis")
      yield* Effect.sleep("50 millis")
      // alice talks in rounds that bob keeps up with, until the server cuts the slow client off
      // (far more than its socket buffers and backlog hold, for longer than the patience)
      const message = "x".repeat(32 * 1024)
      const started = Date.now()
      while ((yield* server.connections) > 2 && Date.now() - started < 20_000) {
        yield* Effect.forEach(Array.from({ length: 50 }), () => alice.send(message), { discard: true })
        const got = yield* Stream.runCount(Stream.take(bob.messages, 50)).pipe(Effect.timeout("5 seconds"))
        assert.strictEqual(got, 50)
        yield* Effect.sleep("20 millis")
      }
      assert.strictEqual(yield* server.connections, 2)
      // it sees the end of its socket once it reads again
      yield* Effect.callback<void>((resume) => {
        slow.once("close", () => resume(Effect.void))
        slow.resume()
      }).pipe(Effect.timeout("5 seconds"))
    }))
})

describe("the chat example with a client that stops reading in a room that then goes quiet", () => {
  it.live("cuts it off about `patience` after it fell behind, with no more messages relayed to it", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(yield* chatRoom(1024 * 1024, 500))
      stalledClient(server.address.port)
      const alice = yield* NodeClient.connect(server.url)
      for (let i = 0; i < 200 && (yield* server.connections) < 2; i++) yield* Effect.sleep("5 millis")
      yield* Effect.sleep("50 millis")
      // one burst, far more than the slow client's socket buffers and backlog hold; then silence
      const message = new Uint8Array(512 * 1024)
      yield* Effect.forEach(Array.from({ length: 40 }), () => alice.send(message), { discard: true })
      const started = Date.now()
      while ((yield* server.connections) > 1 && Date.now() - started < 5000) yield* Effect.sleep("20 millis")
      assert.strictEqual(yield* server.connections, 1, "the slow client was cut off")
    }), 20_000)
})

describe("the handles example", () => {
  it.effect("runs the handshake and the send without logging an error", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => logged.push(`${options.logLevel}: ${String(options.message)}`))
      yield* program.pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
      assert.deepStrictEqual(logged, [])
    }))
})

describe("README", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
  for (const file of ["server.ts", "client.ts", "handles.ts"]) {
    it(`shows examples/${file} as it is`, () => {
      const source = readFileSync(new URL(`./${file}`, import.meta.url), "utf8")
      assert.include(readme, source.trim())
    })
  }
})
