import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Cause, Deferred, Duration, Effect, Exit, Fiber, Layer, Logger, Metric, Option, References, Schema, Scope, Stream } from "effect"
import type * as Http from "node:http"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { WebSocket as WsClient } from "ws"
import { Client, type Connection, EffectSocket, Metrics, Transport, WebSocketError } from "@effect-websocket/core"
import { HttpHeader } from "@effect-websocket/schema"
import { NodeClient, NodeServer, type NodeTransport } from "../src/index.ts"
import { anyOptions, failureTags } from "./anyOptions.ts"
import { eventually } from "./interruptAt.ts"
import { certificate } from "./interop/helpers.ts"
import { refusingOptions } from "./refusing.ts"

const echoHandler = NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)))

const KEY = "dGhlIHNhbXBsZSBub25jZQ=="

/**
 * Sends raw bytes to the server (then, with `end`, ends the client's side at once) and collects
 * everything it answers until it closes the socket (cut after `endAfterMs`, default 5 s).
 */
/**
 * Sends `request` on a new connection and collects the response until the server closes it, or
 * `endAfterMs` (5 s by default) passes, or with `untilHead` once the response's head has come.
 */
const rawExchange = (
  port: number,
  request: string,
  options?: { readonly endAfterMs?: number; readonly end?: boolean; readonly untilHead?: boolean }
) =>
  Effect.promise(() =>
    new Promise<{ response: string; closedAfterMs: number }>((resolve) => {
      const started = Date.now()
      const socket = Net.connect(port, "127.0.0.1")
      let response = ""
      socket.on("data", (chunk) => {
        response += chunk.toString("latin1")
        if (options?.untilHead === true && response.includes("\r\n\r\n")) socket.destroy()
      })
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

const int = (minimum: number, maximum: number) => Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })))

/** A client that completes the opening handshake, then reads and answers nothing (its socket); destroyed with the test's scope. */
const silentClient = (server: NodeServer.Server) =>
  Effect.gen(function*() {
    const socket = Net.connect(server.address.port, "127.0.0.1")
    socket.on("error", () => {})
    yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
    socket.write(upgradeRequest(goodHeaders))
    yield* Effect.promise(() => new Promise((resolve) => socket.once("data", resolve)))
    socket.pause()
    return socket
  })

