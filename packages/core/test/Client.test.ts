import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Deferred, Effect, Exit, Fiber, Layer, Logger, Metric, Option, References, Scope, Stream } from "effect"
import { Client, Connection, Metrics, Transport, WebSocket, WebSocketError } from "../src/index.ts"
import type { InvalidParameter } from "../src/WebSocketError.ts"
import type { HandleImpl } from "../src/internal/handle.ts"
import * as EffectHeaders from "effect/http/Headers"
import { TestClock } from "effect/testing"
import { HttpHeader } from "@effect-websocket/schema"

describe("Client.releaseOnEnd", () => {
  /** An attempt that acquires something (recording its release) and then fails, or makes a "connection" that ends with `ended`. */
  const attempt = (events: Array<string>, fail: boolean, ended: Deferred.Deferred<void>) =>
    Effect.gen(function*() {
      yield* Effect.acquireRelease(Effect.sync(() => events.push("acquired")), () => Effect.sync(() => events.push("released")))
      if (fail) return yield* Effect.fail("refused" as const)
      return { closed: Deferred.await(ended) }
    })

  it.effect("a failed attempt releases what it acquired at once, in a scope that stays open", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const scope = yield* Scope.make()
      for (let i = 0; i < 3; i++) {
        const error = yield* Effect.flip(Scope.provide(Client.releaseOnEnd(attempt(events, true, Deferred.makeUnsafe())), scope))
        assert.strictEqual(error, "refused")
      }
      assert.deepStrictEqual(events, ["acquired", "released", "acquired", "released", "acquired", "released"])
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect("a successful attempt keeps what it acquired until its connection ends, or the caller's scope closes", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const scope = yield* Scope.make()
      const ends = Deferred.makeUnsafe<void>()
      yield* Scope.provide(Client.releaseOnEnd(attempt(events, false, ends)), scope)
      yield* Scope.provide(Client.releaseOnEnd(attempt(events, false, Deferred.makeUnsafe())), scope)
      assert.deepStrictEqual(events, ["acquired", "acquired"])
      yield* Deferred.succeed(ends, undefined)
      yield* Effect.yieldNow
      assert.deepStrictEqual(events, ["acquired", "acquired", "released"])
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(events, ["acquired", "acquired", "released", "released"])
    }))

  it.live("in memory, the connections that ended keep nothing in the caller's long-lived scope", () =>
    Effect.gen(function*() {
      let handled = 0
      const handler = (connection: Connection.Connection) =>
        Effect.ensuring(
          Stream.runForEach(connection.messages, (m) => m === "bye" ? connection.close(1000) : connection.send(m)),
          Effect.sync(() => handled++)
        )
      const layerScope = yield* Scope.make()
      const context = yield* Scope.provide(Layer.build(Client.layerMemory(handler)), layerScope)
      const scope = yield* Scope.make()
      const session = (end: (connection: Connection.Connection) => Effect.Effect<unknown, unknown>) =>
        Scope.provide(Effect.flatMap(Effect.provide(Client.connect("ws://memory/"), context), end), scope)
      yield* session((c) => c.close(1000)) // closed by us
      yield* session((c) => c.abort) // aborted
      yield* session((c) => Effect.andThen(c.send("bye"), c.closed)) // closed by the server
      yield* session((c) => Effect.andThen(c.send("hi"), Stream.runCollect(Stream.take(c.messages, 1)))) // still open
      /** What a scope holds: one entry (a child scope) per connection not yet released (a lone one is kept outside the map). */
      const held = (s: Scope.Closeable) => s.state._tag === "Open" ? (s.state.finalizers?.size ?? 1) : 0
      for (let i = 0; i < 100 && (held(scope) !== 1 || handled < 3); i++) yield* Effect.sleep("10 millis")
      assert.strictEqual(held(scope), 1, "the caller's scope holds the open connection only, not the three that ended")
      assert.strictEqual(handled, 3)
      yield* Scope.close(scope, Exit.void)
      for (let i = 0; i < 100 && handled < 4; i++) yield* Effect.sleep("10 millis")
      assert.strictEqual(handled, 4, "the open connection's handler ended with the caller's scope")
      yield* Scope.close(layerScope, Exit.void)
    }))
})

describe("Client options", () => {
  /** An echo handler that counts the connections it got (none, when the options are refused). */
  const countingEcho = () => {
    const accepted = { count: 0 }
    const handler = (connection: Connection.Connection) => {
      accepted.count++
      return Stream.runForEach(connection.messages, connection.send)
    }
    return { accepted, handler }
  }

  it.effect("a memory server with a bad option fails to build, naming it", () =>
    Effect.gen(function*() {
      const handler = (connection: Connection.Connection) => Stream.runForEach(connection.messages, connection.send)
      for (
        const [options, fragment] of [
          [{ maxMessageSize: 0 }, "maxMessageSize"],
          [{ properties: { receiveBufferSize: 10 } }, "receiveBufferSize"],
          [{ connection: { messageBuffer: -1 } }, "messageBuffer"]
        ] as const
      ) {
        const error = yield* Effect.flip(Layer.build(Client.layerMemory(handler, options)))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, fragment)
      }
    }))

  it.effect("a server refuses properties.allocatedBuffer: it would be the memory of every connection's handle at once", () =>
    Effect.gen(function*() {
      const { accepted, handler } = countingEcho()
      const allocatedBuffer = new Uint8Array(256 + 4096 + 256 + 4096)
      const properties = { allocatedBuffer, receiveBufferSize: 4096, sendBufferSize: 4096 }
      const built = yield* Effect.flip(Layer.build(Client.layerMemory(handler, { properties } as never)))
      assert.strictEqual(built._tag, "InvalidParameter")
      assert.include(built.message, "properties.allocatedBuffer is the memory of one handle")
      // a client's connection has a handle of its own: there it is the caller's to give
      const context = yield* Layer.build(Client.layerMemory(handler))
      const connection = yield* Effect.provide(Client.connect("ws://memory/", { properties }), context)
      yield* connection.send("echo")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(connection.messages, 1)), ["echo"])
      assert.strictEqual(accepted.count, 1)
    }))

  it.effect("a handler that returns at once closes first, as over a socket (it runs from the 101 on, before connect returns)", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(Client.layerMemory(() => Effect.void))
      for (let i = 0; i < 5; i++) {
        const info = yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* Effect.provide(Client.connect("ws://memory/"), context)
          return yield* connection.close(1000, "bye")
        }))
        assert.deepStrictEqual(info, { code: 1000, reason: "", clean: true, initiator: "remote" })
      }
    }))

  it.effect("a connection attempt with a bad option fails before the server sees it, and counts in no handshake failure", () =>
    Effect.gen(function*() {
      const failures = Effect.map(
        Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "client", reason: "InvalidParameter" })),
        (state) => Number(state.count)
      )
      const failuresBefore = yield* failures
      let accepted = 0
      const layer = Client.layerMemory((connection) => {
        accepted++
        return Stream.runForEach(connection.messages, connection.send)
      })
      const context = yield* Layer.build(layer)
      const connect = (options: Client.ConnectOptions) =>
        Effect.flip(Effect.provide(Client.connect("ws://memory/", options), context))
      for (
        const [options, fragment] of [
          [{ handshakeTimeout: 0 }, "handshakeTimeout must be more than zero"],
          [{ handshakeTimeout: "soon" as never }, "handshakeTimeout must be a duration"],
          [{ maxMessageSize: -1 }, "maxMessageSize"],
          [{ connection: { keepalive: { interval: -5 } } }, "keepalive.interval"],
          [{ origin: "https://o\nX-Injected: 1" }, "origin: "]
        ] as const
      ) {
        const error = yield* connect(options)
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, fragment)
      }
      assert.strictEqual(accepted, 0)
      assert.strictEqual(yield* failures, failuresBefore, "a bad option is no handshake failure")
    }))

  it.effect("properties that are not an object (5, null, true, an array) are an InvalidParameter, not ignored", () =>
    Effect.gen(function*() {
      const { accepted, handler } = countingEcho()
      const context = yield* Layer.build(Client.layerMemory(handler))
      for (const properties of [5, null, true, [], [1]]) {
        const options = { properties: properties as never }
        const built = yield* Effect.flip(Layer.build(Client.layerMemory(handler, options)))
        assert.strictEqual(built._tag, "InvalidParameter", `server ${JSON.stringify(properties)}`)
        assert.include(built.message, "properties")
        const attempt = yield* Effect.flip(Effect.provide(Client.connect("ws://memory/", options), context))
        assert.strictEqual(attempt._tag, "InvalidParameter", `client ${JSON.stringify(properties)}`)
        assert.include(attempt.message, "properties")
      }
      assert.strictEqual(accepted.count, 0)
    }))

  it.effect("a handler or hooks that are not functions are an InvalidParameter naming them, before anything is served or sent", () =>
    Effect.gen(function*() {
      const { accepted, handler } = countingEcho()
      const context = yield* Layer.build(Client.layerMemory(handler))
      for (const hook of ["authorize", "selectProtocol", "wrapTransport"]) {
        for (const value of ["yes", 5, null, {}]) {
          const built = yield* Effect.flip(Layer.build(Client.layerMemory(handler, { [hook]: value } as never)))
          assert.strictEqual(built._tag, "InvalidParameter", `${hook}: ${JSON.stringify(value)}`)
          assert.include(built.message, `${hook} is a function`)
        }
      }
      for (const value of [undefined, "echo", 5]) {
        const built = yield* Effect.flip(Layer.build(Client.layerMemory(value as unknown as Client.Handler<never, never>)))
        assert.strictEqual(built._tag, "InvalidParameter")
        assert.include(built.message, `handler is a function, got ${typeof value}`)
      }
      const attempt = yield* Effect.flip(Effect.provide(Client.connect("ws://memory/", { wrapTransport: "tap" as never }), context))
      assert.strictEqual(attempt._tag, "InvalidParameter")
      assert.include(attempt.message, "wrapTransport is a function, got string")
      assert.strictEqual(accepted.count, 0)
    }))
})

