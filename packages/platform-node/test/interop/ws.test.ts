/**
 * Interoperability with `ws`, the most used WebSocket implementation of Node.js: our server with
 * `ws` clients, and our client with `ws` servers.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope, Stream } from "effect"
import * as Http from "node:http"
import * as Path from "node:path"
import { type ClientOptions, WebSocket as WsClient, WebSocketServer } from "ws"
import { HttpHeader } from "@effect-websocket/schema"
import { NodeClient, NodeServer } from "../../src/index.ts"
import {
  bytesOfSize,
  digest,
  echoHandler,
  echoing,
  echoServer,
  eventually,
  Mailbox,
  messageReader,
  payloadOfKind,
  protocolPicker,
  rawToBuffer,
  type ServerSide,
  SIZES,
  tempDir,
  within,
  wsConnect,
  wsMessageDigest,
  wsPeer,
  wsSend,
  wsServer
} from "./helpers.ts"

const KINDS = ["text", "binary"] as const
const encoder = new TextEncoder()

/** A text whose UTF-8 bytes are cut inside code points, plus binary pieces with an empty one. */
const TEXT = "héllo wörld, 1 € and 😀 — ça marche"
const TEXT_BYTES = encoder.encode(TEXT)
// every cut but the first and last falls inside a code point: "é" (bytes 1-2), "ö" (8-9), "€" (17-19),
// "😀" (25-28, cut into single bytes) and "—" (30-32)
const TEXT_CUTS = [0, 2, 9, 18, 19, 26, 27, 28, 31, TEXT_BYTES.length]
const TEXT_PIECES = TEXT_CUTS.slice(1).map((end, i) => TEXT_BYTES.subarray(TEXT_CUTS[i]!, end))
const BINARY_PIECES = [bytesOfSize(1000), new Uint8Array(0), bytesOfSize(70_000), bytesOfSize(1)]
const BINARY = Buffer.concat(BINARY_PIECES)

const PING_PAYLOADS = [new Uint8Array(0), encoder.encode("hello"), bytesOfSize(125)]


/** The HTTP response with which a server refuses a `ws` client's upgrade (fails if it accepts). */
const refusal = (url: string, options: ClientOptions) =>
  within(
    Effect.callback<Http.IncomingMessage, Error>((resume) => {
      const socket = new WsClient(url, options)
      socket.on("unexpected-response", (_request, response) => {
        resume(Effect.succeed(response))
        socket.terminate()
      })
      socket.on("open", () => resume(Effect.fail(new Error("the upgrade was accepted"))))
      socket.on("error", (error) => resume(Effect.fail(error)))
      return Effect.sync(() => socket.terminate())
    }),
    10_000,
    "the refusal"
  )

