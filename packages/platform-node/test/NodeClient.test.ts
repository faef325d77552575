import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Config, ConfigProvider, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Scheduler, Schema, Scope, Stream } from "effect"
import { createHash } from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Https from "node:https"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import { HttpsProxyAgent } from "https-proxy-agent"
import { createProxy } from "proxy"
import { WebSocketServer } from "ws"
import { Client, type Connection, Metrics } from "@effect-websocket/core"
import { HttpHeader } from "@effect-websocket/schema"
import { NodeClient, NodeServer } from "../src/index.ts"
import { anyOptions, failureTags } from "./anyOptions.ts"
import { certificate } from "./interop/helpers.ts"
import { eventually, sweepInterruptions } from "./interruptAt.ts"

/** A loopback server built from `make`, closed with the test's scope. */
const listen = <S extends Net.Server>(make: () => S) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ server: S; port: number }>((resolve) => {
        const server = make()
        server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as Net.AddressInfo).port }))
      })
    ),
    ({ server }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          if (server instanceof Http.Server) server.closeAllConnections()
          server.close(() => resolve())
        })
      )
  )

/** A `ws` server on the Unix socket `socketPath`, its upgrades handed to `onUpgrade`; closed with the test's scope. */
const wsServerAt = (
  socketPath: string,
  onUpgrade: (wss: WebSocketServer, req: Http.IncomingMessage, socket: Net.Socket, head: Buffer) => void
) => {
  const wss = new WebSocketServer({ noServer: true })
  const server = Http.createServer()
  server.on("upgrade", (req: Http.IncomingMessage, socket: Net.Socket, head: Buffer) => onUpgrade(wss, req, socket, head))
  return Effect.acquireRelease(
    Effect.promise(() => new Promise<void>((resolve) => server.listen(socketPath, () => resolve()))),
    () =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          wss.close()
          server.closeAllConnections()
          server.close(() => resolve())
        })
      )
  )
}

