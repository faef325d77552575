import { Client, type Connection, Metrics, type Transport } from "@effect-websocket/core"
import { HttpHeader } from "@effect-websocket/schema"
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Cause, Config, ConfigProvider, Context, Deferred, Effect, Exit, Fiber, Layer, Logger, Metric, Option, References, Scheduler, Schema, Scope, Stream, Tracer } from "effect"
import { spawn } from "node:child_process"
import * as Http from "node:http"
import type * as Net from "node:net"
import type { Duplex } from "node:stream"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import { WebSocket as WsClient, WebSocketServer as WsServer } from "ws"
import * as HttpClient from "effect/http/HttpClient"
import { NodeClient, NodeServer } from "../src/index.ts"
import { eventually, sweepInterruptions } from "./interruptAt.ts"
import { refusingOptions } from "./refusing.ts"

const echo = NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)), {
  selectProtocol: (offered) => offered[0]
})

/** A tracer that keeps every span it makes. */
const recordingTracer = () => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { spans, tracer }
}

describe("NodeServer + NodeClient", () => {
  it.live("echo over loopback", () =>
    Effect.gen(function*() {
      const server = yield* echo
      const connection = yield* NodeClient.connect(server.url, { protocols: ["chat"] })
      assert.strictEqual(connection.protocol, "chat")
      yield* connection.send("hello")
      yield* connection.send(new Uint8Array([1, 2, 3]))
      const got = yield* Stream.runCollect(Stream.take(connection.messages, 2))
      assert.deepStrictEqual(got, ["hello", new Uint8Array([1, 2, 3])])
      const info = yield* connection.close(1000, "done")
      assert.strictEqual(info.code, 1000)
      assert.isTrue(info.clean)
    }))

  it.live("large messages sent at once by two clients come back intact (frame memory is recycled meanwhile)", () =>
    Effect.gen(function*() {
      const server = yield* echo
      const sizes = Array.from({ length: 30 }, (_, i) => 16 * 1024 + ((i * 40_009) % (300 * 1024)))
      const message = (client: number, i: number) =>
        Uint8Array.from({ length: sizes[i]! }, (_, j) => (j * 7 + i * 13 + client * 101) & 0xff)
      const roundTrip = (client: number) =>
        Effect.gen(function*() {
          const connection = yield* NodeClient.connect(server.url)
          yield* Effect.forEach(sizes, (_, i) => connection.send(message(client, i)), { concurrency: "unbounded", discard: true })
          const got = yield* Stream.runCollect(Stream.take(connection.messages, sizes.length))
          assert.strictEqual(got.length, sizes.length)
          // concurrent sends may go out in any order: match echoes by content
          const expected = sizes.map((_, i) => message(client, i))
          for (const echoed of got) {
            const at = expected.findIndex((bytes) => bytes !== undefined && Buffer.compare(bytes, echoed as Uint8Array) === 0)
            assert.isAtLeast(at, 0, `an echo of ${(echoed as Uint8Array).length} bytes matches no message sent`)
            expected.splice(at, 1, undefined as never)
          }
          yield* connection.close(1000)
        }).pipe(Effect.scoped)
      yield* Effect.all([roundTrip(1), roundTrip(2)], { concurrency: 2, discard: true })
    }))

  it.live("clients lists the open connections: a broadcast reaches each of them once", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => Effect.andThen(connection.closed, Effect.void))
      const connections = yield* Effect.forEach([1, 2, 3], () => NodeClient.connect(server.url))
      for (let i = 0; i < 400 && (yield* server.clients).length < 3; i++) yield* Effect.sleep("5 millis")
      const clients = yield* server.clients
      assert.strictEqual(clients.length, 3)
      assert.strictEqual(new Set(clients).size, 3)
      yield* Effect.forEach(clients, (client) => client.send("to all"), { concurrency: "unbounded", discard: true })
      for (const connection of connections) {
        assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(connection.messages, 1)), ["to all"])
      }
      yield* connections[0]!.close(1000)
      for (let i = 0; i < 400 && (yield* server.clients).length > 2; i++) yield* Effect.sleep("5 millis")
      assert.strictEqual((yield* server.clients).length, 2)
      assert.strictEqual(yield* server.connections, 2)
    }))

  it.live("Client.Server: one program counts a server's connections and broadcasts to them over sockets and in memory alike; its handler and authorize read it too", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      // (the handler and authorize read Client.Server: the layers need nothing for it)
      const handler = (connection: Connection.Connection) =>
        Stream.runForEach(connection.messages, () =>
          Effect.gen(function*() {
            const server = yield* Client.Server
            yield* connection.send(`${yield* server.connections} open`)
          }))
      const options = {
        authorize: () =>
          Effect.gen(function*() {
            const server = yield* Client.Server
            if ((yield* server.connections) >= 2) return yield* new NodeServer.Rejection({ status: 503, message: "full" })
            // (released once the connection's handler is done: authorize runs in the connection's scope)
            yield* Effect.acquireRelease(Effect.sync(() => events.push("slot taken")), () => Effect.sync(() => events.push("slot given back")))
          })
      }
      /** Written against Client and Client.Server only; returns what it saw. */
      const program = Effect.gen(function*() {
        events.length = 0 // (the last run's server gave its last slot back as it shut down)
        const server = yield* Client.Server
        const seen: Array<unknown> = [yield* server.connections]
        const a = yield* Client.connect(server.url)
        const b = yield* Client.connect(server.url)
        // (a server counts a connection once its handler starts, which may come after the client's 101)
        assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 2))
        const third = yield* Effect.flip(Client.connect(server.url))
        seen.push(third._tag === "HandshakeRejected" ? [third.status, third.reason] : third._tag)
        const clients = yield* server.clients
        seen.push(clients.length, new Set(clients).size)
        yield* Effect.forEach(clients, (client) => client.send("to all"), { concurrency: "unbounded", discard: true })
        for (const connection of [a, b]) seen.push(...yield* Stream.runCollect(Stream.take(connection.messages, 1)))
        yield* a.send("stats?")
        seen.push(...yield* Stream.runCollect(Stream.take(a.messages, 1)))
        yield* a.close(1000)
        assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 1), "the closed connection is no longer counted")
        assert.isTrue(yield* eventually(() => events.length === 3), "its slot was given back")
        const [left] = yield* server.clients
        yield* left!.send("to b")
        seen.push(...yield* Stream.runCollect(Stream.take(b.messages, 1)))
        seen.push([...events])
        return seen
      }).pipe(Effect.scoped)
      const overSockets = yield* program.pipe(
        Effect.provide(Layer.merge(NodeServer.layer(handler, { host: "127.0.0.1", path: "/feed", ...options }), NodeClient.layer))
      )
      const inMemory = yield* program.pipe(Effect.provide(Client.layerMemory(handler, { path: "/feed", ...options })))
      assert.deepStrictEqual(inMemory, [
        0,
        [503, "full"],
        2,
        2,
        "to all",
        "to all",
        "2 open",
        "to b",
        ["slot taken", "slot taken", "slot given back"]
      ])
      assert.deepStrictEqual(overSockets, inMemory)
    }))

  it.live("answers as in memory: Latin-1 header values as Latin-1 bytes, a 304 without a body, a lone surrogate as U+FFFD, a Rejection made without checks that would break the response a 500, too large headers a 431", () =>
    Effect.gen(function*() {
      const cafe = "caf\u00e9" // (é is obs-text: one byte, 0xE9)
      const options = {
        responseHeaders: () => [{ name: "X-Name", value: cafe }],
        authorize: (request: Client.UpgradeRequest) => {
          const ask = request.url.slice(1)
          if (ask === "ok") return Effect.void
          if (ask === "304") return Effect.fail(new NodeServer.Rejection({ status: 304, message: "not modified", headers: [{ name: "ETag", value: "\"1\"" }] }))
          if (ask === "surrogate") return Effect.fail(new NodeServer.Rejection({ status: 403, message: "bad \ud800 x", headers: [{ name: "X-Name", value: cafe }] }))
          // (Rejections made without their checks: a status that is no refusal's, a header value with a line break)
          if (ask === "101") return Effect.fail(new NodeServer.Rejection({ status: 101, message: "no" }, { disableChecks: true }))
          return Effect.fail(new NodeServer.Rejection({ status: 403, message: "no", headers: [{ name: "X", value: "a\r\nX-Injected: 1" }] }, { disableChecks: true }))
        }
      }
      const program = Effect.gen(function*() {
        const server = yield* Client.Server
        const base = server.url.replace(/\/$/, "")
        const connection = yield* Client.connect(`${base}/ok`)
        const seen: Array<unknown> = [HttpHeader.getCombined(connection.handshake.responseHeaders, "X-Name")]
        // (headers beyond the limits of Node's parser: too many bytes, too many lines)
        const big = { headers: [{ name: "Cookie", value: "c".repeat(17 * 1024) }] }
        const many = { headers: Array.from({ length: 1001 }, (_, i) => ({ name: `X-${i}`, value: "1" })) }
        for (const [ask, connectOptions] of [["304"], ["surrogate"], ["split"], ["101"], ["ok", big], ["ok", many]] as const) {
          const refused = yield* Effect.flip(Client.connect(`${base}/${ask}`, connectOptions))
          seen.push(refused._tag === "HandshakeRejected"
            ? [refused.status, refused.reason ?? null, refused.header("X-Name") ?? null, refused.header("Content-Length") ?? null, refused.header("X-Injected") ?? null, refused.header("ETag") ?? null]
            : refused._tag)
        }
        return seen
      }).pipe(Effect.scoped)
      const overSockets = yield* program.pipe(
        Effect.provide(Layer.merge(NodeServer.layer(() => Effect.void, { host: "127.0.0.1", ...options }), NodeClient.layer))
      )
      const inMemory = yield* program.pipe(Effect.provide(Client.layerMemory(() => Effect.void, options)))
      assert.deepStrictEqual(overSockets, [
        cafe,
        [304, null, null, null, null, "\"1\""],
        [403, "bad \ufffd x", cafe, "10", null, null],
        [500, "the upgrade failed", null, "19", null, null],
        [500, "the upgrade failed", null, "19", null, null],
        [431, "request headers too large", null, "26", null, null],
        // (too many lines: Node 24's parser refuses them, Node 22's leaves them to the server; the same answer)
        [431, "request headers too large", null, "26", null, null]
      ])
      assert.deepStrictEqual(inMemory, overSockets)
    }))

  it.live("clients and connections leave out a connection that has closed, even while its handler goes on, as ws's server.clients", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.never)
      const ws = new WsClient(server.url)
      ws.on("error", () => {})
      yield* Effect.promise(() => new Promise((resolve) => ws.on("open", resolve)))
      assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 1))
      assert.strictEqual((yield* server.clients).length, 1)
      const code = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          ws.on("close", resolve)
          ws.close(1000)
        })
      )
      assert.strictEqual(code, 1000)
      assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 0), "the closed connection is no longer counted")
      assert.deepStrictEqual(yield* server.clients, [])
    }))

  it.live("metrics: a connection closed cleanly over sockets counts as closed on both sides", () =>
    Effect.gen(function*() {
      const open = (side: string) =>
        Effect.map(Metric.value(Metric.withAttributes(Metrics.connectionsOpen, { side })), (state) => Number(state.value))
      const closed = (side: string) =>
        Effect.map(
          Metric.value(Metric.withAttributes(Metrics.connectionsClosed, { side, code: "1000", clean: "true" })),
          (state) => Number(state.count)
        )
      const before = { client: yield* open("client"), server: yield* open("server"), closedClient: yield* closed("client"), closedServer: yield* closed("server") }
      const server = yield* echo
      yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* NodeClient.connect(server.url)
        yield* connection.send("one")
        yield* Stream.runDrain(Stream.take(connection.messages, 1))
        yield* connection.close(1000)
      }))
      for (let i = 0; i < 200 && (yield* closed("server")) === before.closedServer; i++) yield* Effect.sleep("5 millis")
      assert.deepStrictEqual(
        { client: yield* open("client"), server: yield* open("server"), closedClient: yield* closed("client"), closedServer: yield* closed("server") },
        { ...before, closedClient: before.closedClient + 1, closedServer: before.closedServer + 1 }
      )
    }))

  it.live("spans: WebSocket.connect with its URL, WebSocket.accept with the request's path, and a refusal's status and reason", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = yield* NodeServer.serve((c) => c.close(1000), { path: "/ws" }).pipe(Effect.provideService(Tracer.Tracer, tracer))
      const base = `ws://127.0.0.1:${server.address.port}`
      yield* Effect.scoped(NodeClient.connect(`${base}/ws`)).pipe(Effect.provideService(Tracer.Tracer, tracer))
      const refused = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}/elsewhere`))).pipe(
        Effect.provideService(Tracer.Tracer, tracer)
      )
      assert.strictEqual(refused._tag, "HandshakeRejected")
      for (let i = 0; i < 200 && spans.filter((s) => s.name === "WebSocket.accept" && s.status._tag === "Ended").length < 2; i++) {
        yield* Effect.sleep("5 millis")
      }
      const attributes = (name: string) =>
        spans.filter((s) => s.name === name).map((s) => Object.fromEntries(s.attributes))
      assert.deepStrictEqual(attributes("WebSocket.connect"), [{ "url.full": `${base}/ws` }, { "url.full": `${base}/elsewhere` }])
      assert.deepStrictEqual(attributes("WebSocket.accept"), [
        { "url.path": "/ws" },
        { "url.path": "/elsewhere", "http.response.status_code": 404, "websocket.refused": "NotFound" }
      ])
    }))

  it.live("spans: the WebSocket.connect span's url.full has the URL's credentials redacted, as errors show it", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = yield* NodeServer.serve((c) => c.close(1000))
      const url = `ws://alice:s3cret@127.0.0.1:${server.address.port}/ws?access_token=abc123`
      yield* Effect.scoped(NodeClient.connect(url)).pipe(Effect.provideService(Tracer.Tracer, tracer))
      const shown = spans.filter((s) => s.name === "WebSocket.connect").map((s) => String(Object.fromEntries(s.attributes)["url.full"]))
      assert.strictEqual(shown.length, 1)
      assert.strictEqual(shown[0], Client.redactedUrl(url))
      assert.notInclude(shown[0]!, "s3cret")
      assert.notInclude(shown[0]!, "abc123")
    }))

  it.live("spans: the WebSocket.accept span continues the WebSocket.connect span's trace (traceparent and b3), over sockets and in memory alike", () =>
    Effect.gen(function*() {
      /** The trace ids of each connect span and of the parent of the accept span it led to, and the trace headers sent. */
      const traced = (spans: ReadonlyArray<Tracer.NativeSpan>, sent: ReadonlyArray<HttpHeader.HttpHeader>) => {
        const connect = spans.find((s) => s.name === "WebSocket.connect")!
        const accept = spans.find((s) => s.name === "WebSocket.accept")!
        const parent = Option.getOrUndefined(accept.parent)
        return {
          connect: [connect.traceId, connect.spanId],
          acceptParent: parent === undefined ? undefined : [parent.traceId, parent.spanId],
          sameTrace: accept.traceId === connect.traceId,
          sent: sent.filter((h) => h.name === "traceparent" || h.name === "b3").map((h) => h.name)
        }
      }
      const { spans, tracer } = recordingTracer()
      const run = (layer: Layer.Layer<Client.Client, unknown>, url: string) =>
        Effect.gen(function*() {
          spans.length = 0
          const sent = yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* Client.connect(url)
            yield* connection.closed
            return connection.handshake.requestHeaders
          })).pipe(Effect.provide(layer), Effect.provideService(Tracer.Tracer, tracer))
          yield* eventually(() => spans.filter((s) => s.status._tag === "Ended").length === 2)
          return traced(spans, sent)
        })
      const handler = (c: Connection.Connection) => c.close(1000)
      const server = yield* NodeServer.serve(handler).pipe(Effect.provideService(Tracer.Tracer, tracer))
      for (const [layer, url] of [[NodeClient.layer, server.url], [Client.layerMemory(handler), "ws://memory.test/"]] as const) {
        const { connect, acceptParent, sameTrace, sent } = yield* run(layer, url)
        assert.deepStrictEqual(acceptParent, connect, url)
        assert.isTrue(sameTrace, url)
        assert.deepStrictEqual(sent, ["b3", "traceparent"], url)
      }
      // off, as for effect's HTTP client: no headers, and a trace of its own on the server, in
      // memory too; and none with a disabled tracer, whose no-op span the headers cannot carry
      const offs = [
        run(NodeClient.layer, server.url).pipe(Effect.provideService(HttpClient.TracerPropagationEnabled, false)),
        run(NodeClient.layer, server.url).pipe(Effect.provideService(Tracer.DisablePropagation, true)),
        run(Client.layerMemory(handler), "ws://memory.test/").pipe(Effect.provideService(HttpClient.TracerPropagationEnabled, false)),
        run(Client.layerMemory(handler), "ws://memory.test/").pipe(Effect.provideService(Tracer.DisablePropagation, true))
      ]
      for (const [i, off] of (yield* Effect.all(offs)).entries()) {
        assert.deepStrictEqual([off.acceptParent, off.sameTrace, off.sent], [undefined, false, []], `case ${i}`)
      }
      const untraced = yield* Effect.scoped(Effect.map(NodeClient.connect(server.url), (c) => c.handshake.requestHeaders)).pipe(
        Effect.withTracerEnabled(false)
      )
      assert.deepStrictEqual(untraced.filter((h) => h.name === "traceparent" || h.name === "b3"), [])
      // nor with a tracer whose span ids the headers cannot carry (W3C's: a span id of 16 hex digits)
      class ShortSpanId extends Tracer.NativeSpan {
        override get spanId() {
          return "5e11"
        }
      }
      const unfit = yield* Effect.scoped(Effect.map(NodeClient.connect(server.url), (c) => c.handshake.requestHeaders)).pipe(
        Effect.provideService(Tracer.Tracer, Tracer.make({ span: (options) => new ShortSpanId(options) }))
      )
      assert.deepStrictEqual(unfit.filter((h) => h.name === "traceparent" || h.name === "b3"), [])
      // a trace context the caller sends is kept as it is: W3C or B3, its header names in any case;
      // the WebSocket.accept span takes it as its parent
      const given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
      const traceHeaders = ["traceparent", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"]
      const parentOf = (headers: Record<string, string>) =>
        "traceparent" in headers || "TraceParent" in headers
          ? ["0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"]
          : ["80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"]
      for (
        const headers of [
          { traceparent: given },
          { TraceParent: given },
          { b3: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1" },
          { "X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-SpanId": "e457b5a2e4d86bd1" }
        ] as ReadonlyArray<Record<string, string>>
      ) {
        spans.length = 0
        const kept = yield* Effect.scoped(Effect.map(
          NodeClient.connect(server.url, { headers }),
          (connection) => connection.handshake.requestHeaders.filter((h) => traceHeaders.includes(h.name.toLowerCase()))
        ))
        assert.deepStrictEqual(kept, Object.entries(headers).map(([name, value]) => ({ name, value })), JSON.stringify(headers))
        yield* eventually(() => spans.some((s) => s.name === "WebSocket.accept" && s.status._tag === "Ended"))
        const parent = Option.getOrUndefined(spans.find((s) => s.name === "WebSocket.accept")!.parent)
        assert.deepStrictEqual(parent && [parent.traceId, parent.spanId], parentOf(headers), JSON.stringify(headers))
      }
    }))

  it.live("spans: a tracer that keeps the WebSocket.connect and WebSocket.accept spans does not keep the connections that ended", () =>
    Effect.gen(function*() {
      V8.setFlagsFromString("--expose-gc")
      const gc = Vm.runInNewContext("gc") as () => void
      const { spans, tracer } = recordingTracer()
      /** The transports of the connections, weakly: a connection that is kept keeps its transport. */
      const transports: Array<WeakRef<object>> = []
      const watch = (transport: Transport.Transport) => {
        transports.push(new WeakRef(transport))
        return transport
      }
      const server = yield* NodeServer.serve((c) => Effect.andThen(c.send(new Uint8Array(100_000)), c.close(1000)), {
        wrapTransport: watch
      }).pipe(Effect.provideService(Tracer.Tracer, tracer))
      for (let i = 0; i < 3; i++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* NodeClient.connect(server.url, { wrapTransport: watch })
          yield* Stream.runDrain(connection.messages)
          assert.strictEqual((yield* connection.closed).code, 1000)
        })).pipe(Effect.provideService(Tracer.Tracer, tracer))
      }
      yield* eventually(() => spans.filter((s) => s.status._tag === "Ended").length === 6)
      assert.deepStrictEqual(spans.map((s) => s.name).sort(), [...Array(3).fill("WebSocket.accept"), ...Array(3).fill("WebSocket.connect")])
      for (let i = 0; i < 40 && transports.some((r) => r.deref() !== undefined); i++) {
        yield* Effect.sleep("20 millis") // (a WeakRef keeps its target until the current job is done)
        gc()
      }
      assert.strictEqual(transports.length, 6)
      assert.strictEqual(transports.filter((r) => r.deref() !== undefined).length, 0, "the spans kept do not keep the connections")
    }))

  it.live("spans: a refused request's WebSocket.accept span ends as a success, a server fault's (500) as a failure, over sockets and in memory alike", () =>
    Effect.gen(function*() {
      const outcomes = (spans: ReadonlyArray<Tracer.NativeSpan>) =>
        spans.filter((s) => s.name === "WebSocket.accept").map((s) => {
          const attributes = Object.fromEntries(s.attributes)
          const exit = s.status._tag === "Ended" ? s.status.exit : undefined
          return [attributes["http.response.status_code"], exit === undefined ? "open" : Exit.isSuccess(exit) ? "success" : "failure"]
        })
      const options = refusingOptions
      const attempts = (base: string) =>
        Effect.forEach(
          ["/elsewhere", "/ws?deny", "/ws?throw", "/ws?unoffered"],
          (path) => Effect.flip(Effect.scoped(Client.connect(`${base}${path}`, { protocols: ["p"] })))
        )
      const overSockets = recordingTracer()
      const server = yield* NodeServer.serve(() => Effect.void, options).pipe(Effect.provideService(Tracer.Tracer, overSockets.tracer))
      yield* attempts(`ws://127.0.0.1:${server.address.port}`).pipe(Effect.provide(NodeClient.layer))
      yield* eventually(() => outcomes(overSockets.spans).length === 4 && outcomes(overSockets.spans).every(([, o]) => o !== "open"))
      const inMemory = recordingTracer()
      yield* attempts("ws://memory.test").pipe(
        Effect.provide(Client.layerMemory(() => Effect.void, options)),
        Effect.provideService(Tracer.Tracer, inMemory.tracer)
      )
      const expected = [[404, "success"], [403, "success"], [500, "failure"], [500, "failure"]]
      assert.deepStrictEqual(outcomes(overSockets.spans), expected)
      assert.deepStrictEqual(outcomes(inMemory.spans), expected)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a refusal reaches the client the same in memory and over sockets: status, headers and reason (text only, control characters as spaces, at most 200 characters)", () =>
    Effect.gen(function*() {
      const rejections: Record<string, Client.Rejection> = {
        "/long": new Client.Rejection({ status: 403, message: "x".repeat(500) }),
        "/lines": new Client.Rejection({ status: 401, message: "line1\nline2\ttab", headers: [{ name: "WWW-Authenticate", value: "Basic" }] }),
        "/json": new Client.Rejection({ status: 429, message: "{}", headers: [{ name: "Content-Type", value: "application/json" }] })
      }
      const options: Client.ServeOptions = {
        authorize: (request) => rejections[request.url] === undefined ? Effect.void : Effect.fail(rejections[request.url]!)
      }
      const outcomes = (base: string) =>
        Effect.forEach(Object.keys(rejections), (path) =>
          Effect.map(Effect.flip(Effect.scoped(Client.connect(`${base}${path}`))), (error) =>
            error._tag === "HandshakeRejected"
              ? {
                status: error.status,
                headers: error.headers.filter((h) => h.name !== "Date").map((h) => `${h.name.toLowerCase()}: ${h.value}`),
                reason: error.reason
              }
              : { tag: error._tag }))
      const server = yield* NodeServer.serve(() => Effect.void, options)
      const overSockets = yield* outcomes(`ws://127.0.0.1:${server.address.port}`).pipe(Effect.provide(NodeClient.layer))
      const inMemory = yield* outcomes("ws://memory.test").pipe(Effect.provide(Client.layerMemory(() => Effect.void, options)))
      assert.deepStrictEqual(inMemory, overSockets)
      assert.deepStrictEqual(overSockets.map((o) => o.reason), ["x".repeat(200), "line1 line2 tab", undefined])
    }))

  it.live("spans: a request the server answers 503 as it shuts down, while authorize runs, ends its WebSocket.accept span as a success", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const asked = yield* Deferred.make<void>()
      const scope = yield* Scope.make()
      const server = yield* Scope.provide(
        NodeServer.serve((c) => Stream.runDrain(c.messages), { authorize: () => Effect.andThen(Deferred.succeed(asked, undefined), Effect.never) }),
        scope
      ).pipe(Effect.provideService(Tracer.Tracer, tracer))
      const attempt = yield* Effect.forkChild(Effect.flip(Effect.scoped(NodeClient.connect(server.url))))
      yield* Deferred.await(asked)
      yield* Scope.close(scope, Exit.void)
      const error = yield* Fiber.join(attempt)
      assert.strictEqual(error._tag === "HandshakeRejected" ? error.status : error._tag, 503)
      assert.deepStrictEqual(
        spans.map((s) => [s.name, s.status._tag === "Ended" && Exit.isSuccess(s.status.exit), Object.fromEntries(s.attributes)]),
        [["WebSocket.accept", true, { "url.path": "/", "http.response.status_code": 503, "websocket.refused": "ShuttingDown" }]]
      )
    }))

  it.live("spans: an upgrade handler whose scope has closed answers 503 in a WebSocket.accept span too", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const http = yield* Effect.acquireRelease(
        Effect.callback<Http.Server>((resume) => {
          const server = Http.createServer()
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const scope = yield* Scope.make()
      const onUpgrade = yield* NodeServer.makeUpgradeHandler((c) => Stream.runDrain(c.messages), { path: "/ws" }).pipe(
        Scope.provide(scope),
        Effect.provideService(Tracer.Tracer, tracer)
      )
      http.on("upgrade", onUpgrade)
      yield* Scope.close(scope, Exit.void)
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${(http.address() as Net.AddressInfo).port}/ws?a=1`)))
      assert.strictEqual(error._tag === "HandshakeRejected" ? error.status : error._tag, 503)
      assert.deepStrictEqual(
        spans.map((s) => [s.name, s.status._tag, Object.fromEntries(s.attributes)]),
        [["WebSocket.accept", "Ended", { "url.path": "/ws", "http.response.status_code": 503, "websocket.refused": "ShuttingDown" }]]
      )
    }))

  it.live("spans: WebSocket.accept ends with the handshake, not with the connection, and the handler's spans are its children, over sockets and in memory alike", () =>
    Effect.gen(function*() {
      /** While the handler still runs: each span's name, parent's name, and whether it ended. */
      const observe = (make: (handler: Client.Handler, tracer: Tracer.Tracer) => Effect.Effect<void, unknown, Scope.Scope>) =>
        Effect.gen(function*() {
          const { spans, tracer } = recordingTracer()
          const release = yield* Deferred.make<void>()
          const seen = yield* Deferred.make<ReadonlyArray<readonly [string, string, string]>>()
          const handler: Client.Handler = () =>
            Effect.gen(function*() {
              yield* Effect.void.pipe(Effect.withSpan("app"))
              yield* Deferred.succeed(
                seen,
                spans.map((s) => [s.name, Option.match(s.parent, { onNone: () => "root", onSome: (p) => (p as Tracer.Span).name ?? "?" }), s.status._tag] as const)
              )
              yield* Deferred.await(release)
            })
          yield* make(handler, tracer)
          const result = yield* Deferred.await(seen).pipe(Effect.timeout("2 seconds"))
          yield* Deferred.succeed(release, undefined)
          return result.filter(([name]) => name !== "WebSocket.connect")
        })
      const overSockets = yield* observe((handler, tracer) =>
        Effect.gen(function*() {
          const server = yield* NodeServer.serve(handler).pipe(Effect.provideService(Tracer.Tracer, tracer))
          yield* NodeClient.connect(server.url)
        })
      )
      const inMemory = yield* observe((handler, tracer) =>
        Effect.gen(function*() {
          const client = yield* Layer.build(Client.layerMemory(handler))
          yield* Client.connect("ws://memory.test/").pipe(Effect.provideContext(client))
        }).pipe(Effect.provideService(Tracer.Tracer, tracer))
      )
      // (the accept span's own parent differs: none over sockets, the client's span in memory)
      const expected = [["WebSocket.accept", "-", "Ended"], ["app", "WebSocket.accept", "Ended"]]
      const named = (rows: ReadonlyArray<readonly [string, string, string]>) =>
        rows.map(([name, parent, status]) => [name, name === "WebSocket.accept" ? "-" : parent, status])
      assert.deepStrictEqual(named(overSockets), expected)
      assert.deepStrictEqual(named(inMemory), expected)
    }))

  it.live("in memory, the accept span is the connect span's child, even when the layer was built in a span of its own", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      yield* Effect.gen(function*() {
        const client = yield* Layer.build(Client.layerMemory((c) => c.close())).pipe(Effect.withSpan("layer-build"))
        yield* Effect.scoped(Effect.flatMap(Client.connect("ws://memory.test/"), (c) => c.closed)).pipe(
          Effect.provideContext(client),
          Effect.withSpan("caller")
        )
      }).pipe(Effect.provideService(Tracer.Tracer, tracer))
      const parentOf = (name: string) =>
        spans.filter((s) => s.name === name).map((s) => Option.match(s.parent, { onNone: () => "root", onSome: (p) => (p as Tracer.Span).name }))
      assert.deepStrictEqual(parentOf("WebSocket.connect"), ["caller"])
      assert.deepStrictEqual(parentOf("WebSocket.accept"), ["WebSocket.connect"])
      // a request that carries no span (propagation off) is the child of the span the layer was
      // built in, as over a socket it is of the span the server was started in
      spans.length = 0
      yield* Effect.gen(function*() {
        const client = yield* Layer.build(Client.layerMemory((c) => c.close())).pipe(Effect.withSpan("layer-build"))
        yield* Effect.scoped(Effect.flatMap(Client.connect("ws://memory.test/room?token=secret"), (c) => c.closed)).pipe(
          Effect.provideContext(client),
          Effect.withSpan("caller"),
          Effect.provideService(Tracer.DisablePropagation, true)
        )
      }).pipe(Effect.provideService(Tracer.Tracer, tracer))
      assert.deepStrictEqual(parentOf("WebSocket.accept"), ["layer-build"])
      // and its path is the request's without the query (no token in a span), as over a socket
      const accept = spans.find((s) => s.name === "WebSocket.accept")!
      assert.strictEqual(accept.attributes.get("url.path"), "/room")
    }))

  it.live("the handler gets the very request object authorize saw: what authorize found (a user) reaches it in a WeakMap", () =>
    Effect.gen(function*() {
      const users = new WeakMap<Client.UpgradeRequest, string>()
      const options: Client.ServeOptions = {
        authorize: (request) => {
          const token = HttpHeader.getCombined(request.headers, "Authorization")
          if (token !== "Bearer alice-token") return Effect.fail(new NodeServer.Rejection({ status: 401, message: "who are you?" }))
          users.set(request, "alice")
          return Effect.void
        }
      }
      const handler: Client.Handler = (connection, request) => connection.send(`hello ${users.get(request)}`)
      const greeting = Effect.scoped(Effect.gen(function*() {
        const connection = yield* Client.connect(url, { headers: { Authorization: "Bearer alice-token" } })
        return yield* Stream.runCollect(connection.messages)
      }))
      let url = (yield* NodeServer.serve(handler, options)).url
      assert.deepStrictEqual(yield* greeting.pipe(Effect.provide(NodeClient.layer)), ["hello alice"])
      url = "ws://memory.test/"
      assert.deepStrictEqual(yield* greeting.pipe(Effect.provide(Client.layerMemory(handler, options))), ["hello alice"])
    }))

  it.live("a ws client talks to our server", () =>
    Effect.gen(function*() {
      const server = yield* echo
      const reply = yield* Effect.promise(() =>
        new Promise<string>((resolve, reject) => {
          const ws = new WsClient(server.url)
          ws.on("open", () => ws.send("from ws"))
          ws.on("message", (data) => {
            resolve(String(data))
            ws.close(1000)
          })
          ws.on("error", reject)
        })
      )
      assert.strictEqual(reply, "from ws")
    }))

  it.live("a Rejection whose headers would frame its body again is answered 500, which clients can read (they could not parse the 401)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, {
        authorize: (request) =>
          Effect.fail(
            new NodeServer.Rejection({
              status: 401,
              message: "log in first",
              headers: request.url === "/framed" ? [{ name: "Content-Length", value: "0" }] : [{ name: "WWW-Authenticate", value: "Bearer" }]
            })
          )
      })
      const framed = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${server.url}framed`)))
      assert.deepStrictEqual([framed._tag, framed._tag === "HandshakeRejected" ? framed.status : 0], ["HandshakeRejected", 500])
      const plain = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${server.url}plain`)))
      assert.deepStrictEqual([plain._tag, plain._tag === "HandshakeRejected" ? plain.status : 0], ["HandshakeRejected", 401])
      if (plain._tag === "HandshakeRejected") assert.deepInclude(plain.headers, { name: "WWW-Authenticate", value: "Bearer" })
    }))

  it.live("authorize and the handler reach the node:http request behind the upgrade, as ws's req; none in memory", () =>
    Effect.gen(function*() {
      const seen: Array<[string, unknown]> = []
      const options: Client.ServeOptions = {
        authorize: (request) =>
          Effect.sync(() => {
            const incoming = NodeServer.incomingMessage(request)
            seen.push(["authorize", incoming])
            return incoming
          }).pipe(Effect.flatMap((incoming) =>
            incoming === undefined || incoming.headers["x-team"] === "blue"
              ? Effect.void
              : Effect.fail(new NodeServer.Rejection({ status: 403, message: "blue team only" }))
          ))
      }
      const handler: Client.Handler = (connection, request) => {
        const incoming = NodeServer.incomingMessage(request)
        seen.push(["handler", incoming])
        return connection.send(incoming === undefined ? "none" : `${incoming.method} ${incoming.url} ${incoming.socket.remotePort}`)
      }
      const server = yield* NodeServer.serve(handler, options)
      const greeting = (url: string, team: string) =>
        Effect.scoped(Effect.gen(function*() {
          const connection = yield* Client.connect(url, { headers: { "X-Team": team } })
          return yield* Stream.runCollect(connection.messages)
        }))
      const [got] = yield* greeting(`${server.url}?room=1`, "blue").pipe(Effect.provide(NodeClient.layer))
      assert.match(String(got), /^GET \/\?room=1 \d+$/)
      assert.strictEqual(seen.length, 2)
      assert.isDefined(seen[0]![1])
      assert.strictEqual(seen[1]![1], seen[0]![1], "the same request in both")
      const refused = yield* Effect.flip(greeting(server.url, "red").pipe(Effect.provide(NodeClient.layer)))
      assert.strictEqual(refused._tag === "HandshakeRejected" ? refused.status : refused._tag, 403)
      seen.length = 0
      const inMemory = yield* greeting("ws://memory.test/", "red").pipe(Effect.provide(Client.layerMemory(handler, options)))
      assert.deepStrictEqual([inMemory, seen], [["none"], [["authorize", undefined], ["handler", undefined]]])
    }))

  it.live("the handler sees the client's address and port", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<Client.UpgradeRequest>()
      const server = yield* NodeServer.serve((connection, request) => Effect.andThen(Deferred.succeed(seen, request), connection.close(1000)))
      const ws = yield* Effect.acquireRelease(Effect.sync(() => new WsClient(server.url)), (ws) => Effect.sync(() => ws.terminate()))
      ws.on("error", () => {}) // (the server closes at once: the client may be cut before it saw the end)
      const localPort = yield* Effect.callback<number>((resume) =>
        void ws.once("upgrade", (response) => resume(Effect.succeed(response.socket.localPort!)))
      )
      const request = yield* Deferred.await(seen)
      assert.strictEqual(request.remoteAddress, "127.0.0.1")
      assert.strictEqual(request.remotePort, localPort)
    }))

  it.live("a ws client gets text that sendFragments cut between the halves of a surrogate pair whole, and a SharedArrayBuffer's bytes", () =>
    Effect.gen(function*() {
      const text = "emoji 🎉 and 𝄞, ".repeat(50)
      const chunks = Array.from({ length: Math.ceil(text.length / 5) }, (_, i) => text.slice(5 * i, 5 * i + 5))
      const shared = new SharedArrayBuffer(3)
      new Uint8Array(shared).set([7, 8, 9])
      const server = yield* NodeServer.serve((connection) =>
        Effect.gen(function*() {
          yield* connection.sendFragments(Stream.fromIterable(chunks), "text")
          yield* connection.send(shared)
          yield* connection.close(1000)
        })
      )
      const ws = yield* Effect.acquireRelease(Effect.sync(() => new WsClient(server.url)), (ws) => Effect.sync(() => ws.terminate()))
      const received = yield* Effect.callback<ReadonlyArray<readonly [boolean, string]>>((resume) => {
        const got: Array<readonly [boolean, string]> = []
        ws.on("message", (data: Buffer, isBinary) => got.push([isBinary, isBinary ? data.toString("hex") : data.toString()]))
        ws.on("close", () => resume(Effect.succeed(got)))
      }).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual(received, [[false, text], [true, "070809"]])
    }))

  it.live("upgrade handlers share a server's upgrade event by path, with each other and with another library's (ws noServer), as ws users route", () =>
    Effect.gen(function*() {
      const http = yield* scopedHttpServer
      const base = `ws://127.0.0.1:${(http.address() as Net.AddressInfo).port}`
      const named = (name: string): Client.Handler => (connection) => connection.send(name)
      const firstMessage = (path: string) =>
        Effect.scoped(Effect.gen(function*() {
          const connection = yield* NodeClient.connect(`${base}${path}`, { handshakeTimeout: "2 seconds" })
          return Option.getOrUndefined(yield* Stream.runHead(connection.messages))
        })).pipe(Effect.catch((error) => Effect.succeed(error._tag === "HandshakeRejected" ? error.status : error._tag)))
      // two of ours, for two paths
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("chat"), { path: "/chat" }))
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("echo"), { path: "/echo" }))
      assert.deepStrictEqual([yield* firstMessage("/chat"), yield* firstMessage("/echo"), yield* firstMessage("/other")], ["chat", "echo", 404])
      // and another library's, which serves its own path (and destroys the sockets of others, as ws's docs do)
      const wss = new WsServer({ noServer: true })
      yield* Effect.addFinalizer(() => Effect.sync(() => wss.close()))
      const theirs = (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
        if (req.url === "/theirs") wss.handleUpgrade(req, socket, head, (ws) => ws.send("theirs"))
        else if (req.url !== "/chat" && req.url !== "/echo") socket.destroy()
      }
      http.prependListener("upgrade", theirs)
      assert.deepStrictEqual(
        [yield* firstMessage("/theirs"), yield* firstMessage("/chat"), yield* firstMessage("/echo"), yield* firstMessage("/other")],
        ["theirs", "chat", "echo", "ConnectError"]
      )
      http.off("upgrade", theirs)
      // another library's that answers a moment later (ws with an asynchronous verifyClient): none of ours answers its request meanwhile
      const slow = new WsServer({ noServer: true, verifyClient: (_info, done) => setTimeout(() => done(true), 20) })
      yield* Effect.addFinalizer(() => Effect.sync(() => slow.close()))
      const slowTheirs = (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
        if (req.url === "/later") slow.handleUpgrade(req, socket, head, (ws) => ws.send("theirs, later"))
      }
      http.prependListener("upgrade", slowTheirs)
      assert.deepStrictEqual([yield* firstMessage("/later"), yield* firstMessage("/chat")], ["theirs, later", "chat"])
      http.off("upgrade", slowTheirs)
      // one of ours for every path serves what no other of ours does
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("any"), {}))
      assert.deepStrictEqual([yield* firstMessage("/chat"), yield* firstMessage("/else")], ["chat", "any"])
      // and so it does when attached first, before the one for a path
      http.removeAllListeners("upgrade")
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("any"), {}))
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("chat"), { path: "/chat" }))
      assert.deepStrictEqual([yield* firstMessage("/chat"), yield* firstMessage("/else")], ["chat", "any"])
      // one whose scope is closing (503) comes after an open one for the same path
      http.removeAllListeners("upgrade")
      const closed = yield* Scope.make()
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("old"), { path: "/chat" }).pipe(Scope.provide(closed)))
      yield* Scope.close(closed, Exit.void)
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("new"), { path: "/chat" }))
      assert.deepStrictEqual([yield* firstMessage("/chat"), yield* firstMessage("/other")], ["new", 404])
      // alone beside another library's, a closing one still answers the requests for its path (503):
      // they are not left to the other
      http.removeAllListeners("upgrade")
      const closing = yield* Scope.make()
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("old"), { path: "/chat" }).pipe(Scope.provide(closing)))
      yield* Scope.close(closing, Exit.void)
      http.on("upgrade", (_req: Http.IncomingMessage, socket: Duplex) => socket.writableEnded || socket.destroy())
      assert.deepStrictEqual(yield* firstMessage("/chat"), 503)
      // attached with once, beside another of ours: one answer per request, from the one that serves it
      http.removeAllListeners("upgrade")
      const [a, b] = [yield* NodeServer.makeUpgradeHandler(named("a"), { path: "/a" }), yield* NodeServer.makeUpgradeHandler(named("b"), { path: "/b" })]
      http.once("upgrade", a)
      http.on("upgrade", b)
      assert.deepStrictEqual(yield* firstMessage("/b"), "b")
      http.once("upgrade", a)
      assert.deepStrictEqual(yield* firstMessage("/a"), "a")
      http.prependOnceListener("upgrade", a)
      assert.deepStrictEqual(yield* firstMessage("/c"), 404)
      // called by a router of the application's own as a plain function, a handler answers what it
      // is given; through a wrapper that passes the server on, what it serves
      const direct = yield* NodeServer.makeUpgradeHandler(named("direct"), { path: "/direct" })
      http.removeAllListeners("upgrade")
      http.on("upgrade", (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => direct(req, socket, head))
      assert.deepStrictEqual([yield* firstMessage("/direct"), yield* firstMessage("/other")], ["direct", 404])
      // (one of ours attached beside that router leaves what the router gave ours: one answer)
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("any"), {}))
      assert.deepStrictEqual(yield* firstMessage("/direct"), "direct")
      // (and the router's leaves what one of ours attached before it took: one answer too)
      http.removeAllListeners("upgrade")
      let routed = 0
      const counted = yield* NodeServer.makeUpgradeHandler(named("routed"), { authorize: () => Effect.sync(() => void routed++) })
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(named("any"), {}))
      http.on("upgrade", (req: Http.IncomingMessage, socket: Duplex, head: Buffer) => counted(req, socket, head))
      assert.deepStrictEqual(yield* firstMessage("/direct"), "any")
      yield* Effect.sleep("50 millis")
      assert.strictEqual(routed, 0, "the router's handler answered a request taken already")
      http.removeAllListeners("upgrade")
      http.on("upgrade", function(this: unknown, ...args: Parameters<typeof direct>) {
        return direct.apply(this, args)
      })
      assert.deepStrictEqual(yield* firstMessage("/direct"), "direct")
    }))

  it.live("an upgrade handler whose scope has closed answers 503, as a closed ws server does, rather than leave the socket hanging", () =>
    Effect.gen(function*() {
      const http = yield* scopedHttpServer
      const url = `ws://127.0.0.1:${(http.address() as Net.AddressInfo).port}/echo`
      const echo: Client.Handler = (connection) => Stream.runForEach(connection.messages, connection.send)
      const scope = yield* Scope.make()
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(echo, { path: "/echo" }).pipe(Scope.provide(scope)))
      const greet = Effect.scoped(Effect.gen(function*() {
        const connection = yield* NodeClient.connect(url, { handshakeTimeout: "2 seconds" })
        yield* connection.send("hi")
        return yield* Stream.runHead(connection.messages)
      }))
      assert.deepStrictEqual(yield* greet, Option.some("hi"))
      // a request still in its authorize hook as the scope closes gets the same answer (its socket was destroyed)
      const later = yield* Scope.make()
      http.removeAllListeners("upgrade")
      http.on("upgrade", yield* NodeServer.makeUpgradeHandler(echo, { authorize: () => Effect.sleep("2 seconds") }).pipe(Scope.provide(later)))
      const pending = yield* Effect.forkChild(Effect.flip(greet))
      yield* Effect.sleep("200 millis")
      yield* Scope.close(scope, Exit.void)
      yield* Scope.close(later, Exit.void)
      for (const error of [yield* Effect.flip(greet), yield* Fiber.join(pending)]) {
        assert.deepStrictEqual(
          error._tag === "HandshakeRejected" ? [error.status, error.reason] : [error._tag, error.message],
          [503, "the server is shutting down"]
        )
      }
    }))
})

