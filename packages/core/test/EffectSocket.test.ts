/**
 * Tests of the `effect/socket` bridges: `toSocket` over in-memory connections, and
 * `Socket.makeWebSocket` over the constructor layer with an in-memory `Client`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Deferred, Effect, Exit, Fiber, Layer, Option, Scheduler, Schema, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Socket } from "effect/socket"
import { Client, Connection, EffectSocket } from "../src/index.ts"

/** Pulls until `count` messages have arrived. */
const pullN = (reader: Socket.Reader, count: number) =>
  Effect.gen(function*() {
    const out: Array<string | Uint8Array> = []
    while (out.length < count) out.push(...(yield* reader.pull))
    return out
  })

/** The `SocketError` reason a failing effect ends with. */
const reasonOf = <A>(effect: Effect.Effect<A, Socket.SocketError>) =>
  Effect.map(Effect.flip(effect), (error) => error.reason)

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

const echo = (connection: Connection.Connection) => Stream.runForEach(connection.messages, (m) => connection.send(m))

/** The reader and writer of `toSocket` over a memory connection whose peer echoes. */
const echoSocket = Effect.gen(function*() {
  const [client, server] = yield* Connection.makeMemoryPair()
  yield* Effect.forkScoped(echo(server))
  const socket = EffectSocket.toSocket(client)
  return { reader: yield* socket.reader, writer: yield* socket.writer }
})

/**
 * A `connect` to a peer that never reads (sends from the socket wait on the memory transport's
 * backpressure), and the peer's side of the latest connection.
 */
const deafPeer = () => {
  let peer: Connection.Connection | undefined
  const connect: EffectSocket.Connect = () =>
    Effect.map(Connection.makeMemoryPair({ highWaterMark: 1024 }), ([client, server]) => {
      peer = server
      return client
    })
  return { connect, peer: () => peer }
}

/** Waits for the `open` event of `ws`, listening from the start of the wait (before the event loop turns after `make`). */
const whenOpen = (ws: { addEventListener(type: "open", listener: () => void): void }) =>
  Effect.callback<void>((resume) => ws.addEventListener("open", () => resume(Effect.void)))

/**
 * Waits until `condition` holds, looking every 5 ms for at most 5 s: what a fixed sleep would
 * assume of a machine that may be busy.
 */
const until = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000 && !condition(); i++) yield* Effect.sleep("5 millis")
    assert.isTrue(condition(), what)
  })

/** A socket of a constructor over `connect` (in the current scope), once open, with its `close` event and its `error` events. */
const openedSocket = (connect: EffectSocket.Connect) =>
  Effect.gen(function*() {
    const make = yield* EffectSocket.makeWebSocketConstructor(connect)
    const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
    const closed = yield* Deferred.make<EffectSocket.ClientWebSocketEvent>()
    const errors: Array<EffectSocket.ClientWebSocketEvent> = []
    ws.addEventListener("error", (e) => errors.push(e))
    ws.addEventListener("close", (e) => Deferred.doneUnsafe(closed, Exit.succeed(e)))
    yield* whenOpen(ws)
    return { closed, errors, ws }
  })