describe("bad requests never reach the handler", () => {
  const cases: ReadonlyArray<readonly [string, string, RegExp, RegExp?]> = [
    ["missing key", upgradeRequest(goodHeaders.filter((h) => !h.startsWith("Sec-WebSocket-Key"))), /^HTTP\/1.1 400/, /Sec-WebSocket-Key header is missing/],
    ["short key", upgradeRequest([...goodHeaders.slice(0, 2), "Sec-WebSocket-Key: AAAA", "Sec-WebSocket-Version: 13"]), /^HTTP\/1.1 400/, /got 3 bytes/],
    ["version 8", upgradeRequest([...goodHeaders.slice(0, 3), "Sec-WebSocket-Version: 8"]), /^HTTP\/1.1 426/, /Sec-WebSocket-Version: 13/],
    ["POST", upgradeRequest(goodHeaders, "POST / HTTP/1.1"), /^HTTP\/1.1 405/, /needs GET/],
    // (Node would hand the body over as if it were frames: the connection would end with 1002)
    ["a body", `${upgradeRequest([...goodHeaders, "Content-Length: 3"])}abc`, /^HTTP\/1.1 400/, /has no body/],
    [
      "a chunked body",
      `${upgradeRequest([...goodHeaders, "Transfer-Encoding: chunked"])}3\r\nabc\r\n0\r\n\r\n`,
      /^HTTP\/1.1 400/,
      /has no body/
    ],
    ["plain GET", upgradeRequest([]), /^HTTP\/1.1 426/, /WebSocket endpoint/],
    ["garbage", "NOT HTTP AT ALL\r\n\r\n", /^HTTP\/1.1 400/]
  ]
  it.live("a malformed request is answered before authorize and selectProtocol see it, as ws checks before verifyClient", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const server = yield* NodeServer.serve(() => Effect.void, {
        authorize: (request) =>
          Effect.andThen(
            Effect.sync(() => seen.push(`authorize ${request.protocols.join("|")}`)),
            Effect.fail(new NodeServer.Rejection({ status: 401, message: "who are you?" }))
          ),
        selectProtocol: (offered) => {
          seen.push(`selectProtocol ${offered.join("|")}`)
          return offered[0]
        }
      })
      const withHeader = (header: string, value: string) =>
        upgradeRequest([...goodHeaders.filter((h) => !h.startsWith(`${header}:`)), `${header}: ${value}`])
      const cases: ReadonlyArray<readonly [string, string]> = [
        [withHeader("Sec-WebSocket-Protocol", "chat, a/b"), "400"],
        [withHeader("Sec-WebSocket-Protocol", "chat, superchat, chat"), "400"],
        [withHeader("Sec-WebSocket-Key", "AAAA"), "400"],
        [withHeader("Sec-WebSocket-Version", "8"), "426"],
        [withHeader("Sec-WebSocket-Extensions", "x; =y"), "400"],
        [withHeader("Sec-WebSocket-Protocol", "chat,  v2"), "401"]
      ]
      for (const [request, status] of cases) {
        const { response } = yield* rawExchange(server.address.port, request)
        assert.match(statusLine(response)!, new RegExp(`^HTTP/1.1 ${status}`), request)
      }
      assert.deepStrictEqual(seen, ["authorize chat|v2"])
    }))

  it.live("an upgrade request with Content-Length: 0 (or 00) is accepted (no body)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void)
      for (const length of ["0", "00"]) {
        const { response } = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, `Content-Length: ${length}`]), {
          untilHead: true
        })
        assert.match(statusLine(response)!, /^HTTP\/1.1 101/, length)
      }
    }))

  it.live("a request pipelined behind one answered with Connection: close is not served: the socket ends after that answer", () =>
    Effect.gen(function*() {
      let reached = 0
      const server = yield* NodeServer.serve(() => Effect.sync(() => reached++))
      const plain = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
      for (const next of [upgradeRequest(goodHeaders), "NOT HTTP AT ALL\r\n\r\n"]) {
        const { closedAfterMs, response } = yield* rawExchange(server.address.port, plain + next, { endAfterMs: 3000 })
        assert.deepStrictEqual(response.match(/^HTTP\/1.1 \d+/gm), ["HTTP/1.1 426"], response)
        assert.isBelow(closedAfterMs, 2000)
      }
      yield* Effect.sleep("50 millis")
      assert.strictEqual(reached, 0)
    }))

  it.live("a client that resets its connection while authorize runs is dropped: no 101, no handler, no connection opened", () =>
    Effect.gen(function*() {
      const openServers = Metric.value(Metric.withAttributes(Metrics.connectionsOpen, { side: "server" }))
      const before = (yield* openServers).value
      const reached: Array<string> = []
      const server = yield* NodeServer.serve((_, request) => Effect.sync(() => reached.push(request.url)), {
        authorize: () => Effect.sleep("200 millis")
      })
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const socket = Net.connect(server.address.port, "127.0.0.1", () => {
            socket.write(upgradeRequest(goodHeaders, "GET /reset HTTP/1.1"))
            setTimeout(() => socket.resetAndDestroy(), 50)
          })
          socket.on("error", () => {})
          socket.on("close", () => resolve())
        })
      )
      // one whose socket can no longer be written to (its writing side ended meanwhile) is dropped too
      const unwritable = yield* NodeServer.serve((_, request) => Effect.sync(() => reached.push(request.url)), {
        authorize: (request) => Effect.sync(() => NodeServer.incomingMessage(request)!.socket.end())
      })
      const cut = yield* rawExchange(unwritable.address.port, upgradeRequest(goodHeaders, "GET /unwritable HTTP/1.1"))
      assert.notMatch(cut.response, /^HTTP\/1.1 101/)
      // (and its socket goes, also when the client does not end its side in turn)
      const released = yield* Effect.promise(() =>
        new Promise<boolean>((resolve) => {
          const socket = Net.connect({ port: unwritable.address.port, host: "127.0.0.1", allowHalfOpen: true })
          socket.on("error", () => {})
          socket.on("close", () => resolve(true))
          // (what it still sends after the server's end finds the socket gone: reset)
          socket.on("end", () => {
            const timer = setInterval(() => socket.write("x"), 20)
            socket.on("close", () => clearInterval(timer))
          })
          socket.write(upgradeRequest(goodHeaders, "GET /unwritable HTTP/1.1"))
          setTimeout(() => {
            resolve(false)
            socket.destroy()
          }, 3000)
        })
      )
      assert.isTrue(released, "the unwritable socket was kept")
      // one that only ended its side may still read: it is served
      const ended = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, "GET /ended HTTP/1.1"), { end: true })
      assert.match(statusLine(ended.response)!, /^HTTP\/1.1 101/)
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(reached, ["/ended"])
      assert.strictEqual((yield* openServers).value, before)
    }))

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

  it.live("a version the server does not understand is answered with Sec-WebSocket-Version: 13; a 426 names Upgrade: websocket, as a connection option too", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void)
      /** The status and the named response headers (lower-cased names, repeated ones joined). */
      const answer = (versionLines: ReadonlyArray<string>, start?: string) =>
        Effect.map(
          rawExchange(server.address.port, upgradeRequest([...goodHeaders.slice(0, 3), ...versionLines], start)),
          ({ response }) => {
            const [status, ...lines] = response.split("\r\n\r\n")[0]!.split("\r\n")
            const fields = new Map<string, string>()
            for (const line of lines) {
              const colon = line.indexOf(":")
              const name = line.slice(0, colon).toLowerCase()
              const value = line.slice(colon + 1).trim()
              fields.set(name, fields.has(name) ? `${fields.get(name)}, ${value}` : value)
            }
            return {
              status: status!.split(" ")[1],
              version: fields.get("sec-websocket-version"),
              upgrade: fields.get("upgrade"),
              connection: fields.get("connection")?.toLowerCase().split(/[ \t]*,[ \t]*/).sort().join(",")
            }
          }
        )
      // RFC 6455 section 4.2.2 item 4 (and the 400 of section 4.4's example): the versions the server understands
      assert.deepStrictEqual(yield* answer(["Sec-WebSocket-Version: 8"]), {
        status: "426",
        version: "13",
        upgrade: "websocket",
        connection: "close,upgrade"
      })
      for (
        const lines of [
          ["Sec-WebSocket-Version: 13, 8"],
          ["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"],
          ["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"],
          ["Sec-WebSocket-Version: "],
          ["Sec-WebSocket-Version: 013"],
          ["Sec-WebSocket-Version: 256"],
          []
        ]
      ) {
        assert.deepStrictEqual(yield* answer(lines), { status: "400", version: "13", upgrade: undefined, connection: "close" }, JSON.stringify(lines))
      }
      // a request refused for another reason is not told about versions
      assert.deepStrictEqual(
        yield* Effect.map(
          rawExchange(server.address.port, upgradeRequest([...goodHeaders.slice(0, 2), "Sec-WebSocket-Version: 13"])),
          ({ response }) => [statusLine(response), /sec-websocket-version/i.test(response.split("\r\n\r\n")[0]!)]
        ),
        ["HTTP/1.1 400 Bad Request", false]
      )
      // a request that is no upgrade at all: 426 with Upgrade: websocket (RFC 9110 section 15.5.22), as a connection option too
      const plain = yield* rawExchange(server.address.port, upgradeRequest([]))
      assert.match(statusLine(plain.response)!, /^HTTP\/1.1 426/)
      assert.match(plain.response, /\r\nUpgrade: websocket\r\n/i)
      assert.match(plain.response, /\r\nConnection: Upgrade, close\r\n/i)
    }))

  it.live("another path gets 404: the path must match exactly (a longer one that starts with it, or one below it, is another)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, { path: "/ws" })
      for (const path of ["/other", "/ws2", "/ws/", "/ws/x", "/wsx?room=1"]) {
        const { response } = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, `GET ${path} HTTP/1.1`))
        assert.match(statusLine(response)!, /^HTTP\/1.1 404/, path)
      }
      // (the query is not part of the path)
      const accepted = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, "GET /ws?room=1 HTTP/1.1"), { untilHead: true })
      assert.match(statusLine(accepted.response)!, /^HTTP\/1.1 101/)
    }))

  it.live("a method other than GET gets 405 with Allow: GET (RFC 9110 section 15.5.6: a 405 lists the allowed methods)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void)
      for (const method of ["POST", "PUT", "HEAD"]) {
        const { response } = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, `${method} / HTTP/1.1`))
        assert.match(statusLine(response)!, /^HTTP\/1.1 405/, method)
        assert.match(response.split("\r\n\r\n")[0]!, /\r\nAllow: GET(\r\n|$)/i, method)
      }
    }))

  it.live("a request in HTTP/1.0 gets 505; one in a later version than 1.1 (HTTP/2.0, as Node's parser reads it) is served (RFC 6455: HTTP/1.1 or higher)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void)
      const old = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, "GET / HTTP/1.0"))
      assert.match(statusLine(old.response)!, /^HTTP\/1.1 505/)
      const later = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, "GET / HTTP/2.0"), { untilHead: true })
      assert.match(statusLine(later.response)!, /^HTTP\/1.1 101/)
    }))

  it.live("a request target in absolute form (RFC 6455 section 4.2.1) is matched by its path", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const server = yield* NodeServer.serve((c, request) => Effect.andThen(Effect.sync(() => seen.push(request.url)), c.close(1000)), {
        path: "/ws"
      })
      const { port } = server.address
      // (a client may name the WebSocket scheme itself, in any case)
      for (const scheme of ["http", "ws", "wss", "WS"]) {
        const accepted = yield* rawExchange(port, upgradeRequest(goodHeaders, `GET ${scheme}://127.0.0.1:${port}/ws?room=${scheme} HTTP/1.1`), {
          untilHead: true // (the raw client never answers the Close)
        })
        assert.match(statusLine(accepted.response)!, /^HTTP\/1.1 101/, scheme)
      }
      assert.deepStrictEqual(seen, ["/ws?room=http", "/ws?room=ws", "/ws?room=wss", "/ws?room=WS"])
      const other = yield* rawExchange(port, upgradeRequest(goodHeaders, `GET http://127.0.0.1:${port}/other HTTP/1.1`))
      assert.match(statusLine(other.response)!, /^HTTP\/1.1 404/)
      // (one that is no URL is matched as it is: it is not the root path)
      const root = yield* NodeServer.serve(() => Effect.void, { path: "/" })
      const broken = yield* rawExchange(root.address.port, upgradeRequest(goodHeaders, `GET http://127.0.0.1:99999/ HTTP/1.1`), {
        untilHead: true
      })
      assert.match(statusLine(broken.response)!, /^HTTP\/1.1 404/)
    }))

  it.live("a Rejection's own Content-Type and Connection replace the server's, as with ws", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, {
        authorize: () =>
          Effect.fail(
            new NodeServer.Rejection({
              status: 403,
              message: "{\"error\":\"forbidden\"}",
              headers: [{ name: "content-type", value: "application/json" }, { name: "Connection", value: "close" }]
            })
          )
      })
      const { response } = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders))
      const headers = response.split("\r\n\r\n")[0]!.split("\r\n").slice(1).map((line) => line.toLowerCase())
      assert.deepStrictEqual(headers.filter((line) => line.startsWith("content-type:")), ["content-type: application/json"])
      assert.deepStrictEqual(headers.filter((line) => line.startsWith("connection:")), ["connection: close"])
      assert.include(response, "\r\n\r\n{\"error\":\"forbidden\"}\n")
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
      const ok = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, "Origin: http://good.example"]), { untilHead: true })
      assert.match(statusLine(ok.response)!, /^HTTP\/1.1 101/)
      assert.match(ok.response, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/)
    }))

  it.live("a silent client is dropped after the handshake timeout", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, { handshakeTimeout: "500 millis" })
      const { closedAfterMs } = yield* rawExchange(server.address.port, "GET / HTTP/1.1\r\nHost: x\r\n", { endAfterMs: 10000 })
      assert.isBelow(closedAfterMs, 5000)
    }))

  it.live("by default a client that sends no whole request is dropped after the handshake timeout of 10 seconds (408)", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void)
      // an incomplete request: its headers never end
      const { closedAfterMs, response } = yield* rawExchange(server.address.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", {
        endAfterMs: 15_000
      })
      assert.match(statusLine(response) ?? "", /^HTTP\/1.1 408/)
      assert.isAtLeast(closedAfterMs, 9_000) // (Node looks at its request clocks once a second or so)
    }), 20_000)

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