/** A `node:http` server on an ephemeral loopback port, answering "hello"; closed with the scope, its sockets destroyed. */
const scopedHttpServer = Effect.suspend(() => {
  const sockets = new Set<Net.Socket>()
  return Effect.acquireRelease(
    Effect.callback<Http.Server>((resume) => {
      const server = Http.createServer((_req, res) => res.end("hello"))
      server.on("connection", (socket) => sockets.add(socket))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
        sockets.forEach((socket) => socket.destroy())
      })
  )
})

/** A `ws` client that sends `messages` as it opens, then goes away (terminates) 100 ms later. */
const sendThenLeave = (url: string, messages: ReadonlyArray<string>) =>
  Effect.promise(() =>
    new Promise<void>((resolve, reject) => {
      const ws = new WsClient(url)
      ws.on("open", () => {
        for (const message of messages) ws.send(message)
        setTimeout(() => {
          ws.terminate()
          resolve()
        }, 100)
      })
      ws.on("error", reject)
    })
  )

describe("a handler's scope", () => {
  it.live("is its connection's: what it acquires is released once it returns, and NodeServer.layer needs no Scope", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const layer: Layer.Layer<NodeServer.Server, NodeServer.ServeFailure> = NodeServer.layer((connection) =>
        Effect.gen(function*() {
          yield* Effect.acquireRelease(Effect.sync(() => events.push("acquired")), () => Effect.sync(() => events.push("released")))
          yield* Stream.runDrain(connection.messages)
        })
      )
      const server = yield* Effect.provide(NodeServer.Server, yield* Layer.build(layer))
      const info = yield* Effect.scoped(Effect.flatMap(NodeClient.connect(server.url), (c) => c.close(1000)))
      assert.strictEqual(info.code, 1000)
      assert.isTrue(yield* eventually(() => events.length === 2))
      assert.deepStrictEqual(events, ["acquired", "released"])
    }))
})