describe("ws client → our server", () => {
  for (const kind of KINDS) {
    it.live(`${kind} messages of ${SIZES.join(", ")} bytes arrive intact both ways`, () =>
      Effect.gen(function*() {
        const { accepted, server } = yield* echoServer()
        const peer = yield* wsConnect(server.url)
        const side = yield* accepted
        const sent = []
        for (const size of SIZES) {
          const payload = payloadOfKind(kind, size)
          sent.push(digest(payload))
          yield* wsSend(peer, payload)
          const echoed = yield* peer.next(20_000)
          assert.deepStrictEqual(wsMessageDigest(echoed), digest(payload), `${kind} message of ${size} bytes`)
        }
        assert.deepStrictEqual(side.received, sent, "what our server received")
        assert.strictEqual(side.connection.stats.messagesIn, SIZES.length)
        assert.deepStrictEqual(peer.errors, [])
      }), 60_000)
  }

  it.live("fragments sent by ws (code points cut between frames, an empty frame, a ping in between) arrive as one message", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      for (const [i, piece] of TEXT_PIECES.entries()) {
        yield* wsSend(peer, piece, { binary: false, fin: i === TEXT_PIECES.length - 1 })
        if (i === 1) peer.socket.ping("between fragments")
      }
      assert.strictEqual((yield* peer.nextPong).toString("utf8"), "between fragments")
      const text = yield* peer.next()
      assert.isFalse(text.isBinary)
      assert.strictEqual(text.data.toString("utf8"), TEXT)
      for (const [i, piece] of BINARY_PIECES.entries()) {
        yield* wsSend(peer, piece, { binary: true, fin: i === BINARY_PIECES.length - 1 })
      }
      const binary = yield* peer.next()
      assert.isTrue(binary.isBinary)
      assert.isTrue(binary.data.equals(BINARY))
      assert.deepStrictEqual(side.received, [digest(TEXT), digest(BINARY)])
    }))

  it.live("our sendFragments reach ws as one message", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      yield* side.connection.sendFragments(Stream.fromIterable(TEXT_PIECES), "text")
      yield* side.connection.sendFragments(Stream.make("one ", "two ", "", "three"), "text")
      yield* side.connection.sendFragments(Stream.fromIterable(BINARY_PIECES), "binary")
      const first = yield* peer.next()
      const second = yield* peer.next()
      const third = yield* peer.next()
      assert.deepStrictEqual([first.isBinary, first.data.toString("utf8")], [false, TEXT])
      assert.deepStrictEqual([second.isBinary, second.data.toString("utf8")], [false, "one two three"])
      assert.isTrue(third.isBinary)
      assert.isTrue(third.data.equals(BINARY))
      assert.strictEqual(side.connection.stats.messagesOut, 3)
    }))

  it.live("a ping from ws gets our automatic pong with the same payload; pingsIn counts it", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      for (const [i, payload] of PING_PAYLOADS.entries()) {
        peer.socket.ping(payload)
        const pong = yield* peer.nextPong
        assert.isTrue(pong.equals(payload), `pong for a ${payload.length}-byte ping`)
        assert.strictEqual(side.connection.stats.pingsIn, i + 1)
      }
    }))

  it.live("our ping is answered by ws: pongsIn counts it", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      for (const [i, payload] of PING_PAYLOADS.entries()) {
        yield* side.connection.ping(payload)
        assert.isTrue((yield* peer.nextPing).equals(payload))
        yield* eventually(() => side.connection.stats.pongsIn === i + 1, 5_000, `pong ${i + 1}`)
      }
    }))

  it.live("subprotocol: ws offers a and b, our selectProtocol picks b", () =>
    Effect.gen(function*() {
      const { offers, selectProtocol } = protocolPicker("b")
      const { accepted, server } = yield* echoServer({ selectProtocol })
      const peer = yield* wsConnect(server.url, ["a", "b"])
      const side = yield* accepted
      assert.strictEqual(peer.socket.protocol, "b")
      assert.strictEqual(side.connection.protocol, "b")
      assert.deepStrictEqual(offers, [["a", "b"]])
    }))

  it.live("ws offers permessage-deflate: our server declines it, and compressible text still arrives as sent", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url, undefined, { perMessageDeflate: { threshold: 0 } })
      const side = yield* accepted
      assert.strictEqual(peer.socket.extensions, "")
      assert.isUndefined(HttpHeader.getCombined(side.connection.handshake.responseHeaders, "Sec-WebSocket-Extensions"))
      assert.include(HttpHeader.getCombined(side.connection.handshake.requestHeaders, "Sec-WebSocket-Extensions") ?? "", "permessage-deflate")
      const text = "compress me ".repeat(1000)
      yield* wsSend(peer, text)
      const echoed = yield* peer.next(10_000)
      assert.deepStrictEqual(wsMessageDigest(echoed), digest(text))
      assert.deepStrictEqual(side.received, [digest(text)])
      assert.deepStrictEqual(peer.errors, [])
    }))

  it.live("ws closes with 4000 \"custom reason\": our closed has it, clean", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      peer.socket.close(4000, "custom reason")
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4000, reason: "custom reason", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* peer.closed, { code: 4000, reason: "custom reason" })
      assert.strictEqual(yield* within(Deferred.await(side.outcome), 5_000, "the handler"), "end")
    }))

  it.live("our close(3001, \"bye\") reaches ws", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      const info = yield* within(side.connection.close(3001, "bye"), 10_000, "our close")
      assert.deepStrictEqual(yield* peer.closed, { code: 3001, reason: "bye" })
      assert.deepStrictEqual(info, { code: 3001, reason: "bye", clean: true, initiator: "local" })
    }))

  const mask = [0, 0, 0, 0]
  const invalidFrames: ReadonlyArray<{ readonly name: string; readonly bytes: ReadonlyArray<number>; readonly code: number }> = [
    { name: "a frame with RSV1 set", bytes: [0xc1, 0x80, ...mask], code: 1002 },
    { name: "an unmasked frame", bytes: [0x81, 0x02, 0x68, 0x69], code: 1002 },
    { name: "a reserved opcode", bytes: [0x83, 0x80, ...mask], code: 1002 },
    { name: "a fragmented ping", bytes: [0x09, 0x80, ...mask], code: 1002 },
    { name: "a ping of 126 bytes", bytes: [0x89, 0xfe, 0x00, 0x7e, ...mask, ...new Array<number>(126).fill(0x61)], code: 1002 },
    { name: "a continuation with no message", bytes: [0x80, 0x80, ...mask], code: 1002 },
    { name: "a text message that is not UTF-8", bytes: [0x81, 0x82, ...mask, 0xc3, 0x28], code: 1007 }
  ]
  for (const frame of invalidFrames) {
    it.live(`a ws client sending ${frame.name} gets close code ${frame.code}`, () =>
      Effect.gen(function*() {
        const { accepted, server } = yield* echoServer()
        const peer = yield* wsConnect(server.url)
        const side = yield* accepted
        peer.raw.write(Buffer.from(frame.bytes))
        const closed = yield* peer.closed
        assert.strictEqual(closed.code, frame.code)
        const info = yield* within(side.connection.closed, 10_000, "our connection to close")
        assert.strictEqual(info.code, frame.code)
        assert.isFalse(info.clean)
        assert.strictEqual(info.initiator, "local")
        assert.match(yield* within(Deferred.await(side.outcome), 5_000, "the handler"), /InvalidProtocol/)
      }))
  }

  it.live("ws closes without a code: both sides see 1005", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      peer.socket.close()
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 1005, reason: "", clean: true, initiator: "remote" })
      assert.deepStrictEqual(yield* peer.closed, { code: 1005, reason: "" })
    }))

  it.live("we close with 1005 (an empty Close): ws sees 1005 too", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      const info = yield* within(side.connection.close(1005), 10_000, "our close")
      assert.deepStrictEqual(info, { code: 1005, reason: "", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* peer.closed, { code: 1005, reason: "" })
    }))

  it.live("ws drops the TCP connection: our closed is 1006, not clean, and the messages fail", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      peer.socket.terminate()
      const info = yield* within(side.connection.closed, 10_000, "our connection to close")
      assert.strictEqual(info.code, 1006)
      assert.isFalse(info.clean)
      assert.strictEqual(yield* within(Deferred.await(side.outcome), 5_000, "the handler"), "TransportError")
    }))

  it.live("2000 messages sent by ws in a burst are echoed in order", () =>
    Effect.gen(function*() {
      const { accepted, server } = yield* echoServer()
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      for (let i = 0; i < 2000; i++) peer.socket.send(i % 2 === 0 ? `message ${i}` : Buffer.from(`message ${i}`))
      for (let i = 0; i < 2000; i++) {
        const message = yield* peer.next()
        assert.deepStrictEqual([message.isBinary, message.data.toString("utf8")], [i % 2 === 1, `message ${i}`])
      }
      assert.strictEqual(side.connection.stats.messagesIn, 2000)
    }))

  it.live("a ws client speaking WebSocket version 8 gets 426 with Sec-WebSocket-Version: 13", () =>
    Effect.gen(function*() {
      const { server } = yield* echoServer()
      const response = yield* refusal(server.url, { protocolVersion: 8 })
      assert.deepStrictEqual(
        { status: response.statusCode, version: response.headers["sec-websocket-version"] },
        { status: 426, version: "13" }
      )
    }))

  it.live("our authorize refusing a ws client answers with its status and headers", () =>
    Effect.gen(function*() {
      const origins: Array<string | undefined> = []
      const { server } = yield* echoServer({
        authorize: (request) =>
          Effect.suspend(() => {
            origins.push(request.headers.find((h) => h.name.toLowerCase() === "origin")?.value)
            return Effect.fail(
              new NodeServer.Rejection({
                status: 401,
                message: "who are you?",
                headers: [{ name: "WWW-Authenticate", value: "Bearer" }]
              })
            )
          })
      })
      const response = yield* refusal(server.url, { origin: "http://example.com" })
      assert.deepStrictEqual(
        { status: response.statusCode, challenge: response.headers["www-authenticate"] },
        { status: 401, challenge: "Bearer" }
      )
      assert.deepStrictEqual(origins, ["http://example.com"])
      assert.strictEqual(yield* server.connections, 0)
    }))

  it.live("shutting our server down closes a ws client with 1001", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { accepted, server } = yield* Scope.provide(echoServer(), scope)
      const peer = yield* wsConnect(server.url)
      const side = yield* accepted
      yield* within(Scope.close(scope, Exit.void), 10_000, "the server to shut down")
      assert.strictEqual((yield* peer.closed).code, 1001)
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      assert.deepStrictEqual([info.code, info.clean, info.initiator], [1001, true, "local"])
    }))

  it.live("a ws message over our maxMessageSize gets close code 1009", () =>
    Effect.gen(function*() {
      const { server } = yield* echoServer({ maxMessageSize: 1024 })
      const peer = yield* wsConnect(server.url)
      yield* wsSend(peer, bytesOfSize(1024))
      assert.strictEqual((yield* peer.next()).data.length, 1024)
      peer.socket.send(bytesOfSize(1025))
      assert.strictEqual((yield* peer.closed).code, 1009)
    }))
})