describe("handshake failure metrics", () => {
  const failures = (reason: string) =>
    Effect.map(
      Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason })),
      (state) => Number(state.count)
    )

  it.live("every refused upgrade request counts once, with its reason", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void, refusingOptions)
      const { port } = server.address
      const cases: ReadonlyArray<readonly [string, string, string]> = [
        ["MethodNotAllowed", upgradeRequest(goodHeaders, "POST /ws HTTP/1.1"), "405"],
        ["HttpVersionNotSupported", upgradeRequest(goodHeaders, "GET /ws HTTP/1.0"), "505"],
        ["RequestBody", `${upgradeRequest([...goodHeaders, "Content-Length: 2"], "GET /ws HTTP/1.1")}hi`, "400"],
        ["NotFound", upgradeRequest(goodHeaders, "GET /elsewhere HTTP/1.1"), "404"],
        ["Rejected", upgradeRequest(goodHeaders, "GET /ws?deny HTTP/1.1"), "403"],
        ["ServerError", upgradeRequest(goodHeaders, "GET /ws?throw HTTP/1.1"), "500"],
        ["UnsupportedProtocolVersion", upgradeRequest([...goodHeaders.slice(0, 3), "Sec-WebSocket-Version: 8"], "GET /ws HTTP/1.1"), "426"],
        ["InvalidProtocolFormat", upgradeRequest(goodHeaders.slice(0, 2).concat("Sec-WebSocket-Version: 13"), "GET /ws HTTP/1.1"), "400"],
        ["BadRequest", "NOT HTTP AT ALL\r\n\r\n", "400"],
        ["HeaderTooLarge", upgradeRequest([...goodHeaders, `X-Big: ${"x".repeat(20_000)}`], "GET /ws HTTP/1.1"), "431"]
      ]
      const reasons = cases.map(([reason]) => reason)
      for (const [reason, request, status] of cases) {
        const before = yield* Effect.forEach(reasons, failures)
        const { response } = yield* rawExchange(port, request)
        assert.match(statusLine(response)!, new RegExp(`^HTTP/1.1 ${status}`), reason)
        const after = yield* Effect.forEach(reasons, failures)
        assert.deepStrictEqual(
          after.map((n, i) => n - before[i]!),
          reasons.map((r) => (r === reason ? 1 : 0)),
          reason
        )
      }
      // a client that resets its connection in the middle of a request made no request
      const before = yield* Effect.forEach(reasons, failures)
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const socket = Net.connect(port, "127.0.0.1", () => {
            socket.write("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            setTimeout(() => {
              socket.resetAndDestroy()
              resolve()
            }, 50)
          })
          socket.on("error", () => {})
        })
      )
      yield* Effect.sleep("100 millis")
      assert.deepStrictEqual(yield* Effect.forEach(reasons, failures), before, "a reset is not counted")
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

  it.live("a server that has shut down leaves no timer behind (its shutdown's watchdog goes with it): a program can end at once", () =>
    Effect.gen(function*() {
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length
      const before = timers()
      const scope = yield* Scope.make()
      const server = yield* Scope.provide(echoHandler, scope)
      const ws = new WsClient(server.url)
      ws.on("error", () => {})
      yield* Effect.promise(() => new Promise((resolve) => ws.on("open", resolve)))
      yield* Scope.close(scope, Exit.void)
      for (let i = 0; i < 100 && timers() > before; i++) yield* Effect.sleep("20 millis")
      assert.isAtMost(timers(), before, "a timer is left")
    }))

  it.live("shutdownTimeout bounds the shutdown only: a connection's own close keeps its close timeout", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<Connection.CloseInfo>()
      const server = yield* NodeServer.serve(
        (c) => Effect.flatMap(c.close(1000), (info) => Deferred.succeed(closed, info)),
        { shutdownTimeout: 0 }
      )
      const client = new WsClient(server.url)
      client.on("error", () => {})
      const info = yield* Deferred.await(closed)
      assert.deepStrictEqual([info.code, info.clean], [1000, true])
    }))

  it.live("shutdownTimeout bounds the shutdown even when the connections' close timeout is longer", () =>
    Effect.gen(function*() {
      const { scope, server } = yield* closableServer((c) => Stream.runDrain(c.messages), "300 millis")
      yield* silentClientBoundedShutdown(server, scope)
    }))

  it.live("by default the shutdown waits 5 seconds for a closing handshake the client does not answer", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* Scope.provide(
        NodeServer.serve((c) => Stream.runDrain(c.messages), { connection: { closeTimeout: "20 seconds" } }),
        scope
      )
      yield* silentClient(server)
      for (let i = 0; i < 200 && (yield* server.connections) === 0; i++) yield* Effect.sleep("5 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      const took = Date.now() - started
      assert.isAtLeast(took, 4900, "the closing handshake was waited for")
      assert.isBelow(took, 12_000, "then cut at the shutdown timeout")
    }), 20_000)

  it.live("shutdownTimeout bounds it also for connections whose handler returned and that are still closing (they took their close timeout)", () =>
    Effect.gen(function*() {
      // the handler returns at once: its connection closes (1000), and the client never answers
      const { scope, server } = yield* closableServer(() => Effect.void, "300 millis")
      yield* silentClient(server)
      yield* Effect.sleep("100 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      assert.isBelow(Date.now() - started, 1500, "cut at the shutdown timeout")
    }))

  it.live("a shutting-down server takes no new connection: the listener closes at once (an upgrade got 426 meanwhile)", () =>
    Effect.gen(function*() {
      const { scope, server } = yield* closableServer((c) => Stream.runDrain(c.messages), "1 second")
      // a client that never answers keeps the shutdown busy
      yield* silentClient(server)
      const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
      yield* Effect.sleep("200 millis")
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(server.url)))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : ""], ["ConnectError", "Refused"])
      yield* Fiber.join(closing)
    }))

  it.live("an upgrade request that comes while the server shuts down, over a connection opened before, gets one 503, counted once, and nothing else (authorize is not asked, no 101, no handler)", () =>
    Effect.gen(function*() {
      let authorized = 0
      let handled = 0
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const server = yield* Scope.provide(
        NodeServer.serve((c) => Effect.andThen(Effect.sync(() => handled++), Stream.runDrain(c.messages)), {
          shutdownTimeout: "5 seconds",
          connection: { closeTimeout: "20 seconds" },
          authorize: () => Effect.sync(() => void authorized++)
        }),
        scope
      )
      // a client that never answers keeps the shutdown busy
      const silent = yield* silentClient(server)
      // Connected before the shutdown starts, their requests sent after: one had sent its request
      // line already (a request under way, which Node keeps open when its server closes), the
      // other nothing (an idle connection, which Node 26 closes with its server, and older
      // versions keep).
      const connect = Effect.gen(function*() {
        const socket = Net.connect(server.address.port, "127.0.0.1")
        socket.on("error", () => {})
        yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
        yield* Effect.promise(() => new Promise((resolve) => socket.once("connect", resolve)))
        const response = new Promise<string>((resolve) => {
          let text = ""
          socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")))
          socket.on("close", () => resolve(text))
        })
        return { socket, response }
      })
      const underWay = yield* connect
      const idle = yield* connect
      // (and one whose plain request is under way, an upgrade request pipelined behind it: that one
      // is not served, not even with a 503, as before the shutdown)
      const plainFirst = yield* connect
      const [requestLine, ...rest] = upgradeRequest(goodHeaders).split("\r\n")
      underWay.socket.write(requestLine + "\r\n")
      plainFirst.socket.write("GET / HTTP/1.1\r\n")
      yield* Effect.sleep("50 millis")
      const shuttingDown = Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason: "ShuttingDown" }))
      const before = Number((yield* shuttingDown).count)
      const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
      // the shutdown has begun once the listener refuses new connections
      let listening = true
      for (let i = 0; i < 600 && listening; i++) {
        listening = yield* Effect.promise(() =>
          new Promise<boolean>((resolve) => {
            const probe = Net.connect(server.address.port, "127.0.0.1")
            probe.on("error", () => resolve(false))
            probe.on("connect", () => {
              probe.destroy()
              setTimeout(() => resolve(true), 5)
            })
          })
        )
      }
      assert.isFalse(listening, "the listener closed")
      underWay.socket.write(rest.join("\r\n"))
      if (!idle.socket.destroyed) idle.socket.write(upgradeRequest(goodHeaders))
      plainFirst.socket.write("Host: 127.0.0.1\r\n\r\n" + upgradeRequest(goodHeaders))
      const plainText = yield* Effect.promise(() => plainFirst.response)
      assert.deepStrictEqual(plainText.match(/^HTTP\/1.1 \d+/gm), ["HTTP/1.1 426"], plainText)
      const text = yield* Effect.promise(() => underWay.response)
      assert.match(text, /^HTTP\/1\.1 503 /)
      assert.notMatch(text, /101 Switching Protocols/)
      const idleText = yield* Effect.promise(() => idle.response)
      assert.match(idleText, /^$|^HTTP\/1\.1 503 /, "the idle connection: closed, or the same 503")
      assert.notMatch(idleText, /101 Switching Protocols/)
      // the silent client's only: the requests were neither authorized nor handled
      assert.deepStrictEqual([authorized, handled], [1, 1])
      silent.destroy() // (the shutdown need not wait for it any longer)
      yield* Fiber.join(closing)
      const refused = idleText === "" ? 1 : 2
      assert.strictEqual(Number((yield* shuttingDown).count) - before, refused, "one refusal counted per request")
    }))

  it.live("a client still sending its request when the server shuts down does not hold the shutdown (its socket goes at once)", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const server = yield* Scope.provide(NodeServer.serve((c) => Stream.runDrain(c.messages)), scope)
      const socket = Net.connect(server.address.port, "127.0.0.1")
      socket.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      socket.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n") // the rest never comes
      yield* Effect.sleep("100 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      assert.isBelow(Date.now() - started, 500)
    }))

  it.live("with tls, a client still in its TLS handshake when the server shuts down does not hold the shutdown (its socket goes a moment later)", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      // (Node's closeAllConnections does not know a socket before its TLS handshake is done)
      const server = yield* Scope.provide(
        NodeServer.serve(() => Effect.void, { tls: { cert, key }, handshakeTimeout: "20 seconds", shutdownTimeout: "20 seconds" }),
        scope
      )
      // never starts its TLS handshake, nor ends its side when the server ends its own
      const socket = Net.connect({ port: server.address.port, host: "127.0.0.1", allowHalfOpen: true })
      socket.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      const ended = new Promise<void>((resolve) => socket.once("end", () => resolve()))
      yield* Effect.promise(() => new Promise((resolve) => socket.once("connect", resolve)))
      yield* Effect.sleep("50 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      assert.isBelow(Date.now() - started, 5000, "the shutdown waited for the TLS handshake")
      yield* Effect.promise(() => ended)
    }), 15_000)

  it.live("with tls, a client still in its TLS handshake is not waited for beyond the shutdown's deadline (the closing handshakes took most of it)", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const server = yield* Scope.provide(
        NodeServer.serve((c) => Stream.runDrain(c.messages), {
          tls: { cert, key },
          shutdownTimeout: "1 second",
          connection: { closeTimeout: "20 seconds" }
        }),
        scope
      )
      // one that answers the server's Close late, within the shutdown's timeout, and one that never starts its TLS handshake
      const late = Tls.connect({ port: server.address.port, host: "127.0.0.1", rejectUnauthorized: false }, () =>
        late.write(upgradeRequest(goodHeaders)))
      late.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => late.destroy()))
      yield* Effect.promise(() => new Promise((resolve) => late.once("data", resolve)))
      late.once("data", () => setTimeout(() => late.write(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9])), 900))
      const quiet = Net.connect(server.address.port, "127.0.0.1")
      quiet.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => quiet.destroy()))
      yield* Effect.promise(() => new Promise((resolve) => quiet.once("connect", resolve)))
      yield* Effect.sleep("50 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      const took = Date.now() - started
      assert.isAtLeast(took, 850, "the closing handshake was waited for")
      assert.isBelow(took, 1600, "then at most until the shutdown's deadline (1 s), not for another grace (1 s)")
    }))

  /** A server in a scope of its own, whose connections' close timeout (20 s) is longer than its `shutdownTimeout`. */
  const closableServer = (handler: Client.Handler, shutdownTimeout: Duration.Input) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* Scope.provide(NodeServer.serve(handler, { shutdownTimeout, connection: { closeTimeout: "20 seconds" } }), scope)
      return { scope, server }
    })

  /** A client that completes the handshake, then never answers (nor reads): closing `scope` takes the shutdown timeout. */
  const silentClientBoundedShutdown = (server: NodeServer.Server, scope: Scope.Closeable) =>
    Effect.gen(function*() {
      // a client that completes the handshake, then never answers (nor reads)
      const socket = Net.connect(server.address.port, "127.0.0.1")
      socket.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      const received: Array<Buffer> = []
      socket.on("data", (chunk: Buffer) => received.push(chunk))
      socket.write(upgradeRequest(goodHeaders))
      for (let i = 0; i < 200 && (yield* server.connections) === 0; i++) yield* Effect.sleep("5 millis")
      assert.strictEqual(yield* server.connections, 1)
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      const took = Date.now() - started
      assert.isAtLeast(took, 250, "the closing handshake was waited for")
      assert.isBelow(took, 1500, "then cut at the shutdown timeout")
      // the client was sent a Close with 1001 before being cut off
      const bytes = Buffer.concat(received)
      const frame = bytes.subarray(bytes.indexOf("\r\n\r\n") + 4)
      assert.deepStrictEqual([...frame.subarray(0, 4)], [0x88, 0x02, 0x03, 0xe9])
    })

  it.live("a handler that is not a function is an InvalidParameter before anything is served", () =>
    Effect.gen(function*() {
      for (const value of [undefined, 5, "echo"]) {
        const error = yield* Effect.flip(NodeServer.serve(value as unknown as Client.Handler<never, never>))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, `handler is a function, got ${typeof value}`)
      }
    }))

  it.live("a port in use is a ServeError", () =>
    Effect.gen(function*() {
      const first = yield* echoHandler
      const error = yield* Effect.flip(NodeServer.serve(() => Effect.void, { port: first.address.port }))
      assert.strictEqual(error._tag, "ServeError")
      assert.match(error.message, /EADDRINUSE|in use/)
      // (the message names where it could not listen)
      assert.include(error.message, `cannot listen on 127.0.0.1:${first.address.port}: `)
    }))
})

