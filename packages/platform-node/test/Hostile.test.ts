/**
 * Hostile and pathological peers over real loopback sockets, and many connections at once: raw
 * `node:net` peers that flood, trickle, never read, reset, or answer with broken frames. Whatever
 * they do, we end with a typed error or the right close code, in bounded time and memory.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Scope, Stream } from "effect"
import { createHash } from "node:crypto"
import * as Http from "node:http"
import * as Net from "node:net"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import { WebSocket as WsClient } from "ws"
import { Client, type Connection } from "@effect-websocket/core"
import { NodeClient, NodeServer } from "../src/index.ts"

const KEY = "dGhlIHNhbXBsZSBub25jZQ=="
const UPGRADE = [
  "GET / HTTP/1.1",
  "Host: 127.0.0.1",
  "Upgrade: websocket",
  "Connection: Upgrade",
  `Sec-WebSocket-Key: ${KEY}`,
  "Sec-WebSocket-Version: 13",
  "",
  ""
].join("\r\n")

const acceptOf = (key: string) => createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")

/**
 * A frame: masked with a zero key (the payload reads as it is) as a client sends it, unmasked
 * with `server`; `announced` overrides the length in the header.
 */
const frame = (
  opcode: number,
  payload: Uint8Array = new Uint8Array(0),
  options?: { readonly fin?: boolean; readonly announced?: bigint; readonly server?: boolean }
): Buffer => {
  const length = options?.announced ?? BigInt(payload.length)
  const mask = options?.server === true ? 0 : 0x80
  const header: Array<number> = [(options?.fin === false ? 0 : 0x80) | opcode]
  if (length < 126n) header.push(mask | Number(length))
  else if (length < 65536n) header.push(mask | 126, Number(length >> 8n), Number(length & 0xffn))
  else {
    header.push(mask | 127)
    for (let i = 7; i >= 0; i--) header.push(Number((length >> BigInt(8 * i)) & 0xffn))
  }
  if (mask !== 0) header.push(0, 0, 0, 0)
  return Buffer.concat([Buffer.from(header), payload])
}

/** The whole frames (unmasked, as a server sends them) at the start of `bytes`. */
const parseFrames = (bytes: Buffer): Array<{ readonly opcode: number; readonly payload: Buffer }> => {
  const frames: Array<{ opcode: number; payload: Buffer }> = []
  let i = 0
  while (i + 2 <= bytes.length) {
    let length = bytes[i + 1]! & 0x7f
    let at = i + 2
    if (length === 126) {
      if (at + 2 > bytes.length) break
      length = bytes.readUInt16BE(at)
      at += 2
    } else if (length === 127) {
      if (at + 8 > bytes.length) break
      length = Number(bytes.readBigUInt64BE(at))
      at += 8
    }
    if (at + length > bytes.length) break
    frames.push({ opcode: bytes[i]! & 0x0f, payload: bytes.subarray(at, at + length) })
    i = at + length
  }
  return frames
}

const closeCodes = (bytes: Buffer) => parseFrames(bytes).filter((f) => f.opcode === 0x8).map((f) => f.payload.readUInt16BE(0))

interface RawPeer {
  readonly socket: Net.Socket
  /** What the server sent after the headers of its 101 (while the peer reads). */
  readonly received: () => Buffer
  readonly closed: Promise<void>
}

/**
 * A raw TCP client that sends the upgrade request (and `withRequest` in the same write) and waits
 * for the 101; with `read: false` it reads nothing more after it. Destroyed with the test's scope.
 */
const rawUpgrade = (port: number, options?: { readonly withRequest?: Uint8Array; readonly read?: boolean }) =>
  Effect.acquireRelease(
    Effect.callback<RawPeer>((resume) => {
      const socket = Net.connect(port, "127.0.0.1")
      socket.on("error", () => {})
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
      let buffer = Buffer.alloc(0)
      let upgraded = false
      const onData = (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk])
        if (upgraded) return
        const end = buffer.indexOf("\r\n\r\n")
        if (end < 0) return
        upgraded = true
        assert.match(buffer.subarray(0, end).toString("latin1"), /^HTTP\/1.1 101 /)
        buffer = buffer.subarray(end + 4)
        if (options?.read === false) {
          socket.off("data", onData)
          socket.pause()
        }
        resume(Effect.succeed({ socket, received: () => buffer, closed }))
      }
      socket.on("data", onData)
      socket.write(options?.withRequest === undefined ? UPGRADE : Buffer.concat([Buffer.from(UPGRADE), options.withRequest]))
    }),
    (peer) => Effect.sync(() => peer.socket.destroy())
  )