describe("NodeClient.connect failures", () => {
  it.live("a refused connection is a ConnectError with reason Refused, as is a socket path where nothing listens", () =>
    Effect.gen(function*() {
      const { port, server } = yield* listen(() => Net.createServer())
      yield* Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const error = yield* Effect.flip(NodeClient.connect(`ws://127.0.0.1:${port}/`))
      assert.strictEqual(error._tag, "ConnectError")
      if (error._tag === "ConnectError") assert.strictEqual(error.reason, "Refused")
      const socketPath = Path.join(Os.tmpdir(), `no-such-socket-${process.pid}-${Date.now()}.sock`)
      for (const attempt of [NodeClient.connect("ws://localhost/", { socketPath }), NodeClient.connect(`ws+unix://${socketPath}:/chat`)]) {
        const error = yield* Effect.flip(Effect.scoped(attempt))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Refused"], error.message)
      }
    }))

  it.live("a host name that cannot resolve is a ConnectError with reason HostNotFound", () =>
    Effect.gen(function*() {
      // (a label longer than DNS's 63 bytes cannot go into a query: the resolver fails it on this
      // machine, without a packet, as it fails a name no server knows)
      const host = `${"a".repeat(64)}.invalid`
      for (const url of [`ws://${host}/`, `wss://${host}:8443/chat`]) {
        const error = yield* Effect.flip(NodeClient.connect(url))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "HostNotFound"], error.message)
        assert.include(error.message, "ENOTFOUND")
      }
    }))

  it.live("a failure's code says its reason (EAI_AGAIN: HostNotFound, ETIMEDOUT: Timeout, EPROTO without TLS: Unknown), its message without OpenSSL's line break", () =>
    Effect.gen(function*() {
      // (failures the resolver or the kernel cannot be made to give at will: a lookup of the
      // socket's, as Node's `lookup` option takes, fails the connect with them)
      const failingAgent = (code: string, message: string) => {
        const agent = new Http.Agent()
        agent.createConnection = (options) =>
          Net.connect({ ...(options as Net.TcpNetConnectOpts), lookup: (_host, _options, callback) => callback(Object.assign(new Error(message), { code }), "", 4) })
        return agent
      }
      for (
        const [code, reason] of [["EAI_AGAIN", "HostNotFound"], ["ETIMEDOUT", "Timeout"], ["EPROTO", "Unknown"], ["ECONNRESET", "Unknown"]] as const
      ) {
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect("ws://u:secret@example.test/", { agent: failingAgent(code, `${code} failure\n`) })))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", reason], error.message)
        assert.strictEqual(error.message, `connecting to ws://REDACTED:REDACTED@example.test/ failed: ${code} failure`)
      }
    }))

  it.live("a server that resets the connection before answering anything is no TLS failure, also for wss:// (reason Unknown)", () =>
    Effect.gen(function*() {
      const { port } = yield* listen(() => Net.createServer((socket) => socket.resetAndDestroy()))
      for (const scheme of ["ws", "wss"]) {
        const error = yield* Effect.flip(NodeClient.connect(`${scheme}://127.0.0.1:${port}/`))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Unknown"], error.message)
      }
      // nor is a reset once the TLS handshake is done, as the upgrade request arrives
      const { cert, key } = yield* certificate
      const secureContext = Tls.createSecureContext({ cert, key })
      const afterHandshake = yield* listen(() =>
        Net.createServer((socket) => {
          socket.on("error", () => {})
          const tls = new Tls.TLSSocket(socket, { isServer: true, secureContext })
          tls.on("error", () => {})
          tls.once("data", () => socket.resetAndDestroy())
        })
      )
      const error = yield* Effect.flip(NodeClient.connect(`wss://127.0.0.1:${afterHandshake.port}/`, { tls: { ca: cert } }))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Unknown"], error.message)
    }))

  it.live("a server that never answers is cut off by the handshake timeout", () =>
    Effect.gen(function*() {
      const sockets: Array<Net.Socket> = []
      const { port } = yield* listen(() =>
        Net.createServer((socket) => {
          socket.on("error", () => {})
          sockets.push(socket)
        })
      )
      const started = Date.now()
      const error = yield* Effect.flip(NodeClient.connect(`ws://127.0.0.1:${port}/`, { handshakeTimeout: "200 millis" }))
      assert.strictEqual(error._tag, "ConnectError")
      if (error._tag === "ConnectError") assert.strictEqual(error.reason, "Timeout")
      assert.isBelow(Date.now() - started, 2000)
      sockets.forEach((s) => s.destroy())
    }))

  it.live("TLS settings that Node refuses are an InvalidParameter naming tls, not a crash", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect("wss://127.0.0.1:9/", { tls: { minVersion: "TLSv9" as never } })))
      assert.strictEqual(error._tag, "InvalidParameter")
      assert.include(error.message, "tls: ")
      assert.strictEqual(error._tag === "InvalidParameter" ? error.parameter : "", "tls")
    }))

  it.live("wss:// to a server that does not speak TLS is a ConnectError with reason Tls", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => c.close(1000))
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(server.url.replace("ws://", "wss://"))))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Tls"])
    }))

  it.live("a non-101 answer is HandshakeRejected with the status and headers", () =>
    Effect.gen(function*() {
      const { port } = yield* listen(() =>
        Http.createServer((_req, res) => {
          res.writeHead(403, { "X-Reason": "no" })
          res.end("forbidden")
        })
      )
      const error = yield* Effect.flip(NodeClient.connect(`ws://127.0.0.1:${port}/`))
      assert.strictEqual(error._tag, "HandshakeRejected")
      if (error._tag === "HandshakeRejected") {
        assert.strictEqual(error.status, 403)
        assert.isTrue(error.headers.some((h) => h.name.toLowerCase() === "x-reason" && h.value === "no"))
        // the start of a text body says why
        assert.strictEqual(error.message, "the server answered 403 Forbidden instead of 101 Switching Protocols: forbidden")
        assert.strictEqual(error.reason, "forbidden")
      }
      // a reason whose character is cut between two packets is read whole (as UTF-8, not chunk by chunk)
      const cut = yield* listen(() =>
        Http.createServer((_req, res) => {
          res.writeHead(403, { "Content-Type": "text/plain; charset=utf-8" })
          const bytes = Buffer.from("caf\u00e9 ferm\u00e9", "utf8")
          res.write(bytes.subarray(0, 4))
          setTimeout(() => res.end(bytes.subarray(4)), 30)
        })
      )
      const cutError = yield* Effect.flip(NodeClient.connect(`ws://127.0.0.1:${cut.port}/`))
      assert.strictEqual(cutError._tag === "HandshakeRejected" ? cutError.reason : cutError._tag, "caf\u00e9 ferm\u00e9")
      // a server of ours writes its reason there: the client's error says it
      const server = yield* NodeServer.serve(() => Effect.void, {
        authorize: () => Effect.fail(new NodeServer.Rejection({ status: 401, message: "a token is needed" }))
      })
      const refused = yield* Effect.flip(Effect.scoped(NodeClient.connect(server.url)))
      assert.include(refused.message, "401 Unauthorized instead of 101 Switching Protocols: a token is needed")
    }))

  it.live("a wrong Sec-WebSocket-Accept is InvalidProtocolFormat", () =>
    Effect.gen(function*() {
      const { port, server } = yield* listen(() => Http.createServer())
      const upgraded: Array<{ destroy: () => void }> = []
      yield* Effect.addFinalizer(() => Effect.sync(() => upgraded.forEach((s) => s.destroy())))
      let closed = false
      server.on("upgrade", (_req, socket) => {
        upgraded.push(socket)
        socket.on("error", () => {})
        socket.on("close", () => closed = true)
        // (once the client's side ends, what the server still sends finds it gone: reset)
        socket.on("end", () => {
          const timer = setInterval(() => socket.write("x"), 20)
          socket.on("close", () => clearInterval(timer))
        })
        socket.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
      })
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${port}/`)))
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
      // the socket goes at once, not merely ended: a server that never ends its side does not hold it (it
      // reads nothing more)
      assert.isTrue(yield* eventually(() => closed), "the socket was not released")
    }))

  it.live("a 101 without Upgrade: websocket alone or Connection: Upgrade is InvalidProtocolFormat naming the header", () =>
    Effect.gen(function*() {
      for (
        const [headers, header] of [
          ["Connection: Upgrade", "Upgrade"],
          ["Upgrade: websocket", "Connection"],
          ["Upgrade: websocket\r\nConnection: keep-alive", "Connection"],
          // RFC 6455 section 4.1: an Upgrade with any other value than websocket fails the connection
          ["Upgrade: websocket, h2c\r\nConnection: Upgrade", "Upgrade"],
          ["Upgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade", "Upgrade"]
        ] as const
      ) {
        const { port } = yield* listen(() =>
          Net.createServer((socket) => {
            socket.on("error", () => {})
            socket.once("data", () => socket.end(`HTTP/1.1 101 Switching Protocols\r\n${headers}\r\n\r\n`))
          })
        )
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${port}/`)))
        assert.strictEqual(error._tag, "InvalidProtocolFormat", headers)
        if (error._tag === "InvalidProtocolFormat") assert.strictEqual(error.header, header)
      }
    }))

  it.live("a server that selects none of the offered subprotocols is UnsupportedSubprotocol, as with ws and browsers", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => c.close(1000), { selectProtocol: () => undefined })
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(server.url, { protocols: ["chat", "chat.v2"] })))
      assert.strictEqual(error._tag, "UnsupportedSubprotocol")
      assert.include(error.message, "none of the offered subprotocols")
      // offering none, a server that selects none is fine
      assert.strictEqual((yield* Effect.scoped(Effect.map(NodeClient.connect(server.url), (c) => c.protocol))), "")
    }))

  it.live("a wrapTransport that throws or returns no Transport is an InvalidParameter, and the socket goes at once", () =>
    Effect.gen(function*() {
      let open = 0
      const server = yield* NodeServer.serve((c) =>
        Effect.acquireUseRelease(Effect.sync(() => open++), () => Stream.runDrain(c.messages), () => Effect.sync(() => open--))
      )
      const wrappers = [() => {
        throw new Error("broken")
      }, async (t: unknown) => t, () => undefined]
      for (const wrapTransport of wrappers) {
        const error = yield* Effect.flip(NodeClient.connect(server.url, { wrapTransport: wrapTransport as never }))
        assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" && error.parameter], ["InvalidParameter", "wrapTransport"])
      }
      assert.isTrue(yield* eventually(() => open === 0), "every attempt's socket is closed")
    }))

  it.live("an attempt whose scope is closed meanwhile (by another fiber, or before it started) is interrupted, and its socket goes", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Stream.runDrain(c.messages), {
        authorize: () => Effect.sleep("100 millis")
      })
      const scope = yield* Scope.make()
      const attempt = yield* Effect.forkChild(Scope.provide(NodeClient.connect(server.url), scope))
      yield* Effect.sleep("20 millis") // the upgrade request is in authorize
      yield* Scope.close(scope, Exit.void)
      const exit = yield* Fiber.await(attempt)
      assert.isTrue(Exit.hasInterrupts(exit) && !Exit.hasDies(exit), String(exit))
      const closed = yield* Scope.make()
      yield* Scope.close(closed, Exit.void)
      const late = yield* Effect.exit(Scope.provide(NodeClient.connect(server.url), closed))
      assert.isTrue(Exit.hasInterrupts(late) && !Exit.hasDies(late), String(late))
      yield* Effect.sleep("200 millis") // authorize done: the 101 finds no one
      assert.isTrue(yield* eventually(() => Effect.runSync(server.connections) === 0, 2000), "no connection left open on the server")
    }))

  it.live("a failed attempt releases its socket at once, not when the caller's scope closes (retries do not pile up)", () =>
    Effect.gen(function*() {
      const { port, server } = yield* listen(() => Http.createServer())
      let open = 0
      server.on("upgrade", (_req, socket) => {
        open++
        let gone = false
        const leave = () => {
          if (!gone) open--
          gone = true
          socket.destroy()
        }
        socket.on("end", leave) // the client closed its socket (the server's side stays half-open)
        socket.on("close", leave)
        socket.on("error", () => {})
        socket.resume()
        socket.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n"
        )
      })
      // five attempts in the same (still open) scope, as a retry loop makes them
      for (let i = 0; i < 5; i++) {
        const error = yield* Effect.flip(NodeClient.connect(`ws://127.0.0.1:${port}/`))
        assert.strictEqual(error._tag, "InvalidProtocolFormat")
      }
      for (let i = 0; i < 100 && open > 0; i++) yield* Effect.sleep("10 millis")
      assert.strictEqual(open, 0, "every failed attempt's socket is closed")
    }))

  it.live("a connection that ended is released at once, not when the caller's scope closes (reconnects do not pile up)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => m === "bye" ? c.close(1000) : c.send(m)))
      // a long-lived scope (a layer's, say) in which a program connects again and again
      const scope = yield* Scope.make()
      const session = (end: (connection: Connection.Connection) => Effect.Effect<unknown, unknown>) =>
        Scope.provide(Effect.flatMap(NodeClient.connect(server.url), end), scope)
      yield* session((c) => c.close(1000)) // closed by us
      yield* session((c) => c.abort) // aborted
      yield* session((c) => Effect.andThen(c.send("bye"), c.closed)) // closed by the server
      yield* session((c) => Effect.andThen(c.send("hi"), Stream.runCollect(Stream.take(c.messages, 1)))) // still open
      /** What the scope holds: one entry (a child scope) per connection attempt not yet released. */
      const held = () => scope.state._tag === "Open" ? (scope.state.finalizers?.size ?? 1) : 0
      yield* eventually(() => held() === 1)
      assert.strictEqual(held(), 1, "the scope holds the open connection only, not the three that ended")
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(scope.state._tag, "Closed")
    }))

  it.live("messages that came before the server's Close are still there once the connection ended and was released", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) =>
        Effect.andThen(Effect.forEach(Array.from({ length: 12 }, (_, i) => `m${i}`), (m) => c.send(m)), c.close(1000))
      )
      const scope = yield* Scope.make()
      const connection = yield* Scope.provide(NodeClient.connect(server.url), scope)
      const info = yield* connection.closed
      assert.strictEqual(info.code, 1000)
      yield* eventually(() => scope.state._tag === "Open" && (scope.state.finalizers?.size ?? 0) === 0)
      const got = yield* Stream.runCollect(connection.messages)
      assert.deepStrictEqual(got, Array.from({ length: 12 }, (_, i) => `m${i}`))
      yield* Scope.close(scope, Exit.void)
    }))

  it.live("URLs that are not WebSocket URLs are refused up front", () =>
    Effect.gen(function*() {
      // (port 0 would make Node connect to port 80; ws+unix:// without a path to localhost:80)
      for (
        const url of [
          "ftp://127.0.0.1/",
          "not a url",
          "ws://127.0.0.1/#fragment",
          "ws+unix:///tmp/ews.sock:/path#fragment",
          "ws://127.0.0.1:0/",
          "ws+unix://",
          "ws+unix://:/x"
        ]
      ) {
        const error = yield* Effect.flip(NodeClient.connect(url))
        assert.strictEqual(error._tag, "ConnectError")
        if (error._tag === "ConnectError") assert.strictEqual(error.reason, "InvalidUrl")
      }
    }))
})