describe("options and callbacks", () => {
  it.live("a server with a bad option does not start: an InvalidParameter names the option", () =>
    Effect.gen(function*() {
      const handler = (c: Connection.Connection) => Stream.runForEach(c.messages, (m) => c.send(m))
      const cases: ReadonlyArray<readonly [NodeServer.ServeOptions, string]> = [
        [{ maxMessageSize: -5 }, "maxMessageSize"],
        [{ properties: { receiveBufferSize: 3 } }, "receiveBufferSize"],
        [{ connection: { messageBuffer: 0 } }, "messageBuffer"],
        [{ connection: { closeCodeOnScopeClose: 1015 } }, "close code 1015"],
        [{ connection: { keepalive: { interval: 0 } } }, "keepalive.interval"],
        [{ handshakeTimeout: "abc" as never }, "handshakeTimeout must be a duration"],
        [{ shutdownTimeout: -1 }, "shutdownTimeout may not be negative"],
        [{ port: 99_999 }, "port must be an integer from 0 to 65535"],
        [{ socketBuffers: { highWaterMark: 0 } }, "socketBuffers.highWaterMark"],
        [{ socketBuffers: { writeBufferLimit: Number.NaN } }, "socketBuffers.writeBufferLimit"],
        [{ path: "chat" }, "path must start with \"/\""],
        [{ path: "/chat?room=1" }, "no query"],
        [{ host: 5 as never }, "host"],
        [{ host: "" }, "host must be a host name or address"],
        [{ host: "127.0.0.1\0" }, "host must be a host name or address"],
        [{ tls: null as never }, "tls must be an object"],
        [{ tls: "cert.pem" as never }, "tls must be an object"],
        [{ tls: 0 as never }, "tls must be an object"],
        // (every client's handshake would fail: "no shared cipher")
        [{ tls: {} }, "a server's tls needs its identity"],
        [{ maxHeaderBytes: -1 }, "maxHeaderBytes must be a whole number of bytes of at least 1"],
        [{ maxHeaderBytes: "x" as never }, "maxHeaderBytes"]
      ]
      for (const [options, fragment] of cases) {
        const error = yield* Effect.flip(Effect.scoped(NodeServer.serve(handler, options)))
        assert.strictEqual(error._tag, "InvalidParameter", fragment)
        assert.include(error.message, fragment)
      }
      const error = yield* Effect.flip(Effect.scoped(NodeServer.makeUpgradeHandler(handler, { maxMessageSize: 0 })))
      assert.strictEqual(error._tag, "InvalidParameter")
      // an upgrade handler checks its options as a server does
      const upgradeCases: ReadonlyArray<readonly [NodeServer.UpgradeOptions, string]> = [
        [{ path: "chat" }, "path must start with \"/\""],
        [{ connection: { messageBuffer: 0 } }, "messageBuffer"],
        [{ authorize: 5 as never }, "authorize"]
      ]
      for (const [options, fragment] of upgradeCases) {
        const refused = yield* Effect.flip(Effect.scoped(NodeServer.makeUpgradeHandler(handler, options)))
        assert.strictEqual(refused._tag, "InvalidParameter", fragment)
        assert.include(refused.message, fragment)
      }
      const notAHandler = yield* Effect.flip(Effect.scoped(NodeServer.makeUpgradeHandler("echo" as unknown as Client.Handler)))
      assert.strictEqual(notAHandler._tag, "InvalidParameter")
    }))

  it.live("a handshake timeout in fractions of a millisecond or beyond a timer's range starts the server (Node refused it)", () =>
    Effect.gen(function*() {
      const timeouts: ReadonlyArray<Duration.Input> = [1500.5, "999.5 millis", Duration.nanos(1_000_000_001n), 2 ** 53]
      for (const handshakeTimeout of timeouts) {
        const reply = yield* Effect.scoped(Effect.gen(function*() {
          const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), { handshakeTimeout })
          const connection = yield* NodeClient.connect(server.url)
          yield* connection.send("in time")
          return yield* Stream.runCollect(Stream.take(connection.messages, 1))
        }))
        assert.deepStrictEqual(reply, ["in time"], String(handshakeTimeout))
      }
      // one below a millisecond is a millisecond, not none (Node's 0): a silent client is dropped
      const brief = yield* NodeServer.serve(() => Effect.void, { handshakeTimeout: "0.5 millis" })
      const { closedAfterMs } = yield* rawExchange(brief.address.port, "GET / HTTP/1.1\r\nHost: x\r\n", { endAfterMs: 4000 })
      assert.isBelow(closedAfterMs, 3500, "a handshake timeout below a millisecond was none")
      // with tls too, whose handshake takes the same timeout as a socket timer: one beyond a timer's range is cut to
      // it before Node sees it, which would warn (TimeoutOverflowWarning)
      const { cert, key } = yield* certificate
      const warnings: Array<string> = []
      const onWarning = (warning: Error) => warnings.push(warning.name)
      process.on("warning", onWarning)
      yield* Effect.addFinalizer(() => Effect.sync(() => process.off("warning", onWarning)))
      const reply = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), { handshakeTimeout: "30 days", tls: { cert, key } })
        const connection = yield* NodeClient.connect(server.url, { tls: { ca: cert } })
        yield* connection.send("in time")
        return yield* Stream.runCollect(Stream.take(connection.messages, 1))
      }))
      assert.deepStrictEqual(reply, ["in time"], "tls")
      yield* Effect.sleep("10 millis") // (a warning is emitted on the next tick)
      assert.notInclude(warnings, "TimeoutOverflowWarning")
    }))

  it.live("socketBuffers.writeBufferLimit bounds what waits for a client that does not read (Infinity: no bound, as with ws)", () =>
    Effect.gen(function*() {
      const payload = new Uint8Array(1024 * 1024)
      /** How many of 24 one-MiB sends of the handler complete within half a second to a client that stopped reading. */
      const sendsDone = (socketBuffers?: NodeTransport.BufferOptions) =>
        Effect.scoped(Effect.gen(function*() {
          let done = 0
          const server = yield* NodeServer.serve(
            (c) => Effect.forEach(Array.from({ length: 24 }), () => Effect.map(c.send(payload), () => done++), { discard: true }),
            { socketBuffers, shutdownTimeout: "1 second", connection: { closeTimeout: "100 millis" } }
          )
          yield* silentClient(server)
          yield* Effect.sleep("500 millis")
          return done
        }))
      assert.isBelow(yield* sendsDone(), 16, "sends waited for the client")
      assert.strictEqual(yield* sendsDone({ writeBufferLimit: Number.POSITIVE_INFINITY }), 24)
    }))

  it.live("a selectProtocol that throws gets its request a 500; the server goes on serving", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), {
        selectProtocol: (offered) => {
          if (offered.includes("boom")) throw new Error("boom")
          return offered[0]
        }
      })
      const port = server.address.port
      const refused = yield* rawExchange(port, upgradeRequest([...goodHeaders, "Sec-WebSocket-Protocol: boom"]))
      assert.strictEqual(statusLine(refused.response), "HTTP/1.1 500 Internal Server Error")
      const fine = yield* rawExchange(port, upgradeRequest([...goodHeaders, "Sec-WebSocket-Protocol: chat"]), { untilHead: true })
      assert.strictEqual(statusLine(fine.response), "HTTP/1.1 101 Switching Protocols")
    }))

  it.live("responseHeaders add headers to the 101 (a cookie from the request), never the handshake's own", () =>
    Effect.gen(function*() {
      const sent: Array<string | undefined> = []
      const server = yield* NodeServer.serve((c) =>
        Effect.andThen(
          // (the connection's handshake has the headers the 101 had, these too)
          Effect.sync(() => sent.push(HttpHeader.getCombined(c.handshake.responseHeaders, "Set-Cookie"))),
          Stream.runForEach(c.messages, (m) => c.send(m))
        ), {
        responseHeaders: (request) => [{ name: "Set-Cookie", value: `session=${request.url.slice(1)}` }, { name: "X-Served-By", value: "test" }]
      })
      const headers = yield* Effect.promise(() =>
        new Promise<Http.IncomingHttpHeaders>((resolve, reject) => {
          const ws = new WsClient(server.url + "abc")
          ws.on("upgrade", (response) => resolve(response.headers))
          ws.on("open", () => ws.close())
          ws.on("error", reject)
        })
      )
      assert.deepStrictEqual(headers["set-cookie"], ["session=abc"])
      assert.strictEqual(headers["x-served-by"], "test")
      yield* eventually(() => sent.length > 0)
      assert.deepStrictEqual(sent, ["session=abc"])
      // a static list is checked when the server starts
      for (const [responseHeaders, fragment] of [
        [[{ name: "Sec-WebSocket-Accept", value: "x" }], "may not set Sec-WebSocket-Accept"],
        [[{ name: "Bad Name", value: "x" }], "responseHeaders"],
        [[{ name: "X", value: "a\r\nSet-Cookie: y" }], "control character"]
      ] as const) {
        const error = yield* Effect.flip(Effect.scoped(NodeServer.serve(() => Effect.void, { responseHeaders })))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, fragment)
      }
      // a function that throws or returns the handshake's own headers costs its request a 500
      for (const responseHeaders of [() => { throw new Error("boom") }, () => [{ name: "upgrade", value: "h2c" }]]) {
        const failing = yield* NodeServer.serve((c) => Stream.runDrain(c.messages), { responseHeaders })
        const exchange = yield* rawExchange(failing.address.port, upgradeRequest(goodHeaders))
        assert.strictEqual(statusLine(exchange.response), "HTTP/1.1 500 Internal Server Error")
      }
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("a selectProtocol that picks a malformed name is the server's fault: 500, not 400", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Stream.runDrain(c.messages), { selectProtocol: () => "not a token" })
      const exchange = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, "Sec-WebSocket-Protocol: chat"]))
      assert.strictEqual(statusLine(exchange.response), "HTTP/1.1 500 Internal Server Error")
    }))

  it.live("a handler written against effect/socket (EffectSocket.toSocket) whose client closes is no handler failure: nothing logged as an error", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => logged.push(`${options.logLevel}: ${String(options.message)}`))
      const handler = (connection: Connection.Connection) =>
        Effect.scoped(Effect.gen(function*() {
          // the usual effect/socket echo: its reader ends with a SocketError (SocketCloseError)
          const socket = EffectSocket.toSocket(connection)
          const reader = yield* socket.reader
          const writer = yield* socket.writer
          while (true) yield* writer.writeAll(yield* reader.pull)
        }))
      const server = yield* NodeServer.serve(handler).pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
      for (const code of [1000, 4001]) {
        const info = yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* NodeClient.connect(server.url)
          yield* connection.send("x")
          assert.deepStrictEqual(yield* Stream.runHead(connection.messages), Option.some("x"))
          return yield* connection.close(code, "bye")
        }))
        assert.deepStrictEqual([info.code, info.clean], [code, true])
      }
      yield* eventually(() => Effect.runSync(server.connections) === 0)
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(logged.filter((line) => line.startsWith("Error")), [])
    }))

  it.live("a selectProtocol that picks a subprotocol the client did not offer is the server's fault: 500, logged", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => logged.push(`${options.logLevel}: ${String(options.message)}`))
      const server = yield* NodeServer.serve((c) => Stream.runDrain(c.messages), {
        selectProtocol: (offered) => (offered.includes("v2") ? "v2" : "v1")
      }).pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
      const exchange = yield* rawExchange(server.address.port, upgradeRequest([...goodHeaders, "Sec-WebSocket-Protocol: v3"]))
      assert.strictEqual(statusLine(exchange.response), "HTTP/1.1 500 Internal Server Error")
      assert.isTrue(logged.some((line) => line.startsWith("Error") && line.includes("the request gets 500")), logged.join("\n"))
    }))

  it.live("selectProtocol is not asked when the client offers no subprotocol, as ws's handleProtocols", () =>
    Effect.gen(function*() {
      const asked: Array<ReadonlyArray<string>> = []
      const server = yield* NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), {
        selectProtocol: (offered) => {
          asked.push(offered)
          return offered.includes("v2") ? "v2" : "v1"
        }
      })
      const protocols = yield* Effect.promise(() =>
        Promise.all([[], ["v2"]].map((offer) =>
          new Promise<string>((resolve, reject) => {
            const ws = new WsClient(server.url, offer)
            ws.on("open", () => {
              resolve(ws.protocol)
              ws.close(1000)
            })
            ws.on("error", reject)
          })
        ))
      )
      assert.deepStrictEqual(protocols, ["", "v2"])
      assert.deepStrictEqual(asked, [["v2"]])
    }))

  it.live("without selectProtocol a server selects the client's first offer, as a ws server without handleProtocols does", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((c) => Effect.andThen(c.send(c.protocol), c.close(1000)))
      const protocols = yield* Effect.promise(() =>
        Promise.all([[], ["chat.v2", "chat.v1"]].map((offer) =>
          new Promise<string>((resolve, reject) => {
            const ws = new WsClient(server.url, offer)
            ws.on("message", (data) => resolve(`${ws.protocol}|${String(data)}`))
            ws.on("error", reject)
          })
        ))
      )
      assert.deepStrictEqual(protocols, ["|", "chat.v2|chat.v2"])
      const ours = yield* Effect.scoped(Effect.map(NodeClient.connect(server.url, { protocols: ["b", "a"] }), (c) => c.protocol))
      assert.strictEqual(ours, "b")
    }))

  it.live("a handler that returns something else than an Effect (an async function) closes its connection with 1011; shutdown still ends", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* Scope.provide(
        NodeServer.serve((async () => {}) as unknown as Client.Handler, { shutdownTimeout: "2 seconds" }),
        scope
      )
      const code = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const ws = new WsClient(server.url)
          ws.on("close", (code) => resolve(code))
          ws.on("error", () => {})
        })
      )
      assert.strictEqual(code, 1011)
      assert.strictEqual(yield* server.connections, 0)
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      assert.isBelow(Date.now() - started, 2500)
    }))

  it.live("an authorize hook that throws, dies, or fails with something else than a Rejection gets 500", () =>
    Effect.gen(function*() {
      const hooks: ReadonlyArray<() => Effect.Effect<void, NodeServer.Rejection>> = [
        () => {
          throw new Error("boom")
        },
        () => Effect.die("boom"),
        () => Effect.fail("no" as never),
        // a Rejection that cannot be built (a 200 is no refusal) throws inside the hook
        () => Effect.fail(new NodeServer.Rejection({ status: 200, message: "fine" })),
        // nor can one whose header would split the response
        () => Effect.fail(new NodeServer.Rejection({ status: 401, message: "no", headers: [{ name: "X", value: "a\r\nSet-Cookie: x=1" }] }))
      ]
      for (const authorize of hooks) {
        const server = yield* NodeServer.serve((c) => Stream.runDrain(c.messages), { authorize })
        const exchange = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders))
        assert.strictEqual(statusLine(exchange.response), "HTTP/1.1 500 Internal Server Error")
        assert.notInclude(exchange.response, "Set-Cookie")
      }
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None"))) // the hooks' failures are logged at length

  it.live("an authorize hook that ends by interruption while the server runs is its fault too: 500, logged, not a shutdown's 503", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => logged.push(String(options.message)))
      const failures = (reason: string) =>
        Effect.map(Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason })), (state) => Number(state.count))
      const server = yield* NodeServer.serve(() => Effect.void, {
        authorize: (request) =>
          request.url === "/join"
            // (a lookup whose fiber was interrupted elsewhere)
            ? Effect.gen(function*() {
              const lookup = yield* Effect.forkChild(Effect.never)
              yield* Fiber.interrupt(lookup)
              yield* Fiber.join(lookup)
            })
            : Effect.interrupt
      }).pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
      for (const path of ["/self", "/join"]) {
        const [serverErrors, shutdowns] = [yield* failures("ServerError"), yield* failures("ShuttingDown")]
        logged.length = 0
        const exchange = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders, `GET ${path} HTTP/1.1`))
        assert.strictEqual(statusLine(exchange.response), "HTTP/1.1 500 Internal Server Error", path)
        assert.deepStrictEqual(logged, ["WebSocket upgrade failed; the request gets 500"], path)
        assert.deepStrictEqual([yield* failures("ServerError"), yield* failures("ShuttingDown")], [serverErrors + 1, shutdowns], path)
      }
    }))

  it.live("a wrapTransport that throws or returns no Transport costs its connection only: logged, the socket released, shutdown in time", () =>
    Effect.gen(function*() {
      const wrappers: ReadonlyArray<(t: Transport.Transport) => Transport.Transport> = [
        () => {
          throw new Error("boom")
        },
        (async (t: Transport.Transport) => t) as never, // an async wrapper
        () => ({}) as never,
        () => undefined as never
      ]
      for (const wrapTransport of wrappers) {
        const logged: Array<string> = []
        const logger = Logger.make((options) => logged.push(Cause.pretty(options.cause) + String(options.message)))
        const scope = yield* Scope.make()
        const server = yield* Scope.provide(
          NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), { shutdownTimeout: "2 seconds", wrapTransport }),
          scope
        ).pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
        const exchange = yield* rawExchange(server.address.port, upgradeRequest(goodHeaders))
        assert.strictEqual(statusLine(exchange.response), "HTTP/1.1 101 Switching Protocols")
        assert.isBelow(exchange.closedAfterMs, 2000, "the socket was released")
        assert.strictEqual(yield* server.connections, 0)
        assert.isTrue(logged.some((line) => line.includes("wrapTransport")), logged.join("\n"))
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        assert.isBelow(Date.now() - started, 2500)
      }
    }))

  it.live("a handler's own failure is logged as an error even when it has the tag of a connection error; its connection's own failure, passed on, at debug level only", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => logged.push(`${options.logLevel}: ${String(options.message)}`))
      // application errors that share a tag with the connection's (an upstream that failed its
      // handshake, reset or closed, in a proxy), while the connection itself is fine
      const upstream: Record<string, WebSocketError.InvalidProtocolFormat | WebSocketError.InvalidProtocolOperation | Transport.TransportError> = {
        "/upstream": new WebSocketError.InvalidProtocolFormat({ message: "the upstream's Sec-WebSocket-Accept is wrong" }),
        "/upstream-reset": new Transport.TransportError({ message: "socket error: read ECONNRESET" }),
        "/upstream-closed": new WebSocketError.InvalidProtocolOperation({ operation: "send", state: "Closed", message: "the connection is closed" })
      }
      const server = yield* NodeServer.serve(
        (connection, request): Effect.Effect<void, unknown> =>
          request.url in upstream
            ? Effect.fail(upstream[request.url]!)
            : request.url === "/gone"
            // (its own send fails once the client has gone)
            ? Effect.forever(Effect.andThen(connection.send("tick"), Effect.sleep("5 millis")))
            : Stream.runDrain(connection.messages),
        { maxMessageSize: 10 }
      ).pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])), Effect.provideService(References.MinimumLogLevel, "All"))
      const closeCode = (path: string, message?: string) =>
        Effect.promise(() =>
          new Promise<number>((resolve) => {
            const ws = new WsClient(`${server.url.slice(0, -1)}${path}`)
            ws.on("open", () => message === undefined || ws.send(message))
            ws.on("close", (code) => resolve(code))
            ws.on("error", () => {})
          })
        )
      const handlerLogs = () => logged.filter((line) => line.includes("WebSocket"))
      for (const path of Object.keys(upstream)) {
        logged.length = 0
        assert.strictEqual(yield* closeCode(path), 1011, path)
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
        assert.deepStrictEqual(handlerLogs(), ["Error: WebSocket handler failed; closing its connection with 1011"], path)
      }
      logged.length = 0
      assert.strictEqual(yield* closeCode("/own", "more than ten bytes"), 1009)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
      assert.deepStrictEqual(handlerLogs(), ["Debug: WebSocket connection failed,InvalidProtocolFormat: message of at least 19 bytes exceeds the maximum message size of 10 bytes"])
      logged.length = 0
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const ws = new WsClient(`${server.url.slice(0, -1)}/gone`)
          ws.on("message", () => ws.terminate())
          ws.on("close", () => resolve())
          ws.on("error", () => {})
        })
      )
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
      const gone = handlerLogs()
      assert.strictEqual(gone.length, 1, gone.join("\n"))
      assert.match(gone[0]!, /^Debug: WebSocket connection failed,(TransportError|InvalidProtocolOperation): /)
    }))
})

