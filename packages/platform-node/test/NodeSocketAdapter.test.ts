/**
 * Tests of `NodeSocketAdapter`: programs written only against `effect/socket`
 * (`Socket.makeWebSocket`, `Socket.Socket`) talking to this library's Node.js server.
 */
import type { Connection } from "@effect-websocket/core"
import { HttpHeader } from "@effect-websocket/schema"
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Layer, Scope, Stream } from "effect"
import { Socket } from "effect/socket"
import * as Net from "node:net"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import { NodeServer, NodeSocketAdapter } from "../src/index.ts"

const echoServer = NodeServer.serve((c) => Stream.runForEach(c.messages, c.send))

/** Pulls until `count` messages have arrived. */
const pullN = (reader: Socket.Reader, count: number) =>
  Effect.gen(function*() {
    const out: Array<string | Uint8Array> = []
    while (out.length < count) out.push(...(yield* reader.pull))
    return out
  })

/** The `SocketError` reason a failing effect ends with. */
const reasonOf = <A, R>(effect: Effect.Effect<A, Socket.SocketError, R>) =>
  Effect.map(Effect.flip(effect), (error) => error.reason)

/** A port nothing listens on. */
const closedPort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

V8.setFlagsFromString("--expose-gc")
const gc = Vm.runInNewContext("gc") as () => void

/** How many of `refs` still point at something after collecting garbage for a moment (at most about a second). */
const stillReachable = (refs: ReadonlyArray<WeakRef<object>>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 40 && refs.some((r) => r.deref() !== undefined); i++) {
      yield* Effect.sleep("20 millis") // (a WeakRef keeps its target until the current job is done)
      gc()
    }
    return refs.filter((r) => r.deref() !== undefined).length
  })