describe("a peer that goes away", () => {
  it.live("while nobody reads its messages: the next send that fails ends the connection (1006) and its handler", () =>
    Effect.gen(function*() {
      // a push-only handler: it sends ticks, ignores what the client says and waits for the end
      const ended = yield* Deferred.make<Connection.CloseInfo>()
      const server = yield* NodeServer.serve((connection) =>
        Effect.gen(function*() {
          yield* Effect.forkChild(Effect.forever(Effect.andThen(Effect.ignore(connection.send("tick")), Effect.sleep("10 millis"))))
          yield* Deferred.succeed(ended, yield* connection.closed)
        }), { connection: { messageBuffer: 4 } })
      // the client fills the message buffer (the server stops reading), then its socket goes
      yield* sendThenLeave(server.url, Array.from({ length: 20 }, (_, i) => `unread ${i}`))
      const info = yield* Deferred.await(ended).pipe(Effect.timeout("3 seconds"))
      assert.strictEqual(info.code, 1006)
      assert.isFalse(info.clean)
      for (let i = 0; i < 200 && (yield* server.connections) > 0; i++) yield* Effect.sleep("10 millis")
      assert.strictEqual(yield* server.connections, 0)
    }))

  it.live("a failed send leaves the messages that came before it to the consumer, then the stream fails", () =>
    Effect.gen(function*() {
      const got = yield* Deferred.make<{ readonly messages: ReadonlyArray<Connection.Message>; readonly error: string; readonly counted: number }>()
      const server = yield* NodeServer.serve((connection) =>
        Effect.gen(function*() {
          // waits until the client is gone, then sends until a send fails
          yield* Effect.sleep("300 millis")
          for (let i = 0; i < 100; i++) {
            const sent = yield* Effect.exit(connection.send("are you there?"))
            if (Exit.isFailure(sent)) break
            yield* Effect.sleep("10 millis")
          }
          const messages: Array<Connection.Message> = []
          const exit = yield* Effect.exit(Stream.runForEach(connection.messages, (m) => Effect.sync(() => messages.push(m))))
          yield* Deferred.succeed(got, {
            messages,
            error: Exit.isFailure(exit) ? String(Cause.squash(exit.cause)) : "none",
            counted: connection.stats.messagesIn
          })
        }), { connection: { messageBuffer: 4 } })
      yield* sendThenLeave(server.url, Array.from({ length: 10 }, (_, i) => `m${i}`))
      const { counted, error, messages } = yield* Deferred.await(got).pipe(Effect.timeout("5 seconds"))
      // every message that arrived before the client went away comes first, none dropped
      assert.deepStrictEqual(messages, Array.from({ length: 10 }, (_, i) => `m${i}`))
      assert.strictEqual(counted, messages.length)
      assert.include(error, "TransportError")
    }))
})