describe("NodeClient URLs given as objects", () => {
  it.live("a URL object connects, and a refused one fails with a ConnectError (it took the process down)", () =>
    Effect.gen(function*() {
      const { port, server: closed } = yield* listen(() => Net.createServer())
      yield* Effect.promise(() => new Promise<void>((resolve) => closed.close(() => resolve())))
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(new URL(`ws://127.0.0.1:${port}/`))))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Refused"])
      const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), { host: "127.0.0.1", port: 0 })
      const connection = yield* NodeClient.connect(new URL(server.url))
      yield* connection.send("over a URL object")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(connection.messages, 1)), ["over a URL object"])
    }))
})

describe("NodeClient options", () => {
  it.live("a bad option fails the attempt with an InvalidParameter before any socket is opened", () =>
    Effect.gen(function*() {
      let connections = 0
      const { port } = yield* listen(() => Net.createServer((socket) => {
        connections++
        socket.destroy()
      }))
      const cases: ReadonlyArray<readonly [NodeClient.ConnectOptions, string]> = [
        [{ handshakeTimeout: "abc" as never }, "handshakeTimeout must be a duration"],
        [{ handshakeTimeout: -1 }, "handshakeTimeout may not be negative"],
        [{ maxMessageSize: 0 }, "maxMessageSize"],
        [{ connection: { messageBuffer: 1.5 } }, "messageBuffer"],
        [{ connection: { closeTimeout: "x" as never } }, "closeTimeout"],
        [{ connection: { keepalive: { interval: 0 } } }, "keepalive.interval"],
        [{ connection: { closeCodeOnScopeClose: 1015 } }, "close code 1015"],
        [{ socketBuffers: { highWaterMark: -1 } }, "socketBuffers.highWaterMark"],
        [{ socketBuffers: { writeBufferLimit: Number.NaN } }, "socketBuffers.writeBufferLimit"],
        [{ headers: ["chat"] as never }, "headers"],
        [{ headers: [{ name: "X", value: 5 }] as never }, "headers"],
        [{ maxRedirects: -1 }, "maxRedirects"],
        [{ followRedirects: "yes" as never }, "followRedirects"],
        [{ origin: "https://a.example\r\nX-Injected: 1" }, "origin: "],
        // (Node would take an empty socket path for none and connect to localhost:80)
        [{ socketPath: "" }, "socketPath"],
        [{ socketPath: null as never }, "socketPath"],
        [{ socketPath: 0 as never }, "socketPath"],
        [{ socketPath: "/tmp/a\0b" }, "socketPath"],
        [{ tls: "ca.pem" as never }, "tls must be an object"],
        [{
          get tls(): never {
            throw new Error("no tls")
          }
        }, "options could not be read: no tls"],
        // (not sent as "undefined", as ws's Node request refuses it too)
        [{ headers: { Authorization: undefined } as never }, "headers"]
      ]
      for (const [options, fragment] of cases) {
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${port}/`, options)))
        assert.strictEqual(error._tag, "InvalidParameter", fragment)
        assert.include(error.message, fragment)
      }
      yield* Effect.sleep("50 millis")
      assert.strictEqual(connections, 0)
    }))

  it.live("a Host header given by the caller replaces the URL's; the origin option replaces an Origin header, as with ws", () =>
    Effect.gen(function*() {
      const seen: Array<ReadonlyArray<{ readonly name: string; readonly value: string }>> = []
      const server = yield* NodeServer.serve((c) => c.close(1000), {
        authorize: (request) => Effect.sync(() => void seen.push(request.headers))
      })
      yield* Effect.scoped(NodeClient.connect(server.url, { origin: "https://a.example", headers: { host: "b.example", "X-Extra": "1" } }))
      yield* Effect.scoped(NodeClient.connect(server.url, { origin: "https://a.example", headers: { origin: "https://c.example" } }))
      yield* Effect.scoped(NodeClient.connect(server.url, { origin: "", headers: { Origin: "https://c.example" } }))
      yield* Effect.scoped(NodeClient.connect(server.url, { origin: "" }))
      const values = (i: number, name: string) => seen[i]!.filter((h) => h.name.toLowerCase() === name).map((h) => h.value)
      assert.deepStrictEqual(values(0, "host"), ["b.example"])
      assert.deepStrictEqual(values(0, "origin"), ["https://a.example"])
      assert.deepStrictEqual(values(0, "x-extra"), ["1"])
      assert.deepStrictEqual(values(1, "origin"), ["https://a.example"])
      // an empty origin is not given
      assert.deepStrictEqual(values(2, "origin"), ["https://c.example"])
      assert.deepStrictEqual(values(3, "origin"), [])
    }))

  it.live("credentials in the URL go out as Basic authorization, as with ws, and never show in errors", () =>
    Effect.gen(function*() {
      const seen: Array<string | undefined> = []
      const server = yield* NodeServer.serve((c) => c.close(1000), {
        authorize: (request) => Effect.sync(() => void seen.push(HttpHeader.getCombined(request.headers, "Authorization")))
      })
      const withCredentials = (userinfo: string) => server.url.replace("ws://", `ws://${userinfo}@`)
      yield* Effect.scoped(NodeClient.connect(withCredentials("al%40ice:s%3Acret")))
      yield* Effect.scoped(NodeClient.connect(withCredentials("bob:secret"), { headers: { authorization: "Bearer t" } }))
      // not valid percent-encoding: sent as it is
      yield* Effect.scoped(NodeClient.connect(withCredentials("a%ZZ:b")))
      assert.deepStrictEqual(seen, [
        `Basic ${Buffer.from("al@ice:s:cret").toString("base64")}`,
        "Bearer t",
        `Basic ${Buffer.from("a%ZZ:b").toString("base64")}`
      ])
      // a failed attempt names the URL with its credentials replaced
      const { port, server: closed } = yield* listen(() => Net.createServer())
      yield* Effect.promise(() => new Promise<void>((resolve) => closed.close(() => resolve())))
      const error = yield* Effect.flip(NodeClient.connect(`ws://bob:secret@127.0.0.1:${port}/`))
      assert.strictEqual(error._tag, "ConnectError")
      assert.notInclude(error.message, "secret")
      if (error._tag === "ConnectError") assert.strictEqual(error.url, `ws://REDACTED:REDACTED@127.0.0.1:${port}/`)
    }))

  /** A raw TCP server that completes the opening handshake, then hands the socket to `upgraded`. */
  const handshakingServer = (upgraded: (socket: Net.Socket) => void) =>
    Effect.gen(function*() {
      const sockets = new Set<Net.Socket>()
      const listening = yield* listen(() =>
        Net.createServer((socket) => {
          sockets.add(socket)
          let request = ""
          const onData = (chunk: Buffer) => {
            request += chunk.toString("latin1")
            if (!request.includes("\r\n\r\n")) return
            socket.off("data", onData)
            const key = /sec-websocket-key: *(\S+)/i.exec(request)![1]
            const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
            socket.write(
              `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
            )
            upgraded(socket)
          }
          socket.on("data", onData)
          socket.on("error", () => {})
        })
      )
      // (before the server's close, which waits for its sockets)
      yield* Effect.addFinalizer(() => Effect.sync(() => sockets.forEach((socket) => socket.destroy())))
      return { ...listening, sockets }
    })

  /** A server that completes the handshake, then never reads: what the client writes stays in buffers. */
  const deafServer = handshakingServer((socket) => socket.pause())

  it.live("a server that closes but waits for the client to end TCP (a plain net server): the client ends it after a second, not the close timeout", () =>
    Effect.gen(function*() {
      let clientEnded = false
      const { port } = yield* handshakingServer((socket) => {
        socket.on("data", () => {})
        socket.on("end", () => (clientEnded = true))
        socket.write(Uint8Array.from([0x88, 0x02, 0x03, 0xe8])) // Close 1000
      })
      const started = Date.now()
      const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`, { connection: { closeTimeout: "10 seconds" } })
      assert.deepStrictEqual(yield* connection.closed, { code: 1000, reason: "", clean: true, initiator: "remote" })
      const took = Date.now() - started
      assert.isTrue(took < 3000, `closed after ${took} ms`)
      yield* eventually(() => clientEnded, 2000)
    }))

  it.live("abort cuts the socket at once, dropping what waits for a peer that does not read (as ws's terminate)", () =>
    Effect.gen(function*() {
      const { port } = yield* deafServer
      const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`)
      yield* Effect.forkChild(Effect.forever(connection.send(new Uint8Array(1024 * 1024))))
      yield* Effect.sleep("300 millis") // the sends now wait for the peer
      const tcpSockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length
      const before = tcpSockets()
      yield* connection.abort
      assert.strictEqual((yield* connection.closed).code, 1006)
      // a graceful end would wait for the queued bytes to drain (never) and give up after a second
      yield* Effect.sleep("200 millis")
      assert.strictEqual(tcpSockets(), before - 1, "our socket is released")
    }))

  it.live("sends that completed in the same tick as an abort still reach the peer (as with ws's terminate)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) =>
        Effect.andThen(
          Effect.forEach(["a", "b", "bye"], (m) => connection.send(m), { discard: true }),
          connection.abort
        )
      )
      const client = yield* NodeClient.connect(server.url)
      const received: Array<unknown> = []
      // (the stream then fails: the server's end came without a Close)
      yield* Stream.runForEach(client.messages, (m) => Effect.sync(() => received.push(m))).pipe(Effect.ignore, Effect.timeout("5 seconds"))
      assert.deepStrictEqual(received, ["a", "b", "bye"])
      assert.strictEqual((yield* client.closed).code, 1006)
    }))

  it.live("socketBuffers.writeBufferLimit bounds what waits for a peer that does not read (Infinity: no bound, as with ws)", () =>
    Effect.gen(function*() {
      const { port } = yield* deafServer
      const payload = new Uint8Array(1024 * 1024)
      /** How many of 24 one-MiB sends complete within half a second. */
      const sendsDone = (options?: NodeClient.ConnectOptions) =>
        Effect.scoped(Effect.gen(function*() {
          const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`, {
            ...options,
            connection: { closeTimeout: "100 millis" }
          })
          let done = 0
          const sends = Effect.forEach(Array.from({ length: 24 }), () => Effect.map(connection.send(payload), () => done++), {
            discard: true
          })
          const fiber = yield* Effect.forkChild(sends)
          yield* Effect.sleep("500 millis")
          yield* Fiber.interrupt(fiber)
          return done
        }))
      // by default sends wait once about 1 MiB is queued on top of what the kernel holds (a few MiB)
      assert.isBelow(yield* sendsDone(), 16, "sends waited for the peer")
      assert.strictEqual(yield* sendsDone({ socketBuffers: { writeBufferLimit: Number.POSITIVE_INFINITY } }), 24)
    }))
})