describe("NodeSocketAdapter", () => {
  it.live("Socket.makeWebSocket echoes text and binary, and a written CloseEvent closes", () =>
    Effect.gen(function*() {
      const server = yield* echoServer
      const socket = yield* Socket.makeWebSocket(server.url)
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      yield* writer.write("hello")
      yield* writer.write(new Uint8Array([0, 1, 2, 255]))
      yield* writer.writeAll(["a", new Uint8Array([1, 2, 3, 4]).subarray(2)])
      const got = yield* pullN(reader, 4)
      assert.deepStrictEqual(got, ["hello", new Uint8Array([0, 1, 2, 255]), "a", new Uint8Array([3, 4])])
      yield* writer.write(new Socket.CloseEvent(1000, "bye"))
      const reason = yield* reasonOf(reader.pull)
      assert.instanceOf(reason, Socket.SocketCloseError)
      assert.deepInclude(reason, { _tag: "SocketCloseError", code: 1000, closeReason: "bye" })
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("echoes through Socket.toChannelString", () =>
    Effect.gen(function*() {
      const server = yield* echoServer
      const socket = yield* Socket.makeWebSocket(server.url)
      const out = yield* Stream.make("abc", "def", "ghi").pipe(
        Stream.pipeThroughChannel(Socket.toChannelString(socket)),
        Stream.take(3),
        Stream.runCollect
      )
      assert.deepStrictEqual(out, ["abc", "def", "ghi"])
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("offers subprotocols and reads the one the server selected", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(
        (c, request) => Effect.andThen(c.send(`${c.protocol} of ${request.protocols.join(",")}`), Effect.never),
        { selectProtocol: (offered) => offered.find((p) => p === "v2") }
      )
      const socket = yield* Socket.makeWebSocket(server.url, { protocols: ["v1", "v2"] })
      const reader = yield* socket.reader
      assert.deepStrictEqual(yield* reader.pull, ["v2 of v1,v2"])
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("a program that writes and ends, with the layer provided to it alone, delivers every message and its close", () =>
    Effect.gen(function*() {
      const received: Array<Connection.Message> = []
      const closed = yield* Deferred.make<Connection.CloseInfo>()
      const server = yield* NodeServer.serve((c) =>
        Effect.andThen(
          Stream.runForEach(c.messages, (m) => Effect.sync(() => received.push(m))),
          Effect.flatMap(c.closed, (info) => Deferred.succeed(closed, info))
        )
      )
      // the writes are queued when the program ends; the layer closes right after it
      yield* Effect.scoped(Effect.gen(function*() {
        const socket = yield* Socket.makeWebSocket(server.url)
        yield* socket.reader // (writes wait for the socket to open)
        const writer = yield* socket.writer
        for (let i = 0; i < 200; i++) yield* writer.write(`m${i}`)
        yield* writer.write(new Socket.CloseEvent(4000, "done"))
      })).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor))
      const info = yield* Deferred.await(closed)
      assert.deepStrictEqual([info.code, info.reason], [4000, "done"])
      assert.deepStrictEqual(received, Array.from({ length: 200 }, (_, i) => `m${i}`))
    }))

  it.live("sends handshake headers", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c, request) =>
        Effect.andThen(
          c.send(request.headers.find((h) => h.name.toLowerCase() === "x-token")?.value ?? "none"),
          Effect.never
        ), { selectProtocol: (offered) => offered[0] })
      const socket = yield* Socket.makeWebSocket(server.url, { headers: { "x-token": "abc" }, protocols: "p" })
      const reader = yield* socket.reader
      assert.deepStrictEqual(yield* reader.pull, ["abc"])
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("layerWebSocketConstructorWith: a socket's headers are added to the layer's, replacing those of the same name", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c, request) =>
        Effect.andThen(
          c.send(["authorization", "x-a", "x-trace"].map((name) => HttpHeader.getCombined(request.headers, name) ?? "-").join(" | ")),
          Effect.never
        ))
      const socket = yield* Socket.makeWebSocket(server.url, { headers: { "X-A": "socket", "x-trace": "1" } })
      const reader = yield* socket.reader
      assert.deepStrictEqual(yield* reader.pull, ["Bearer t | socket | 1"])
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructorWith({ headers: { authorization: "Bearer t", "x-a": "layer" } }))))

  it.live("layerWebSocketConstructorWith: the layer's headers are checked as connect checks them, whether or not the socket adds its own (from untyped code, a malformed one fails the reader with SocketOpenError)", () =>
    Effect.gen(function*() {
      const server = yield* echoServer
      const layers = [
        { headers: { "x-n": 5 } }, // a value that is not a string (not sent as "5")
        { headers: new Map([["x-n", "1"]]) }, // neither a list nor a record (not dropped without a word)
        { headers: [{ name: 5, value: "1" }] } // a malformed entry (not thrown at the merge)
      ]
      for (const options of layers) {
        for (const own of [undefined, { "x-own": "1" }]) {
          const reason = yield* Effect.provide(
            Effect.flatMap(Socket.makeWebSocket(server.url, own === undefined ? {} : { headers: own }), (socket) => reasonOf(socket.reader)),
            NodeSocketAdapter.layerWebSocketConstructorWith(options as never)
          )
          assert.instanceOf(reason, Socket.SocketOpenError, `${JSON.stringify(own)}`)
          const event = (reason as Socket.SocketOpenError).cause as { readonly error: { readonly _tag: string; readonly parameter: string } }
          assert.deepStrictEqual([event.error._tag, event.error.parameter], ["InvalidParameter", "headers"], `${JSON.stringify(own)}`)
        }
      }
    }))

  it.live("layerWebSocketConstructorWith: the subprotocols a socket asks for replace the layer's; without any, the layer's are offered", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(
        (c, request) => Effect.andThen(c.send(`${c.protocol} of ${request.protocols.join(",")}`), Effect.never),
        { selectProtocol: (offered) => offered[0] }
      )
      const own = yield* Socket.makeWebSocket(server.url, { protocols: ["v2"] })
      assert.deepStrictEqual(yield* (yield* own.reader).pull, ["v2 of v2"])
      const defaulted = yield* Socket.makeWebSocket(server.url)
      assert.deepStrictEqual(yield* (yield* defaulted.reader).pull, ["layer of layer"])
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructorWith({ protocols: ["layer"] }))))

  it.live("a close from the server fails the reader with its code and reason", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) =>
        Effect.gen(function*() {
          yield* c.send("goodbye")
          yield* c.close(4001, "x")
        })
      )
      const socket = yield* Socket.makeWebSocket(server.url)
      const reader = yield* socket.reader
      assert.deepStrictEqual(yield* pullN(reader, 1), ["goodbye"])
      const reason = yield* reasonOf(reader.pull)
      assert.deepInclude(reason, { _tag: "SocketCloseError", code: 4001, closeReason: "x" })
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("a connect to a closed port fails the reader with SocketOpenError", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const socket = yield* Socket.makeWebSocket(`ws://127.0.0.1:${port}/`)
      const reason = yield* reasonOf(socket.reader)
      assert.instanceOf(reason, Socket.SocketOpenError)
      const open = reason as Socket.SocketOpenError
      assert.strictEqual(open.kind, "Unknown")
      // the cause is the `error` event, carrying the library's ConnectError
      const event = open.cause as { readonly type: string; readonly error: { readonly _tag: string; readonly reason: string } }
      assert.strictEqual(event.type, "error")
      assert.strictEqual(event.error._tag, "ConnectError")
      assert.strictEqual(event.error.reason, "Refused")
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("an open timeout fails the reader with SocketOpenError Timeout, without waiting for the connect", () =>
    Effect.gen(function*() {
      // accepts TCP connections and never answers the upgrade request
      const accepted = new Set<Net.Socket>()
      const silent = Net.createServer((conn) => {
        accepted.add(conn)
        conn.on("error", () => {})
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => {
          silent.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        () =>
          Effect.sync(() => {
            for (const conn of accepted) conn.destroy()
            silent.close()
          })
      )
      const { port } = silent.address() as Net.AddressInfo
      const start = Date.now()
      const reason = yield* Effect.gen(function*() {
        const socket = yield* Socket.makeWebSocket(`ws://127.0.0.1:${port}/`, { openTimeout: "200 millis" })
        return yield* reasonOf(Effect.scoped(socket.reader))
      }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor))
      const elapsed = Date.now() - start
      assert.deepInclude(reason, { _tag: "SocketOpenError", kind: "Timeout" })
      assert.strictEqual(accepted.size, 1)
      // the reader and the layer are both released promptly
      assert.isBelow(elapsed, 2000)
    }))

  it.live("closing the constructor layer closes open sockets with 1001", () =>
    Effect.gen(function*() {
      const serverClosed = yield* Deferred.make<Connection.CloseInfo>()
      const server = yield* NodeServer.serve((c) =>
        Effect.andThen(
          Stream.runForEach(c.messages, c.send),
          Effect.flatMap(c.closed, (info) => Deferred.succeed(serverClosed, info))
        )
      )
      const layerScope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(NodeSocketAdapter.layerWebSocketConstructor, layerScope)
      const socket = yield* Socket.makeWebSocket(server.url).pipe(Effect.provideContext(context))
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      yield* writer.write("up")
      assert.deepStrictEqual(yield* reader.pull, ["up"])
      yield* Scope.close(layerScope, Exit.void)
      const info = yield* Deferred.await(serverClosed)
      assert.strictEqual(info.code, 1001)
      assert.deepInclude(yield* reasonOf(reader.pull), { _tag: "SocketCloseError", code: 1001 })
    }))

  it.live("closing the constructor layer delivers what its open sockets were given to send before their 1001", () =>
    Effect.gen(function*() {
      const got = yield* Deferred.make<ReadonlyArray<string>>()
      const server = yield* NodeServer.serve((c) =>
        Effect.gen(function*() {
          const messages: Array<string> = []
          yield* Effect.ignore(Stream.runForEach(c.messages, (m) => Effect.sync(() => messages.push(String(m)))))
          const info = yield* c.closed
          yield* Deferred.succeed(got, [...messages, `close ${info.code}`])
        })
      )
      const layerScope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(NodeSocketAdapter.layerWebSocketConstructor, layerScope)
      const make = Context.get(context, Socket.WebSocketConstructor)
      const ws = make(server.url)
      yield* Effect.callback<void>((resume) => ws.addEventListener("open", () => resume(Effect.void)))
      ws.send("one")
      ws.send("two")
      yield* Scope.close(layerScope, Exit.void)
      assert.deepStrictEqual(yield* Deferred.await(got), ["one", "two", "close 1001"])
    }))

  it.live("a small highWaterMark pauses and resumes without losing or reordering messages", () =>
    Effect.gen(function*() {
      const count = 300
      const payload = "x".repeat(1024)
      const server = yield* NodeServer.serve((c) =>
        Effect.andThen(
          Effect.forEach(Array.from({ length: count }, (_, i) => `${i}:${payload}`), c.send, { discard: true }),
          Effect.never
        )
      )
      const socket = yield* Socket.makeWebSocket(server.url, { highWaterMark: 4096 })
      const reader = yield* socket.reader
      const got: Array<string | Uint8Array> = []
      while (got.length < count) {
        got.push(...(yield* reader.pull))
        yield* Effect.sleep("1 millis")
      }
      assert.strictEqual(got.length, count)
      got.forEach((m, i) => assert.strictEqual(m, `${i}:${payload}`))
    }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocketConstructor)))

  it.live("readers acquired again and again in one scope (reconnecting) keep nothing of the connections that ended", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Effect.andThen(c.send(new Uint8Array(100_000)), c.close(4000, "again")))
      /** The transports of the connections made, weakly: a connection that is kept keeps its transport. */
      const transports: Array<WeakRef<object>> = []
      const constructor = yield* Layer.build(NodeSocketAdapter.layerWebSocketConstructorWith({
        wrapTransport: (transport) => {
          transports.push(new WeakRef(transport))
          return transport
        }
      }))
      const socket = yield* Socket.makeWebSocket(server.url).pipe(Effect.provide(constructor))
      // A reconnect loop in a long-lived scope (a layer's, say): effect's Socket keeps each acquired
      // WebSocket (and its reader's finalizer) in that scope until it closes, as with any constructor.
      const scope = yield* Scope.make()
      for (let i = 0; i < 3; i++) {
        const reason = yield* Scope.provide(
          reasonOf(Effect.gen(function*() {
            const reader = yield* socket.reader
            for (;;) yield* reader.pull
          })),
          scope
        )
        assert.deepInclude(reason, { _tag: "SocketCloseError", code: 4000 })
      }
      assert.strictEqual(transports.length, 3)
      assert.strictEqual(yield* stillReachable(transports), 0, "the ended connections (and their buffers and sockets) are released")
      yield* Scope.close(scope, Exit.void)
    }))

  it.live("layerWebSocket provides a Socket.Socket", () =>
    Effect.gen(function*() {
      const server = yield* echoServer
      const reply = yield* Effect.gen(function*() {
        const socket = yield* Socket.Socket
        const writer = yield* socket.writer
        const reader = yield* socket.reader
        yield* writer.write("via layer")
        return yield* reader.pull
      }).pipe(Effect.provide(NodeSocketAdapter.layerWebSocket(server.url)))
      assert.deepStrictEqual(reply, ["via layer"])
    }))
})