describe("log annotations", () => {
  it.live("the server's own log lines about a request carry its path and the client's address, over sockets and in memory", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make((options) => {
        const annotations = options.fiber.getRef(References.CurrentLogAnnotations)
        const message = Array.isArray(options.message) ? options.message[0] : options.message
        logged.push(`${String(message)} | ${annotations["url.path"]} ${annotations["client.address"]}`)
      })
      const options = {
        authorize: (request: Client.UpgradeRequest) =>
          request.url.startsWith("/fault") ? Effect.die(new Error("authorize broke")) : Effect.void,
        wrapTransport: (transport: Transport.Transport) => {
          if (unwrappable) throw new Error("wrapTransport broke")
          return transport
        }
      }
      let unwrappable = false
      const handler = (_: Connection.Connection) => Effect.die(new Error("handler broke"))
      const withLogger = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        effect.pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
      const server = yield* withLogger(NodeServer.serve(handler, options))
      const closeCode = (path: string) =>
        Effect.promise(() =>
          new Promise<number>((resolve) => {
            const ws = new WsClient(`${server.url.slice(0, -1)}${path}`)
            ws.on("close", (code) => resolve(code))
            ws.on("unexpected-response", () => resolve(-1))
            ws.on("error", () => {})
          })
        )
      assert.strictEqual(yield* closeCode("/chat?token=secret"), 1011)
      assert.strictEqual(yield* closeCode("/fault"), -1)
      for (let i = 0; i < 100 && logged.length < 2; i++) yield* Effect.sleep("10 millis")
      unwrappable = true
      assert.strictEqual(yield* closeCode("/setup"), 1006)
      unwrappable = false
      for (let i = 0; i < 100 && logged.length < 3; i++) yield* Effect.sleep("10 millis")
      assert.deepStrictEqual(logged, [
        "WebSocket handler failed; closing its connection with 1011 | /chat 127.0.0.1",
        "WebSocket upgrade failed; the request gets 500 | /fault 127.0.0.1",
        "WebSocket connection setup failed; its socket is destroyed | /setup 127.0.0.1"
      ])
      logged.length = 0
      const context = yield* withLogger(Layer.build(Client.layerMemory(handler, options)))
      yield* Effect.scoped(Effect.provide(Client.connect("ws://memory/chat"), context).pipe(Effect.flatMap((c) => c.closed)))
      yield* Effect.ignore(Effect.scoped(Effect.provide(Client.connect("ws://memory/fault"), context)))
      unwrappable = true
      yield* Effect.scoped(Effect.provide(Client.connect("ws://memory/setup"), context).pipe(Effect.flatMap((c) => c.closed)))
      for (let i = 0; i < 100 && logged.length < 3; i++) yield* Effect.sleep("10 millis")
      assert.deepStrictEqual(logged, [
        "WebSocket handler failed; closing its connection with 1011 | /chat memory",
        "WebSocket upgrade failed; the request gets 500 | /fault memory",
        "WebSocket connection setup failed; its transport is closed | /setup memory"
      ])
    }))
})