describe("Client.requestHeaderList", () => {
  it("Host, the caller's headers (a Host there replaces the URL's), then Origin from the origin option (replacing one in headers), whatever the case", () => {
    assert.deepStrictEqual(Client.requestHeaderList("a:1", { origin: "https://o", headers: { "X-A": "1" } }), [
      { name: "Host", value: "a:1" },
      { name: "X-A", value: "1" },
      { name: "Origin", value: "https://o" }
    ])
    assert.deepStrictEqual(Client.requestHeaderList("a:1", { origin: "https://o", headers: [{ name: "host", value: "b" }, { name: "ORIGIN", value: "https://p" }] }), [
      { name: "host", value: "b" },
      { name: "Origin", value: "https://o" }
    ])
    assert.deepStrictEqual(Client.requestHeaderList("a:1", { origin: "", headers: [{ name: "ORIGIN", value: "https://p" }] }), [
      { name: "Host", value: "a:1" },
      { name: "ORIGIN", value: "https://p" }
    ])
  })
})

describe("Client.serverHandleMaker", () => {
  const request = [
    { name: "Host", value: "h" },
    { name: "Upgrade", value: "websocket" },
    { name: "Connection", value: "Upgrade" },
    { name: "Sec-WebSocket-Key", value: "dGhlIHNhbXBsZSBub25jZQ==" },
    { name: "Sec-WebSocket-Version", value: "13" }
  ]
  const propertiesOf = (handle: WebSocket.Handle) => (handle as unknown as HandleImpl).properties

  it.effect("makes the handles createServerHandle(handleProperties(options)) makes: each its own, with the options' properties, deleted with its scope", () =>
    Effect.gen(function*() {
      for (
        const options of [
          undefined,
          {},
          { maxMessageSize: 100 },
          { properties: { receiveBufferSize: 1024, disableUtf8Verification: true } },
          { properties: { sendBufferSize: 256, maxMessageSize: 7 }, maxMessageSize: 300 },
          // (an absent size is the server handle's default, not a client's: a send buffer of 16)
          { properties: { sendBufferSize: undefined } }
        ]
      ) {
        const makeHandle = yield* Client.serverHandleMaker(options)
        const expected = propertiesOf(yield* WebSocket.createServerHandle(Client.handleProperties(options)))
        const first = yield* makeHandle
        const scope = yield* Scope.make()
        const second = yield* Scope.provide(makeHandle, scope)
        assert.notStrictEqual(first, second)
        assert.deepStrictEqual(propertiesOf(first), expected, JSON.stringify(options))
        assert.deepStrictEqual(propertiesOf(second), expected, JSON.stringify(options))
        assert.strictEqual(String(first), "WebSocket.Handle(server, Created)")
        assert.deepStrictEqual(JSON.parse(JSON.stringify(first)), { _id: "WebSocket.Handle", kind: "server", state: "Created" })
        // closing its scope deletes the handle, and only that one
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(String(second), "WebSocket.Handle(server, Deleted)")
        const deleted = yield* Effect.flip(WebSocket.beginServerHandshake(second, { requestHeaders: request }))
        assert.strictEqual(deleted._tag, "InvalidProtocolOperation")
        const { responseHeaders } = yield* WebSocket.beginServerHandshake(first, { requestHeaders: request })
        assert.deepStrictEqual(responseHeaders.find((h) => h.name === "Sec-WebSocket-Accept")?.value, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
      }
    }))

  it.effect("refuses bad options as createServerHandle does, naming them", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.flip(Client.serverHandleMaker({ properties: { receiveBufferSize: 10 } }))
      assert.strictEqual(bad._tag, "InvalidParameter")
      assert.strictEqual(bad.parameter, "properties")
      assert.include(bad.message, "receiveBufferSize")
      const size = yield* Effect.flip(Client.serverHandleMaker({ maxMessageSize: 0 }))
      assert.strictEqual(size.parameter, "maxMessageSize")
      const notAnObject = yield* Effect.flip(Client.serverHandleMaker({ properties: 5 as never }))
      assert.strictEqual(notAnObject.parameter, "properties")
    }))
})

describe("Client.makeTakingOver", () => {
  it.live("an interruption that arrives while the connection is made lands only after tookOver: whoever held the transport knows the connection owns it", () =>
    Effect.gen(function*() {
      const client = yield* WebSocket.createClientHandle()
      const server = yield* WebSocket.createServerHandle()
      const { requestHeaders } = yield* WebSocket.beginClientHandshake(client, { initialHeaders: [{ name: "Host", value: "h" }] })
      const { responseHeaders } = yield* WebSocket.beginServerHandshake(server, { requestHeaders })
      yield* WebSocket.endServerHandshake(server)
      yield* WebSocket.endClientHandshake(client, { responseHeaders })
      const [a] = yield* Transport.makeMemoryEnds()
      let tookOver = false
      const scope = yield* Scope.make()
      // (the options are read as the connection is made: the interruption arrives right then)
      const options: Connection.Options = {
        closeTimeout: "10 millis", // (its Close gets no answer: nothing reads the other end)
        get protocol() {
          making.interruptUnsafe()
          return "p"
        }
      }
      const making: Fiber.Fiber<Connection.Connection, unknown> = yield* Effect.forkChild(
        Scope.provide(Client.makeTakingOver(client, a, options, () => {
          tookOver = true
        }), scope)
      )
      const exit = yield* Fiber.await(making)
      assert.isTrue(Exit.hasInterrupts(exit), String(exit))
      assert.isTrue(tookOver, "the connection was made, so its maker was told it took over")
      yield* Scope.close(scope, Exit.void)
    }))
})

