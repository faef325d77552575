/**
 * Interoperability with the WHATWG `WebSocket` client built into Node.js (the global `WebSocket`,
 * implemented by undici, present without flags from Node 22 on): our server with that client, as
 * browser code written against the standard API would use it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Scope } from "effect"
import { Socket } from "effect/socket"
import { NodeServer } from "../../src/index.ts"
import {
  attempt,
  bytesOfSize,
  type Digest,
  digest,
  echoServer,
  Mailbox,
  payloadOfKind,
  protocolPicker,
  SIZES,
  within
} from "./helpers.ts"

const KINDS = ["text", "binary"] as const

/** How the built-in client's `close` event described the end. */
interface CloseEventInfo {
  readonly code: number
  readonly reason: string
  readonly wasClean: boolean
}

/** A built-in `WebSocket` with its events collected. */
interface BuiltinPeer {
  readonly socket: WebSocket
  /** The data of the next `message` event (bounded). */
  readonly next: (millis?: number) => Effect.Effect<string | ArrayBuffer | Blob, Error>
  /** The `close` event (bounded). */
  readonly closed: Effect.Effect<CloseEventInfo, Error>
  /** The first `error` event (bounded). */
  readonly errored: Effect.Effect<void, Error>
  /** The `open`, `error` and `close` events, in the order they fired. */
  readonly events: ReadonlyArray<string>
}

/** Opens a built-in `WebSocket` to `url` and collects its events from the start. */
const builtinPeer = (
  url: string,
  protocols: ReadonlyArray<string> = [],
  binaryType: WebSocket["binaryType"] = "arraybuffer"
): BuiltinPeer => {
  const socket = new WebSocket(url, [...protocols])
  socket.binaryType = binaryType
  const messages = new Mailbox<string | ArrayBuffer | Blob>()
  const closed = Deferred.makeUnsafe<CloseEventInfo>()
  const errored = Deferred.makeUnsafe<void>()
  const events: Array<string> = []
  socket.addEventListener("open", () => events.push("open"))
  socket.addEventListener("error", () => {
    events.push("error")
    Deferred.doneUnsafe(errored, Effect.void)
  })
  socket.addEventListener("message", (event) => messages.push(event.data))
  socket.addEventListener("close", (event) => {
    events.push("close")
    Deferred.doneUnsafe(closed, Effect.succeed({ code: event.code, reason: event.reason, wasClean: event.wasClean }))
  })
  return {
    socket,
    next: (millis = 10_000) => within(messages.take, millis, "a message at the built-in client"),
    closed: within(Deferred.await(closed), 10_000, "the built-in client's close event"),
    errored: within(Deferred.await(errored), 10_000, "the built-in client's error event"),
    events
  }
}

/** A built-in `WebSocket` that opened `url`, closed (if still open) when the scope closes. */
const builtinConnect = (url: string, protocols?: ReadonlyArray<string>, binaryType?: WebSocket["binaryType"]) =>
  Effect.acquireRelease(
    within(
      Effect.callback<BuiltinPeer, Error>((resume) => {
        const peer = builtinPeer(url, protocols, binaryType)
        peer.socket.addEventListener("open", () => resume(Effect.succeed(peer)))
        // (the undici of Node 22 fires only `error` when the opening handshake fails)
        peer.socket.addEventListener("error", () => resume(Effect.fail(new Error("the built-in client could not connect: error event"))))
        peer.socket.addEventListener("close", (event) =>
          resume(Effect.fail(new Error(`the built-in client could not connect: close ${event.code}`))))
        return Effect.sync(() => peer.socket.close())
      }),
      10_000,
      `the built-in client to open ${url}`
    ),
    (peer) => Effect.sync(() => peer.socket.close())
  )

/** What a `message` event carried, as something cheap to compare (a `Blob` is named, not read). */
const dataDigest = (data: string | ArrayBuffer | Blob): Digest | string =>
  typeof data === "string"
    ? digest(data)
    : data instanceof ArrayBuffer
    ? digest(new Uint8Array(data))
    : `a ${Object.prototype.toString.call(data)}`