/**
 * A peer in a process of its own (`node -e script`, run from this package, so that it can load
 * `ws`), stopped with SIGSTOP once it prints `ready`: it hangs without closing, its socket open.
 * Resumed and killed when the scope closes.
 */
const stoppedPeer = (script: string) =>
  Effect.acquireRelease(
    Effect.callback<ReturnType<typeof spawn>, Error>((resume) => {
      const child = spawn(process.execPath, ["-e", script], { cwd: new URL("..", import.meta.url), stdio: ["ignore", "pipe", "inherit"] })
      let out = ""
      child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
        out += chunk
        if (out.includes("ready\n")) {
          child.kill("SIGSTOP")
          resume(Effect.succeed(child))
        }
      })
      child.once("exit", (code) => resume(Effect.fail(new Error(`the peer exited (${code}) before it was ready: ${out}`))))
      const timer = setTimeout(() => resume(Effect.fail(new Error("the peer was not ready within 3 seconds"))), 3000)
      return Effect.sync(() => clearTimeout(timer))
    }),
    (child) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGCONT")
        child.kill("SIGKILL")
      })
  )

describe("a peer that hangs without closing (a stopped process)", () => {
  it.live("keepalive cuts off a stopped ws client: 1006 within interval + 2 x timeout, its socket released", () =>
    Effect.gen(function*() {
      const ended = yield* Deferred.make<Connection.CloseInfo>()
      const server = yield* NodeServer.serve((connection) =>
        Effect.gen(function*() {
          yield* Effect.forkChild(Effect.ignore(Stream.runDrain(connection.messages)))
          yield* Deferred.succeed(ended, yield* connection.closed)
        }), { connection: { keepalive: { interval: "100 millis", timeout: "100 millis" } } })
      yield* stoppedPeer(`const ws = new (require("ws").WebSocket)(${JSON.stringify(server.url)}); ws.on("open", () => console.log("ready"))`)
      const started = Date.now()
      const info = yield* Deferred.await(ended).pipe(Effect.timeout("3 seconds"))
      // (bounded: well within a second on a quiet machine; the margin is for a busy one)
      assert.isAtMost(Date.now() - started, 2000)
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
      assert.include(info.reason, "no answer from the peer")
      assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 0))
    }))

  it.live("a client stopped right after its Close, while a send waits for it: the connection ends within the close timeout", () =>
    Effect.gen(function*() {
      const ended = yield* Deferred.make<Connection.CloseInfo>()
      const sending = yield* Deferred.make<void>()
      const server = yield* NodeServer.serve((connection) =>
        Effect.gen(function*() {
          yield* Effect.forkChild(Effect.ignore(Stream.runDrain(connection.messages)))
          // sends until a send waits for the client, which reads nothing
          yield* Effect.forkChild(Effect.ignore(Effect.forever(Effect.andThen(
            Effect.timeoutOrElse(connection.send(new Uint8Array(64 * 1024)), {
              duration: "50 millis",
              orElse: () => Effect.andThen(Deferred.succeed(sending, undefined), connection.send(new Uint8Array(64 * 1024)))
            }),
            Effect.void
          ))))
          yield* Deferred.succeed(ended, yield* connection.closed)
        }), { connection: { closeTimeout: "300 millis" } })
      // a raw client: the upgrade, then it reads nothing; once told (a byte on stdin is no use while
      // stopped: a timer), it sends a Close (1000) and is stopped
      yield* stoppedPeer(`
        const s = require("net").connect(${server.address.port}, "127.0.0.1", () => s.write("GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n"))
        s.on("error", () => {})
        setInterval(() => {}, 1000) // a paused socket alone does not keep the process running
        s.once("data", () => { s.pause(); setTimeout(() => s.write(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]), () => console.log("ready")), 400) })
      `)
      yield* Deferred.await(sending).pipe(Effect.timeout("2 seconds"))
      const started = Date.now()
      const info = yield* Deferred.await(ended).pipe(Effect.timeout("3 seconds"))
      // (bounded: well within a second on a quiet machine; the margin is for a busy one)
      assert.isAtMost(Date.now() - started, 2000)
      assert.deepStrictEqual(info, { code: 1000, reason: "", clean: false, initiator: "remote" })
      assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 0))
    }))
})