describe("EffectSocket.toSocket", () => {
  it.live("echoes text and binary through reader.pull / writer.write", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(echo(server))
      const socket = EffectSocket.toSocket(client)
      assert.isTrue(Socket.isSocket(socket))
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      yield* writer.write("hello")
      yield* writer.write(new Uint8Array([1, 2, 3]).subarray(1))
      yield* writer.writeAll(["a", new Uint8Array([9])])
      const got = yield* pullN(reader, 4)
      assert.deepStrictEqual(got, ["hello", new Uint8Array([2, 3]), "a", new Uint8Array([9])])
      assert.strictEqual(server.stats.messagesIn, 4)
    }))

  it.live("each binary chunk has a buffer of its own, as effect/socket's sockets deliver them", () =>
    Effect.gen(function*() {
      const { reader, writer } = yield* echoSocket
      yield* writer.writeAll([new Uint8Array([1, 2, 3]), "t", new Uint8Array([4, 5])])
      const got = yield* pullN(reader, 3)
      assert.deepStrictEqual(got, [new Uint8Array([1, 2, 3]), "t", new Uint8Array([4, 5])])
      for (const chunk of got) {
        if (typeof chunk !== "string") assert.deepStrictEqual(new Uint8Array(chunk.buffer), chunk)
      }
    }))

  it.live("echoes through Socket.toChannelString", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(echo(server))
      const out = yield* Stream.make("abc", "def").pipe(
        Stream.pipeThroughChannel(Socket.toChannelString(EffectSocket.toSocket(client))),
        Stream.take(2),
        Stream.runCollect
      )
      assert.deepStrictEqual(out, ["abc", "def"])
    }))

  it.live("a close from the peer fails the reader with its code and reason, after the pending messages", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const socket = EffectSocket.toSocket(client)
      yield* Effect.scoped(Effect.gen(function*() {
        const reader = yield* socket.reader
        yield* server.send("last words")
        const info = yield* server.close(4001, "x")
        assert.strictEqual(info.code, 4001)
        assert.deepStrictEqual(yield* reader.pull, ["last words"])
        const reason = yield* reasonOf(reader.pull)
        assert.instanceOf(reason, Socket.SocketCloseError)
        assert.deepInclude(reason, { _tag: "SocketCloseError", code: 4001, closeReason: "x" })
        assert.deepInclude(yield* reasonOf(reader.pull), { code: 4001 })
      }))
      // a later reader reports the same close
      const later = yield* Effect.scoped(Effect.flatMap(socket.reader, (r) => reasonOf(r.pull)))
      assert.deepInclude(later, { _tag: "SocketCloseError", code: 4001, closeReason: "x" })
      // writes after the close are discarded
      const writer = yield* socket.writer
      yield* writer.write("too late")
    }))

  it.live("writing a CloseEvent closes the connection with its code and reason", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const serverSaw = yield* Effect.forkScoped(Stream.runCollect(server.messages))
      const socket = EffectSocket.toSocket(client)
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      yield* writer.write("before")
      yield* writer.write(new Socket.CloseEvent(4002, "bye"))
      // writes once the Close is written are discarded, as after a WHATWG WebSocket's close()
      yield* writer.write("after")
      yield* writer.writeAll([new Uint8Array([1]), "after too"])
      const reason = yield* reasonOf(reader.pull)
      assert.deepInclude(reason, { _tag: "SocketCloseError", code: 4002, closeReason: "bye" })
      const info = yield* server.closed
      assert.deepStrictEqual(info, { code: 4002, reason: "bye", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* Fiber.join(serverSaw), ["before"])
    }))

  it.live("a write left incomplete (interrupted half-way) fails the writes after it with SocketWriteError: the connection is still open, nothing is discarded silently", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair({ highWaterMark: 1024, connection: { messageBuffer: 1 } })
      yield* Effect.addFinalizer(() => Effect.andThen(client.abort, server.abort))
      const socket = EffectSocket.toSocket(client)
      const writer = yield* socket.writer
      // the peer takes no messages: once it holds two, it reads nothing more
      yield* writer.writeAll(["x", "y"])
      yield* Effect.sleep("20 millis")
      // a client's message beyond its send buffer goes out in parts
      const cut = yield* Effect.exit(Effect.timeout(writer.write(new Uint8Array(256 * 1024)), "100 millis"))
      assert.isTrue(Exit.isFailure(cut))
      const after = yield* reasonOf(writer.write("after"))
      assert.strictEqual(after._tag, "SocketWriteError")
      const all = yield* reasonOf(writer.writeAll(["a", "b"]))
      assert.strictEqual(all._tag, "SocketWriteError")
      assert.isFalse(yield* Effect.map(Effect.timeoutOption(client.closed, "10 millis"), (o) => o._tag === "Some"))
    }))

  it.live("writing a CloseEvent returns without waiting for the peer's answer", () =>
    Effect.gen(function*() {
      // the peer takes no messages: once it holds one, it reads nothing more (nor the Close)
      const [client, server] = yield* Connection.makeMemoryPair({ connection: { messageBuffer: 1 } })
      yield* Effect.addFinalizer(() => Effect.andThen(client.abort, server.abort))
      const socket = EffectSocket.toSocket(client)
      const writer = yield* socket.writer
      yield* writer.writeAll(["x", "y"])
      yield* Effect.sleep("20 millis")
      const write = yield* Effect.forkChild(writer.write(new Socket.CloseEvent(1000)), { startImmediately: true })
      for (let i = 0; i < 50 && write.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
      assert.isDefined(write.pollUnsafe(), "the write waited for the closing handshake")
      assert.isFalse(yield* Effect.map(Effect.timeoutOption(client.closed, "10 millis"), (o) => o._tag === "Some"))
    }))

  it.live("a CloseEvent with a code that may not be sent fails with SocketWriteError and keeps the connection", () =>
    Effect.gen(function*() {
      const { reader, writer } = yield* echoSocket
      const reason = yield* reasonOf(writer.write(new Socket.CloseEvent(1005)))
      assert.strictEqual(reason._tag, "SocketWriteError")
      assert.strictEqual((reason as Socket.SocketWriteError).cause instanceof Error, true)
      const long = yield* reasonOf(writer.write(new Socket.CloseEvent(1000, "x".repeat(124))))
      assert.strictEqual(long._tag, "SocketWriteError")
      yield* writer.write("still open")
      assert.deepStrictEqual(yield* reader.pull, ["still open"])
    }))

  it.live("a CloseEvent whose reason is exactly 123 UTF-8 bytes (the most a Close frame holds) closes with it", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const writer = yield* EffectSocket.toSocket(client).writer
      const reason = "é".repeat(61) + "x" // 2 * 61 + 1 = 123 bytes
      yield* writer.write(new Socket.CloseEvent(4000, reason))
      assert.deepInclude(yield* server.closed, { code: 4000, reason })
      assert.deepInclude(yield* client.closed, { code: 4000, reason, clean: true })
    }))

  it.live("writeAll sends its chunks one after the other: a chunk that cannot be sent fails it once those before it went out whole, and those after it are not sent", () =>
    Effect.gen(function*() {
      // a small transport buffer: the first chunk has to wait for room several times
      const [client, server] = yield* Connection.makeMemoryPair({ highWaterMark: 1024 })
      const received = yield* Effect.forkChild(Stream.runCollect(Stream.take(server.messages, 2)))
      const writer = yield* EffectSocket.toSocket(client).writer
      const big = "x".repeat(64 * 1024)
      const detached = new Uint8Array(4)
      structuredClone(detached.buffer, { transfer: [detached.buffer] })
      const error = yield* Effect.flip(writer.writeAll([big, detached, "after"]))
      assert.strictEqual(error.reason._tag, "SocketWriteError")
      yield* writer.write("next")
      const got = yield* Fiber.join(received).pipe(Effect.timeout("2 seconds"))
      assert.deepStrictEqual(got, [big, "next"])
    }))

  it.live("a transport failure fails the reader with SocketReadError", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const reader = yield* EffectSocket.toSocket(client).reader
      yield* server.abort
      const reason = yield* reasonOf(reader.pull)
      assert.strictEqual(reason._tag, "SocketReadError")
      assert.strictEqual(((reason as Socket.SocketReadError).cause as { _tag: string })._tag, "TransportError")
      // and so does every later pull: the same error, not the close that followed
      assert.strictEqual(yield* reasonOf(reader.pull), reason)
    }))

  it.live("readers are exclusive and hand over the messages they did not pull", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      const socket = EffectSocket.toSocket(client)
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const reader = yield* socket.reader
        const acquired = yield* Deferred.make<void>()
        const second = yield* Effect.forkChild(
          Effect.scoped(Effect.andThen(socket.reader, Deferred.succeed(acquired, undefined)))
        )
        yield* server.send("one")
        const batch = yield* reader.pull
        yield* Effect.sleep("20 millis")
        // the second acquisition waits while the first reader is held
        assert.isFalse(yield* Deferred.isDone(acquired))
        yield* server.send("two")
        yield* server.send("three")
        yield* Effect.sleep("20 millis")
        return { batch, second, acquired }
      }))
      assert.deepStrictEqual(first.batch, ["one"])
      yield* Fiber.join(first.second)
      assert.isTrue(yield* Deferred.isDone(first.acquired))
      const rest = yield* Effect.scoped(Effect.flatMap(socket.reader, (reader) => pullN(reader, 2)))
      assert.deepStrictEqual(rest, ["two", "three"])
    }))

  it.live("closing a reader's scope fails its suspended pull with 1006 and keeps the connection", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(echo(server))
      const socket = EffectSocket.toSocket(client)
      const { pending, released } = yield* Effect.scoped(Effect.gen(function*() {
        const reader = yield* socket.reader
        const fiber = yield* Effect.forkDetach(reader.pull)
        yield* Effect.sleep("10 millis")
        return { pending: fiber, released: reader }
      }))
      const reason = yield* reasonOf(Fiber.join(pending))
      assert.deepInclude(reason, { _tag: "SocketCloseError", code: 1006 })
      const writer = yield* socket.writer
      yield* writer.write("again")
      yield* Effect.sleep("10 millis")
      // the released reader takes nothing more, even a message that is there: it stays for the next reader
      assert.deepInclude(yield* reasonOf(released.pull), { _tag: "SocketCloseError", code: 1006 })
      const got = yield* Effect.scoped(Effect.flatMap(socket.reader, (reader) => reader.pull))
      assert.deepStrictEqual(got, ["again"])
    }))
})