describe("Client.rejectionStatus", () => {
  const request = (version: ReadonlyArray<string>) => [
    { name: "Host", value: "h" },
    { name: "Upgrade", value: "websocket" },
    { name: "Connection", value: "Upgrade" },
    { name: "Sec-WebSocket-Key", value: "dGhlIHNhbXBsZSBub25jZQ==" },
    ...version.map((value) => ({ name: "Sec-WebSocket-Version", value }))
  ]
  const answer = (version: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const server = yield* WebSocket.createServerHandle()
      const { headers, status } = Client.rejectionStatus(
        yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: request(version) }))
      )
      return [status, headers]
    })

  it.effect("a version the server does not understand gets Sec-WebSocket-Version: 13 (RFC 6455 section 4.2.2 item 4); a 426 names Upgrade", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* answer(["8"]), [426, [
        { name: "Sec-WebSocket-Version", value: "13" },
        { name: "Upgrade", value: "websocket" }
      ]])
      for (const version of [[], [""], ["13, 8"], ["13", "13"], ["013"]]) {
        assert.deepStrictEqual(yield* answer(version), [400, [{ name: "Sec-WebSocket-Version", value: "13" }]], JSON.stringify(version))
      }
      // another header at fault: nothing about versions
      const server = yield* WebSocket.createServerHandle()
      const error = yield* Effect.flip(WebSocket.beginServerHandshake(server, { requestHeaders: request(["13"]).slice(1) }))
      assert.deepStrictEqual(Client.rejectionStatus(error).headers, [])
    }))

  it("hasTextBody: a text body is one whose media type is text/* (no Content-Type: text/plain), not one that names text/ in a parameter", () => {
    const withType = (value: string) => [{ name: "Content-Type", value }]
    assert.isTrue(Client.hasTextBody([]))
    assert.isTrue(Client.hasTextBody(withType("text/plain; charset=utf-8")))
    assert.isTrue(Client.hasTextBody(withType("TEXT/html")))
    assert.isFalse(Client.hasTextBody(withType("application/json")))
    assert.isFalse(Client.hasTextBody(withType("multipart/related; type=text/html")))
    assert.isFalse(Client.hasTextBody(withType("application/vnd.example+text/x")))
  })

  it("a selection of the server's own that the client did not offer (subprotocol or extension), or a malformed one, is a 500; a version header named in any case gets the version", () => {
    const status = (error: Parameters<typeof Client.rejectionStatus>[0]) => Client.rejectionStatus(error).status
    assert.strictEqual(status(new WebSocketError.UnsupportedExtension({ message: "x", offered: [], selected: "permessage-foo" })), 500)
    assert.strictEqual(status(new WebSocketError.UnsupportedSubprotocol({ message: "x", offered: ["a"], selected: "b" })), 500)
    assert.deepStrictEqual(
      Client.rejectionStatus(new WebSocketError.InvalidProtocolFormat({ message: "x", header: "sec-websocket-version" })).headers,
      [{ name: "Sec-WebSocket-Version", value: "13" }]
    )
  })
})

describe("Client.layerMemory handlers", () => {
  it.effect("the simplest echo is a Client.Handler as it is (its errors need no type argument)", () =>
    Effect.gen(function*() {
      const echo: Client.Handler = (c) => Stream.runForEach(c.messages, (m) => c.send(m))
      const context = yield* Layer.build(Client.layerMemory(echo))
      const connection = yield* Effect.provide(Client.connect("ws://memory/"), context)
      yield* connection.send("hi")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(connection.messages, 1)), ["hi"])
    }))

  it.live("a handler's scope is its connection's: what it acquires is released once it returns, and the layer needs no Scope", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const layer: Layer.Layer<Client.Client, InvalidParameter> = Client.layerMemory((c) =>
        Effect.gen(function*() {
          yield* Effect.acquireRelease(Effect.sync(() => events.push("acquired")), () => Effect.sync(() => events.push("released")))
          yield* Stream.runDrain(c.messages)
        })
      )
      const context = yield* Layer.build(layer)
      const info = yield* Effect.scoped(Effect.flatMap(Effect.provide(Client.connect("ws://memory/"), context), (c) => c.close(1000)))
      assert.strictEqual(info.code, 1000)
      for (let i = 0; i < 100 && events.length < 2; i++) yield* Effect.sleep("5 millis")
      assert.deepStrictEqual(events, ["acquired", "released"])
    }))

  it.effect("Client.Server lists the connections whose handler runs, until each closes (even while its handler goes on)", () =>
    Effect.gen(function*() {
      const handlerDone = Deferred.makeUnsafe<void>()
      const context = yield* Layer.build(
        Client.layerMemory((c) => Effect.andThen(c.closed, Deferred.await(handlerDone)))
      )
      const server = Context.get(context, Client.Server)
      assert.strictEqual(server.url, "ws://memory/")
      assert.strictEqual(yield* server.connections, 0)
      const a = yield* Effect.provide(Client.connect("ws://memory/"), context)
      const b = yield* Effect.provide(Client.connect("ws://memory/"), context)
      yield* Effect.yieldNow
      const clients = yield* server.clients
      assert.strictEqual(clients.length, 2)
      yield* Effect.forEach(clients, (c) => c.send("to all"), { discard: true })
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(a.messages, 1)), ["to all"])
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(b.messages, 1)), ["to all"])
      yield* a.close(1000)
      for (let i = 0; i < 100 && (yield* server.connections) > 1; i++) yield* Effect.yieldNow
      assert.strictEqual(yield* server.connections, 1, "the closed connection is gone though its handler goes on")
      assert.strictEqual((yield* server.clients).length, 1)
      yield* Deferred.succeed(handlerDone, undefined)
      yield* b.close(1000)
      for (let i = 0; i < 100 && (yield* server.connections) > 0; i++) yield* Effect.yieldNow
      assert.deepStrictEqual(yield* server.clients, [])
    }))

  it.effect("Client.trackConnections forgets a connection that closed before its handler started, and one of another make once its closed completes", () =>
    Effect.gen(function*() {
      const request: Client.UpgradeRequest = { url: "/", headers: [], protocols: [], remoteAddress: undefined, remotePort: undefined }
      const tracked = Client.trackConnections(() => Effect.never, undefined)
      // one of ours whose closing handshake is over before the handler runs: never listed as open
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* client.close(1000)
      yield* server.closed
      const first = yield* Effect.forkChild(tracked.handler(server, request))
      yield* Effect.yieldNow
      assert.deepStrictEqual(yield* tracked.server.clients, [])
      // one made elsewhere (a test double): listed until its `closed` completes, the handler still running
      const closed = Deferred.makeUnsafe<Connection.CloseInfo>()
      const double = { closed: Deferred.await(closed) } as unknown as Connection.Connection
      const second = yield* Effect.forkChild(tracked.handler(double, request))
      yield* Effect.yieldNow
      assert.deepStrictEqual(yield* tracked.server.clients, [double])
      yield* Deferred.succeed(closed, { code: 1000, reason: "", clean: true, initiator: "remote" } as const)
      for (let i = 0; i < 100 && (yield* tracked.server.connections) > 0; i++) yield* Effect.yieldNow
      assert.deepStrictEqual(yield* tracked.server.clients, [])
      assert.isUndefined(second.pollUnsafe(), "the handler goes on")
      yield* Fiber.interrupt(first)
      yield* Fiber.interrupt(second)
    }))

  it.effect("a handler that returns something else than an Effect closes its connection with 1011", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => logged.push(`${String(options.message)}: ${Cause.pretty(options.cause)}`))
      const context = yield* Layer.build(Client.layerMemory((async () => {}) as unknown as Client.Handler)).pipe(
        Effect.provideService(Logger.CurrentLoggers, new Set([logger]))
      )
      const connection = yield* Effect.provide(Client.connect("ws://memory/"), context)
      const info = yield* connection.closed
      assert.strictEqual(info.code, 1011)
      // the log says what went wrong, in the application's terms
      assert.isTrue(
        logged.some((line) => line.includes("the handler returned a Promise (run async code with Effect.promise or Effect.tryPromise), not an Effect")),
        logged.join("\n")
      )
    }))

  it.effect("a handler that ends by interruption (its own) leaves its connection to its scope: 1001, not the 1000 of one that returned", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(Client.layerMemory(() => Effect.interrupt))
      const connection = yield* Effect.provide(Client.connect("ws://memory/"), context)
      const info = yield* connection.closed
      assert.strictEqual(info.code, 1001)
    }))
})