describe("addresses", () => {
  it.live("IPv6 loopback: a server on ::1 and a client to ws://[::1]:port", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)), {
        host: "::1"
      })
      assert.match(server.url, /^ws:\/\/\[::1\]:\d+\/$/)
      const connection = yield* NodeClient.connect(server.url)
      yield* connection.send("over IPv6")
      const [reply] = yield* Stream.runCollect(Stream.take(connection.messages, 1))
      assert.strictEqual(reply, "over IPv6")
      assert.isTrue((yield* connection.close()).clean)
    }))

  it.live("a path written as clients send it matches what a client asks for in its URL (a space, [ ] and |)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => connection.close(4000), { path: "/a%20b|[c]" })
      const info = yield* Effect.scoped(Effect.flatMap(NodeClient.connect(`ws://127.0.0.1:${server.address.port}/a b|[c]`), (c) => c.closed))
      assert.strictEqual(info.code, 4000)
    }))

  it.live("a path that starts with // is served (ws://host//x asks for //x), and its URL reaches it", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => connection.close(4000), { path: "//x" })
      assert.strictEqual(server.url, `ws://127.0.0.1:${server.address.port}//x`)
      const info = yield* Effect.scoped(Effect.flatMap(NodeClient.connect(server.url), (c) => c.closed))
      assert.strictEqual(info.code, 4000)
    }))

  it.live("a host name stays in the server's URL (the name its certificate carries); a client reaches it there", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => connection.close(4000), { host: "localhost", path: "/p" })
      assert.match(server.url, /^ws:\/\/localhost:\d+\/p$/)
      assert.strictEqual(server.url, `ws://localhost:${server.address.port}/p`)
      const info = yield* Effect.scoped(Effect.flatMap(NodeClient.connect(server.url), (c) => c.closed))
      assert.strictEqual(info.code, 4000)
    }))
})

