import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope, Stream } from "effect"
import * as Net from "node:net"
import { WebSocket as WsClient } from "ws"
import { NodeServer } from "../src/index.ts"

const echoHandler = NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)))

const KEY = "dGhlIHNhbXBsZSBub25jZQ=="

/**
 * Sends raw bytes to the server (then, with `end`, ends the client's side at once) and collects
 * everything it answers until it closes the socket (cut after `endAfterMs`, default 5 s).
 */
const rawExchange = (port: number, request: string, options?: { readonly endAfterMs?: number; readonly end?: boolean }) =>
  Effect.promise(() =>
    new Promise<{ response: string; closedAfterMs: number }>((resolve) => {
      const started = Date.now()
      const socket = Net.connect(port, "127.0.0.1")
      let response = ""
      socket.on("data", (chunk) => (response += chunk.toString("latin1")))
      socket.on("close", () => resolve({ response, closedAfterMs: Date.now() - started }))
      socket.on("error", () => {})
      socket.write(request)
      if (options?.end === true) socket.end()
      const timer = setTimeout(() => socket.destroy(), options?.endAfterMs ?? 5000)
      socket.on("close", () => clearTimeout(timer))
    })
  )

const upgradeRequest = (lines: ReadonlyArray<string>, start = "GET / HTTP/1.1") =>
  [start, "Host: 127.0.0.1", ...lines, "", ""].join("\r\n")

const goodHeaders = ["Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Key: ${KEY}`, "Sec-WebSocket-Version: 13"]

const statusLine = (response: string) => response.split("\r\n")[0]

describe("bad requests never reach the handler", () => {
  const cases: ReadonlyArray<readonly [string, string, RegExp, RegExp?]> = [
    ["missing key", upgradeRequest(goodHeaders.filter((h) => !h.startsWith("Sec-WebSocket-Key"))), /^HTTP\/1.1 400/, /Sec-WebSocket-Key header is missing/],
    ["short key", upgradeRequest([...goodHeaders.slice(0, 2), "Sec-WebSocket-Key: AAAA", "Sec-WebSocket-Version: 13"]), /^HTTP\/1.1 400/, /got 3 bytes/],
    ["version 8", upgradeRequest([...goodHeaders.slice(0, 3), "Sec-WebSocket-Version: 8"]), /^HTTP\/1.1 426/, /Sec-WebSocket-Version: 13/],
    ["POST", upgradeRequest(goodHeaders, "POST / HTTP/1.1"), /^HTTP\/1.1 405/, /needs GET/],
    ["plain GET", upgradeRequest([]), /^HTTP\/1.1 426/, /WebSocket endpoint/],
    ["garbage", "NOT HTTP AT ALL\r\n\r\n", /^HTTP\/1.1 400/]
  ]
  for (const [name, request, status, body] of cases) {
    it.live(name, () =>
      Effect.gen(function*() {
        let reached = false
        const server = yield* NodeServer.serve(() => Effect.sync(() => (reached = true)))
        const { response } = yield* rawExchange(server.address.port, request)
        assert.match(statusLine(response)!, status)
        if (body !== undefined) assert.match(response, body)
        assert.isFalse(reached)
      }))
  }

  it.live("another path gets 404", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, { path: "/ws" })
      const { response } = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, "GET /other HTTP/1.1"))
      assert.match(statusLine(response)!, /^HTTP\/1.1 404/)
    }))

  it.live("authorize can reject with its own status", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, {
        authorize: (request) =>
          request.headers.some((h) => h.name.toLowerCase() === "origin" && h.value === "http://good.example")
            ? Effect.void
            : Effect.fail(new NodeServer.Rejection({ status: 403, message: "origin not allowed" }))
      })
      const { response } = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, "Origin: http://evil.example"]))
      assert.match(statusLine(response)!, /^HTTP\/1.1 403/)
      assert.match(response, /origin not allowed/)
      const ok = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, "Origin: http://good.example"]), { endAfterMs: 300 })
      assert.match(statusLine(ok.response)!, /^HTTP\/1.1 101/)
      assert.match(ok.response, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/)
    }))

  it.live("a silent client is dropped after the handshake timeout", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, { handshakeTimeout: "500 millis" })
      const { closedAfterMs } = yield* rawExchange(server.address.port, "GET / HTTP/1.1\r\nHost: x\r\n", { endAfterMs: 10000 })
      assert.isBelow(closedAfterMs, 5000)
    }))

  it.live("a client that sends its request and FIN at once is let go, not kept open", () =>
    Effect.gen(function*() {
      // the end arrives while the upgrade is being answered: the connection must still see it
      const server = yield* echoHandler
      for (let i = 0; i < 5; i++) {
        const { closedAfterMs, response } = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders), {
          end: true,
          endAfterMs: 4000
        })
        assert.match(statusLine(response)!, /^HTTP\/1.1 101/)
        assert.isBelow(closedAfterMs, 2000)
      }
    }))

  it.live("oversized headers are refused", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, { maxHeaderBytes: 1024 })
      const { response } = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, `X-Big: ${"a".repeat(4096)}`]))
      assert.match(statusLine(response)!, /^HTTP\/1.1 431/)
    }))
})