/** Writes `bytes` to `socket`, waiting (at most `ms`) for the socket to drain; false when it did not. */
const writeDrained = (socket: Net.Socket, bytes: Uint8Array, ms: number) =>
  socket.write(bytes)
    ? Effect.succeed(true)
    : Effect.map(
      Effect.timeoutOption(Effect.callback<void>((resume) => void socket.once("drain", () => resume(Effect.void))), ms),
      (drained) => drained._tag === "Some"
    )

/** A loopback TCP server running `onSocket` for every connection, closed with the test's scope. */
const rawServer = (onSocket: (socket: Net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.callback<Net.Server>((resume) => {
      const server = Net.createServer((socket) => {
        socket.on("error", () => {})
        onSocket(socket)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  ).pipe(Effect.map((server) => (server.address() as Net.AddressInfo).port))

/** Answers the upgrade request that comes first on `socket` with a good 101, followed by `then`. */
const answer101 = (socket: Net.Socket, then: (socket: Net.Socket, response: Buffer) => void) =>
  socket.once("data", (request: Buffer) => {
    const key = /Sec-WebSocket-Key: *([^\r\n]*)/i.exec(request.toString("latin1"))![1]!
    const response = Buffer.from(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`
    )
    then(socket, response)
  })

const tcpSockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length

const waitUntil = (condition: () => boolean, ms: number) =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (!condition() && Date.now() < deadline) yield* Effect.sleep("10 millis")
    return condition()
  })

V8.setFlagsFromString("--expose-gc")
const gc = Vm.runInNewContext("gc") as () => void

/** Memory once garbage is collected (twice, a moment apart: buffers are released after the collection that finds them). */
const settledMemory = Effect.gen(function*() {
  gc()
  yield* Effect.sleep("30 millis")
  gc()
  const usage = process.memoryUsage()
  return { heap: usage.heapUsed, external: usage.external }
})

const MiB = 1024 * 1024

describe("peers that flood", () => {
  it.live("pings flooded by a peer that never reads the pongs: all read, memory bounded, close bounded by its timeout", () =>
    Effect.gen(function*() {
      const accepted = yield* Deferred.make<Connection.Connection>()
      const server = yield* NodeServer.serve(
        (connection) => Effect.andThen(Deferred.succeed(accepted, connection), Stream.runDrain(connection.messages)),
        { connection: { closeTimeout: "500 millis" } }
      )
      const peer = yield* rawUpgrade(server.address.port, { read: false })
      const connection = yield* Deferred.await(accepted)
      const before = yield* settledMemory
      // 100,000 pings of 125 bytes (12 MiB of pongs to answer): far more than the socket buffers hold
      const batch = Buffer.concat(Array.from({ length: 1000 }, () => frame(0x9, new Uint8Array(125).fill(7))))
      for (let i = 0; i < 100; i++) assert.isTrue(yield* writeDrained(peer.socket, batch, 5000), `the server stopped reading at batch ${i}`)
      assert.isTrue(yield* waitUntil(() => connection.stats.pingsIn === 100_000, 5000), `pings read: ${connection.stats.pingsIn}`)
      const after = yield* settledMemory
      assert.isBelow(after.external - before.external, 16 * MiB, "pongs piled up in memory")
      assert.isBelow(after.heap - before.heap, 16 * MiB, "pongs piled up in the heap")
      // our Close cannot reach a peer that reads nothing: the close timeout ends it
      const started = Date.now()
      const info = yield* connection.close(1000)
      assert.strictEqual(info.code, 1006)
      assert.isBelow(Date.now() - started, 2000)
    }), 30_000)

  it.live("a message in 1-byte fragments up to maxMessageSize arrives whole; one byte more closes with 1009", () =>
    Effect.gen(function*() {
      const maxMessageSize = 128 * 1024
      const received: Array<number> = []
      const server = yield* NodeServer.serve(
        (connection) => Stream.runForEach(connection.messages, (m) => Effect.sync(() => received.push(m.length))),
        { maxMessageSize }
      )
      const fragmented = (size: number) => {
        const one = Uint8Array.of(0x41)
        const frames = [frame(0x2, one, { fin: false })]
        for (let i = 1; i < size; i++) frames.push(frame(0x0, one, { fin: false }))
        frames.push(frame(0x0, undefined, { fin: true })) // an empty final fragment
        return Buffer.concat(frames)
      }
      const peer = yield* rawUpgrade(server.address.port)
      peer.socket.write(fragmented(maxMessageSize))
      assert.isTrue(yield* waitUntil(() => received.length === 1, 10_000), "the message never arrived")
      assert.deepStrictEqual(received, [maxMessageSize])
      peer.socket.write(fragmented(maxMessageSize + 1))
      yield* Effect.promise(() => peer.closed)
      assert.deepStrictEqual(closeCodes(peer.received()), [1009])
      assert.deepStrictEqual(received, [maxMessageSize])
    }), 30_000)

  it.live("after large messages, connections that go on with small ones or go quiet keep no buffer of their size", () =>
    Effect.gen(function*() {
      let count = 0
      const server = yield* NodeServer.serve(
        (connection) => Stream.runForEach(connection.messages, () => Effect.sync(() => count++)),
        { maxMessageSize: 32 * MiB }
      )
      const large = 16 * MiB
      const before = yield* settledMemory
      let expected = 0
      const kinds = [
        [0x2, 20],
        [0x2, 0],
        [0x1, 20],
        [0x1, 0]
      ] as const
      for (const [opcode, small] of kinds) {
        const peer = yield* rawUpgrade(server.address.port)
        // one that fills the handle's receive buffer first (the usual case), then large ones
        peer.socket.write(frame(0x2, new Uint8Array(100)))
        for (let i = 0; i < 2; i++) peer.socket.write(frame(opcode, new Uint8Array(large).fill(0x61)))
        for (let i = 0; i < small; i++) peer.socket.write(frame(opcode, Uint8Array.of(0x61)))
        expected += 3 + small
        assert.isTrue(yield* waitUntil(() => count === expected, 10_000), `${count} of ${expected} messages`)
      }
      // The connections are open, their messages handled: nothing of them needs to stay (the
      // least of a few looks: what the peers wrote may take a moment to be released).
      let retained = Infinity
      for (let i = 0; i < 5; i++) {
        yield* Effect.sleep("50 millis")
        retained = Math.min(retained, (yield* settledMemory).external - before.external)
      }
      assert.isBelow(retained, 24 * MiB, "quiet connections hold buffers of their last large messages")
    }), 30_000)
})

describe("abusive handshakes", () => {
  it.live("200 clients trickling their headers are all dropped at the handshake timeout; none reaches the handler", () =>
    Effect.gen(function*() {
      let reached = 0
      const server = yield* NodeServer.serve(() => Effect.sync(() => reached++), { handshakeTimeout: "500 millis" })
      const before = tcpSockets()
      const started = Date.now()
      const closedAfter: Array<number> = []
      const statuses = new Set<string>()
      for (let i = 0; i < 200; i++) {
        const socket = Net.connect(server.address.port, "127.0.0.1")
        socket.on("error", () => {})
        let response = ""
        socket.on("data", (chunk) => (response += chunk.toString("latin1")))
        const trickle = setInterval(() => socket.writable && socket.write("a"), 50)
        socket.on("close", () => {
          clearInterval(trickle)
          closedAfter.push(Date.now() - started)
          statuses.add(response.split("\r\n")[0]!)
        })
        socket.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Slow: ")
      }
      assert.isTrue(yield* waitUntil(() => closedAfter.length === 200, 5000), `${closedAfter.length} of 200 dropped`)
      // (Node checks its request timeouts on an interval, here a quarter of the handshake timeout)
      assert.isAtLeast(Math.min(...closedAfter), 450)
      assert.isBelow(Math.max(...closedAfter), 900)
      // (a client whose answer is lost to a reset may see none)
      assert.deepStrictEqual([...statuses].filter((status) => status !== ""), ["HTTP/1.1 408 Request Timeout"])
      assert.strictEqual(reached, 0)
      assert.isTrue(yield* waitUntil(() => tcpSockets() <= before, 2000), "sockets still open")
    }), 30_000)

  it.live("a refused client that never ends its side does not hold its socket: the server destroys it a moment after its answer", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(() => Effect.void)
      // refused by the upgrade handler (405), by Node's parser (400), and after a 426 (a pipelined upgrade)
      const requests = [
        UPGRADE.replace("GET ", "POST "),
        "NOT HTTP AT ALL\r\n\r\n",
        `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n${UPGRADE}`
      ]
      for (const request of requests) {
        const before = tcpSockets()
        const socket = Net.connect({ port: server.address.port, host: "127.0.0.1", allowHalfOpen: true })
        socket.on("error", () => {})
        yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
        const ended = new Promise<string>((resolve) => {
          let text = ""
          socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")))
          socket.on("end", () => resolve(text)) // (and the client keeps its side open)
        })
        socket.write(request)
        const response = yield* Effect.promise(() => ended)
        assert.match(response, /^HTTP\/1.1 (405|400|426) /, request)
        // the client's socket and the server's: the server's goes, the client's stays
        assert.isTrue(yield* waitUntil(() => tcpSockets() <= before + 1, 3000), `the server kept its socket: ${JSON.stringify(request)}`)
        socket.destroy()
      }
    }))

  it.live("too many headers get 431 and the server goes on serving", () =>
    Effect.gen(function*() {
      // (the raw peer does not answer the Close: the close timeout ends it)
      const server = yield* NodeServer.serve((connection) => connection.close(1000), { connection: { closeTimeout: "100 millis" } })
      const request = (lines: ReadonlyArray<string>) => UPGRADE.replace("\r\n\r\n", `\r\n${lines.join("\r\n")}\r\n\r\n`)
      for (const lines of [Array.from({ length: 2100 }, (_, i) => `X-${i}: a`), [`X-Big: ${"a".repeat(100_000)}`]]) {
        const response = yield* Effect.promise(() =>
          new Promise<string>((resolve) => {
            const socket = Net.connect(server.address.port, "127.0.0.1")
            let text = ""
            socket.on("data", (chunk) => (text += chunk.toString("latin1")))
            socket.on("error", () => {})
            socket.on("close", () => resolve(text))
            socket.write(request(lines))
          })
        )
        assert.match(response, /^HTTP\/1.1 431 /)
      }
      const peer = yield* rawUpgrade(server.address.port)
      yield* Effect.promise(() => peer.closed)
      assert.deepStrictEqual(closeCodes(peer.received()), [1000])
    }), 30_000)

  it.live("an upgrade request with more header lines than its server's maxHeadersCount gets 431 (Node 22 hands it on, the rest cut off)", () =>
    Effect.gen(function*() {
      const onUpgrade = yield* NodeServer.makeUpgradeHandler(() => Effect.void)
      /** What a client gets for an upgrade request of `extra` more header lines, handed on as Node's parser would. */
      const answer = (extra: number, maxHeadersCount: number | undefined) =>
        Effect.promise(() =>
          new Promise<string>((resolve) => {
            const server = Net.createServer((socket) => {
              ;(server as unknown as { maxHeadersCount?: number | undefined }).maxHeadersCount = maxHeadersCount
              const req = new Http.IncomingMessage(socket)
              const lines = UPGRADE.split("\r\n").slice(1, -2).concat(Array.from({ length: extra }, (_, i) => `X-${i}: a`))
              Object.assign(req, {
                method: "GET",
                url: "/",
                httpVersionMajor: 1,
                httpVersionMinor: 1,
                rawHeaders: lines.flatMap((line) => line.split(": ")),
                headers: Object.fromEntries(lines.map((line) => line.toLowerCase().split(": ")))
              })
              onUpgrade(req, socket, Buffer.alloc(0))
            })
            server.listen(0, "127.0.0.1", () => {
              const client = Net.connect((server.address() as Net.AddressInfo).port, "127.0.0.1")
              let text = ""
              client.on("error", () => {})
              client.on("data", (chunk) => {
                text += chunk.toString("latin1")
                if (!text.includes("\r\n")) return
                client.destroy()
                server.close()
                resolve(text.split("\r\n")[0]!)
              })
            })
          })
        )
      // the request has 5 header lines of its own: 1000 lines in all are served, 1001 are not
      assert.strictEqual(yield* answer(995, undefined), "HTTP/1.1 101 Switching Protocols")
      assert.strictEqual(yield* answer(996, undefined), "HTTP/1.1 431 Request Header Fields Too Large")
      assert.strictEqual(yield* answer(1018, 2000), "HTTP/1.1 101 Switching Protocols")
      // as Node's parser reads maxHeadersCount: none for 0 or less as a 32-bit integer, 1500 for 1500.5
      for (const none of [0, -1, Infinity, NaN, 1500.5]) {
        assert.strictEqual(yield* answer(1018, none), "HTTP/1.1 101 Switching Protocols", `maxHeadersCount ${none}`)
      }
      // and modulo 2^32, as a 32-bit integer: 2^32 + 1000 is 1000
      assert.strictEqual(yield* answer(995, 2 ** 32 + 1000), "HTTP/1.1 101 Switching Protocols")
      assert.strictEqual(yield* answer(996, 2 ** 32 + 1000), "HTTP/1.1 431 Request Header Fields Too Large")
    }))

  it.live("frames that come with the upgrade request, or while authorize runs, are all delivered", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)), {
        authorize: (request) => (request.url === "/slow" ? Effect.sleep("100 millis") : Effect.void)
      })
      const messages = (tag: string) => Array.from({ length: 10 }, (_, i) => `${tag}-${i}`)
      const echoed = (peer: RawPeer) => parseFrames(peer.received()).filter((f) => f.opcode === 0x1).map((f) => f.payload.toString())
      // in the same write as the request, with the Close behind them
      for (let round = 0; round < 5; round++) {
        const texts = messages(`with-${round}`)
        const peer = yield* rawUpgrade(server.address.port, {
          withRequest: Buffer.concat([...texts.map((t) => frame(0x1, Buffer.from(t))), frame(0x8, Uint8Array.of(0x03, 0xe8))])
        })
        yield* Effect.promise(() => peer.closed)
        assert.deepStrictEqual(echoed(peer), texts)
        assert.deepStrictEqual(closeCodes(peer.received()), [1000])
      }
      // while authorize still runs: the socket is nobody's yet
      const socket = Net.connect(server.address.port, "127.0.0.1")
      socket.on("error", () => {})
      let bytes = Buffer.alloc(0)
      socket.on("data", (chunk) => (bytes = Buffer.concat([bytes, chunk])))
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
      socket.write(UPGRADE.replace("GET / ", "GET /slow "))
      const texts = messages("during")
      for (const text of texts) {
        yield* Effect.sleep("5 millis")
        socket.write(frame(0x1, Buffer.from(text)))
      }
      socket.write(frame(0x8, Uint8Array.of(0x03, 0xe8)))
      yield* Effect.promise(() => closed)
      const body = bytes.subarray(bytes.indexOf("\r\n\r\n") + 4)
      assert.deepStrictEqual(parseFrames(body).filter((f) => f.opcode === 0x1).map((f) => f.payload.toString()), texts)
    }), 30_000)

  it.live("a frame whose first byte alone came with the upgrade request, its rest later, is read whole", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)))
      const socket = Net.connect(server.address.port, "127.0.0.1")
      socket.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      let bytes = Buffer.alloc(0)
      socket.on("data", (chunk: Buffer) => (bytes = Buffer.concat([bytes, chunk])))
      const text = frame(0x1, Buffer.from("hello"))
      socket.write(Buffer.concat([Buffer.from(UPGRADE), text.subarray(0, 1)]))
      // the 101 is out (the byte went with the request to the upgrade): the rest of the frame comes on its own
      assert.isTrue(yield* waitUntil(() => bytes.includes("\r\n\r\n"), 2000), "no 101")
      socket.write(text.subarray(1))
      const echo = frame(0x1, Buffer.from("hello"), { server: true })
      yield* waitUntil(() => bytes.includes(echo), 2000)
      assert.match(bytes.toString("latin1"), /^HTTP\/1.1 101 /)
      assert.isTrue(bytes.subarray(bytes.indexOf("\r\n\r\n") + 4).equals(echo), "the message came back whole")
    }))

  it.live("a reset in the middle of a frame or of the closing handshake ends the connection with 1006 and a TransportError", () =>
    Effect.gen(function*() {
      const outcomes: Array<string> = []
      const server = yield* NodeServer.serve((connection) =>
        Effect.gen(function*() {
          const read = yield* Effect.exit(Stream.runDrain(connection.messages))
          const info = yield* connection.closed
          outcomes.push(`${info.code} ${Exit.isFailure(read) ? Exit.findErrorOption(read).pipe((e) => (e._tag === "Some" ? e.value._tag : "defect")) : "ended"}`)
        })
      )
      const before = tcpSockets()
      for (let i = 0; i < 10; i++) {
        // half a frame, or half a Close, then a reset
        const cut = i % 2 === 0 ? frame(0x2, new Uint8Array(1000)).subarray(0, 500) : frame(0x8, Uint8Array.of(0x03, 0xe8, 0x41)).subarray(0, 4)
        const peer = yield* rawUpgrade(server.address.port)
        peer.socket.write(cut)
        yield* Effect.sleep("10 millis")
        peer.socket.resetAndDestroy()
      }
      assert.isTrue(yield* waitUntil(() => outcomes.length === 10, 5000), `${outcomes.length} of 10 connections ended`)
      assert.deepStrictEqual([...new Set(outcomes)], ["1006 TransportError"])
      assert.strictEqual(yield* server.connections, 0)
      assert.isTrue(yield* waitUntil(() => tcpSockets() <= before, 2000), "sockets still open")
    }), 30_000)
})

describe("at scale", () => {
  it.live("a server keeps no socket of a connection that ended (nor of a refused request): they are garbage once closed", () =>
    Effect.gen(function*() {
      const sockets: Array<WeakRef<object>> = []
      const server = yield* NodeServer.serve((connection) => connection.close(1000), {
        authorize: (request) =>
          Effect.suspend(() => {
            sockets.push(new WeakRef(NodeServer.incomingMessage(request)!.socket))
            return request.url === "/refused" ? Effect.fail(new NodeServer.Rejection({ status: 403, message: "no" })) : Effect.void
          })
      })
      for (const path of ["", "refused"]) {
        const code = yield* Effect.promise(() =>
          new Promise<number>((resolve) => {
            const ws = new WsClient(server.url + path)
            ws.on("error", () => {})
            ws.on("close", (code) => resolve(code))
          })
        )
        assert.strictEqual(code, path === "" ? 1000 : 1006)
      }
      yield* Effect.sleep("50 millis")
      const collected = () => sockets.every((socket) => socket.deref() === undefined)
      for (let i = 0; i < 20 && !collected(); i++) yield* settledMemory
      assert.strictEqual(sockets.length, 2)
      assert.isTrue(collected(), "a closed socket is still held")
    }))

  it.live("300 ws clients exchange messages; shutting down gives each 1001 in bounded time, leaves no socket, and rounds do not grow the heap", () =>
    Effect.gen(function*() {
      const heaps: Array<number> = []
      for (let round = 0; round < 3; round++) {
        const before = tcpSockets()
        const scope = yield* Scope.make()
        const server = yield* NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m))).pipe(
          Scope.provide(scope)
        )
        const codes: Array<number> = []
        const clients = Array.from({ length: 300 }, (_, i) =>
          new Promise<void>((resolve, reject) => {
            const ws = new WsClient(server.url)
            const echoes: Array<string> = []
            ws.on("open", () => {
              for (let j = 0; j < 10; j++) ws.send(`${i}-${j}`)
            })
            ws.on("message", (data) => {
              echoes.push(String(data))
              if (echoes.length === 10) {
                assert.deepStrictEqual(echoes, Array.from({ length: 10 }, (_, j) => `${i}-${j}`))
                resolve()
              }
            })
            ws.on("close", (code) => codes.push(code))
            ws.on("error", reject)
          })
        )
        yield* Effect.promise(() => Promise.all(clients))
        assert.strictEqual(yield* server.connections, 300)
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        assert.isBelow(Date.now() - started, 3000, "shutdown took too long")
        assert.isTrue(yield* waitUntil(() => codes.length === 300, 3000), `${codes.length} of 300 clients closed`)
        assert.deepStrictEqual([...new Set(codes)], [1001])
        assert.isTrue(yield* waitUntil(() => tcpSockets() <= before, 3000), "sockets still open")
        heaps.push((yield* settledMemory).heap)
      }
      assert.isBelow(heaps[2]! - heaps[0]!, 8 * MiB, `the heap grows round after round: ${heaps.map((h) => (h / MiB).toFixed(1))}`)
    }), 30_000)

  it.live("many concurrent sends to a slow peer, some timed out: each that succeeded arrives once and whole, no other does", () =>
    Effect.gen(function*() {
      const buffers = { highWaterMark: 16 * 1024, writeBufferLimit: 32 * 1024 }
      for (const side of ["client", "server"] as const) {
        const received: Array<string> = []
        const slowReader = (connection: Connection.Connection) =>
          Stream.runForEach(connection.messages, (m) =>
            Effect.andThen(Effect.sleep("1 millis"), Effect.sync(() => received.push(typeof m === "string" ? m : "binary"))))
        const accepted = yield* Deferred.make<Connection.Connection>()
        const server = yield* NodeServer.serve(
          (connection) => (side === "client" ? slowReader(connection) : Effect.andThen(Deferred.succeed(accepted, connection), connection.closed)),
          { socketBuffers: buffers }
        )
        const client = yield* NodeClient.connect(server.url, { socketBuffers: buffers })
        const sender = side === "client" ? client : yield* Deferred.await(accepted)
        if (side === "server") yield* Effect.forkScoped(slowReader(client))
        // a client's message over 64 KiB goes out in parts (a timeout between them stops later sends)
        const largest = side === "client" ? 60 * 1024 : 300 * 1024
        const sent = new Map<string, string>()
        const outcomes = yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), (i) => {
          const message = `${i}:`.padEnd(100 + ((i * 7919) % largest), String.fromCharCode(97 + (i % 26)))
          sent.set(`${i}`, message)
          return Effect.map(Effect.exit(Effect.timeout(sender.send(message), (i * 13) % 200)), (exit) => [`${i}`, Exit.isSuccess(exit)] as const)
        }, { concurrency: "unbounded" })
        const succeeded = outcomes.filter(([, ok]) => ok).map(([id]) => id)
        assert.isAbove(succeeded.length, 0)
        assert.isBelow(succeeded.length, 300, "no send timed out: the peer was not slow enough")
        assert.isTrue((yield* sender.close(1000)).clean)
        assert.isTrue(yield* waitUntil(() => received.length >= succeeded.length, 5000), `${received.length} of ${succeeded.length} received`)
        yield* Effect.sleep("50 millis")
        // in any order (concurrent sends), each exactly once and as it was sent
        assert.deepStrictEqual(received.map((m) => m.split(":")[0]!).sort(), [...succeeded].sort(), side)
        for (const message of received) assert.isTrue(message === sent.get(message.split(":")[0]!), `${side}: a message arrived altered`)
      }
    }), 30_000)
})

describe("our client against hostile servers", () => {
  const cases: ReadonlyArray<readonly [string, (socket: Net.Socket, response: Buffer) => void, number, string]> = [
    ["a frame of announced length 2^63 - 1", (s, r) => void s.write(Buffer.concat([r, frame(0x2, undefined, { server: true, announced: 2n ** 63n - 1n })])), 1009, "InvalidProtocolFormat"],
    ["a 64-bit length with its top bit set", (s, r) => void s.write(Buffer.concat([r, frame(0x2, undefined, { server: true, announced: 2n ** 63n })])), 1002, "InvalidProtocolFormat"],
    ["a masked frame", (s, r) => void s.write(Buffer.concat([r, frame(0x1, Buffer.from("hi"))])), 1002, "InvalidProtocolFormat"],
    ["garbage", (s, r) => void s.write(Buffer.concat([r, Buffer.from("\xff\xfe garbage", "latin1")])), 1002, "InvalidProtocolFormat"],
    ["the end of TCP without a Close", (s, r) => void s.end(r), 1006, "TransportError"],
    ["a reset after a while", (s, r) => void (s.write(r), setTimeout(() => s.resetAndDestroy(), 50)), 1006, "TransportError"]
  ]
  for (const [name, behave, code, tag] of cases) {
    it.live(`a 101, then ${name}: ${code} and a ${tag}, at once`, () =>
      Effect.gen(function*() {
        const port = yield* rawServer((socket) => answer101(socket, behave))
        const started = Date.now()
        const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`)
        const read = yield* Effect.exit(Stream.runDrain(connection.messages))
        assert.strictEqual(Exit.findErrorOption(read).pipe((e) => (e._tag === "Some" ? e.value._tag : String(read))), tag)
        assert.strictEqual((yield* connection.closed).code, code)
        assert.isBelow(Date.now() - started, 2000)
      }), 30_000)
  }

  it.live("a frame whose first byte alone came with the 101, its rest later, is read whole", () =>
    Effect.gen(function*() {
      const text = frame(0x1, Buffer.from("hello"), { server: true })
      const port = yield* rawServer((socket) =>
        answer101(socket, (s, response) => {
          s.write(Buffer.concat([response, text.subarray(0, 1)]))
          setTimeout(() => s.write(text.subarray(1)), 100)
        })
      )
      const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`, { connection: { closeTimeout: "200 millis" } })
      const [message] = yield* Stream.runCollect(Stream.take(connection.messages, 1)).pipe(Effect.timeout("2 seconds"))
      assert.strictEqual(message, "hello")
    }), 30_000)

  it.live("a 101, then silence: closing is bounded by the close timeout (1006)", () =>
    Effect.gen(function*() {
      const port = yield* rawServer((socket) => answer101(socket, (s, r) => void s.write(r)))
      const connection = yield* NodeClient.connect(`ws://127.0.0.1:${port}/`, { connection: { closeTimeout: "300 millis" } })
      const started = Date.now()
      const info = yield* connection.close(1000)
      assert.deepStrictEqual([info.code, info.clean], [1006, false])
      assert.isBelow(Date.now() - started, 1500)
    }), 30_000)

  it.live("redirects that each come just within the handshake timeout: the whole connect is bounded by it", () =>
    Effect.gen(function*() {
      const port = yield* rawServer((socket) =>
        socket.once("data", () => {
          const timer = setTimeout(() => socket.end("HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n"), 250)
          socket.once("close", () => clearTimeout(timer))
        })
      )
      const before = tcpSockets()
      const started = Date.now()
      const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(`ws://127.0.0.1:${port}/`, {
        handshakeTimeout: "400 millis",
        followRedirects: true,
        maxRedirects: 10
      })))
      const took = Date.now() - started
      assert.instanceOf(error, Client.ConnectError, String(error))
      assert.strictEqual((error as Client.ConnectError).reason, "Timeout")
      assert.isBelow(took, 1500, `the connect took ${took} ms`)
      assert.isTrue(yield* waitUntil(() => tcpSockets() <= before, 2000), "sockets still open")
    }), 30_000)
})