describe("EffectSocket.layerWebSocketConstructor", () => {
  const memoryServer = Client.layerMemory(
    (connection, request) =>
      Effect.andThen(
        connection.send(`hi ${request.url} ${connection.protocol}`),
        echo(connection)
      ),
    { selectProtocol: (offered) => offered.find((p) => p === "v2") }
  )
  const Constructor = EffectSocket.layerWebSocketConstructor.pipe(Layer.provide(memoryServer))

  it.live("Socket.makeWebSocket runs over a Client", () =>
    Effect.gen(function*() {
      const socket = yield* Socket.makeWebSocket("ws://memory/room?x=1", { protocols: ["v1", "v2"] })
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      yield* writer.write("ping")
      yield* writer.write(new Uint8Array([7, 8]))
      const got = yield* pullN(reader, 3)
      assert.deepStrictEqual(got, ["hi /room?x=1 v2", "ping", new Uint8Array([7, 8])])
      yield* writer.write(new Socket.CloseEvent(4000, "done"))
      assert.deepInclude(yield* reasonOf(reader.pull), { _tag: "SocketCloseError", code: 4000, closeReason: "done" })
      // a single subprotocol given as a string (the constructor then gets the string) is offered too
      const single = yield* Socket.makeWebSocket("ws://memory/", { protocols: "v2" })
      assert.deepStrictEqual(yield* (yield* single.reader).pull, ["hi / v2"])
    }).pipe(Effect.provide(Constructor)))

  it.live("the WebSocket-like object goes through its ready states and honours once", () =>
    Effect.gen(function*() {
      const make = yield* Socket.WebSocketConstructor
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      const log: Array<string> = []
      const closed = yield* Deferred.make<EffectSocket.ClientWebSocketEvent>()
      assert.strictEqual(ws.readyState, 0)
      assert.throws(() => ws.send("early"))
      ws.addEventListener("open", () => log.push(`open ${ws.readyState}`), { once: true })
      // a listener removed before any message is never called
      const removedEarly = () => log.push("removed early")
      ws.addEventListener("message", removedEarly)
      ws.removeEventListener("message", removedEarly)
      ws.addEventListener("message", (e) => log.push(`message ${String(e.data)}`))
      const onceMessage = () => log.push("once")
      ws.addEventListener("message", onceMessage, { once: true })
      // adding a listener again does nothing, as with a WHATWG WebSocket: it stays a once listener
      ws.addEventListener("message", onceMessage)
      // a listener removed by one called before it for the same event is not called for it
      const removedMidway = () => log.push("removed midway")
      ws.addEventListener("message", () => ws.removeEventListener("message", removedMidway))
      ws.addEventListener("message", removedMidway)
      ws.onmessage = (e) => log.push(`onmessage ${String(e.data)}`)
      assert.deepStrictEqual([ws.CONNECTING, ws.OPEN, ws.CLOSING, ws.CLOSED], [0, 1, 2, 3])
      ws.addEventListener("close", (e) => Deferred.doneUnsafe(closed, Exit.succeed(e)))
      yield* until(() => ws.readyState === 1, "open")
      assert.strictEqual(ws.protocol, "")
      ws.send("a")
      ws.send("b")
      yield* until(() => log.length === 8, "the greeting and both echoes dispatched")
      assert.throws(() => ws.close(1005))
      ws.close(4001, "x")
      assert.strictEqual(ws.readyState, 2)
      ws.send("discarded")
      const event = yield* Deferred.await(closed)
      assert.strictEqual(ws.readyState, 3)
      assert.deepInclude(event, { type: "close", code: 4001, reason: "x", wasClean: true })
      assert.deepStrictEqual(log, [
        "open 1",
        "message hi / ",
        "once",
        "onmessage hi / ",
        "message a",
        "onmessage a",
        "message b",
        "onmessage b"
      ])
    }).pipe(Effect.provide(Constructor)))

  it.live("a paused WebSocket-like object whose connection the peer closed is closing: later sends are discarded, not queued without bound", () =>
    Effect.gen(function*() {
      const make = yield* Socket.WebSocketConstructor
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      const closed = yield* Deferred.make<EffectSocket.ClientWebSocketEvent>()
      const messages: Array<unknown> = []
      ws.addEventListener("message", (e) => messages.push(e.data))
      ws.addEventListener("close", (e) => Deferred.doneUnsafe(closed, Exit.succeed(e)))
      yield* whenOpen(ws)
      // as Socket.fromWebSocket does once its buffer is full and nobody pulls: the greeting waits
      ws.pause()
      // the peer says its greeting and closes: the socket is closing, its message event still to come
      const closing = yield* Effect.exit(Effect.timeout(
        Effect.gen(function*() {
          while (ws.readyState === 1) yield* Effect.sleep("5 millis")
        }),
        "3 seconds"
      ))
      assert.isTrue(Exit.isSuccess(closing), "the socket is still open 3 s after the peer closed")
      assert.strictEqual(ws.readyState, 2)
      const buffered = ws.bufferedAmount
      for (let i = 0; i < 1000; i++) ws.send("x".repeat(100))
      yield* Effect.sleep("10 millis")
      assert.strictEqual(ws.bufferedAmount, buffered, "sends after the close are discarded, not queued for a write loop that has ended")
      // close() on the closing socket resumes it, as it does an open one
      ws.close()
      const event = yield* Effect.timeout(Deferred.await(closed), "3 seconds")
      assert.deepStrictEqual(messages, ["welcome"], "the message that came before the close is still dispatched, before it")
      assert.deepInclude(event, { type: "close", code: 1000, wasClean: true })
      assert.strictEqual(ws.readyState, 3)
    }).pipe(
      Effect.provide(
        EffectSocket.layerWebSocketConstructor.pipe(Layer.provide(Client.layerMemory((connection) => connection.send("welcome"))))
      )
    ))

  it.live("a paused WebSocket-like object dispatches no message, even when send() wakes it; resume() dispatches what came meanwhile, in order", () =>
    Effect.gen(function*() {
      let peer: Connection.Connection | undefined
      const { ws } = yield* openedSocket(() =>
        Effect.map(Connection.makeMemoryPair(), ([client, server]) => {
          peer = server
          return client
        })
      )
      const messages: Array<unknown> = []
      const both = yield* Deferred.make<void>()
      ws.addEventListener("message", (e) => {
        messages.push(e.data)
        if (messages.length === 2) Deferred.doneUnsafe(both, Exit.void)
      })
      ws.pause()
      assert.isTrue(ws.isPaused)
      yield* peer!.send("one")
      // a send wakes the write loop, not the paused message events
      ws.send("ping")
      assert.deepStrictEqual(yield* Stream.runHead(peer!.messages), Option.some("ping"))
      yield* peer!.send("two")
      yield* Effect.sleep("20 millis")
      assert.deepStrictEqual(messages, [], "nothing is dispatched while paused")
      ws.resume()
      assert.isFalse(ws.isPaused)
      yield* Effect.timeout(Deferred.await(both), "2 seconds")
      assert.deepStrictEqual(messages, ["one", "two"])
      ws.close()
    }))

  it.live("the WebSocket-like object sends bytes of any kind as binary, and other values as their text, as a WHATWG WebSocket does", () =>
    Effect.gen(function*() {
      const make = yield* Socket.WebSocketConstructor
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      ws.binaryType = "uint8array"
      const received: Array<unknown> = []
      const done = yield* Deferred.make<void>()
      const sent: ReadonlyArray<readonly [unknown, unknown]> = [
        ["\uFEFFtext", "\uFEFFtext"],
        [5, "5"],
        [[1, 2, 3], "1,2,3"],
        [null, "null"],
        [{ toString: () => "custom" }, "custom"],
        [new Uint16Array([0x0201]), new Uint8Array([1, 2])],
        [new DataView(new Uint8Array([9, 8, 7]).buffer, 1), new Uint8Array([8, 7])],
        [new Uint8Array([4, 5]).buffer, new Uint8Array([4, 5])],
        [new SharedArrayBuffer(2), new Uint8Array([0, 0])]
      ]
      ws.addEventListener("message", (e) => {
        received.push(e.data)
        if (received.length === sent.length + 2) Deferred.doneUnsafe(done, Exit.void)
      })
      yield* until(() => ws.readyState === 1, "open")
      assert.throws(() => ws.send(new Blob(["b"]) as never), TypeError)
      for (const [value] of sent) ws.send(value as never)
      // send copies the bytes it queues: the caller may reuse its memory at once
      const reused = new Uint8Array([6, 6, 6, 6])
      ws.send(reused.subarray(1, 3))
      reused.fill(0)
      yield* Deferred.await(done).pipe(Effect.timeout("2 seconds"))
      assert.deepStrictEqual(received, ["hi / ", ...sent.map(([, expected]) => expected), new Uint8Array([6, 6])])
      ws.close()
    }).pipe(Effect.provide(Constructor)))

  it.live("bufferedAmount counts the UTF-8 bytes of what send() queued, and is back to 0 once it went out", () =>
    Effect.gen(function*() {
      const make = yield* Socket.WebSocketConstructor
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      const echoed = yield* Deferred.make<void>()
      let messages = 0
      // the greeting, then the two echoes
      ws.addEventListener("message", () => ++messages === 3 && Deferred.doneUnsafe(echoed, Exit.void))
      yield* whenOpen(ws)
      assert.strictEqual(ws.bufferedAmount, 0)
      ws.send("é€") // 2 + 3 bytes of UTF-8, 2 UTF-16 units
      ws.send(new Uint8Array(4))
      assert.strictEqual(ws.bufferedAmount, 9, "queued: the bytes that go on the wire")
      yield* Effect.timeout(Deferred.await(echoed), "2 seconds")
      assert.strictEqual(ws.bufferedAmount, 0, "handed to the transport: nothing buffered any more")
      ws.close()
    }).pipe(Effect.provide(Constructor)))

  it.live("an open listener added once open gets the open event (only it: onopen is not called again); one added once closing gets none", () =>
    Effect.gen(function*() {
      const make = yield* Socket.WebSocketConstructor
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      const log: Array<string> = []
      const opened = yield* Deferred.make<void>()
      const lateOpened = yield* Deferred.make<void>()
      const closed = yield* Deferred.make<void>()
      ws.onopen = () => {
        log.push("onopen")
        Deferred.doneUnsafe(opened, Exit.void)
      }
      ws.addEventListener("close", () => Deferred.doneUnsafe(closed, Exit.void))
      yield* Deferred.await(opened)
      ws.addEventListener("open", () => {
        log.push("added once open")
        Deferred.doneUnsafe(lateOpened, Exit.void)
      })
      yield* Effect.timeout(Deferred.await(lateOpened), "2 seconds")
      ws.close(1000)
      assert.strictEqual(ws.readyState, 2)
      ws.addEventListener("open", () => log.push("added once closing"))
      yield* Effect.timeout(Deferred.await(closed), "2 seconds")
      assert.deepStrictEqual(log, ["onopen", "added once open"])
    }).pipe(Effect.provide(Constructor)))

  it.live.prop(
    "the WebSocket-like object under any sequence of calls: events in order, ready states forward, echoes in order",
    { calls: Arbitrary.array(Arbitrary.all([int(0, 9), int(0, 300), int(0, 30)]), { minLength: 5, maxLength: 30 }), early: int(0, 4) },
    ({ calls, early }) =>
      Effect.gen(function*() {
        const make = yield* Socket.WebSocketConstructor
        const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
        const events: Array<{ readonly type: string; readonly state: number }> = []
        const received: Array<string | Uint8Array> = []
        const closed = yield* Deferred.make<void>()
        const opened = yield* Deferred.make<void>()
        ws.addEventListener("open", () => Deferred.doneUnsafe(opened, Exit.void))
        for (const type of ["open", "message", "error", "close"] as const) {
          ws.addEventListener(type, (event) => {
            events.push({ type, state: ws.readyState })
            if (type === "message") {
              const data = event.data
              received.push(typeof data === "string" ? data : new Uint8Array(data as ArrayBuffer))
            }
            if (type === "close") Deferred.doneUnsafe(closed, Exit.void)
          })
        }
        const sent: Array<string | Uint8Array> = []
        let closing = false
        // mostly from the open state on; sometimes (early) while still connecting
        if (early !== 0) yield* Effect.timeout(Deferred.await(opened), "5 seconds")
        for (const [kind, size, wait] of calls) {
          const state = ws.readyState
          if (kind <= 5) {
            const message = kind <= 2 ? "é".repeat(size) : Uint8Array.from({ length: size }, (_, i) => (i * 7 + size) & 0xff)
            if (state === 0) {
              assert.throws(() => ws.send(message)) // not open yet
            } else {
              ws.send(message)
              if (state === 1) sent.push(message) // once closing, sends are discarded
            }
          } else if (kind === 6) {
            ws.close(size % 2 === 0 ? 1000 : 4000 + size, "bye")
            closing = true
          } else if (kind === 7) {
            // a code that may not be sent: a RangeError, and nothing changes
            assert.throws(() => ws.close(1005), RangeError)
            assert.strictEqual(ws.readyState, state)
          } else if (kind === 8) {
            ws.pause()
          } else {
            ws.resume()
          }
          if (wait > 20) yield* Effect.sleep(wait - 20)
        }
        if (!closing) ws.close(1000)
        ws.resume()
        yield* Effect.timeout(Deferred.await(closed), "5 seconds")
        assert.strictEqual(ws.readyState, 3)
        const types = events.map((e) => e.type)
        // one close, last; at most one open, before every message; at most one error
        assert.strictEqual(types.filter((t) => t === "close").length, 1, types.join())
        assert.strictEqual(types.at(-1), "close")
        assert.isAtMost(types.filter((t) => t === "open").length, 1)
        assert.isAtMost(types.filter((t) => t === "error").length, 1)
        if (types.includes("message")) assert.isBelow(types.indexOf("open"), types.indexOf("message"))
        // ready states only go forward
        events.forEach((e, i) => i > 0 && assert.isAtLeast(e.state, events[i - 1]!.state))
        // the greeting, then echoes of what was sent while open: whole, in order (a prefix when the
        // close came first)
        if (received.length > 0) assert.strictEqual(received[0], "hi / ")
        const echoes = received.slice(1)
        assert.isAtMost(echoes.length, sent.length)
        echoes.forEach((message, i) => assert.deepStrictEqual(message, sent[i]))
      }).pipe(Effect.provide(Constructor)),
    // (lists grow with the check's size, 10 by default: up to 30 calls)
    { timeout: 60_000, arbitrary: { runs: 60, size: 30 } }
  )

  it.live("closing while connecting abandons the connect: error, then close 1006", () =>
    Effect.gen(function*() {
      const make = yield* Socket.WebSocketConstructor
      const ws = make("ws://memory/")
      const events: Array<Socket.WebSocketEvent> = []
      const closed = yield* Deferred.make<void>()
      ws.addEventListener("error", (e) => events.push(e))
      ws.addEventListener("close", (e) => {
        events.push(e)
        Deferred.doneUnsafe(closed, Exit.void)
      })
      ws.close()
      // nothing is dispatched from inside close(): the socket is closing until the events come
      assert.deepStrictEqual([ws.readyState, events.length], [2, 0])
      yield* Deferred.await(closed)
      assert.strictEqual(ws.readyState, 3)
      assert.deepStrictEqual(events.map((e) => e.type), ["error", "close"])
      assert.strictEqual(events[1]!.code, 1006)
    }).pipe(Effect.provide(Constructor)))

  it.live("close() while connecting abandons a connect that succeeds at that very moment: the socket never opens", () =>
    Effect.gen(function*() {
      let ws: EffectSocket.ClientWebSocket | undefined
      // the connect succeeds in the same step as close(): before the abandon interrupts it
      const make = yield* EffectSocket.makeWebSocketConstructor(() =>
        Effect.flatMap(Connection.makeMemoryPair(), ([client]) =>
          Effect.sync(() => {
            ws!.close(1000)
            return client
          }))
      )
      ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      const events: Array<string> = []
      const closed = yield* Deferred.make<EffectSocket.ClientWebSocketEvent>()
      for (const type of ["open", "message", "error"] as const) ws.addEventListener(type, () => events.push(type))
      ws.addEventListener("close", (e) => Deferred.doneUnsafe(closed, Exit.succeed(e)))
      const event = yield* Effect.timeout(Deferred.await(closed), "2 seconds")
      assert.deepStrictEqual(events, ["error"])
      assert.deepInclude(event, { code: 1006, wasClean: false })
      assert.strictEqual(ws.readyState, 3)
    }))

  it.live("close() without a code sends an empty Close: both sides report 1005, as with a browser and ws", () =>
    Effect.gen(function*() {
      const { connect, peer } = deafPeer()
      const make = yield* EffectSocket.makeWebSocketConstructor(connect)
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      const closed = yield* Deferred.make<EffectSocket.ClientWebSocketEvent>()
      ws.addEventListener("open", () => ws.close(undefined, "ignored without a code"))
      ws.addEventListener("close", (e) => Deferred.doneUnsafe(closed, Exit.succeed(e)))
      const event = yield* Deferred.await(closed)
      assert.deepInclude(event, { type: "close", code: 1005, reason: "", wasClean: true })
      assert.deepStrictEqual(yield* peer()!.closed, { code: 1005, reason: "", clean: true, initiator: "remote" })
    }))

  it.effect("closing the constructor's scope cuts a closing socket still sending after the 5 second grace", () =>
    Effect.gen(function*() {
      const { connect, peer } = deafPeer()
      const scope = yield* Scope.make()
      const make = yield* EffectSocket.makeWebSocketConstructor(connect).pipe(Scope.provide(scope))
      const ws = make("ws://memory/")
      yield* whenOpen(ws)
      for (let i = 0; i < 40; i++) ws.send("x".repeat(16 * 1024))
      ws.close(1000)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void), { startImmediately: true })
      yield* TestClock.adjust("5 seconds")
      for (let i = 0; i < 100 && closing.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
      // bounded by the grace: the socket is cut rather than given a further close timeout
      const closedInTime = closing.pollUnsafe() !== undefined
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.await(closing)
      assert.isTrue(closedInTime)
      assert.strictEqual(ws.readyState, 3)
      assert.strictEqual((yield* peer()!.closed).code, 1006)
    }))

  it.effect("close() while queued sends wait for a peer that reads nothing cuts the socket after the 5 second grace: close 1006", () =>
    Effect.gen(function*() {
      const { connect, peer } = deafPeer()
      const { closed, errors, ws } = yield* openedSocket(connect)
      for (let i = 0; i < 40; i++) ws.send("x".repeat(16 * 1024))
      ws.close(1000)
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow
      yield* TestClock.adjust("4 seconds")
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow
      assert.isFalse(Deferred.isDoneUnsafe(closed), "what was queued before the Close gets the grace")
      yield* TestClock.adjust("1 second")
      const event = yield* Deferred.await(closed)
      assert.deepInclude(event, { type: "close", code: 1006, wasClean: false })
      assert.deepStrictEqual(errors, [], "cut for making no progress: a close event only")
      assert.strictEqual(ws.readyState, 3)
      assert.strictEqual((yield* peer()!.closed).code, 1006)
    }))

  it.effect("a peer that keeps reading, however slowly, is sent everything queued before close(): the grace counts only time without progress", () =>
    Effect.gen(function*() {
      const { connect, peer } = deafPeer()
      const { closed, errors, ws } = yield* openedSocket(connect)
      // the peer takes a message every half second: 40 of them take 20 seconds
      let received = 0
      yield* Effect.forkChild(Stream.runForEach(peer()!.messages, () => Effect.andThen(Effect.sleep("500 millis"), Effect.sync(() => received++))))
      for (let i = 0; i < 40; i++) ws.send("x".repeat(16 * 1024))
      ws.close(1000, "done")
      for (let second = 0; second < 30 && !Deferred.isDoneUnsafe(closed); second++) {
        yield* TestClock.adjust("1 second")
        for (let i = 0; i < 50; i++) yield* Effect.yieldNow
      }
      const event = yield* Deferred.await(closed)
      assert.deepInclude(event, { type: "close", code: 1000, reason: "done", wasClean: true })
      assert.deepStrictEqual(errors, [])
      // every message went out: the peer took them for well past the grace (then, closing, it
      // dropped those its consumer had not taken within a second, as a connection does)
      assert.isAtLeast(received, 20)
    }))

  it.live("closing a constructor's scope does not wait for a paused socket whose connection ended and that was not asked to close", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const make = yield* EffectSocket.makeWebSocketConstructor(Client.connect).pipe(Scope.provide(scope))
      const ws = make("ws://memory/") as EffectSocket.ClientWebSocket
      yield* whenOpen(ws)
      ws.pause()
      // the peer says its greeting and closes; the greeting waits for the paused socket
      for (let i = 0; i < 600 && ws.readyState === 1; i++) yield* Effect.sleep("5 millis")
      assert.strictEqual(ws.readyState, 2)
      const start = Date.now()
      yield* Scope.close(scope, Exit.void)
      assert.isBelow(Date.now() - start, 1000, "no grace for a socket nobody asked to close")
      assert.strictEqual(ws.readyState, 3)
    }).pipe(Effect.provide(Client.layerMemory((connection) => connection.send("welcome")))))

  it.live("the constructor throws once its scope is closed", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const make = yield* EffectSocket.makeWebSocketConstructor(Client.connect).pipe(Scope.provide(scope))
      const ws = make("ws://memory/")
      assert.strictEqual(ws.readyState, 0)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(ws.readyState, 3)
      assert.throws(() => make("ws://memory/"), /closed/)
    }).pipe(Effect.provide(memoryServer)))

  it.live("Socket.makeWebSocket opens even when the socket opens while its reader yields before listening for open", () =>
    Effect.gen(function*() {
      // `Socket.fromWebSocket` reads `readyState` (0), yields, then adds its `open` listener: an
      // `open` dispatched in between must still reach it (else the reader fails after openTimeout)
      const missed: Array<string> = []
      for (const socketBudget of [3, 4, 5, 6, 7, 8]) {
        for (const readerBudget of [3, 4, 5]) {
          for (let k = 0; k < 4; k++) {
            const exit = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
              const [client, server] = yield* Connection.makeMemoryPair()
              yield* Effect.forkScoped(Effect.andThen(server.send("hi"), echo(server)))
              const make = yield* EffectSocket.makeWebSocketConstructor(() =>
                Effect.andThen(Effect.forEach(Array.from({ length: k }), () => Effect.yieldNow), Effect.succeed(client))
              ).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, socketBudget))
              const socket = yield* Socket.makeWebSocket("ws://memory/", { openTimeout: "100 millis" }).pipe(
                Effect.provideService(Socket.WebSocketConstructor, make)
              )
              const reader = yield* socket.reader
              const writer = yield* socket.writer
              yield* writer.write("x")
              assert.deepStrictEqual(yield* pullN(reader, 2), ["hi", "x"])
            }).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, readerBudget))))
            if (Exit.isFailure(exit)) missed.push(`socket ${socketBudget}, reader ${readerBudget}, connect after ${k} yields`)
          }
        }
      }
      assert.deepStrictEqual(missed, [])
    }))

  it.live("a refused connect fails the reader with SocketOpenError", () =>
    Effect.gen(function*() {
      const socket = yield* Socket.makeWebSocket("http+bogus://memory/")
      const reason = yield* Effect.scoped(Effect.flatMap(socket.reader, (r) => r.pull)).pipe(reasonOf)
      assert.strictEqual(reason._tag, "SocketOpenError")
      assert.strictEqual((reason as Socket.SocketOpenError).kind, "Unknown")
      const cause = (reason as Socket.SocketOpenError).cause as EffectSocket.ClientWebSocketEvent
      assert.strictEqual((cause.error as Client.ConnectError).reason, "InvalidUrl")
    }).pipe(Effect.provide(Constructor)))
})