describe("any options", () => {
  /** Values of every kind an untyped caller might pass, good and bad. */
  const VALUES: ReadonlyArray<unknown> = [
    0, 1, -1, 1.5, 300, 65536, 1005, 4000, Number.NaN, Number.POSITIVE_INFINITY, -Infinity,
    "abc", "50 millis", "2 seconds", "ping", "pong", null, {}, [], true, Duration.millis(20), { seconds: 1 }, "/", "/x?y",
    [{ name: "X-A", value: "1" }], [{ name: "Upgrade", value: "h2c" }]
  ]
  const PATHS = [
    "maxMessageSize", "handshakeTimeout", "shutdownTimeout", "maxHeaderBytes", "port",
    "properties.receiveBufferSize", "properties.sendBufferSize", "properties.disableUtf8Verification",
    "connection.closeTimeout", "connection.messageBuffer", "connection.closeCodeOnScopeClose",
    "connection.keepalive.interval", "connection.keepalive.timeout", "connection.keepalive.frame",
    "socketBuffers.highWaterMark", "socketBuffers.writeBufferLimit", "path", "responseHeaders", "maxHeaderBytes"
  ] as const
  const TYPED = new Set(["InvalidParameter", "ServeError"])
  /** What the runs did, for the coverage check after them. */
  const seen = { refused: 0, served: 0 }

  it.live.prop(
    "a server started with any options either fails with a typed error or serves, and shuts down in time",
    { options: anyOptions(PATHS, VALUES) },
    ({ options }) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const started = yield* Effect.exit(Scope.provide(
          NodeServer.serve((c) => Stream.runForEach(c.messages, (m) => c.send(m)), options as NodeServer.ServeOptions),
          scope
        ))
        if (Exit.isFailure(started)) {
          yield* Scope.close(scope, Exit.void)
          const tags = failureTags(started.cause.reasons)
          assert.isTrue(tags.length > 0 && tags.every((tag) => TYPED.has(tag)), `${JSON.stringify(options)}: ${tags.join(", ")}`)
          seen.refused++
          return
        }
        const outcome = yield* Effect.promise(() =>
          new Promise<string>((resolve) => {
            const ws = new WsClient(started.value.url)
            const timer = setTimeout(() => resolve("no answer within 5 s"), 5000)
            const done = (what: string) => {
              clearTimeout(timer)
              ws.terminate()
              resolve(what)
            }
            ws.on("open", () => ws.send("x"))
            ws.on("message", (data) => done(String(data) === "x" ? "echo" : "wrong echo"))
            ws.on("unexpected-response", (_request, response) => done(`refused ${response.statusCode}`))
            ws.on("error", () => done("error"))
          })
        )
        // a request header limit below the request's size refuses it (431); any other accepted
        // options must serve
        assert.match(outcome, /^(echo|refused 431)$/, JSON.stringify(options))
        seen.served++
        const closing = Date.now()
        yield* Scope.close(scope, Exit.void)
        assert.isBelow(Date.now() - closing, 3000, JSON.stringify(options))
      }),
    { timeout: 60_000, arbitrary: { runs: 150 } }
  )

  it("the runs above covered both outcomes", () => {
    assert.isAtLeast(seen.refused, 5, JSON.stringify(seen))
    assert.isAtLeast(seen.served, 5, JSON.stringify(seen))
  })
})