describe("NodeClient redirects", () => {
  /** An HTTP server answering each path with the redirect `routes` gives it (else 403), recording every request. */
  const redirector = (routes: Record<string, readonly [number, string | ReadonlyArray<string> | undefined]>) =>
    Effect.gen(function*() {
      const requests: Array<{ readonly path: string; readonly headers: Http.IncomingHttpHeaders }> = []
      const listening = yield* listen(() =>
        Http.createServer((req, res) => {
          requests.push({ path: req.url ?? "", headers: req.headers })
          const route = routes[req.url ?? ""]
          if (route === undefined) res.writeHead(403)
          else res.writeHead(route[0], route[1] === undefined ? {} : { Location: route[1] as string | Array<string> })
          res.end()
        })
      )
      return { ...listening, requests, base: `ws://127.0.0.1:${listening.port}` }
    })

  /** An echo server that records the headers of every upgrade request. */
  const recordingEcho = Effect.gen(function*() {
    const seen: Array<ReadonlyArray<HttpHeader.HttpHeader>> = []
    const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), {
      authorize: (request) => Effect.sync(() => void seen.push(request.headers))
    })
    return { server, seen }
  })

  it.live("a redirect that will be followed is followed at once, its body not waited for (each hop waited 100 ms for it)", () =>
    Effect.gen(function*() {
      const { server } = yield* recordingEcho
      // redirects whose bodies never end: a text body announced, a byte of it sent, the socket kept open
      const hops = Array.from({ length: 20 }, (_, i) => `/${i + 1}`)
      const { port } = yield* listen(() =>
        Net.createServer((socket) => {
          socket.on("error", () => {})
          socket.once("data", (data) => {
            const path = /^GET (\S+)/.exec(data.toString("latin1"))?.[1] ?? ""
            const next = hops[hops.indexOf(path) + 1] ?? server.url
            socket.write(`HTTP/1.1 302 Found\r\nLocation: ${next}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nx`)
          })
        })
      )
      // (waited for, at most half the time left each, their bodies would take all of it)
      const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/1`, { followRedirects: true, maxRedirects: 20, handshakeTimeout: "1 second" })
      yield* connection.send("after twenty slow redirects")
      assert.deepStrictEqual(yield* Stream.runHead(connection.messages), Option.some("after twenty slow redirects"))
    }))

  it.live("a refusal near the handshake timeout is a refusal, not a timeout; the last redirect allowed keeps its reason", () =>
    Effect.gen(function*() {
      // answers whose bodies never end (no length, the socket kept open), each after a while
      const answers: Record<string, readonly [number, string]> = {
        "/text": [320, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nnot you"],
        "/binary": [230, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/octet-stream\r\n\r\nxx"],
        "/a": [0, "HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Type: text/plain\r\n\r\ngo away please"],
        "/b": [0, "HTTP/1.1 302 Found\r\nLocation: /c\r\nContent-Type: text/plain\r\n\r\ngo away please"],
        "/nowhere": [0, "HTTP/1.1 302 Found\r\nContent-Type: text/plain\r\n\r\nstay here"]
      }
      const { port } = yield* listen(() =>
        Net.createServer((socket) => {
          socket.on("error", () => {})
          socket.once("data", (data) => {
            const [delay, answer] = answers[/^GET (\S+)/.exec(data.toString("latin1"))?.[1] ?? ""] ?? [0, "HTTP/1.1 404 Not Found\r\n\r\n"]
            setTimeout(() => socket.write(answer), delay)
          })
        })
      )
      const base = `ws://127.0.0.1:${port}`
      // (they were timeouts: the reason was waited for 100 ms)
      const text = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}/text`, { handshakeTimeout: "400 millis" })))
      assert.deepStrictEqual([text._tag, text._tag === "HandshakeRejected" ? [text.status, text.reason] : []], ["HandshakeRejected", [403, "not you"]])
      const binary = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}/binary`, { handshakeTimeout: "300 millis" })))
      assert.deepStrictEqual([binary._tag, binary._tag === "HandshakeRejected" ? binary.status : 0], ["HandshakeRejected", 403])
      // (the redirect beyond maxRedirects is not followed: its reason is read)
      const last = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}/a`, { followRedirects: true, maxRedirects: 1 })))
      assert.deepStrictEqual([last._tag, last._tag === "HandshakeRejected" ? [last.status, last.reason] : []], ["HandshakeRejected", [302, "go away please"]])
      // (nor is one when no redirect is allowed, or one without a Location, or when redirects are not followed)
      for (
        const [path, maxRedirects, reason, followRedirects] of [
          ["/a", 0, "go away please", true],
          ["/nowhere", undefined, "stay here", true],
          ["/a", undefined, "go away please", false]
        ] as const
      ) {
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}${path}`, { followRedirects, maxRedirects })))
        assert.deepStrictEqual([error._tag, error._tag === "HandshakeRejected" ? [error.status, error.reason] : []], ["HandshakeRejected", [302, reason]], path)
      }
    }))

  it.live("a redirect is a HandshakeRejected with its Location unless followRedirects is set, as with ws", () =>
    Effect.gen(function*() {
      const { server } = yield* recordingEcho
      const { base, requests } = yield* redirector({ "/old": [302, server.url] })
      const error = yield* Effect.flip(NodeClient.connect(`${base}/old`))
      assert.strictEqual(error._tag, "HandshakeRejected")
      if (error._tag === "HandshakeRejected") {
        assert.strictEqual(error.status, 302)
        assert.strictEqual(HttpHeader.getCombined(error.headers, "Location"), server.url)
      }
      assert.strictEqual(requests.length, 1)
    }))

  it.live("followRedirects follows relative and absolute Locations (300, 301, 302, 303, 307, 308) to the server", () =>
    Effect.gen(function*() {
      const { server, seen } = yield* recordingEcho
      // (a relative Location is relative to the hop it answers: "c" from /dir/b is /dir/c)
      const { base, requests } = yield* redirector({
        // (of a repeated Location, the first is followed, as Node keeps it)
        "/start": [300, ["/a", "/elsewhere"]],
        "/a": [301, "/dir/b"],
        "/dir/b": [302, "c"],
        "/dir/c": [303, "/d?x=1"],
        "/d?x=1": [307, "/e"],
        "/e": [308, server.url.replace("ws://", "http://")]
      })
      const connection = yield* NodeClient.connect(`${base}/start`, { followRedirects: true })
      yield* connection.send("after six redirects")
      assert.deepStrictEqual(yield* Stream.runHead(connection.messages), Option.some("after six redirects"))
      assert.deepStrictEqual(requests.map((r) => r.path), ["/start", "/a", "/dir/b", "/dir/c", "/d?x=1", "/e"])
      assert.strictEqual(seen.length, 1)
      // every hop is a fresh handshake: the server saw a request of its own
      assert.strictEqual(HttpHeader.getCombined(seen[0]!, "Host"), server.url.slice("ws://".length, -1))
    }))

  it.live("maxRedirects bounds a redirect loop; a redirect without a Location, or with an empty one, is not followed", () =>
    Effect.gen(function*() {
      const { base, requests } = yield* redirector({ "/loop": [302, "/loop"], "/nowhere": [302, undefined], "/empty": [302, ""] })
      for (const [maxRedirects, attempts] of [[3, 4], [0, 1], [undefined, 11]] as const) {
        requests.length = 0
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}/loop`, { followRedirects: true, maxRedirects })))
        assert.strictEqual(error._tag, "HandshakeRejected")
        assert.include(error.message, `${maxRedirects ?? 10} redirects already`)
        assert.strictEqual(requests.length, attempts)
      }
      for (const path of ["/nowhere", "/empty"]) {
        requests.length = 0
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}${path}`, { followRedirects: true })))
        assert.strictEqual(error._tag, "HandshakeRejected")
        if (error._tag === "HandshakeRejected") assert.strictEqual(error.status, 302)
        assert.strictEqual(requests.length, 1, path)
      }
    }))

  it.live("a Location that is not a URL is an InvalidUrl that shows it without the credentials or tokens in it", () =>
    Effect.gen(function*() {
      // (port 99999 is out of range: not a URL)
      const { base } = yield* redirector({ "/bad": [302, "ws://user:hunter2@127.0.0.1:99999/next?access_token=t0k3n&room=1#f"] })
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}/bad`, { followRedirects: true })))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "InvalidUrl"])
      assert.include(error.message, `redirects to "ws://REDACTED@127.0.0.1:99999/next?access_token=REDACTED&room=1#REDACTED", which is not a URL`)
      // the error names the hop that redirected there, not the first; a Location that is a URL but no
      // WebSocket URL is an InvalidUrl naming it
      const later = yield* redirector({ "/first": [302, "/second"], "/second": [302, "http://[::1"], "/ftp": [302, "/to-ftp"], "/to-ftp": [302, "ftp://127.0.0.1/x"] })
      const second = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${later.base}/first`, { followRedirects: true })))
      assert.deepStrictEqual(
        [second._tag, second._tag === "ConnectError" ? [second.reason, second.url] : []],
        ["ConnectError", ["InvalidUrl", `${later.base}/second`]]
      )
      const ftp = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${later.base}/ftp`, { followRedirects: true })))
      assert.deepStrictEqual(
        [ftp._tag, ftp._tag === "ConnectError" ? [ftp.reason, ftp.url] : []],
        ["ConnectError", ["InvalidUrl", "ftp://127.0.0.1/x"]]
      )
    }))

  it.live("NodeClient.layerWith gives Node settings (here followRedirects) to programs written against Client.connect", () =>
    Effect.gen(function*() {
      const { server } = yield* recordingEcho
      const { base } = yield* redirector({ "/old": [302, server.url] })
      const program = Effect.scoped(Effect.gen(function*() {
        const connection = yield* Client.connect(`${base}/old`)
        yield* connection.send("via the layer")
        return yield* Stream.runHead(connection.messages)
      }))
      assert.deepStrictEqual(yield* program.pipe(Effect.provide(NodeClient.layerWith({ followRedirects: true }))), Option.some("via the layer"))
      const error = yield* Effect.flip(program.pipe(Effect.provide(NodeClient.layer)))
      assert.strictEqual(error._tag, "HandshakeRejected")
    }))

  it.live("NodeClient.layerWith: an option given as undefined is not given, the layer's default holds", () =>
    Effect.gen(function*() {
      const { seen, server } = yield* recordingEcho
      const { base } = yield* redirector({ "/old": [302, server.url] })
      const layer = NodeClient.layerWith({ followRedirects: true, headers: { "X-From-Layer": "yes" } })
      const config: { readonly headers?: Record<string, string> | undefined } = {}
      const connectWith = (options: Client.ConnectOptions) =>
        Effect.scoped(Effect.flatMap(Client.connect(`${base}/old`, options), (c) => c.close(1000))).pipe(Effect.provide(layer))
      // (a Node option passed through untyped code, and a typed one, both undefined)
      yield* connectWith({ followRedirects: undefined, headers: config.headers } as Client.ConnectOptions)
      assert.deepStrictEqual(seen.map((headers) => HttpHeader.getCombined(headers, "X-From-Layer")), ["yes"])
      const explicit = yield* Effect.flip(connectWith({ followRedirects: false } as Client.ConnectOptions))
      assert.strictEqual(explicit._tag, "HandshakeRejected", "an option given as false is given")
    }))

  it.live("credentials and cookies follow a redirect on the same host only, as with ws", () =>
    Effect.gen(function*() {
      const { server, seen } = yield* recordingEcho
      const { requests, port } = yield* redirector({ "/first": [302, "/second"], "/second": [302, server.url] })
      const connection = yield* NodeClient.connect(`ws://user:pass@127.0.0.1:${port}/first`, {
        followRedirects: true,
        headers: { Cookie: "session=1", "X-Kept": "yes" }
      })
      assert.isTrue((yield* connection.close(1000)).clean)
      const basic = `Basic ${Buffer.from("user:pass").toString("base64")}`
      // the same host: sent again
      assert.deepStrictEqual(requests.map((r) => [r.path, r.headers.authorization, r.headers.cookie]), [
        ["/first", basic, "session=1"],
        ["/second", basic, "session=1"]
      ])
      // another host (another port): dropped; other headers kept
      assert.strictEqual(HttpHeader.getCombined(seen[0]!, "Authorization"), undefined)
      assert.strictEqual(HttpHeader.getCombined(seen[0]!, "Cookie"), undefined)
      assert.strictEqual(HttpHeader.getCombined(seen[0]!, "X-Kept"), "yes")
      // credentials a Location names for another host are not sent there, nor on to its own host
      // (a relative Location keeps them in the URL)
      const other = yield* redirector({ "/x": [302, "/y"] })
      const first = yield* redirector({ "/first": [302, `ws://other:secret@127.0.0.1:${other.port}/x`] })
      yield* Effect.flip(Effect.scoped(NodeClient.connect(`${first.base}/first`, { followRedirects: true })))
      assert.deepStrictEqual(other.requests.map((r) => [r.path, r.headers.authorization]), [["/x", undefined], ["/y", undefined]])
    }))

  it.live("the URL's credentials follow a redirect to an absolute Location on the same host, as with ws", () =>
    Effect.gen(function*() {
      const routes: Record<string, readonly [number, string | undefined]> = {}
      const { base, port, requests } = yield* redirector(routes)
      routes["/first"] = [302, `${base}/second`]
      yield* Effect.flip(NodeClient.connect(`ws://user:pass@127.0.0.1:${port}/first`, { followRedirects: true }))
      const basic = `Basic ${Buffer.from("user:pass").toString("base64")}`
      assert.deepStrictEqual(requests.map((r) => [r.path, r.headers.authorization]), [["/first", basic], ["/second", basic]])
      // the first credentials win over those of a Location on the same host, which are sent when there were none
      routes["/other"] = [302, `ws://other:secret@127.0.0.1:${port}/second`]
      for (const url of [`ws://user:pass@127.0.0.1:${port}/other`, `${base}/other`]) {
        requests.length = 0
        yield* Effect.flip(Effect.scoped(NodeClient.connect(url, { followRedirects: true })))
        const sent = url === `${base}/other` ? `Basic ${Buffer.from("other:secret").toString("base64")}` : basic
        assert.deepStrictEqual(requests.map((r) => [r.path, r.headers.authorization]), [["/other", url === `${base}/other` ? undefined : basic], ["/second", sent]])
      }
    }))

  it.live("only a 3xx is a redirect: a 400 (or 401) with a Location is a refusal, and its Location is not followed", () =>
    Effect.gen(function*() {
      const { base, requests } = yield* redirector({ "/bad": [400, "/elsewhere"], "/auth": [401, "/login"], "/elsewhere": [302, "/bad"] })
      for (const [path, status] of [["/bad", 400], ["/auth", 401]] as const) {
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`${base}${path}`, { followRedirects: true })))
        assert.deepStrictEqual(error._tag === "HandshakeRejected" ? error.status : error._tag, status)
      }
      assert.deepStrictEqual(requests.map((r) => r.path), ["/bad", "/auth"])
      // (nor is its body skipped as a redirect's: its reason is read)
      const { port } = yield* listen(() =>
        Http.createServer((_req, res) => {
          res.writeHead(400, { Location: "/elsewhere", "Content-Type": "text/plain" })
          res.end("no such room")
        })
      )
      const refused = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${port}/`, { followRedirects: true })))
      assert.deepStrictEqual(refused._tag === "HandshakeRejected" ? [refused.status, refused.reason] : refused._tag, [400, "no such room"])
    }))

  it.live("credentials and cookies do not follow a redirect from wss:// to ws://, even on the same host and port, as with ws", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const requests: Array<readonly [string, boolean, string | undefined, string | undefined, string | undefined]> = []
      let port = 0
      const answer = (secure: boolean) => (req: Http.IncomingMessage, res: Http.ServerResponse) => {
        requests.push([req.url ?? "", secure, req.headers.authorization, req.headers.cookie, req.headers.host])
        if (req.url === "/first") res.writeHead(302, { Location: `ws://127.0.0.1:${port}/second` })
        else if (req.url === "/second") res.writeHead(302, { Location: `ws://other:secret@127.0.0.1:${port}/third` })
        else res.writeHead(403)
        res.end()
      }
      const plain = Http.createServer(answer(false))
      const secure = Https.createServer({ cert, key }, answer(true))
      const sockets = new Set<Net.Socket>()
      yield* Effect.addFinalizer(() => Effect.sync(() => sockets.forEach((socket) => socket.destroy())))
      // one port for both: a TLS connection starts with a handshake record (0x16), HTTP with a method
      const listening = yield* listen(() =>
        Net.createServer({ pauseOnConnect: true }, (socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          socket.once("readable", () => {
            const first: Buffer | null = socket.read(1)
            if (first === null) return socket.destroy()
            socket.unshift(first)
            ;(first[0] === 0x16 ? secure : plain).emit("connection", socket)
            socket.resume()
          })
          socket.resume()
          socket.pause()
        })
      )
      port = listening.port
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`wss://user:pass@127.0.0.1:${port}/first`, {
        followRedirects: true,
        headers: { Cookie: "session=1", Host: "custom.example" },
        tls: { ca: cert }
      })))
      assert.deepStrictEqual(error._tag === "HandshakeRejected" ? error.status : error._tag, 403)
      const basic = `Basic ${Buffer.from("user:pass").toString("base64")}`
      // (a custom Host goes along: the host is the same)
      assert.deepStrictEqual(requests, [
        ["/first", true, basic, "session=1", "custom.example"],
        ["/second", false, undefined, undefined, "custom.example"],
        // (nor do a Location's: the hops are on from wss:// to ws://)
        ["/third", false, undefined, undefined, "custom.example"]
      ])
    }))

  it.live("a socketPath may name a Linux abstract socket (a NUL first)", () =>
    Effect.gen(function*() {
      const socketPath = `\0ews-client-${process.pid}-${Date.now()}`
      yield* wsServerAt(socketPath, (wss, req, socket, head) =>
        wss.handleUpgrade(req, socket, head, (ws) => ws.send("over an abstract socket")))
      const connection = yield* NodeClient.connect("ws://localhost/", { socketPath })
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(connection.messages, 1)), ["over an abstract socket"])
    }))

  it.live("through a socketPath, a redirect to another host drops credentials, cookies and a custom Host", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "ews-client-"))),
        (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
      )
      const socketPath = Path.join(dir, "server.sock")
      const otherPath = Path.join(dir, "other.sock")
      const requests: Array<Http.IncomingHttpHeaders> = []
      yield* wsServerAt(socketPath, (wss, req, socket, head) => {
        requests.push(req.headers)
        if (req.url === "/first") return void socket.end("HTTP/1.1 302 Found\r\nLocation: ws://b.example/second\r\nContent-Length: 0\r\n\r\n")
        if (req.url === "/to-other") return void socket.end(`HTTP/1.1 302 Found\r\nLocation: ws+unix://${otherPath}:/second\r\nContent-Length: 0\r\n\r\n`)
        wss.handleUpgrade(req, socket, head, (ws) => ws.close(1000))
      })
      const otherRequests: Array<Http.IncomingHttpHeaders> = []
      yield* wsServerAt(otherPath, (wss, req, socket, head) => {
        otherRequests.push(req.headers)
        wss.handleUpgrade(req, socket, head, (ws) => ws.close(1000))
      })
      const connection = yield* NodeClient.connect("ws://user:pass@a.example/first", {
        socketPath,
        followRedirects: true,
        headers: { Cookie: "session=1", Host: "a.example:1234", "X-Kept": "yes" }
      })
      yield* connection.closed
      assert.deepStrictEqual(
        requests.map((h) => [h.host, h.authorization, h.cookie, h["x-kept"]]),
        [
          ["a.example:1234", `Basic ${Buffer.from("user:pass").toString("base64")}`, "session=1", "yes"],
          ["b.example", undefined, undefined, "yes"]
        ]
      )
      // so does a redirect to another socket (ws+unix:// URLs all name the host localhost)
      const unix = yield* NodeClient.connect(`ws+unix://${socketPath}:/to-other`, {
        followRedirects: true,
        headers: { Authorization: "Bearer token", Cookie: "session=1", Host: "a.example:1234", "X-Kept": "yes" }
      })
      yield* unix.closed
      assert.deepStrictEqual(
        [...requests.slice(2), ...otherRequests].map((h) => [h.host, h.authorization, h.cookie, h["x-kept"]]),
        [["a.example:1234", "Bearer token", "session=1", "yes"], ["localhost", undefined, undefined, "yes"]]
      )
    }))
})