// ---------------------------------------------------------------------------------------------
// Any mix of messages, sizes, buffer sizes and concurrency
// ---------------------------------------------------------------------------------------------

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

/** Message sizes, mostly small, some around the buffer sizes and a few large. */
const messageSize = Arbitrary.all({ scale: int(0, 9), size: int(0, 300 * 1024) }).pipe(
  Arbitrary.map(({ scale, size }) => scale < 5 ? size % 200 : scale < 8 ? size % 70_000 : size)
)

const TEXT = "ab\u00e9\u65e5\u{1f600}" // characters of 1 to 4 bytes

/** The message `index` of sender `sender`: its id first, then `size` bytes (binary) or characters (text). */
const messageOf = (sender: number, index: number, size: number, text: boolean): string | Uint8Array => {
  if (text) {
    const characters = Array.from(TEXT.repeat(Math.ceil(size / 5) + 1)).slice(0, size)
    return `${sender}:${index}:${characters.join("")}`
  }
  const bytes = new Uint8Array(4 + size)
  bytes[0] = sender
  bytes[1] = index >> 8
  bytes[2] = index & 0xff
  for (let i = 3; i < bytes.length; i++) bytes[i] = (i * 31 + index * 7 + sender) & 0xff
  return bytes
}

const idOf = (message: string | Uint8Array): readonly [number, number] =>
  typeof message === "string"
    ? [Number(message.split(":")[0]), Number(message.split(":")[1])]
    : [message[0]!, (message[1]! << 8) | message[2]!]