describe("Client.layerMemory responseHeaders", () => {
  it.effect("the 101 carries them, made from the request; the handshake's own headers cannot be set", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(Client.layerMemory((c) => Stream.runDrain(c.messages), {
        responseHeaders: (request) => [{ name: "Set-Cookie", value: `path=${request.url}` }]
      }))
      const connection = yield* Effect.provide(Client.connect("ws://memory/room"), context)
      assert.deepInclude(connection.handshake.responseHeaders, { name: "Set-Cookie", value: "path=/room" })
      const error = yield* Effect.flip(Layer.build(Client.layerMemory(() => Effect.void, {
        responseHeaders: [{ name: "Connection", value: "close" }]
      })))
      assert.strictEqual(error._tag, "InvalidParameter")
      assert.include(error.message, "may not set Connection")
      // every header of the handshake's own, in any case (a second Sec-WebSocket-Protocol would
      // contradict the selection the client checks)
      for (const name of ["Upgrade", "sec-websocket-accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "SEC-WEBSOCKET-VERSION"]) {
        const own = yield* Effect.flip(Layer.build(Client.layerMemory(() => Effect.void, { responseHeaders: [{ name, value: "x" }] })))
        assert.deepStrictEqual([own._tag, own.message.includes(`may not set ${name}: the handshake sets it`)], ["InvalidParameter", true], name)
      }
    }))

  it.effect("a 101 has no content: responseHeaders may not frame one (RFC 9110 sections 6.1 and 8.6)", () =>
    Effect.gen(function*() {
      for (const name of ["Content-Length", "transfer-encoding"]) {
        const error = yield* Effect.flip(Layer.build(Client.layerMemory(() => Effect.void, {
          responseHeaders: [{ name, value: name === "Content-Length" ? "0" : "chunked" }]
        })))
        assert.deepStrictEqual([error._tag, error.message.includes(`may not set ${name}: a 101 has no content`)], ["InvalidParameter", true])
      }
    }))
})

describe("Client.Rejection", () => {
  it.effect("its headers may not frame its text body a second time: such a Rejection is the server's fault, a 500", () =>
    Effect.gen(function*() {
      const rejectWith = (headers: ReadonlyArray<{ name: string; value: string }>) =>
        Effect.gen(function*() {
          const context = yield* Layer.build(Client.layerMemory(() => Effect.void, {
            authorize: () => Effect.fail(new Client.Rejection({ status: 401, message: "log in first", headers }))
          }))
          return yield* Effect.flip(Effect.scoped(Effect.provide(Client.connect("ws://memory/"), context)))
        })
      for (const name of ["Content-Length", "transfer-encoding"]) {
        const error = yield* rejectWith([{ name, value: "0" }])
        assert.deepStrictEqual([error._tag, error._tag === "HandshakeRejected" ? error.status : 0], ["HandshakeRejected", 500], name)
        const reason = yield* Effect.flip(Client.rejectionAnswer(new Client.Rejection({ status: 401, message: "no", headers: [{ name, value: "0" }] })))
        assert.strictEqual(reason.message, `Rejection.headers may not set ${name}: the refusal frames its text body itself`)
      }
      // other headers go out with the refusal, as before
      for (const header of [{ name: "WWW-Authenticate", value: "Bearer" }, { name: "Connection", value: "close" }]) {
        const error = yield* rejectWith([header])
        assert.deepStrictEqual([error._tag, error._tag === "HandshakeRejected" ? error.status : 0], ["HandshakeRejected", 401], header.name)
        if (error._tag === "HandshakeRejected") assert.deepInclude(error.headers, header)
      }
    }))

  it.effect("rejectionAnswer checks the status again: one made without checks that is not a refusal (101, 200) is an InvalidParameter", () =>
    Effect.gen(function*() {
      for (const status of [101, 200, 600, 401.5]) {
        const error = yield* Effect.flip(Client.rejectionAnswer(new Client.Rejection({ status, message: "no" }, { disableChecks: true })))
        assert.strictEqual(error._tag, "InvalidParameter", String(status))
        assert.include(error.message, "Rejection.status")
      }
      assert.strictEqual((yield* Client.rejectionAnswer(new Client.Rejection({ status: 401, message: "no" }))).status, 401)
    }))
})