describe("NodeClient over TLS", () => {
  it.live("SNI carries host names only: wss:// to an IP address sends no server name (RFC 6066 section 3)", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const names: Array<string | false | null> = []
      const server = yield* NodeServer.serve((connection) => connection.close(1000), {
        tls: { cert, key },
        authorize: (request) =>
          Effect.sync(() => void names.push((NodeServer.incomingMessage(request)!.socket as Tls.TLSSocket).servername))
      })
      const connection = yield* NodeClient.connect(server.url, { tls: { ca: cert } })
      yield* connection.closed
      assert.deepStrictEqual(names, [false])
    }))

  it.live("a servername in the tls option is the server name sent, over the URL's host name", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const names: Array<string | false | null> = []
      const server = yield* NodeServer.serve((connection) => connection.close(1000), {
        host: "localhost",
        tls: { cert, key },
        authorize: (request) =>
          Effect.sync(() => void names.push((NodeServer.incomingMessage(request)!.socket as Tls.TLSSocket).servername))
      })
      assert.match(server.url, /^wss:\/\/localhost:/)
      // (the certificate names neither: its check is the caller's, here none)
      const connection = yield* NodeClient.connect(server.url, {
        tls: { ca: cert, servername: "chat.example", checkServerIdentity: () => undefined }
      })
      yield* connection.closed
      const plain = yield* NodeClient.connect(server.url, { tls: { ca: cert, checkServerIdentity: () => undefined } })
      yield* plain.closed
      assert.deepStrictEqual(names, ["chat.example", "localhost"])
    }))
})