describe("echo under any mix", () => {
  it.live.prop(
    "messages of any size from concurrent senders come back whole, once, and in each sender's order, whatever the buffer sizes",
    {
      senders: Arbitrary.array(Arbitrary.array(Arbitrary.all({ size: messageSize, text: int(0, 2) }), { minLength: 2, maxLength: 24 }), {
        minLength: 1,
        maxLength: 4
      }),
      clientBuffer: int(256, 65536),
      serverBuffer: int(256, 65536),
      messageBuffer: int(1, 16),
      consumerPause: int(0, 3),
      burst: int(0, 2)
    },
    ({ burst, clientBuffer, consumerPause, messageBuffer, senders, serverBuffer }) =>
      Effect.gen(function*() {
        const server = yield* NodeServer.serve(
          (connection): Effect.Effect<void, unknown> => Stream.runForEach(connection.messages, (m) => connection.send(m)),
          {
            properties: { receiveBufferSize: serverBuffer, sendBufferSize: serverBuffer },
            connection: { messageBuffer }
          }
        )
        const connection = yield* NodeClient.connect(server.url, {
          properties: { receiveBufferSize: clientBuffer, sendBufferSize: clientBuffer },
          connection: { messageBuffer }
        })
        const plans = senders.map((plan, sender) =>
          plan.map(({ size, text }, index) => messageOf(sender, index, size, text === 0))
        )
        const total = plans.reduce((n, plan) => n + plan.length, 0)
        // a consumer that sometimes stops for a moment (the mailbox fills, reading stops)
        let taken = 0
        const received = yield* Effect.forkChild(
          Stream.runCollect(Stream.take(connection.messages, total).pipe(
            Stream.tap(() => consumerPause > 0 && taken++ % (4 * consumerPause) === 0 ? Effect.sleep(consumerPause) : Effect.void)
          ))
        )
        // each sender sends its messages one after the other, or (burst) all at once
        yield* Effect.forEach(
          plans,
          (plan) => Effect.forEach(plan, (m) => connection.send(m), { discard: true, concurrency: burst === 0 ? "unbounded" : 1 }),
          { concurrency: "unbounded", discard: true }
        )
        const got = yield* Fiber.join(received)
        assert.strictEqual(got.length, total)
        const next = plans.map(() => 0)
        const seen = new Set<string>()
        for (const message of got) {
          const [sender, index] = idOf(message)
          if (burst !== 0) assert.strictEqual(index, next[sender], `sender ${sender}: message ${index} out of order`)
          next[sender]!++
          assert.isFalse(seen.has(`${sender}:${index}`), "each message once")
          seen.add(`${sender}:${index}`)
          const sent = plans[sender]![index]!
          if (typeof sent === "string") assert.strictEqual(message, sent)
          else assert.isTrue(message instanceof Uint8Array && Buffer.compare(message, sent) === 0, "binary intact")
        }
        const info = yield* connection.close(1000)
        assert.isTrue(info.clean)
      }),
    // (generated lists grow with the check's size, 10 by default: up to the 24 messages of a sender)
    { timeout: 120_000, arbitrary: { runs: 60, size: 48 } }
  )
})

// ---------------------------------------------------------------------------------------------
// Closing at any moment, from either side or both
// ---------------------------------------------------------------------------------------------