describe("Node.js built-in WebSocket client → our server", () => {
  for (const kind of KINDS) {
    it.live(`${kind} messages of ${SIZES.join(", ")} bytes arrive intact both ways`, () =>
      Effect.gen(function*() {
        const { accepted, server } = yield* echoServer()
        const peer = yield* builtinConnect(server.url)
        const side = yield* accepted
        const sent = []
        for (const size of SIZES) {
          const payload = payloadOfKind(kind, size)
          sent.push(digest(payload))
          peer.socket.send(payload)
          const echoed = yield* peer.next(20_000)
          assert.deepStrictEqual(dataDigest(echoed), digest(payload), `${kind} message of ${size} bytes`)
        }
        assert.deepStrictEqual(side.received, sent, "what our server received")
        assert.strictEqual(side.connection.stats.messagesIn, SIZES.length)
        assert.strictEqual(side.connection.stats.messagesOut, SIZES.length)
        assert.deepStrictEqual(peer.events, ["open"])
      }), 60_000)
  }

  it.live("with binaryType \"blob\", a binary message arrives as a Blob of the same bytes", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* builtinConnect(server.url, [], "blob")
      const side = yield* accepted
      const payload = bytesOfSize(70_000)
      peer.socket.send(payload)
      const echoed = yield* peer.next()
      assert.instanceOf(echoed, Blob)
      const blob = echoed as Blob
      assert.strictEqual(blob.size, payload.length)
      const bytes = new Uint8Array(yield* attempt("reading the Blob", () => blob.arrayBuffer()))
      assert.deepStrictEqual(digest(bytes), digest(payload))
      assert.deepStrictEqual(side.received, [digest(payload)])
    }))

  it.live("100 messages sent at once over IPv6 loopback (::1) are received and echoed in order", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer({ host: "::1" })
      assert.match(server.url, /^ws:\/\/\[::1\]:\d+\/$/)
      const peer = yield* builtinConnect(server.url)
      const side = yield* accepted
      const messages = Array.from({ length: 100 }, (_, i) =>
        i % 2 === 0 ? `message ${i}` : new TextEncoder().encode(`message ${i}`))
      for (const message of messages) peer.socket.send(message)
      for (const [i, message] of messages.entries()) {
        const echoed = yield* peer.next()
        assert.deepStrictEqual(dataDigest(echoed), digest(message), `message ${i}`)
      }
      assert.deepStrictEqual(side.received, messages.map(digest))
    }))

  it.live("subprotocol: the built-in client offers a and b, our selectProtocol picks b", () =>
    Effect.gen(function*() {
      const { offers, selectProtocol } = protocolPicker("b")
      const { accepted, server } = yield* echoServer({ selectProtocol })
      const peer = yield* builtinConnect(server.url, ["a", "b"])
      const side = yield* accepted
      assert.strictEqual(peer.socket.protocol, "b")
      assert.strictEqual(side.connection.protocol, "b")
      assert.deepStrictEqual(offers, [["a", "b"]])
    }))

  it.live("our authorize refusing with 403: the built-in client fires error, then (undici 7 on) close with 1006, not clean", () =>
    Effect.gen(function*() {
      const asked: Array<string> = []
      const { server } = yield* echoServer({
        authorize: (request) =>
          Effect.suspend(() => {
            asked.push(request.url)
            return Effect.fail(new NodeServer.Rejection({ status: 403, message: "not you" }))
          })
      })
      const peer = builtinPeer(`${server.url}private?room=1`)
      yield* Effect.addFinalizer(() => Effect.sync(() => peer.socket.close()))
      yield* peer.errored
      // The undici of Node 22 fires no `close` after a failed opening handshake and stays
      // CONNECTING (nodejs/undici#3546, fixed in undici 7, Node 24's)
      const undici = Number.parseInt(process.versions.undici ?? "", 10)
      if (Number.isNaN(undici) || undici >= 7) {
        const closed = yield* peer.closed
        // (the early undici 7 of Node 24.0 closes with 1002 and a reason of its own instead of the
        // standard's 1006: the client's choice, the server refused all the same)
        const early = { code: 1002, reason: "Received network error or non-101 status code.", wasClean: false }
        assert.deepStrictEqual(closed, closed.code === 1002 ? early : { code: 1006, reason: "", wasClean: false })
        assert.deepStrictEqual(peer.events, ["error", "close"])
        assert.strictEqual(peer.socket.readyState, WebSocket.CLOSED)
      } else {
        assert.deepStrictEqual(peer.events, ["error"])
        assert.strictEqual(peer.socket.readyState, WebSocket.CONNECTING)
      }
      assert.deepStrictEqual(asked, ["/private?room=1"])
      assert.strictEqual(yield* server.connections, 0)
    }))

  it.live("the built-in client closes with 4000 and a UTF-8 reason: our closed has them, clean, and so does its close event", () =>
    Effect.gen(function*() {
      const reason = "ça ferme — 👋"
      const { accepted, server } = yield* echoServer()
      const peer = yield* builtinConnect(server.url)
      const side = yield* accepted
      peer.socket.close(4000, reason)
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4000, reason, clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* peer.closed, { code: 4000, reason, wasClean: true })
      assert.deepStrictEqual(peer.events, ["open", "close"])
      assert.strictEqual(yield* within(Deferred.await(side.outcome), 5_000, "the handler"), "end")
    }))

  it.live("our close(4001, \"bye\") reaches the built-in client, clean; it answers with the code alone", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* builtinConnect(server.url)
      const side = yield* accepted
      const info = yield* within(side.connection.close(4001, "bye"), 10_000, "our close")
      // the client answers with the code alone (RFC 6455 section 5.5.1: it "typically echos the
      // status code"), and our closed reports the peer's answer
      assert.deepStrictEqual(info, { code: 4001, reason: "", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* peer.closed, { code: 4001, reason: "bye", wasClean: true })
      assert.deepStrictEqual(peer.events, ["open", "close"])
    }))

  it.live("a message from the built-in client over our maxMessageSize gets close code 1009", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer({ maxMessageSize: 1024 })
      const peer = yield* builtinConnect(server.url)
      const side = yield* accepted
      const fits = bytesOfSize(1024)
      peer.socket.send(fits)
      assert.deepStrictEqual(dataDigest(yield* peer.next()), digest(fits))
      peer.socket.send(bytesOfSize(2048))
      assert.deepStrictEqual(yield* peer.closed, { code: 1009, reason: "", wasClean: true })
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      // we failed the connection (RFC 6455 section 7.1.7): our Close went out, no answer was awaited,
      // and the reason is our own explanation, which never went on the wire
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1009, false, "local"])
      assert.match(info.reason, /exceeds the maximum message size of 1024 bytes/)
      assert.match(yield* within(Deferred.await(side.outcome), 5_000, "the handler"), /InvalidProtocol/)
      assert.deepStrictEqual(side.received, [digest(fits)])
    }))

  it.live("our keepalive pings are answered by the built-in client: the connection stays open for many rounds", () =>
    Effect.gen(function*() {
      // a round is a ping every 100 ms followed by a 400 ms wait for an answer: a client that did
      // not answer would be cut off (1006) about 500 ms in, and about 6 rounds fit in 3 s
      const { accepted, server } = yield* echoServer({
        connection: { keepalive: { interval: "100 millis", timeout: "400 millis" } }
      })
      const peer = yield* builtinConnect(server.url)
      const side = yield* accepted
      yield* Effect.sleep("3 seconds")
      assert.strictEqual(peer.socket.readyState, WebSocket.OPEN)
      assert.deepStrictEqual(peer.events, ["open"])
      assert.isAtLeast(side.connection.stats.pongsIn, 2)
      assert.strictEqual(side.connection.stats.messagesIn, 0)
      peer.socket.send("still here")
      assert.strictEqual(yield* peer.next(), "still here")
      peer.socket.close(1000)
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 1000, reason: "", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* peer.closed, { code: 1000, reason: "", wasClean: true })
    }))

  it.live("a program written against effect/socket over the built-in client (effect's global constructor) talks to our server", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const socket = yield* Socket.makeWebSocket(server.url)
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      yield* writer.write("hello")
      yield* writer.write(new Uint8Array([0, 1, 2, 255]))
      const echoes: Array<string | Uint8Array> = []
      while (echoes.length < 2) echoes.push(...(yield* within(reader.pull, 10_000, "an echo through effect/socket")))
      assert.deepStrictEqual(echoes, ["hello", new Uint8Array([0, 1, 2, 255])])
      const side = yield* accepted
      yield* writer.write(new Socket.CloseEvent(4000, "bye"))
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4000, reason: "bye", clean: true, initiator: "remote" })
      const ended = yield* within(Effect.flip(reader.pull), 10_000, "the socket to end")
      assert.deepInclude(ended.reason, { _tag: "SocketCloseError", code: 4000 })
    }).pipe(Effect.provide(Socket.layerWebSocketConstructorGlobal)))

  it.live("shutting our server down closes the built-in client with 1001, clean", () =>
    Effect.gen(function*() {
      // (closed by the test's scope too, should the test fail before it closes it)
      const scope = yield* Effect.acquireRelease(Scope.make(), (scope) => Scope.close(scope, Exit.void))
      const { accepted, server } = yield* Scope.provide(echoServer(), scope)
      const peer = yield* builtinConnect(server.url)
      const side = yield* accepted
      yield* within(Scope.close(scope, Exit.void), 10_000, "the server to shut down")
      assert.deepStrictEqual(yield* peer.closed, { code: 1001, reason: "", wasClean: true })
      assert.deepStrictEqual(peer.events, ["open", "close"])
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 1001, reason: "", clean: true, initiator: "local" })
    }))
})