describe("limits and lifecycle", () => {
  it.live("a message over maxMessageSize closes with 1009", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Stream.runDrain(c.messages), { maxMessageSize: 1024 })
      const code = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const ws = new WsClient(server.url)
          ws.on("open", () => ws.send(new Uint8Array(4096)))
          ws.on("close", (code) => resolve(code))
          ws.on("error", () => {})
        })
      )
      assert.strictEqual(code, 1009)
    }))

  it.live("a failing handler closes only its connection with 1011", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c, request): Effect.Effect<void, unknown> =>
        request.url === "/fail"
          ? Effect.fail("boom")
          : Stream.runForEach(c.messages, (m) => c.send(m))
      )
      const survivor = new WsClient(server.url + "ok")
      yield* Effect.promise(() => new Promise((resolve) => survivor.on("open", resolve)))
      const code = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const ws = new WsClient(server.url + "fail")
          ws.on("close", (code) => resolve(code))
          ws.on("error", () => {})
        })
      )
      assert.strictEqual(code, 1011)
      const echoed = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          survivor.once("message", (data) => resolve(String(data)))
          survivor.send("still here")
        })
      )
      assert.strictEqual(echoed, "still here")
      survivor.close()
    }))

  it.live("closing the server sends 1001 to every open connection", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* Scope.provide(echoHandler, scope)
      const clients = [new WsClient(server.url), new WsClient(server.url)]
      yield* Effect.promise(() => Promise.all(clients.map((ws) => new Promise((resolve) => ws.on("open", resolve)))))
      const codes = Promise.all(clients.map((ws) => new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)))))
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(yield* Effect.promise(() => codes), [1001, 1001])
      const refused = yield* Effect.promise(() =>
        new Promise<boolean>((resolve) => {
          const ws = new WsClient(server.url)
          ws.on("error", () => resolve(true))
          ws.on("open", () => resolve(false))
        })
      )
      assert.isTrue(refused)
    }))

  it.live("a port in use is a ServeError", () =>
    Effect.gen(function*() {
      const first = yield* echoHandler
      const error = yield* Effect.flip(NodeServer.serve(() => Effect.void, { port: first.address.port }))
      assert.strictEqual(error._tag, "ServeError")
      assert.match(error.message, /EADDRINUSE|in use/)
    }))
})

describe("TLS settings", () => {
  it.live("an invalid certificate is a ServeError, not a crash", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        NodeServer.serve(() => Effect.void, { tls: { cert: "not a certificate", key: "not a key" } })
      )
      assert.strictEqual(error._tag, "ServeError")
      assert.match(error.message, /cannot create the server/)
    }))
})