describe("our client → ws server", () => {
  for (const kind of KINDS) {
    it.live(`${kind} messages of ${SIZES.join(", ")} bytes arrive intact both ways`, () =>
      Effect.gen(function*() {
        const ws = yield* wsServer()
        const connection = yield* NodeClient.connect(ws.url)
        const peer = echoing(yield* ws.accepted)
        const receivedByWs: Array<ReturnType<typeof wsMessageDigest>> = []
        peer.socket.on("message", (data, isBinary) => receivedByWs.push(wsMessageDigest({ data: rawToBuffer(data), isBinary })))
        const reader = yield* messageReader(connection)
        const sent = []
        for (const size of SIZES) {
          const payload = payloadOfKind(kind, size)
          sent.push(digest(payload))
          yield* connection.send(payload)
          const echoed = yield* reader.next(20_000)
          assert.deepStrictEqual(digest(echoed), digest(payload), `${kind} message of ${size} bytes`)
        }
        assert.deepStrictEqual(receivedByWs, sent, "what ws received")
        assert.deepStrictEqual(peer.errors, [])
      }), 60_000)
  }

  it.live("our sendFragments reach the ws server as one message; ws fragments reach us as one", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url)
      const peer = yield* ws.accepted
      const reader = yield* messageReader(connection)
      yield* connection.sendFragments(Stream.fromIterable(TEXT_PIECES), "text")
      yield* connection.sendFragments(Stream.fromIterable(BINARY_PIECES), "binary")
      const text = yield* peer.next()
      const binary = yield* peer.next()
      assert.deepStrictEqual([text.isBinary, text.data.toString("utf8")], [false, TEXT])
      assert.isTrue(binary.isBinary)
      assert.isTrue(binary.data.equals(BINARY))
      for (const [i, piece] of TEXT_PIECES.entries()) {
        yield* wsSend(peer, piece, { binary: false, fin: i === TEXT_PIECES.length - 1 })
        if (i === 4) peer.socket.ping("between fragments")
      }
      for (const [i, piece] of BINARY_PIECES.entries()) {
        yield* wsSend(peer, piece, { binary: true, fin: i === BINARY_PIECES.length - 1 })
      }
      assert.strictEqual(yield* reader.next(), TEXT)
      assert.deepStrictEqual(digest(yield* reader.next()), digest(BINARY))
      assert.strictEqual((yield* peer.nextPong).toString("utf8"), "between fragments")
    }))

  it.live("pings both ways: ws gets our automatic pong, our ping's pong shows in pongsIn", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url)
      const peer = yield* ws.accepted
      yield* messageReader(connection)
      for (const [i, payload] of PING_PAYLOADS.entries()) {
        peer.socket.ping(payload)
        assert.isTrue((yield* peer.nextPong).equals(payload), `pong for a ${payload.length}-byte ping`)
        assert.strictEqual(connection.stats.pingsIn, i + 1)
        yield* connection.ping(payload)
        assert.isTrue((yield* peer.nextPing).equals(payload))
        yield* eventually(() => connection.stats.pongsIn === i + 1, 5_000, `pong ${i + 1}`)
      }
    }))

  it.live("subprotocol: we offer x and y, the ws server's handleProtocols picks y", () =>
    Effect.gen(function*() {
      const offers: Array<ReadonlyArray<string>> = []
      const ws = yield* wsServer({
        handleProtocols: (protocols) => {
          offers.push([...protocols])
          return protocols.has("y") ? "y" : false
        }
      })
      const connection = yield* NodeClient.connect(ws.url, { protocols: ["x", "y"] })
      const peer = yield* ws.accepted
      assert.strictEqual(connection.protocol, "y")
      assert.strictEqual(peer.socket.protocol, "y")
      assert.deepStrictEqual(offers, [["x", "y"]])
    }))

  it.live("a ws server answering with a subprotocol we did not offer is refused", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer({ handleProtocols: () => "z" })
      const error = yield* Effect.flip(NodeClient.connect(ws.url, { protocols: ["x", "y"] }))
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
    }))

  it.live("the ws server closes with 4000 \"custom reason\": our closed has it, clean", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url)
      const peer = yield* ws.accepted
      const reader = yield* messageReader(connection)
      peer.socket.close(4000, "custom reason")
      const info = yield* within(connection.closed, 10_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4000, reason: "custom reason", clean: true, initiator: "remote" })
      assert.strictEqual(yield* reader.ended, "end")
      assert.deepStrictEqual(yield* peer.closed, { code: 4000, reason: "custom reason" })
    }))

  it.live("2000 messages in a burst from the ws server arrive in order; 500 concurrent sends arrive whole", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url)
      const peer = yield* ws.accepted
      const reader = yield* messageReader(connection)
      for (let i = 0; i < 2000; i++) peer.socket.send(`message ${i}`)
      for (let i = 0; i < 2000; i++) assert.strictEqual(yield* reader.next(), `message ${i}`)
      yield* Effect.forEach(
        Array.from({ length: 500 }, (_, i) => i),
        (i) => connection.send(i % 2 === 0 ? `concurrent ${i}` : encoder.encode(`concurrent ${i}`)),
        { concurrency: 16 }
      )
      const received = new Set<string>()
      for (let i = 0; i < 500; i++) {
        const message = yield* peer.next()
        const text = message.data.toString("utf8")
        assert.strictEqual(message.isBinary, Number(text.split(" ")[1]) % 2 === 1, text)
        received.add(text)
      }
      assert.strictEqual(received.size, 500)
    }))

  it.live("our path, query, headers and Origin reach the ws server", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      yield* NodeClient.connect(`${ws.url}chat/room?id=42&x=%20y`, {
        headers: { "X-Custom": "custom value" },
        origin: "http://example.com"
      })
      const peer = yield* ws.accepted
      assert.strictEqual(peer.request?.url, "/chat/room?id=42&x=%20y")
      assert.strictEqual(peer.request?.headers["x-custom"], "custom value")
      assert.strictEqual(peer.request?.headers.origin, "http://example.com")
      assert.strictEqual(peer.request?.headers.host, new URL(ws.url).host)
    }))

  it.live("a ws server refusing the upgrade gives HandshakeRejected with its status", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer({ verifyClient: (_info, done) => done(false, 403, "Forbidden") })
      const error = yield* Effect.flip(NodeClient.connect(ws.url))
      assert.strictEqual(error._tag, "HandshakeRejected")
      assert.strictEqual(error._tag === "HandshakeRejected" ? error.status : undefined, 403)
    }))

  it.live("a ws server message over our maxMessageSize gets close code 1009", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url, { maxMessageSize: 1024 })
      const peer = yield* ws.accepted
      const reader = yield* messageReader(connection)
      yield* wsSend(peer, bytesOfSize(1024))
      assert.strictEqual((yield* reader.next()).length, 1024)
      yield* wsSend(peer, bytesOfSize(1025))
      assert.strictEqual((yield* peer.closed).code, 1009)
      assert.strictEqual((yield* within(connection.closed, 10_000, "our connection to close")).code, 1009)
      assert.deepStrictEqual(yield* reader.ended, { error: "InvalidProtocolFormat" })
    }))

  it.live("our close(3001, \"bye\") reaches the ws server", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url)
      const peer = yield* ws.accepted
      const info = yield* within(connection.close(3001, "bye"), 10_000, "our close")
      assert.deepStrictEqual(yield* peer.closed, { code: 3001, reason: "bye" })
      assert.deepStrictEqual(info, { code: 3001, reason: "bye", clean: true, initiator: "local" })
    }))
})