describe("Client.layerMemory behaves as a server over sockets", () => {
  /** A memory client whose server records the requests and echoes. */
  const memory = (options?: Client.ServeOptions) =>
    Effect.gen(function*() {
      const requests: Array<Client.UpgradeRequest> = []
      const context = yield* Layer.build(Client.layerMemory((c, request) => {
        requests.push(request)
        return Stream.runForEach(c.messages, (m) => c.send(m))
      }, options))
      return { requests, connect: (url: string, connectOptions?: Client.ConnectOptions) => Effect.provide(Client.connect(url, connectOptions), context) }
    })

  it.effect("the same URLs: http(s) schemes are accepted; fragments, port 0 and other schemes are InvalidUrl", () =>
    Effect.gen(function*() {
      const { connect, requests } = yield* memory()
      for (const url of ["ws://h/a", "wss://h/b?x=1", "http://h/c", "https://h:8443/d"]) yield* Effect.scoped(connect(url))
      assert.deepStrictEqual(requests.map((r) => r.url), ["/a", "/b?x=1", "/c", "/d"])
      for (const url of ["ws://h/#frag", "ws+unix:///s.sock:/p#frag", "ws://h:0/", "ftp://h/", "not a url"]) {
        const error = yield* Effect.flip(Effect.scoped(connect(url)))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "InvalidUrl"], url)
      }
    }))

  it("ws+unix: the socket path ends at the first colon, the request path (colons and all) follows", () => {
    const parse = (url: string) => {
      const target = Client.parseTarget(url, url, undefined)
      return typeof target === "string" ? target : [target.socketPath, target.path]
    }
    assert.deepStrictEqual(parse("ws+unix:///tmp/a.sock:/rooms/a:b/c?t=1:2"), ["/tmp/a.sock", "/rooms/a:b/c?t=1:2"])
    assert.deepStrictEqual(parse("ws+unix:///tmp/a.sock:/p"), ["/tmp/a.sock", "/p"])
    assert.deepStrictEqual(parse("ws+unix:///tmp/a.sock"), ["/tmp/a.sock", "/"])
    assert.deepStrictEqual(parse("ws+unix:///tmp/a.sock:?q=1"), ["/tmp/a.sock", "/?q=1"])
    assert.include(parse("ws+unix://"), "names no socket path")
  })

  it("parseTarget: wss and https are secure, on port 443 by default (ws and http on 80); an IPv6 host loses its brackets; port 0 is refused unless a socket path is given", () => {
    const parse = (url: string, socketPath?: string) => {
      const target = Client.parseTarget(url, url, socketPath)
      return typeof target === "string" ? target : [target.secure, target.hostname, target.port, target.host]
    }
    assert.deepStrictEqual(parse("wss://h/"), [true, "h", 443, "h"])
    assert.deepStrictEqual(parse("https://h/"), [true, "h", 443, "h"])
    assert.deepStrictEqual(parse("ws://h/"), [false, "h", 80, "h"])
    assert.deepStrictEqual(parse("http://h:8080/"), [false, "h", 8080, "h:8080"])
    assert.deepStrictEqual(parse("ws://[::1]:8080/"), [false, "::1", 8080, "[::1]:8080"])
    assert.include(parse("ws://h:0/"), "names port 0")
    assert.deepStrictEqual(parse("ws://h:0/", "/tmp/s.sock"), [false, "h", 0, "h:0"])
  })

  it("redactedUrl: userinfo and the values of token-like query parameters read REDACTED, the rest of the URL as it is", () => {
    assert.strictEqual(Client.redactedUrl("ws://u:p@h/x?room=a%20b&token=SECRET&Sig=abc&n=1"), "ws://REDACTED:REDACTED@h/x?room=a%20b&token=REDACTED&Sig=REDACTED&n=1")
    assert.strictEqual(Client.redactedUrl("wss://h/?access_token=SECRET"), "wss://h/?access_token=REDACTED")
    assert.strictEqual(Client.redactedUrl("wss://h/?api%5Fkey=SECRET&topic=kept"), "wss://h/?api%5Fkey=REDACTED&topic=kept")
    assert.strictEqual(Client.redactedUrl("ws://h/?room=1&x"), "ws://h/?room=1&x")
    assert.strictEqual(Client.redactedUrl(new URL("ws://h/?token=SECRET")), "ws://h/?token=REDACTED")
    // any name with a credential's word in it, ";" separators, and the fragment
    assert.strictEqual(
      Client.redactedUrl("ws://h/?auth_token=1&refresh_token=2&client_secret=3&x-api-key=4&Session=5;sig=6&room=7#access_token=8"),
      "ws://h/?auth_token=REDACTED&refresh_token=REDACTED&client_secret=REDACTED&x-api-key=REDACTED&Session=REDACTED;sig=REDACTED&room=7#REDACTED"
    )
    // password-like parameters too
    assert.strictEqual(
      Client.redactedUrl("ws://h/?password=1&passwd=2&db_passw=3&room=4"),
      "ws://h/?password=REDACTED&passwd=REDACTED&db_passw=REDACTED&room=4"
    )
    // a string that is not a URL: from its scheme to its last "@", and its query and fragment as a URL's
    assert.strictEqual(
      Client.redactedUrl("ws://u:p@h:99999/x?token=1&room=2;key=3#frag"),
      "ws://REDACTED@h:99999/x?token=REDACTED&room=2;key=REDACTED#REDACTED"
    )
    assert.strictEqual(Client.redactedUrl("no url?room=1"), "no url?room=1")
    // a percent-encoded name, a value with "=" in it, a JWT, a query with a second "?"
    assert.strictEqual(
      Client.redactedUrl("ws://h/?%74oken=SECRET&state=a=b&id_jwt=e.f.g&room=1"),
      "ws://h/?%74oken=REDACTED&state=a=b&id_jwt=REDACTED&room=1"
    )
    assert.strictEqual(Client.redactedUrl("ws://h/?token=a=b"), "ws://h/?token=REDACTED")
    assert.strictEqual(Client.redactedUrl("no url?token=1?room=2"), "no url?token=REDACTED")
  })

  it.effect("a URL object is a URL; a value that is neither it nor a string is InvalidUrl, and errors show no control characters", () =>
    Effect.gen(function*() {
      const { connect, requests } = yield* memory()
      yield* Effect.scoped(connect(new URL("ws://h/from-object?q=1") as unknown as string))
      assert.deepStrictEqual(requests.map((r) => r.url), ["/from-object?q=1"])
      for (const [url, shown] of [[5, "a value of type number"], [null, "null"], [undefined, "undefined"], [{}, "a value of type object"]] as const) {
        const error = yield* Effect.flip(Effect.scoped(connect(url as unknown as string)))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? [error.reason, error.url] : []], ["ConnectError", ["InvalidUrl", shown]])
      }
      for (const url of ["ftp://h/\r\nInjected: yes", "no url\r\nInjected: yes", "no url\u0085Injected", "ftp://h/\u2028Injected", "no url\u2029Injected"]) {
        const error = yield* Effect.flip(Effect.scoped(connect(url)))
        assert.strictEqual(error._tag, "ConnectError")
        assert.notMatch(`${error.message} ${error._tag === "ConnectError" ? error.url : ""}`, /[\r\n\u0085\u2028\u2029]/, url)
      }
    }))

  it.effect("protocols and headers are checked as the options they are: each offer once, no offer or body framing in headers, headers a list or a record", () =>
    Effect.gen(function*() {
      const { connect } = yield* memory({ selectProtocol: (offered) => offered[0] })
      const cases: ReadonlyArray<readonly [Client.ConnectOptions, string, string]> = [
        [{ protocols: ["a", "b", "a"] }, "protocols[2]", "offered twice"],
        [{ protocols: ["not a token"] }, "protocols[0]", ""],
        [{ headers: { "Sec-WebSocket-Protocol": "zz" } }, "headers", "may not set Sec-WebSocket-Protocol"],
        [{ headers: [{ name: "Sec-WebSocket-Extensions", value: "foo" }] }, "headers", "may not set Sec-WebSocket-Extensions"],
        // a GET with a body (chunked: Node adds one) would be refused by any server
        [{ headers: { "Transfer-Encoding": "chunked" } }, "headers", "may not set Transfer-Encoding: an upgrade request has no body"],
        [{ headers: [{ name: "content-length", value: "5" }] }, "headers", "may not set content-length"],
        // (from untyped code) objects with no own entries would send nothing
        [{ headers: new Headers({ "X-Token": "t" }) as never }, "headers", "got Headers"],
        [{ headers: new Map([["X-Token", "t"]]) as never }, "headers", "got Map"]
      ]
      for (const [options, parameter, fragment] of cases) {
        const error = yield* Effect.flip(Effect.scoped(connect("ws://h/", options)))
        assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" ? error.parameter : ""], ["InvalidParameter", parameter])
        assert.include(error.message, fragment)
      }
      // effect's own Headers is a record: its entries are sent
      const { connect: connectRecording, requests } = yield* memory()
      yield* Effect.scoped(connectRecording("ws://h/", { headers: EffectHeaders.fromInput({ "X-Token": "t" }) as never }))
      assert.strictEqual(HttpHeader.getCombined(requests[0]!.headers, "x-token"), "t")
    }))

  it.effect("options that throw as they are read (a getter, a proxy) are an InvalidParameter, not a defect", () =>
    Effect.gen(function*() {
      const { connect } = yield* memory()
      const throwing = (what: string) => {
        throw new Error(what)
      }
      const cases: ReadonlyArray<readonly [unknown, string]> = [
        [{ get headers() { return throwing("no headers") } }, "options could not be read: no headers"],
        [{ headers: new Proxy({}, { ownKeys: () => throwing("no keys") }) }, "headers could not be read: no keys"],
        [{ protocols: new Proxy(["a"], { get: (t, k) => k === "length" ? throwing("no length") : Reflect.get(t, k) }) }, "protocols could not be read: no length"]
      ]
      for (const [options, message] of cases) {
        const error = yield* Effect.flip(Effect.scoped(connect("ws://h/", options as Client.ConnectOptions)))
        assert.deepStrictEqual([error._tag, error.message], ["InvalidParameter", message])
      }
    }))

  it.effect("credentials in the URL go out as Basic authorization and never show in errors", () =>
    Effect.gen(function*() {
      const { connect, requests } = yield* memory()
      yield* Effect.scoped(connect("ws://al%40ice:s%3Acret@h/"))
      const authorization = requests[0]!.headers.find((h) => h.name.toLowerCase() === "authorization")
      assert.strictEqual(authorization?.value, `Basic ${btoa("al@ice:s:cret")}`)
      // a user name without a password, or a password without a user name (as ws sends them)
      yield* Effect.scoped(connect("ws://alice@h/"))
      yield* Effect.scoped(connect("ws://:s3cret@h/"))
      assert.deepStrictEqual(
        requests.slice(1).map((r) => r.headers.find((h) => h.name.toLowerCase() === "authorization")?.value),
        [`Basic ${btoa("alice:")}`, `Basic ${btoa(":s3cret")}`]
      )
      const error = yield* Effect.flip(Effect.scoped(connect("ftp://bob:secret@h/")))
      assert.notInclude(error.message, "secret")
      // also in a URL that does not parse (a "/" or "#" in the password, a port out of range)
      for (const url of ["ws://alice:se/cret@h/", "ws://alice:se#cret@h:8080/", "ws://alice:secret@h:99999/", "ws://al@ice:secret@h:99999/"]) {
        const unparsed = yield* Effect.flip(Effect.scoped(connect(url)))
        assert.deepStrictEqual([unparsed._tag, unparsed.message.includes("cret"), unparsed._tag === "ConnectError" && unparsed.url.includes("cret")], ["ConnectError", false, false], url)
      }
    }))

  it.effect("a selectProtocol or responseHeaders that throws gets the client a 500; a server wrapTransport that throws, a 1006", () =>
    Effect.gen(function*() {
      const broken = () => {
        throw new Error("broken")
      }
      for (const options of [{ selectProtocol: broken }, { responseHeaders: broken }]) {
        const { connect } = yield* memory(options)
        const error = yield* Effect.flip(Effect.scoped(connect("ws://h/", { protocols: ["p"] })))
        assert.deepStrictEqual([error._tag, error._tag === "HandshakeRejected" ? error.status : 0], ["HandshakeRejected", 500])
      }
      const { connect } = yield* memory({ wrapTransport: broken })
      const info = yield* Effect.scoped(Effect.flatMap(connect("ws://h/"), (c) => c.closed))
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
    }))

  it.live("a wrapTransport that throws or returns no Transport (an async function, nothing): the client's attempt is an InvalidParameter, the server's connection ends (1006) at once", () =>
    Effect.gen(function*() {
      const wrappers: ReadonlyArray<readonly [string, (t: Transport.Transport) => Transport.Transport]> = [
        ["threw: broken", () => {
          throw new Error("broken")
        }],
        ["got Promise", (async (t: Transport.Transport) => t) as never],
        ["got Object", () => ({}) as never],
        ["got undefined", () => undefined as never]
      ]
      for (const [message, wrapTransport] of wrappers) {
        const attempt = yield* Effect.flip(Effect.scoped(Effect.flatMap((yield* memory()).connect("ws://h/", { wrapTransport }), (c) => c.closed)))
        assert.deepStrictEqual([attempt._tag, attempt._tag === "InvalidParameter" && attempt.parameter], ["InvalidParameter", "wrapTransport"])
        assert.include(attempt.message, message)
        const { connect } = yield* memory({ wrapTransport })
        const info = yield* Effect.scoped(Effect.flatMap(connect("ws://h/"), (c) => Effect.timeoutOption(c.closed, "1 second")))
        assert.deepStrictEqual(Option.map(info, (i) => [i.code, i.clean]), Option.some([1006, false]), message)
      }
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.effect("a server that closes over a protocol error (1009) ends cleanly for the client, as over a socket: its answer to the Close is not a failed write", () =>
    Effect.gen(function*() {
      const { connect } = yield* memory({ maxMessageSize: 10 })
      const info = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* connect("ws://h/")
        yield* connection.send("more than ten bytes")
        return yield* connection.closed
      }))
      assert.deepStrictEqual(info, { code: 1009, reason: "", clean: true, initiator: "remote" })
    }))

  it.effect("maxHeaderBytes bounds a request's headers in memory as a Node.js server does (431); a bad value fails the layer", () =>
    Effect.gen(function*() {
      let seen: Client.UpgradeRequest | undefined
      const context = yield* Layer.build(Client.layerMemory((_, request) => Effect.sync(() => seen = request), { maxHeaderBytes: 1024 }))
      const connect = (value: string) => Effect.scoped(Effect.provide(Client.connect("ws://h/", { headers: [{ name: "X-Token", value }] }), context))
      yield* connect("t")
      // as Node's parser counts: the target, and every header's name and value; 431 from the limit on
      const counted = seen!.headers.reduce((bytes, h) => bytes + h.name.length + h.value.length, seen!.url.length)
      yield* connect("t".repeat(1024 - counted))
      const refused = yield* Effect.flip(connect("t".repeat(1024 - counted + 1)))
      assert.deepStrictEqual(refused._tag === "HandshakeRejected" ? [refused.status, refused.reason] : [refused._tag], [431, "request headers too large"])
      for (const maxHeaderBytes of [0, 1.5, Number.POSITIVE_INFINITY]) {
        const error = yield* Effect.flip(Layer.build(Client.layerMemory(() => Effect.void, { maxHeaderBytes })))
        assert.deepStrictEqual([error._tag, error.parameter], ["InvalidParameter", "maxHeaderBytes"], String(maxHeaderBytes))
      }
    }))

  it.live("a server that stops interrupts an authorize under way and answers its request 503, as over a socket (not once the hook is done)", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const layerScope = yield* Scope.make()
      const context = yield* Scope.provide(Layer.build(Client.layerMemory(() => Effect.void, {
        authorize: () =>
          Effect.andThen(
            Effect.acquireRelease(Effect.sync(() => events.push("slot taken")), () => Effect.sync(() => events.push("slot given back"))),
            Effect.onInterrupt(Effect.never, () => Effect.sync(() => events.push("authorize interrupted")))
          )
      })), layerScope)
      const attempt = yield* Effect.forkChild(Effect.flip(Effect.scoped(Effect.provide(Client.connect("ws://h/", { handshakeTimeout: "30 seconds" }), context))))
      yield* Effect.sleep("50 millis")
      yield* Scope.close(layerScope, Exit.void)
      const error = yield* Fiber.join(attempt).pipe(Effect.timeout("2 seconds"))
      assert.deepStrictEqual(error._tag === "HandshakeRejected" ? [error.status, error.reason] : [error._tag], [503, "the server is shutting down"])
      // in this order, as over a socket: what the hook acquired outlives the hook
      assert.deepStrictEqual(events, ["slot taken", "authorize interrupted", "slot given back"])
    }))

  it.live("a server that stops interrupts an authorize under way first: one that would end while the handlers close is still a 503, not a 101 from a stopped server", () =>
    Effect.gen(function*() {
      const layerScope = yield* Scope.make()
      const context = yield* Scope.provide(Layer.build(Client.layerMemory(
        // a handler that takes 600 ms to close
        () => Effect.andThen(Effect.addFinalizer(() => Effect.sleep("600 millis")), Effect.never),
        { authorize: (request) => request.url === "/slow" ? Effect.sleep("300 millis") : Effect.void }
      )), layerScope)
      const connect = (path: string) => Effect.provide(Client.connect(`ws://h${path}`), context)
      yield* Effect.forkChild(Effect.scoped(Effect.andThen(connect("/"), Effect.never)))
      yield* Effect.sleep("20 millis")
      const slow = yield* Effect.forkChild(Effect.flip(Effect.scoped(Effect.andThen(connect("/slow"), Effect.never))))
      yield* Effect.sleep("50 millis")
      yield* Effect.forkChild(Scope.close(layerScope, Exit.void))
      const error = yield* Fiber.join(slow).pipe(Effect.timeout("3 seconds"))
      assert.deepStrictEqual(error._tag === "HandshakeRejected" ? [error.status, error.reason] : [error._tag], [503, "the server is shutting down"])
    }))

  it.live("a server that stops interrupts its handlers together, as over a socket: each one's closing starts before any has ended", () =>
    Effect.gen(function*() {
      const layerScope = yield* Scope.make()
      const events: Array<string> = []
      const context = yield* Scope.provide(Layer.build(Client.layerMemory(() =>
        Effect.andThen(
          Effect.addFinalizer(() =>
            Effect.andThen(
              Effect.sync(() => events.push("closing")),
              Effect.andThen(Effect.sleep("100 millis"), Effect.sync(() => events.push("closed")))
            )
          ),
          Effect.never
        )
      )), layerScope)
      const closed = yield* Effect.forEach([1, 2, 3, 4], () =>
        Effect.forkChild(Effect.scoped(Effect.flatMap(Effect.provide(Client.connect("ws://h/"), context), (c) => c.closed))))
      yield* Effect.sleep("20 millis")
      yield* Scope.close(layerScope, Exit.void)
      const infos = yield* Effect.forEach(closed, Fiber.join)
      assert.deepStrictEqual(infos.map((info) => info.code), [1001, 1001, 1001, 1001])
      assert.deepStrictEqual(events, [...Array(4).fill("closing"), ...Array(4).fill("closed")])
    }))

  it.live("a handshake that does not complete in time is a ConnectError Timeout that says after how long, as over a socket", () =>
    Effect.gen(function*() {
      const { connect } = yield* memory({ authorize: () => Effect.sleep("1 second") })
      const error = yield* Effect.flip(Effect.scoped(connect("ws://h/", { handshakeTimeout: "50 millis" })))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Timeout"])
      assert.strictEqual(error.message, "connecting to ws://h/ timed out after 50ms")
    }))

  it.effect("the default handshake timeout is 10 seconds", () =>
    Effect.gen(function*() {
      const { connect } = yield* memory({ authorize: () => Effect.never })
      const attempt = yield* Effect.forkChild(Effect.flip(Effect.scoped(connect("ws://h/"))), { startImmediately: true })
      yield* TestClock.adjust("9999 millis")
      assert.isUndefined(attempt.pollUnsafe(), "still waiting")
      yield* TestClock.adjust("1 millis")
      const error = yield* Fiber.join(attempt)
      assert.strictEqual(error.message, "connecting to ws://h/ timed out after 10s")
    }))

  it.live("an attempt whose scope is closed meanwhile (by another fiber, or before it started) is interrupted, not a 400 or a defect", () =>
    Effect.gen(function*() {
      const { connect } = yield* memory({ authorize: () => Effect.sleep("100 millis") })
      const scope = yield* Scope.make()
      const attempt = yield* Effect.forkChild(Scope.provide(connect("ws://h/"), scope))
      yield* Effect.sleep("20 millis") // in authorize
      yield* Scope.close(scope, Exit.void)
      const exit = yield* Fiber.await(attempt)
      assert.isTrue(Exit.hasInterrupts(exit) && !Exit.hasDies(exit) && !Exit.hasFails(exit), String(exit))
      const late = yield* Effect.exit(Scope.provide(connect("ws://h/"), scope))
      assert.isTrue(Exit.hasInterrupts(late) && !Exit.hasDies(late) && !Exit.hasFails(late), String(late))
    }))

  it.live("a 101 the client refuses (no offered subprotocol selected): the server's handler ran all the same and sees the end (1006), as over a socket", () =>
    Effect.gen(function*() {
      const ended = yield* Deferred.make<Connection.CloseInfo>()
      const context = yield* Layer.build(Client.layerMemory(
        (c) => Effect.andThen(Effect.ignore(Stream.runDrain(c.messages)), Effect.flatMap(c.closed, (info) => Deferred.succeed(ended, info))),
        { selectProtocol: () => undefined }
      ))
      const error = yield* Effect.flip(Effect.scoped(Client.connect("ws://h/", { protocols: ["a"] })).pipe(Effect.provideContext(context)))
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
      const info = yield* Effect.timeoutOption(Deferred.await(ended), "2 seconds")
      assert.deepStrictEqual(Option.map(info, (i) => [i.code, i.clean]), Option.some([1006, false]))
    }))

  it.effect("a refusal's status text and reason as over a socket: Node's phrase (Error for an unknown status), no reason without a body", () =>
    Effect.gen(function*() {
      const statusOf = (status: number, message: string) =>
        Effect.gen(function*() {
          const { connect } = yield* memory({ authorize: () => Effect.fail(new Client.Rejection({ status, message })) })
          const error = yield* Effect.flip(Effect.scoped(connect("ws://h/")))
          return error._tag === "HandshakeRejected" ? [error.statusText, "reason" in error ? error.reason : "none"] : [error._tag]
        })
      assert.deepStrictEqual(yield* statusOf(403, ""), ["Forbidden", "none"])
      assert.deepStrictEqual(yield* statusOf(418, "short and stout"), ["I'm a Teapot", "short and stout"])
      assert.deepStrictEqual(yield* statusOf(499, "odd"), ["Error", "odd"])
    }))

  it.effect("authorize and the handler see the server layer's services, not the caller's, as over a socket", () =>
    Effect.gen(function*() {
      const Who = Context.Service<"Who", string>("test/Who")
      const seen: Array<string> = []
      const see = (hook: string) => Effect.map(Effect.service(Who), (who) => seen.push(`${hook}: ${who}`))
      const context = yield* Layer.build(
        Client.layerMemory((c) => Effect.andThen(see("handler"), c.close()), { authorize: () => Effect.asVoid(see("authorize")) }).pipe(
          Layer.provide(Layer.succeed(Who, "server"))
        )
      )
      yield* Effect.scoped(Effect.flatMap(Client.connect("ws://h/"), (c) => c.closed)).pipe(
        Effect.provideContext(context),
        Effect.provideService(Who, "client")
      )
      assert.deepStrictEqual(seen, ["authorize: server", "handler: server"])
    }))

  it.effect("highWaterMark bounds what each connection buffers in memory: sends to a handler that reads nothing are held back sooner; a bad value fails the layer", () =>
    Effect.gen(function*() {
      /** How many 1 KiB sends complete before they wait for a handler that reads nothing. */
      const sendsBeforeWaiting = (options: Client.MemoryServeOptions) =>
        Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(Client.layerMemory(() => Effect.never, options))
          const connection = yield* Effect.provide(Client.connect("ws://h/"), context)
          let sent = 0
          const message = new Uint8Array(1024)
          const sending = yield* Effect.forkChild(Effect.forever(Effect.andThen(connection.send(message), Effect.sync(() => sent++))))
          for (let i = 0; i < 1000; i++) yield* Effect.yieldNow
          yield* Fiber.interrupt(sending)
          yield* connection.abort // (a close would wait for an answer the handler never reads)
          return sent
        }))
      const small = yield* sendsBeforeWaiting({ highWaterMark: 2048 })
      const byDefault = yield* sendsBeforeWaiting({})
      const large = yield* sendsBeforeWaiting({ highWaterMark: 256 * 1024 })
      // the 64 KiB each way by default hold 64 of them, and what the connections buffer comes on top
      assert.isAtLeast(byDefault, 64)
      assert.isAtMost(small, byDefault - 40, `${small} sends with 2 KiB, ${byDefault} with 64 KiB`)
      assert.isAtLeast(large, byDefault + 100, `${large} sends with 256 KiB, ${byDefault} with 64 KiB`)
      for (const highWaterMark of [0, -1, 1.5, Number.NaN]) {
        const error = yield* Effect.flip(Layer.build(Client.layerMemory(() => Effect.void, { highWaterMark })))
        assert.deepStrictEqual([error._tag, error.parameter], ["InvalidParameter", "highWaterMark"], String(highWaterMark))
      }
    }))

  it.live("a client that ends first leaves what it sent for the server to read, as over a socket (abort, and close with its Close)", () =>
    Effect.gen(function*() {
      for (const ending of ["abort", "close"] as const) {
        const got: Array<Connection.Message> = []
        const reading = yield* Deferred.make<void>()
        const ended = yield* Deferred.make<Connection.CloseInfo>()
        const context = yield* Layer.build(Client.layerMemory((connection) =>
          // a handler busy until the client is gone, then reading
          Effect.andThen(
            Deferred.await(reading),
            Stream.runForEach(connection.messages, (message) => Effect.sync(() => got.push(message))).pipe(
              Effect.ignore,
              Effect.andThen(Effect.flatMap(connection.closed, (info) => Deferred.succeed(ended, info)))
            )
          )
        ))
        yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* Effect.provide(Client.connect("ws://h/", { connection: { closeTimeout: "20 millis" } }), context)
          for (let i = 0; i < 40; i++) yield* connection.send(`m${i}`)
          // (no answer comes before the handler reads: the close gives up after its timeout)
          if (ending === "abort") yield* connection.abort
          else assert.strictEqual((yield* connection.close(1000, "bye")).code, 1006)
        }))
        yield* Deferred.succeed(reading, undefined)
        const info = yield* Deferred.await(ended)
        assert.strictEqual(got.length, 40, ending)
        assert.strictEqual(got[39], "m39", ending)
        if (ending === "close") assert.deepStrictEqual([info.code, info.reason, info.initiator], [1000, "bye", "remote"])
        else assert.strictEqual(info.code, 1006)
      }
    }))

  it.effect("path and authorize as with a server: 404 for another path, a Rejection's status and headers, 500 for a hook that breaks", () =>
    Effect.gen(function*() {
      const { connect, requests } = yield* memory({
        path: "/chat",
        authorize: (request) =>
          request.url.endsWith("deny")
            ? Effect.fail(new Client.Rejection({ status: 403, message: "go away", headers: [{ name: "X-Why", value: "denied" }] }))
            : request.url.endsWith("break")
            ? Effect.die(new Error("broken hook"))
            : Effect.void
      })
      yield* Effect.scoped(connect("ws://h/chat?room=1"))
      assert.deepStrictEqual(requests.map((r) => r.url), ["/chat?room=1"])
      const statusOf = (url: string) =>
        Effect.map(Effect.flip(Effect.scoped(connect(url))), (error) =>
          error._tag === "HandshakeRejected" ? [error.status, error.statusText, error.headers] : [error._tag])
      // the headers a server over a socket answers with, a Rejection's after its defaults
      const answer = (message: string) => [
        { name: "Connection", value: "close" },
        { name: "Content-Type", value: "text/plain; charset=utf-8" },
        { name: "Content-Length", value: String(message.length + 1) }
      ]
      assert.deepStrictEqual(yield* statusOf("ws://h/other"), [404, "Not Found", answer("no WebSocket endpoint at /other")])
      assert.deepStrictEqual(yield* statusOf("ws://h/chat?deny"), [403, "Forbidden", [...answer("go away"), { name: "X-Why", value: "denied" }]])
      assert.deepStrictEqual(yield* statusOf("ws://h/chat?break"), [500, "Internal Server Error", answer("the upgrade failed")])
      assert.strictEqual(requests.length, 1, "no refused request reached the handler")
      // its headers by name, in any case, repeated ones joined
      const refused = yield* Effect.flip(Effect.scoped(connect("ws://h/chat?deny")))
      assert.strictEqual(refused._tag, "HandshakeRejected")
      if (refused._tag === "HandshakeRejected") {
        assert.deepStrictEqual(
          [refused.header("x-why"), refused.header("CONTENT-TYPE"), refused.header("Retry-After")],
          ["denied", "text/plain; charset=utf-8", undefined]
        )
        const repeated = new Client.HandshakeRejected({ ...refused, message: refused.message, headers: [{ name: "Vary", value: "a" }, { name: "vary", value: "b" }] })
        assert.strictEqual(repeated.header("VARY"), "a, b")
      }
      // a bad path is refused when the layer is built, as by a server
      const error = yield* Effect.flip(Layer.build(Client.layerMemory(() => Effect.void, { path: "chat" })))
      assert.strictEqual(error._tag, "InvalidParameter")
    }))

  it.effect("selectProtocol is asked only when the client offers subprotocols: a fallback pick still lets a client that offers none in (an empty protocols list offers none)", () =>
    Effect.gen(function*() {
      const asked: Array<ReadonlyArray<string>> = []
      const { connect } = yield* memory({
        selectProtocol: (offered) => {
          asked.push(offered)
          return offered.includes("v2") ? "v2" : "v1"
        }
      })
      assert.strictEqual(yield* Effect.scoped(Effect.map(connect("ws://h/"), (c) => c.protocol)), "")
      assert.strictEqual(yield* Effect.scoped(Effect.map(connect("ws://h/", { protocols: [] }), (c) => c.protocol)), "")
      assert.strictEqual(yield* Effect.scoped(Effect.map(connect("ws://h/", { protocols: ["v1", "v2"] }), (c) => c.protocol)), "v2")
      assert.deepStrictEqual(asked, [["v1", "v2"]])
    }))

  it.effect("handshake failures count in the metrics on both sides, as over sockets", () =>
    Effect.gen(function*() {
      const count = (side: string, reason: string) =>
        Effect.map(Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side, reason })), (state) => Number(state.count))
      const before = { client: yield* count("client", "HandshakeRejected"), server: yield* count("server", "ServerError") }
      // the server selects a subprotocol the client did not offer: the server's fault, not the
      // client's, answered as every other (a 500 that tells nothing of the server's inside)
      const { connect } = yield* memory({ selectProtocol: () => "other" })
      const error = yield* Effect.flip(Effect.scoped(connect("ws://h/", { protocols: ["p"] })))
      assert.deepStrictEqual(
        error._tag === "HandshakeRejected" ? [error.status, error.reason] : [error._tag],
        [500, "the upgrade failed"]
      )
      assert.deepStrictEqual(
        { client: yield* count("client", "HandshakeRejected"), server: yield* count("server", "ServerError") },
        { client: before.client + 1, server: before.server + 1 }
      )
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.effect("a request in flight while the layer's scope closes gets 503 (shutting down), as from a server over sockets, and runs no handler; the server waits for an authorize that ignores interruption", () =>
    Effect.gen(function*() {
      for (const uninterruptible of [false, true]) {
        const authorizing = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const layerScope = yield* Scope.make()
        const awaited = Deferred.await(release)
        const { connect, requests } = yield* Scope.provide(
          memory({
            authorize: () => Effect.andThen(Deferred.succeed(authorizing, undefined), uninterruptible ? Effect.uninterruptible(awaited) : awaited)
          }),
          layerScope
        )
        const attempt = yield* Effect.forkChild(Effect.flip(Effect.scoped(connect("ws://h/"))))
        yield* Deferred.await(authorizing)
        const closing = yield* Effect.forkChild(Scope.close(layerScope, Exit.void), { startImmediately: true })
        assert.strictEqual(layerScope.state._tag, "Closed")
        for (let i = 0; i < 20; i++) yield* Effect.yieldNow
        // (an interruptible hook is interrupted: the server stops at once; the other is waited for)
        const stoppedEarly = closing.pollUnsafe() !== undefined
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(closing)
        const error = yield* Fiber.join(attempt)
        assert.strictEqual(stoppedEarly, !uninterruptible, "the server stops once its hooks are done")
        assert.deepStrictEqual(error._tag === "HandshakeRejected" ? [error.status, error.reason] : [error._tag], [503, "the server is shutting down"], error.message)
        assert.deepStrictEqual(requests, [])
      }
    }))

  it.effect("a layer whose scope has closed refuses connections (ConnectError Refused), as a stopped server over sockets does, and runs no handler", () =>
    Effect.gen(function*() {
      const count = Effect.map(
        Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason: "ShuttingDown" })),
        (state) => Number(state.count)
      )
      const before = yield* count
      const layerScope = yield* Scope.make()
      const { connect, requests } = yield* Scope.provide(memory(), layerScope)
      yield* Scope.close(layerScope, Exit.void)
      const error = yield* Effect.flip(Effect.scoped(connect("ws://h/")))
      assert.deepStrictEqual(error._tag === "ConnectError" ? [error._tag, error.reason] : [error._tag], ["ConnectError", "Refused"], error.message)
      assert.include(error.message, "the server has stopped")
      assert.deepStrictEqual(requests, [])
      assert.strictEqual(yield* count, before, "nothing reached the server")
    }))

  it.effect("in memory, a request of 1000 header lines is served and one of 1001 gets 431, as Node's maxHeadersCount", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(Client.layerMemory(() => Effect.void))
      const connect = (extra: number) =>
        Effect.scoped(Effect.provide(
          Client.connect("ws://h/", { headers: Array.from({ length: extra }, (_, i) => ({ name: `X-${i}`, value: "a" })) }),
          context
        ))
      // the lines the client sends of its own (Host, Upgrade, Connection, the key, the version, ...)
      let own = 0
      const probe = yield* Layer.build(Client.layerMemory((_, request) => Effect.sync(() => own = request.headers.length)))
      yield* Effect.scoped(Effect.provide(Client.connect("ws://h/"), probe))
      assert.isAbove(own, 0)
      yield* connect(Client.DEFAULT_MAX_HEADERS_COUNT - own)
      const refused = yield* Effect.flip(connect(Client.DEFAULT_MAX_HEADERS_COUNT - own + 1))
      assert.deepStrictEqual(refused._tag === "HandshakeRejected" ? [refused.status, refused.reason] : [refused._tag], [431, "request headers too large"])
    }))
})