describe("NodeClient.connect with any options", () => {
  /** Values of every kind an untyped caller might pass, good and bad. */
  const VALUES: ReadonlyArray<unknown> = [
    0, 1, -1, 1.5, 300, 65536, 1005, 4000, Number.NaN, Number.POSITIVE_INFINITY, "abc", "a b", "50 millis",
    "2 seconds", "pong", null, {}, [], ["chat"], ["chat", "chat"], { "X-A": "1" }, { Host: "elsewhere" }, true,
    Duration.millis(20)
  ]
  const PATHS = [
    "handshakeTimeout", "maxMessageSize", "protocols", "origin", "headers",
    "properties.receiveBufferSize", "properties.sendBufferSize", "properties.disableMasking",
    "connection.closeTimeout", "connection.messageBuffer", "connection.closeCodeOnScopeClose",
    "connection.keepalive.interval", "connection.keepalive.frame",
    "socketBuffers.highWaterMark", "socketBuffers.writeBufferLimit", "followRedirects", "maxRedirects"
  ] as const
  const TYPED = new Set(["InvalidParameter", "ConnectError", "HandshakeRejected", "UnsupportedSubprotocol"])
  const seen = { failed: 0, connected: 0 }

  it.live.prop(
    "an attempt with any options either fails with a typed error or connects and echoes",
    { options: anyOptions(PATHS, VALUES) },
    ({ options }) =>
      Effect.gen(function*() {
        const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), {
          selectProtocol: (offered) => offered[0]
        })
        const attempt = Effect.scoped(Effect.gen(function*() {
          const connection = yield* NodeClient.connect(server.url, options as NodeClient.ConnectOptions)
          yield* connection.send("x")
          const echo = yield* Stream.runHead(connection.messages)
          assert.deepStrictEqual(echo, Option.some("x"), JSON.stringify(options))
        }))
        const exit = yield* Effect.exit(Effect.timeout(attempt, "5 seconds"))
        if (Exit.isSuccess(exit)) return void seen.connected++
        const tags = failureTags(exit.cause.reasons)
        assert.isTrue(tags.length > 0 && tags.every((tag) => TYPED.has(tag)), `${JSON.stringify(options)}: ${tags.join(", ")}`)
        seen.failed++
      }),
    { timeout: 60_000, arbitrary: { runs: 150 } }
  )

  it("the runs above covered both outcomes", () => {
    assert.isAtLeast(seen.failed, 5, JSON.stringify(seen))
    assert.isAtLeast(seen.connected, 5, JSON.stringify(seen))
  })
})