describe("TLS settings", () => {
  it.live("an invalid certificate is an InvalidParameter naming tls (as for a client), not a crash", () =>
    Effect.gen(function*() {
      for (const tls of [{ cert: "not a certificate", key: "not a key" }, { cert: 42, key: "k" }, { pfx: "p", minVersion: "TLSv9" }]) {
        const error = yield* Effect.flip(NodeServer.serve(() => Effect.void, { tls: tls as never }))
        assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" && error.parameter], ["InvalidParameter", "tls"])
        assert.match(error.message, /^tls: /)
      }
    }))

  it.live("with tls, a client that sends its request and ends its side at once still gets its 101 (while authorize runs, its end comes)", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      // (a TLS socket ends the server's side with the client's by default: the answer would be lost)
      const server = yield* NodeServer.serve(() => Effect.void, { tls: { cert, key }, authorize: () => Effect.sleep("50 millis") })
      const response = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          let text = ""
          const socket = Tls.connect({ port: server.address.port, host: "127.0.0.1", rejectUnauthorized: false }, () => {
            socket.write(upgradeRequest(goodHeaders))
            socket.end()
          })
          socket.on("error", () => {})
          socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")))
          const cut = setTimeout(() => socket.destroy(), 5000)
          socket.on("close", () => {
            clearTimeout(cut)
            resolve(text)
          })
        })
      )
      assert.match(statusLine(response)!, /^HTTP\/1.1 101/)
    }))

  it.live("with tls, a client that speaks plain HTTP or breaks the TLS handshake is dropped: no HTTP answer, no refused request counted", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const server = yield* NodeServer.serve(() => Effect.void, { tls: { cert, key } })
      const badRequests = Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason: "BadRequest" }))
      const before = Number((yield* badRequests).count)
      for (const bytes of [upgradeRequest(goodHeaders), "\x16\x03\x01\x00\x05hello"]) {
        const { response } = yield* rawExchange(server.address.port, bytes, { endAfterMs: 3000 })
        assert.notInclude(response, "HTTP/1.1", JSON.stringify(bytes))
      }
      assert.strictEqual(Number((yield* badRequests).count), before)
    }))

  it.live("with tls, a client that never starts its TLS handshake is dropped after the handshake timeout too (408 counted), not Node's two minutes", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      // (or after tls's own handshakeTimeout, when it has one)
      const servers = [
        NodeServer.serve(() => Effect.void, { tls: { cert, key }, handshakeTimeout: "300 millis" }),
        NodeServer.serve(() => Effect.void, { tls: { cert, key, handshakeTimeout: 300 }, handshakeTimeout: "20 seconds" })
      ]
      for (const serve of servers) {
        const server = yield* serve
        const timeouts = Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason: "RequestTimeout" }))
        const before = Number((yield* timeouts).count)
        const started = Date.now()
        const closedAfter = yield* Effect.promise(() =>
          new Promise<number>((resolve) => {
            const socket = Net.connect(server.address.port, "127.0.0.1") // says nothing, TLS or else
            socket.on("error", () => {})
            const cut = setTimeout(() => socket.destroy(), 5000)
            socket.on("close", () => {
              clearTimeout(cut)
              resolve(Date.now() - started)
            })
          })
        )
        assert.isBelow(closedAfter, 2000, "dropped at the handshake timeout")
        assert.strictEqual(Number((yield* timeouts).count) - before, 1)
      }
    }), 30_000)
})