describe("sends interrupted while a ws peer does not read", () => {
  it.live("our client: a timed-out send is not on the wire; the next send and a clean close follow, and ws sees only whole frames", () =>
    Effect.gen(function*() {
      const ws = yield* wsServer()
      const connection = yield* NodeClient.connect(ws.url)
      const peer = yield* ws.accepted
      peer.socket.pause() // the ws server reads nothing for now
      let sent = 0
      for (; sent < 2000; sent++) {
        const exit = yield* Effect.exit(Effect.timeout(connection.send(new Uint8Array(32 * 1024).fill(sent % 251)), "200 millis"))
        if (Exit.isFailure(exit)) break
      }
      assert.isBelow(sent, 2000, "a send ended up waiting for the peer")
      const after = yield* Effect.forkChild(connection.send("after"))
      peer.socket.resume()
      yield* within(Fiber.join(after), 10_000, "the send after the timed-out one")
      for (let i = 0; i < sent; i++) {
        const message = yield* peer.next()
        assert.deepStrictEqual([message.isBinary, message.data.length, message.data[0]], [true, 32 * 1024, i % 251])
      }
      // the timed-out message never went out: the text follows the last whole one
      assert.deepStrictEqual(yield* peer.next(), { data: Buffer.from("after"), isBinary: false })
      assert.isTrue((yield* within(connection.close(1000), 10_000, "our close")).clean)
      assert.deepStrictEqual(yield* peer.closed, { code: 1000, reason: "" })
      assert.deepStrictEqual(peer.errors, [])
    }))

  it.live("our server: shutting down while a handler's send waits for a ws client that reads again later sends 1001 after whole frames", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const sending = yield* Deferred.make<void>()
      const server = yield* NodeServer.serve(
        (connection) =>
          Effect.gen(function*() {
            for (let i = 0; i < 100_000; i++) {
              yield* connection.send(new Uint8Array(64 * 1024).fill(i % 251))
              if (i === 50) yield* Deferred.succeed(sending, undefined)
            }
          }),
        { shutdownTimeout: "5 seconds" }
      ).pipe(Scope.provide(scope))
      const peer = yield* wsConnect(server.url)
      peer.raw.pause() // reads nothing until the shutdown began
      yield* within(Deferred.await(sending), 10_000, "the handler to send")
      yield* Effect.sleep("200 millis") // the handler now waits for the client
      const shutdown = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* Effect.sleep("100 millis")
      peer.raw.resume()
      // every message before the Close is whole and in order (ws would fail on a broken frame)
      assert.deepStrictEqual(yield* peer.closed, { code: 1001, reason: "" })
      assert.deepStrictEqual(peer.errors, [])
      let received = 0
      for (;; received++) {
        const message = yield* Effect.exit(peer.next(100))
        if (Exit.isFailure(message)) break
        assert.deepStrictEqual([message.value.data.length, message.value.data[0]], [64 * 1024, received % 251])
      }
      assert.isAbove(received, 50)
      yield* within(Fiber.join(shutdown), 10_000, "the shutdown")
    }))
})