describe("NodeClient.connect interrupted", () => {
  it.live("at any step: no socket is left open, no connection is left counted open", () =>
    Effect.gen(function*() {
      const sockets = new Set<Net.Socket>()
      const { port, server } = yield* listen(() => Http.createServer())
      server.on("connection", (socket: Net.Socket) => {
        sockets.add(socket)
        socket.once("close", () => sockets.delete(socket))
      })
      const wss = new WebSocketServer({ server })
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          wss.close()
          sockets.forEach((socket) => socket.destroy()) // (left open by a failure)
        })
      )
      const openClients = Metric.value(Metric.withAttributes(Metrics.connectionsOpen, { side: "client" }))
      const before = (yield* openClients).value
      // interrupted at the k-th task of its fibers, until it completes a few times
      yield* sweepInterruptions((scheduler, at) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const connecting = yield* Effect.forkDetach(
            Scope.provide(NodeClient.connect(`ws://127.0.0.1:${port}/`, { connection: { closeTimeout: 200 } }), scope).pipe(
              Effect.provideService(Scheduler.Scheduler, scheduler)
            )
          )
          scheduler.atTask = () => connecting.interruptUnsafe()
          const exit = yield* Fiber.await(connecting)
          yield* Scope.close(scope, Exit.void)
          assert.isTrue(yield* eventually(() => sockets.size === 0), `${at} (${exit._tag}): the socket is closed`)
          assert.strictEqual((yield* openClients).value, before, `${at} (${exit._tag}): no connection counted open`)
          return Exit.isSuccess(exit)
        })
      )
    }), { timeout: 60_000 })
})