describe("connection churn", () => {
  /** A masked frame (the masking key is zero, so the payload reads as is). */
  const maskedFrame = (opcode: number, payload: Uint8Array) =>
    Buffer.concat([Uint8Array.of(0x80 | opcode, 0x80 | payload.length, 0, 0, 0, 0), payload])

  /** How a client behaves: every way a connection can end, well or badly, at any stage. */
  const BEHAVIOURS = [
    "echo and close",
    "half a frame, then gone",
    "a frame, then FIN",
    "half a request, then gone",
    "half a request, then FIN",
    "upgraded, then gone",
    "garbage, then gone",
    "a Close, then gone before the answer",
    "the request and FIN at once"
  ] as const

  /** Runs one client of the given behaviour to its end (the socket closed), bounded. */
  const client = (port: number, behaviour: (typeof BEHAVIOURS)[number], delay: number) =>
    Effect.callback<void>((resume) => {
      const socket = Net.connect(port, "127.0.0.1")
      let response = Buffer.alloc(0)
      let upgraded = false
      const timer = setTimeout(() => socket.destroy(), 5000)
      socket.on("error", () => {})
      socket.on("close", () => {
        clearTimeout(timer)
        resume(Effect.void)
      })
      const request = upgradeRequest(goodHeaders)
      const half = behaviour.startsWith("half a request")
      socket.on("data", (chunk: Buffer) => {
        response = Buffer.concat([response, chunk])
        if (half || upgraded || response.indexOf("\r\n\r\n") < 0) return
        upgraded = true
        setTimeout(() => {
          switch (behaviour) {
            case "echo and close":
              socket.write(maskedFrame(0x1, Buffer.from("hello")))
              socket.write(maskedFrame(0x8, Uint8Array.of(0x03, 0xe8)))
              return // the server answers the Close and closes the socket
            case "half a frame, then gone":
              socket.write(maskedFrame(0x2, new Uint8Array(100)).subarray(0, 50))
              return void setTimeout(() => socket.destroy(), delay)
            case "a frame, then FIN":
              socket.write(maskedFrame(0x2, new Uint8Array(10)))
              return void socket.end()
            case "upgraded, then gone":
              return void socket.destroy()
            case "garbage, then gone":
              socket.write(Buffer.from("\x00\xff garbage"))
              return void setTimeout(() => socket.destroy(), delay)
            case "a Close, then gone before the answer":
              socket.write(maskedFrame(0x8, Uint8Array.of(0x03, 0xe8)))
              return void socket.destroy()
            default:
              return // the server ends the connection
          }
        }, delay)
      })
      if (half) {
        socket.write(request.slice(0, 30))
        setTimeout(() => (behaviour.endsWith("gone") ? socket.destroy() : socket.end()), delay)
      } else {
        socket.write(request)
        if (behaviour === "the request and FIN at once") socket.end()
      }
    })

  const tcpSockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length

  it.live.prop(
    "whatever the clients do, every connection and socket of the server is released",
    { clients: Arbitrary.array(Arbitrary.all([int(0, BEHAVIOURS.length - 1), int(0, 20)]), { minLength: 1, maxLength: 20 }) },
    ({ clients }) =>
      Effect.gen(function*() {
        // sockets of the run before may still be lingering (at most a second)
        for (let i = 0; i < 150 && tcpSockets() > 0; i++) yield* Effect.sleep("10 millis")
        const before = tcpSockets()
        const server = yield* NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)))
        yield* Effect.forEach(clients, ([behaviour, delay]) => client(server.address.port, BEHAVIOURS[behaviour]!, delay), {
          concurrency: "unbounded",
          discard: true
        })
        // the lingering close waits at most a second for a peer that went away
        for (let i = 0; i < 300 && ((yield* server.connections) > 0 || tcpSockets() > before); i++) {
          yield* Effect.sleep("10 millis")
        }
        assert.strictEqual(yield* server.connections, 0, "handlers still running")
        assert.strictEqual(tcpSockets(), before, "sockets still open")
      }),
    // (generated lists grow with the check's size, 10 by default: up to the 20 clients)
    { timeout: 120_000, arbitrary: { runs: 30, size: 40 } }
  )

  it.live.prop(
    "shutting the server down at any moment, whatever the clients are doing, ends in time and releases every socket",
    {
      clients: Arbitrary.array(Arbitrary.all([int(0, BEHAVIOURS.length - 1), int(0, 20)]), { minLength: 1, maxLength: 12 }),
      shutdownAfter: int(0, 30)
    },
    ({ clients, shutdownAfter }) =>
      Effect.gen(function*() {
        for (let i = 0; i < 150 && tcpSockets() > 0; i++) yield* Effect.sleep("10 millis")
        const before = tcpSockets()
        const scope = yield* Scope.make()
        const server = yield* NodeServer.serve(
          (connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)),
          { shutdownTimeout: "500 millis" }
        ).pipe(Scope.provide(scope))
        const running = yield* Effect.forkChild(
          Effect.forEach(clients, ([behaviour, delay]) => client(server.address.port, BEHAVIOURS[behaviour]!, delay), {
            concurrency: "unbounded",
            discard: true
          })
        )
        yield* Effect.sleep(shutdownAfter)
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        // the shutdown timeout, plus the lingering close of a socket whose peer went silent
        assert.isBelow(Date.now() - started, 500 + 2500, "shutdown took too long")
        yield* Effect.timeout(Fiber.join(running), "6 seconds")
        for (let i = 0; i < 300 && tcpSockets() > before; i++) yield* Effect.sleep("10 millis")
        assert.strictEqual(tcpSockets(), before, "sockets still open")
      }),
    // (generated lists grow with the check's size, 10 by default: up to the 12 clients)
    { timeout: 120_000, arbitrary: { runs: 25, size: 24 } }
  )
})