describe("closing at any moment", () => {
  it.live.prop(
    "both sides agree on how the connection ended, and what arrived before is intact and in order",
    {
      sizes: Arbitrary.array(messageSize, { maxLength: 10 }),
      clientCloses: int(0, 3),
      serverCloses: int(0, 3),
      clientDelay: int(0, 15),
      serverDelay: int(0, 15),
      clientCode: int(0, 2),
      serverCode: int(0, 2)
    },
    ({ clientCloses, clientCode, clientDelay, serverCloses, serverCode, serverDelay, sizes }) =>
      Effect.gen(function*() {
        const codes = [1000, 4000, 4999]
        // at least one side closes
        const client = { closes: clientCloses !== 0 || serverCloses === 0, code: codes[clientCode]!, reason: "client" }
        const server = { closes: serverCloses !== 0, code: codes[serverCode]!, reason: "server" }
        const serverSide = yield* Deferred.make<Connection.Connection>()
        const listening = yield* NodeServer.serve((connection): Effect.Effect<void, unknown> =>
          Effect.gen(function*() {
            yield* Deferred.succeed(serverSide, connection)
            if (server.closes) {
              yield* Effect.forkChild(
                Effect.andThen(Effect.sleep(serverDelay), connection.close(server.code, server.reason))
              )
            }
            yield* Stream.runForEach(connection.messages, (m) => connection.send(m)).pipe(Effect.ignore)
            yield* connection.closed
          })
        )
        const connection = yield* NodeClient.connect(listening.url)
        const serverConnection = yield* Deferred.await(serverSide)
        const sent = sizes.map((size, i) => messageOf(0, i, size, i % 2 === 0))
        const sender = yield* Effect.forkChild(Effect.forEach(sent, (m) => connection.send(m), { discard: true }).pipe(Effect.ignore))
        const received: Array<Connection.Message> = []
        const reader = yield* Effect.forkChild(
          Stream.runForEach(connection.messages, (m) => Effect.sync(() => received.push(m))).pipe(Effect.ignore)
        )
        if (client.closes) {
          yield* Effect.sleep(clientDelay)
          yield* connection.close(client.code, client.reason)
        }
        const clientInfo = yield* Effect.timeout(connection.closed, "5 seconds")
        yield* Fiber.join(sender)
        yield* Fiber.join(reader)
        const serverInfo = yield* Effect.timeout(serverConnection.closed, "5 seconds")
        const context = JSON.stringify({ client, server, clientInfo, serverInfo })
        // a closing handshake took place: clean on both sides
        assert.isTrue(clientInfo.clean && serverInfo.clean, context)
        // each reports the Close it received from the other
        const expected = (from: typeof client) => ({ code: from.code, reason: from.reason })
        if (client.closes && !server.closes) {
          assert.deepStrictEqual({ code: serverInfo.code, reason: serverInfo.reason }, expected(client), context)
          assert.strictEqual(serverInfo.initiator, "remote", context)
          assert.strictEqual(clientInfo.initiator, "local", context)
        } else if (server.closes && !client.closes) {
          assert.deepStrictEqual({ code: clientInfo.code, reason: clientInfo.reason }, expected(server), context)
          assert.strictEqual(clientInfo.initiator, "remote", context)
        } else {
          // both closed: whoever was first, each side got the other's Close or its echo
          assert.include([client.code, server.code], clientInfo.code, context)
          assert.include([client.code, server.code], serverInfo.code, context)
        }
        // what came back is the beginning of what was sent, whole and in order
        assert.isAtMost(received.length, sent.length)
        received.forEach((message, i) => {
          const original = sent[i]!
          if (typeof original === "string") assert.strictEqual(message, original)
          else assert.isTrue(message instanceof Uint8Array && Buffer.compare(message, original) === 0)
        })
      }),
    { timeout: 120_000, arbitrary: { runs: 60 } }
  )
})

describe("shutting down at any step of an accept", () => {
  it.live("the shutdown is bounded, the client's socket closes, no connection is left counted open", () =>
    Effect.gen(function*() {
      const openServers = Metric.value(Metric.withAttributes(Metrics.connectionsOpen, { side: "server" }))
      const before = (yield* openServers).value
      // (an accept cut short by the shutdown is no fault: nothing is logged as an error)
      const errors: Array<string> = []
      const logger = Logger.make((options) => {
        if (options.logLevel === "Error" || options.logLevel === "Fatal") errors.push(String(options.message))
      })
      // shut down at the k-th task of the accept's fibers, until the handler runs first a few times
      yield* sweepInterruptions((scheduler, at) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const server = yield* Scope.provide(
            NodeServer.serve((connection) => Effect.andThen(connection.send("hi"), Effect.never), {
              shutdownTimeout: 500,
              connection: { closeTimeout: 300 }
            }),
            scope
          ).pipe(Effect.provideService(Scheduler.Scheduler, scheduler), Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
          scheduler.tasks = 0
          let shutdown: Fiber.Fiber<void> | undefined = undefined
          let started = 0
          const shutDown = () => {
            started = Date.now()
            shutdown = Effect.runFork(Scope.close(scope, Exit.void))
          }
          scheduler.atTask = shutDown
          const ws = new WsClient(server.url)
          ws.on("error", () => {})
          let greeted = false
          let closed = false
          ws.on("message", () => greeted = true)
          ws.on("close", () => closed = true)
          yield* eventually(() => shutdown !== undefined || greeted || closed)
          const served = shutdown === undefined
          if (served) shutDown()
          yield* Fiber.join(shutdown!)
          assert.isBelow(Date.now() - started, 2500, `${at}: the shutdown is bounded`)
          assert.isTrue(yield* eventually(() => closed), `${at}: the client's socket is closed`)
          assert.strictEqual((yield* openServers).value, before, `${at}: no connection counted open`)
          assert.deepStrictEqual(errors, [], `${at}: nothing logged as an error`)
          return served
        })
      )
    }), { timeout: 60_000 })
})

describe("bufferedAmount over a socket", () => {
  it.live("what a peer that stops reading leaves queued, near the write limit, and 0 once it reads again (as ws's)", () =>
    Effect.gen(function*() {
      const accepted = yield* Deferred.make<Connection.Connection>()
      const writeBufferLimit = 256 * 1024
      const server = yield* NodeServer.serve(
        (connection) => Effect.andThen(Deferred.succeed(accepted, connection), connection.closed),
        { socketBuffers: { writeBufferLimit } }
      )
      const ws = yield* Effect.acquireRelease(Effect.sync(() => new WsClient(server.url)), (ws) => Effect.sync(() => ws.terminate()))
      let received = 0
      ws.on("message", () => received++)
      yield* Effect.callback<void>((resume) => void ws.once("open", () => resume(Effect.void)))
      const connection = yield* Deferred.await(accepted)
      assert.strictEqual(connection.bufferedAmount, 0)
      const socket = (ws as unknown as { readonly _socket: { pause(): void; resume(): void } })._socket
      socket.pause()
      // sends until one waits for room: the kernel's buffers are full, then the socket's
      const message = new Uint8Array(64 * 1024)
      let sent = 0
      while (sent < 2000 && Option.isSome(yield* Effect.timeoutOption(connection.send(message), 200))) sent++
      assert.isBelow(sent, 2000, "no send ever waited")
      assert.isAtLeast(connection.bufferedAmount, writeBufferLimit - message.length)
      assert.isAtMost(connection.bufferedAmount, writeBufferLimit + 2 * message.length)
      socket.resume()
      assert.isTrue(yield* eventually(() => received === sent && connection.bufferedAmount === 0, 5000), `${received} of ${sent} messages read, ${connection.bufferedAmount} bytes buffered`)
      assert.strictEqual(connection.bufferedAmount, 0)
    }))
})

describe("NodeServer.layerConfig", () => {
  const echoHandler = (connection: Connection.Connection) => Stream.runForEach(connection.messages, (m) => connection.send(m))

  it.live("reads the options from Config: host, port and path from the provider, a function as Config.succeed", () =>
    Effect.gen(function*() {
      const asked: Array<string> = []
      const layer = NodeServer.layerConfig(echoHandler, {
        host: Config.String("HOST"),
        port: Config.Int("PORT"),
        path: Config.String("WS_PATH").pipe(Config.withDefault("/")),
        authorize: Config.succeed((request: Client.UpgradeRequest) => Effect.sync(() => void asked.push(request.url)))
      })
      const server = yield* Layer.build(layer).pipe(
        Effect.map((context) => Context.get(context, NodeServer.Server)),
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ HOST: "::1", PORT: 0, WS_PATH: "/chat" })))
      )
      assert.match(server.url, /^ws:\/\/\[::1\]:\d+\/chat$/)
      const connection = yield* NodeClient.connect(server.url)
      yield* connection.send("configured")
      assert.deepStrictEqual(yield* Stream.runHead(connection.messages), Option.some("configured"))
      assert.isTrue((yield* connection.close(1000)).clean)
      assert.deepStrictEqual(asked, ["/chat"])
    }))

  it.live("a missing or invalid option fails the layer with a ConfigError naming it", () =>
    Effect.gen(function*() {
      const layer = NodeServer.layerConfig(echoHandler, { host: Config.succeed("127.0.0.1"), port: Config.Port("PORT") })
      for (const [values, name] of [[{}, "PORT"], [{ PORT: "eighty" }, "PORT"], [{ PORT: 70000 }, "PORT"]] as const) {
        const error = yield* Effect.flip(Effect.scoped(Layer.build(layer)).pipe(
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(values)))
        ))
        assert.strictEqual(error._tag, "ConfigError", JSON.stringify(values))
        assert.include(String(error), name)
      }
    }))
})