describe("NodeClient.connect against servers that misbehave", () => {
  const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // for the key below
  const GOOD_101 = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`

  /** What the server does once the request came: every way an answer can go wrong, at any stage. */
  const ANSWERS = [
    "close at once",
    "reset at once",
    "half a status line, then FIN",
    "half the headers, then silence",
    "a 200 with a body",
    "a 101 without Upgrade",
    "a 101 with a wrong accept",
    "a 101 with a subprotocol never offered",
    "a 101 with an extension never offered",
    "a good 101, then reset",
    "a good 101 and a Close, then FIN",
    "garbage"
  ] as const

  const answer = (socket: Net.Socket, how: (typeof ANSWERS)[number]) => {
    switch (how) {
      case "close at once":
        return void socket.end()
      case "reset at once":
        return void socket.resetAndDestroy()
      case "half a status line, then FIN":
        return void socket.end("HTTP/1.1 10")
      case "half the headers, then silence":
        return void socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: web")
      case "a 200 with a body":
        return void socket.end("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
      case "a 101 without Upgrade":
        return void socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`)
      case "a 101 with a wrong accept":
        return void socket.write(GOOD_101.replace(ACCEPT, "AAAA"))
      case "a 101 with a subprotocol never offered":
        return void socket.write(GOOD_101.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat\r\n\r\n"))
      case "a 101 with an extension never offered":
        return void socket.write(GOOD_101.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"))
      case "a good 101, then reset":
        socket.write(GOOD_101)
        return void setTimeout(() => socket.resetAndDestroy(), 5)
      case "a good 101 and a Close, then FIN":
        return void socket.end(Buffer.concat([Buffer.from(GOOD_101), Uint8Array.of(0x88, 0x02, 0x03, 0xe8)]))
      default:
        return void socket.end("\x00\x01garbage\r\n\r\n")
    }
  }

  const tcpSockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length

  it.live("a reset that comes with the 101 ends the connection with 1006, never as an uncaught exception", () =>
    Effect.gen(function*() {
      const uncaught: Array<unknown> = []
      const record = (error: unknown) => void uncaught.push(error)
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("uncaughtException", record)),
        () => Effect.sync(() => process.off("uncaughtException", record))
      )
      const { port } = yield* listen(() =>
        Net.createServer((socket) => {
          socket.on("error", () => {})
          let request = ""
          socket.on("data", (chunk: Buffer) => {
            request += chunk.toString("latin1")
            if (!request.includes("\r\n\r\n")) return
            const key = /sec-websocket-key: *(\S+)/i.exec(request)![1]
            const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
            socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
            socket.resetAndDestroy()
          })
        })
      )
      for (let i = 0; i < 5; i++) {
        const outcome = yield* Effect.exit(Effect.scoped(Effect.flatMap(
          NodeClient.connect(`ws://127.0.0.1:${port}/`),
          (connection) => Effect.timeout(connection.closed, "3 seconds")
        )))
        // the reset may also be seen while the 101 is checked: then the attempt fails, typed
        if (Exit.isSuccess(outcome)) assert.strictEqual(outcome.value.code, 1006)
        else assert.isTrue(Exit.findErrorOption(outcome)._tag === "Some", String(outcome.cause))
      }
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(uncaught.map(String), [])
    }))

  it.live.prop(
    "every attempt ends within the handshake timeout with a typed failure (or a connection that then ends), and leaves no socket open",
    { answers: Arbitrary.array(Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: ANSWERS.length - 1 }))), { minLength: 1, maxLength: 6 }) },
    ({ answers }) =>
      Effect.gen(function*() {
        let next = 0
        const { port } = yield* listen(() =>
          Net.createServer((socket) => {
            const how = ANSWERS[answers[next++ % answers.length]!]!
            socket.on("error", () => {})
            socket.once("data", () => answer(socket, how)) // once the request came
          })
        )
        yield* Effect.forEach(answers, () =>
          Effect.gen(function*() {
            const started = Date.now()
            const outcome = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
              const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`, { handshakeTimeout: "300 millis" })
              // connected: the connection then ends, whatever the server did next
              return yield* Effect.timeout(connection.closed, "3 seconds")
            })))
            if (outcome._tag === "Failure") {
              const error = Exit.findErrorOption(outcome)
              assert.isTrue(error._tag === "Some", `a typed failure, not a defect: ${String(outcome.cause)}`)
            }
            assert.isBelow(Date.now() - started, 3000)
          }), { discard: true })
      }).pipe(Effect.scoped, Effect.andThen(Effect.gen(function*() {
        // the server's sockets are closed with its scope; the client's must be gone too
        for (let i = 0; i < 150 && tcpSockets() > 0; i++) yield* Effect.sleep("10 millis")
        assert.strictEqual(tcpSockets(), 0, "sockets still open")
      }))),
    { timeout: 120_000, arbitrary: { runs: 25 } }
  )
})

describe("NodeClient through an agent", () => {
  /** An HTTP proxy (the `proxy` package) on loopback that records the `CONNECT` targets it is asked for; closed with the test's scope. */
  const httpProxy = Effect.gen(function*() {
    const targets: Array<string> = []
    const { port } = yield* listen(() => {
      const server = createProxy(Http.createServer())
      server.on("connect", (request: Http.IncomingMessage) => void targets.push(request.url ?? ""))
      return server
    })
    return { url: `http://127.0.0.1:${port}`, targets }
  })

  const echo = (c: Connection.Connection) => Stream.runForEach(c.messages, (m) => c.send(m))

  it.live("the agent makes the connection, as ws's agent option: ws:// and wss:// through a proxy agent's CONNECT tunnel, and each redirect's hop", () =>
    Effect.gen(function*() {
      const proxy = yield* httpProxy
      const { cert, key } = yield* certificate
      const plain = yield* NodeServer.serve(echo)
      const secure = yield* NodeServer.serve(echo, { tls: { cert, key } })
      const { port: redirecting } = yield* listen(() =>
        Http.createServer((_req, res) => {
          res.writeHead(302, { Location: plain.url })
          res.end()
        })
      )
      const exchanges = [
        NodeClient.connect(plain.url, { agent: new HttpsProxyAgent(proxy.url) }),
        NodeClient.connect(secure.url, { agent: new HttpsProxyAgent(proxy.url), tls: { ca: cert } }),
        NodeClient.connect(`ws://127.0.0.1:${redirecting}/old`, { agent: new HttpsProxyAgent(proxy.url), followRedirects: true }),
        // (what Node takes for an agent: an object with addRequest, as some proxy packages make)
        Effect.suspend(() => {
          const inner = new HttpsProxyAgent(proxy.url) as unknown as { addRequest(request: unknown, options: unknown): void }
          const agentLike = { addRequest: (request: unknown, options: unknown) => inner.addRequest(request, options) }
          return NodeClient.connect(plain.url, { agent: agentLike as never })
        })
      ]
      for (const connecting of exchanges) {
        yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* connecting
          yield* connection.send("through the tunnel")
          assert.deepStrictEqual(yield* Stream.runHead(connection.messages), Option.some("through the tunnel"))
          yield* connection.close(1000)
          assert.strictEqual((yield* connection.closed).code, 1000)
        }))
      }
      const at = (url: string) => new URL(url).host
      assert.deepStrictEqual(proxy.targets, [at(plain.url), at(secure.url), `127.0.0.1:${redirecting}`, at(plain.url), at(plain.url)])
    }))

  it.live("without an agent the connection is the request's own: the global agents of node:http and node:https are not asked (as with ws)", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const plain = yield* NodeServer.serve(echo)
      const secure = yield* NodeServer.serve(echo, { tls: { cert, key } })
      const asked: Array<string> = []
      type Adding = { addRequest: (...args: Array<unknown>) => void }
      const agents = [["http", Http.globalAgent], ["https", Https.globalAgent]] as const
      yield* Effect.acquireRelease(
        Effect.sync(() =>
          agents.forEach(([name, agent]) => {
            const addRequest = (agent as unknown as Adding).addRequest.bind(agent)
            ;(agent as unknown as Adding).addRequest = (...args) => {
              asked.push(name)
              addRequest(...args)
            }
          })
        ),
        () => Effect.sync(() => agents.forEach(([, agent]) => delete (agent as unknown as Partial<Adding>).addRequest))
      )
      for (const [url, tls] of [[plain.url, undefined], [secure.url, { ca: cert }]] as const) {
        yield* Effect.scoped(Effect.flatMap(NodeClient.connect(url, { tls }), (connection) => connection.close(1000)))
      }
      assert.deepStrictEqual(asked, [])
    }))

  it.live("NodeClient.layerConfig reads the defaults from Config: a proxy agent made from HTTPS_PROXY when it is set; a bad value fails the layer", () =>
    Effect.gen(function*() {
      const proxy = yield* httpProxy
      const server = yield* NodeServer.serve(echo)
      // (the example of its documentation)
      const ClientLayer = NodeClient.layerConfig({
        agent: Config.String("HTTPS_PROXY").pipe(
          Config.option,
          Config.map((url) => url._tag === "Some" ? new HttpsProxyAgent(url.value) : undefined)
        ),
        handshakeTimeout: Config.Duration("WS_TIMEOUT").pipe(Config.withDefault(Duration.seconds(5)))
      })
      const roundTrip = Effect.scoped(Effect.gen(function*() {
        const connection = yield* Client.connect(server.url)
        yield* connection.send("configured")
        assert.deepStrictEqual(yield* Stream.runHead(connection.messages), Option.some("configured"))
        yield* connection.close(1000)
      }))
      const withEnvironment = (values: Record<string, string>) =>
        Effect.provide(ClientLayer.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(values)))))
      yield* roundTrip.pipe(withEnvironment({}))
      assert.deepStrictEqual(proxy.targets, [], "no HTTPS_PROXY: a connection of its own")
      yield* roundTrip.pipe(withEnvironment({ HTTPS_PROXY: proxy.url }))
      assert.deepStrictEqual(proxy.targets, [new URL(server.url).host])
      const error = yield* Effect.flip(roundTrip.pipe(withEnvironment({ WS_TIMEOUT: "soon" })))
      assert.strictEqual(error._tag, "ConfigError")
      assert.include(String(error), "WS_TIMEOUT")
    }))

  it.live("an agent that is not one, one of the other protocol (http.Agent for wss://, also after a redirect) or with a socket path is an InvalidParameter naming agent", () =>
    Effect.gen(function*() {
      let connections = 0
      const { port } = yield* listen(() => Net.createServer((socket) => {
        connections++
        socket.destroy()
      }))
      const { port: redirecting } = yield* listen(() =>
        Http.createServer((_req, res) => {
          res.writeHead(302, { Location: `wss://127.0.0.1:${port}/` })
          res.end()
        })
      )
      const socketPath = Path.join(Os.tmpdir(), `agent-${process.pid}.sock`)
      const cases: ReadonlyArray<readonly [string, NodeClient.ConnectOptions, string]> = [
        [`ws://127.0.0.1:${port}/`, { agent: {} as never }, "agent must be an http.Agent"],
        [`wss://127.0.0.1:${port}/`, { agent: new Http.Agent() }, `agent: Protocol "https:" not supported. Expected "http:" (for wss://127.0.0.1:${port}/)`],
        [`ws://127.0.0.1:${port}/`, { agent: new Https.Agent() }, "agent: "],
        [`ws://127.0.0.1:${redirecting}/`, { agent: new Http.Agent(), followRedirects: true }, `(for wss://127.0.0.1:${port}/)`],
        // (the agent would connect to localhost:80 instead)
        [`ws://127.0.0.1:${port}/`, { agent: new Http.Agent(), socketPath }, "not to the socket path"],
        [`ws+unix://${socketPath}:/`, { agent: new Http.Agent() }, "not to the socket path"]
      ]
      for (const [url, options, fragment] of cases) {
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(url, options)))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, fragment)
        assert.strictEqual(error._tag === "InvalidParameter" ? error.parameter : "", "agent", fragment)
      }
      yield* Effect.sleep("50 millis")
      assert.strictEqual(connections, 0)
    }))
})