describe("over a Unix domain socket", () => {
  /** A `node:http` server listening on a socket file of a fresh directory, closed with the scope. */
  const listenUnix = (server: Http.Server) =>
    Effect.gen(function*() {
      const path = Path.join(yield* tempDir("interop-unix-"), "ws.sock")
      yield* Effect.acquireRelease(
        within(
          Effect.callback<void, Error>((resume) => {
            server.once("error", (error) => resume(Effect.fail(error)))
            server.listen(path, () => resume(Effect.void))
          }),
          5_000,
          "the server to listen on a Unix socket"
        ),
        () =>
          Effect.ignore(within(
            Effect.callback<void>((resume) => {
              server.close(() => resume(Effect.void))
              server.closeAllConnections()
            }),
            5_000,
            "the server to close"
          ))
      )
      return path
    })

  it.live("our client ↔ a ws server, and a ws client ↔ our upgrade handler, with ws+unix: URLs", () =>
    Effect.gen(function*() {
      const wsHttp = Http.createServer()
      const wss = new WebSocketServer({ server: wsHttp })
      const targets = new Mailbox<string | undefined>()
      wss.on("connection", (socket, request) => {
        targets.push(request.url)
        echoing(wsPeer(socket))
      })
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const client of wss.clients) client.terminate()
        })
      )
      const wsPath = yield* listenUnix(wsHttp)
      const connection = yield* NodeClient.connect(`ws+unix://${wsPath}:/over/unix?q=1`)
      assert.strictEqual(yield* within(targets.take, 5_000, "the ws server to accept"), "/over/unix?q=1")
      const reader = yield* messageReader(connection)
      yield* connection.send("over a Unix socket")
      assert.strictEqual(yield* reader.next(), "over a Unix socket")
      assert.strictEqual((yield* within(connection.close(1000), 10_000, "our close")).clean, true)

      const sides = new Mailbox<ServerSide>()
      const ourHttp = Http.createServer()
      ourHttp.on("upgrade", yield* NodeServer.makeUpgradeHandler(echoHandler(sides.push), { path: "/ours" }))
      const ourPath = yield* listenUnix(ourHttp)
      const peer = yield* wsConnect(`ws+unix://${ourPath}:/ours`)
      const side = yield* within(sides.take, 5_000, "our handler to accept")
      yield* wsSend(peer, bytesOfSize(100_000))
      assert.strictEqual((yield* peer.next()).data.length, 100_000)
      peer.socket.close(1000)
      assert.strictEqual((yield* within(side.connection.closed, 10_000, "our connection to close")).clean, true)
    }))
})
