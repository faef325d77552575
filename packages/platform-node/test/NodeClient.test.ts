import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import { NodeClient } from "../src/index.ts"

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

describe("NodeClient.connect failures", () => {
  it.live("a refused connection is a ConnectError with reason Refused", () =>
    Effect.gen(function*() {
      const { port, server } = yield* listen(() => Net.createServer())
      yield* Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const error = yield* Effect.flip(NodeClient.connect(`ws://127.0.0.1:${port}/`))
      assert.strictEqual(error._tag, "ConnectError")
      if (error._tag === "ConnectError") assert.strictEqual(error.reason, "Refused")
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
      }
    }))

  it.live("a wrong Sec-WebSocket-Accept is InvalidProtocolFormat", () =>
    Effect.gen(function*() {
      const { port, server } = yield* listen(() => Http.createServer())
      const upgraded: Array<{ destroy: () => void }> = []
      yield* Effect.addFinalizer(() => Effect.sync(() => upgraded.forEach((s) => s.destroy())))
      server.on("upgrade", (_req, socket) => {
        upgraded.push(socket)
        socket.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
      })
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${port}/`)))
      assert.strictEqual(error._tag, "InvalidProtocolFormat")
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

  it.live("URLs that are not WebSocket URLs are refused up front", () =>
    Effect.gen(function*() {
      for (const url of ["ftp://127.0.0.1/", "not a url", "ws://127.0.0.1/#fragment"]) {
        const error = yield* Effect.flip(NodeClient.connect(url))
        assert.strictEqual(error._tag, "ConnectError")
        if (error._tag === "ConnectError") assert.strictEqual(error.reason, "InvalidUrl")
      }
    }))
})
