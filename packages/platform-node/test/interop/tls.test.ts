/**
 * `wss://` with a self-signed certificate made by OpenSSL at test time: our client and our server,
 * a `ws` client against our server, our client against a `ws` server on `node:https`, and the
 * failures when the certificate cannot be trusted.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Metric, Schedule, Scope, Stream } from "effect"
import * as Fs from "node:fs"
import * as Https from "node:https"
import { createHash } from "node:crypto"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Tls from "node:tls"
import { WebSocketServer } from "ws"
import { Metrics } from "@effect-websocket/core"
import { NodeClient, NodeServer } from "../../src/index.ts"
import {
  bytesOfSize,
  certificate,
  digest,
  echoing,
  echoServer,
  listenOnLoopback,
  Mailbox,
  messageReader,
  run,
  SIZES,
  tempDir,
  textOfSize,
  within,
  wsConnect,
  wsMessageDigest,
  wsPeer,
  type WsPeer,
  wsSend
} from "./helpers.ts"


/** A `ws` server on a `node:https` server with `cert` and `key`, closed with the scope. */
const wssServer = (tls: { readonly cert: string; readonly key: string }) =>
  Effect.gen(function*() {
    const accepted = new Mailbox<WsPeer>()
    const https = Https.createServer({ cert: tls.cert, key: tls.key })
    const wss = new WebSocketServer({ server: https })
    wss.on("connection", (socket) => accepted.push(echoing(wsPeer(socket))))
    const port = yield* Effect.acquireRelease(
      listenOnLoopback(https, "the https server"),
      () =>
        Effect.ignore(within(
          Effect.callback<void>((resume) => {
            for (const client of wss.clients) client.terminate()
            wss.close()
            https.close(() => resume(Effect.void))
            https.closeAllConnections()
          }),
          5_000,
          "the https server to close"
        ))
    )
    return { url: `wss://127.0.0.1:${port}/`, accepted: within(accepted.take, 10_000, "the wss server to accept") }
  })

/**
 * A TCP proxy to `127.0.0.1:serverPort` that passes a TLS handshake on until the client sends again
 * after the server's first answer, then resets the client's connection (TCP RST) instead of
 * passing that on: the client has seen the server's answer and its handshake is not complete.
 * (A reset before any answer is tested in NodeClient.test.ts: no TLS failure.)
 */
const resetMidHandshake = (serverPort: number) =>
  Effect.gen(function*() {
    let resets = 0
    const sockets = new Set<Net.Socket>()
    const proxy = Net.createServer((client) => {
      const upstream = Net.connect(serverPort, "127.0.0.1")
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => sockets.delete(socket))
      }
      let answered = false
      upstream.on("data", (chunk) => {
        answered = true
        client.write(chunk)
      })
      client.on("data", (chunk) => {
        if (!answered) return void upstream.write(chunk)
        resets++
        client.resetAndDestroy()
        upstream.destroy()
      })
    })
    const port = yield* Effect.acquireRelease(
      listenOnLoopback(proxy, "the proxy"),
      () =>
        Effect.sync(() => {
          for (const socket of sockets) socket.destroy()
          proxy.close()
        })
    )
    return { port, resets: Effect.sync(() => resets) }
  })

describe("TLS", () => {
  it.live("a server whose identity comes from an SNICallback starts and serves", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const context = Tls.createSecureContext({ cert, key })
      const { server } = yield* echoServer({ tls: { SNICallback: (_name, done) => done(null, context) } })
      const connection = yield* NodeClient.connect(server.url.replace("127.0.0.1", "localhost"), {
        tls: { ca: cert, checkServerIdentity: () => undefined }
      })
      yield* connection.send("through an SNICallback")
      assert.deepStrictEqual(yield* Stream.runCollect(Stream.take(connection.messages, 1)), ["through an SNICallback"])
    }))

  it.live("wss:// round trip between our client (trusting the certificate) and our server", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const { accepted, server } = yield* echoServer({ tls: { cert, key } })
      assert.match(server.url, /^wss:\/\/127\.0\.0\.1:\d+\/$/)
      const connection = yield* NodeClient.connect(server.url, { tls: { ca: cert } })
      const side = yield* accepted
      const reader = yield* messageReader(connection)
      for (const size of SIZES) {
        const payload = bytesOfSize(size)
        yield* connection.send(payload)
        assert.deepStrictEqual(digest(yield* reader.next(20_000)), digest(payload), `binary message of ${size} bytes`)
      }
      const text = textOfSize(1024 * 1024)
      yield* connection.send(text)
      assert.deepStrictEqual(digest(yield* reader.next()), digest(text))
      const info = yield* within(connection.close(1000, "done"), 10_000, "our close")
      assert.deepStrictEqual(info, { code: 1000, reason: "done", clean: true, initiator: "local" })
      const serverInfo = yield* within(side.connection.closed, 5_000, "the server side to close")
      assert.deepStrictEqual(serverInfo, { code: 1000, reason: "done", clean: true, initiator: "remote" })
    }), 60_000)

  it.live("a key that does not match its certificate is an InvalidParameter naming tls; the URL's host, port and path win over the tls option's", () =>
    Effect.gen(function*() {
      const one = yield* certificate
      const other = yield* certificate
      const error = yield* Effect.flip(NodeServer.serve(() => Effect.void, { tls: { cert: one.cert, key: other.key } }))
      assert.deepStrictEqual([error._tag, error._tag === "InvalidParameter" && error.parameter], ["InvalidParameter", "tls"])
      const paths: Array<string> = []
      const server = yield* NodeServer.serve((c, request) => Effect.andThen(Effect.sync(() => paths.push(request.url)), c.close()), {
        tls: one
      })
      // (as with ws: Node's request options of the same names do not redirect the connection)
      const tls = { ca: one.cert, host: "nowhere.invalid", hostname: "127.0.0.2", port: 1, path: "/elsewhere" } as never
      const info = yield* Effect.scoped(Effect.flatMap(NodeClient.connect(`${server.url}chat`, { tls }), (c) => c.closed))
      assert.strictEqual(info.code, 1000)
      assert.deepStrictEqual(paths, ["/chat"])
    }), 60_000)

  it.live("client certificates: authorize reads the TLS socket of the request behind the upgrade (incomingMessage)", () =>
    Effect.gen(function*() {
      const server = yield* certificate
      const client = yield* certificate
      const stranger = yield* certificate
      const { server: wss } = yield* echoServer({
        tls: { cert: server.cert, key: server.key, ca: [client.cert], requestCert: true, rejectUnauthorized: false },
        authorize: (request) => {
          const socket = NodeServer.incomingMessage(request)?.socket as Tls.TLSSocket | undefined
          return socket?.authorized === true
            ? Effect.void
            : Effect.fail(new NodeServer.Rejection({ status: 401, message: "a trusted client certificate is required" }))
        }
      })
      const withCertificate = yield* NodeClient.connect(wss.url, { tls: { ca: server.cert, cert: client.cert, key: client.key } })
      yield* withCertificate.send("trusted")
      const reader = yield* messageReader(withCertificate)
      assert.strictEqual(yield* reader.next(), "trusted")
      for (const tls of [{ ca: server.cert }, { ca: server.cert, cert: stranger.cert, key: stranger.key }]) {
        const refused = yield* Effect.flip(NodeClient.connect(wss.url, { tls }))
        assert.deepStrictEqual(
          refused._tag === "HandshakeRejected" ? [refused._tag, refused.status] : [refused._tag],
          ["HandshakeRejected", 401]
        )
      }
    }))

  it.live("a ws client trusting the certificate talks to our wss:// server", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const { accepted, server } = yield* echoServer({ tls: { cert, key }, selectProtocol: (offered) => offered[0] })
      const peer = yield* wsConnect(server.url, ["secure"], { ca: cert })
      const side = yield* accepted
      assert.strictEqual(peer.socket.protocol, "secure")
      for (const payload of ["over tls ✓", bytesOfSize(1024 * 1024)]) {
        yield* wsSend(peer, payload)
        assert.deepStrictEqual(wsMessageDigest(yield* peer.next()), digest(payload))
      }
      peer.socket.close(4000, "custom reason")
      assert.deepStrictEqual(yield* peer.closed, { code: 4000, reason: "custom reason" })
      const info = yield* within(side.connection.closed, 5_000, "our connection to close")
      assert.deepStrictEqual(info, { code: 4000, reason: "custom reason", clean: true, initiator: "remote" })
    }))

  it.live("our client trusting the certificate talks to a ws server on node:https", () =>
    Effect.gen(function*() {
      const tls = yield* certificate
      const wss = yield* wssServer(tls)
      const connection = yield* NodeClient.connect(wss.url, { tls: { ca: tls.cert } })
      const peer = yield* wss.accepted
      const reader = yield* messageReader(connection)
      for (const payload of ["over tls ✓", bytesOfSize(1024 * 1024)]) {
        yield* connection.send(payload)
        assert.deepStrictEqual(digest(yield* reader.next()), digest(payload))
      }
      const info = yield* within(connection.close(3001, "bye"), 10_000, "our close")
      assert.deepStrictEqual(info, { code: 3001, reason: "bye", clean: true, initiator: "local" })
      assert.deepStrictEqual(yield* peer.closed, { code: 3001, reason: "bye" })
    }))

  it.live("our Close answering a broken frame reaches a wss:// server, even when the scope closes at once", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      // a raw TLS server: 101, then a continuation with no message (1002); it ends once it has our
      // Close (or after 3 seconds)
      const received = yield* Effect.callback<{ readonly port: number; readonly bytes: Promise<Buffer> }>((resume) => {
        let deliver: (bytes: Buffer) => void = () => {}
        const bytes = new Promise<Buffer>((resolve) => (deliver = resolve))
        const server = Tls.createServer({ cert, key }, (socket) => {
          let chunks: Array<Buffer> = []
          socket.on("error", () => {})
          socket.on("close", () => {
            deliver(Buffer.concat(chunks))
            server.close()
          })
          socket.once("data", (request: Buffer) => {
            const key = /sec-websocket-key: *(\S+)/i.exec(request.toString("latin1"))?.[1] ?? ""
            const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
            chunks = []
            socket.on("data", (chunk: Buffer) => {
              chunks.push(chunk)
              if (Buffer.concat(chunks).length >= 8) socket.end() // a whole Close came
            })
            setTimeout(() => socket.end(), 3000)
            socket.write(
              `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
            )
            // then a byte a turn, as a peer that has not seen our Close yet
            const frame = Uint8Array.of(0x00, 0x01, 0x61)
            let sent = 0
            const more = () => {
              if (socket.writableEnded || socket.destroyed) return
              socket.write(Uint8Array.of(frame[sent++ % frame.length]!))
              setImmediate(more)
            }
            setImmediate(more)
          })
        })
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ port: (server.address() as Net.AddressInfo).port, bytes })))
      })
      const closed = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* NodeClient.connect(`wss://127.0.0.1:${received.port}/`, { tls: { ca: cert } })
        return yield* within(connection.closed, 5_000, "our connection to fail")
      }))
      assert.strictEqual(closed.code, 1002)
      const bytes = yield* within(Effect.promise(() => received.bytes), 5_000, "the server socket to close")
      // our masked Close: 0x88, length 2 with the mask bit, the key, then 1002 masked
      assert.strictEqual(bytes[0], 0x88)
      assert.strictEqual(bytes[1], 0x82)
      assert.strictEqual(((bytes[6]! ^ bytes[2]!) << 8) | (bytes[7]! ^ bytes[3]!), 1002)
    }))

  it.live("connect without the CA fails with ConnectError reason Tls", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const { server } = yield* echoServer({ tls: { cert, key } })
      const error = yield* Effect.flip(NodeClient.connect(server.url, { handshakeTimeout: "10 seconds" }))
      assert.strictEqual(error._tag, "ConnectError")
      assert.strictEqual(error._tag === "ConnectError" ? error.reason : undefined, "Tls", error.message)
      assert.strictEqual(yield* server.connections, 0)
    }))

  it.live("a certificate from a CA not trusted fails with ConnectError reason Tls, whether the server sends it alone or with its self-signed CA", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("interop-tls-chain-")
      const file = (name: string) => Path.join(dir, name)
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      yield* run("openssl", ["req", "-x509", ...ec, "-subj", "/CN=Untrusted test CA", "-days", "1", "-keyout", file("ca.key"), "-out", file("ca.pem")], 30_000)
      yield* run("openssl", ["req", ...ec, "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", file("leaf.key"), "-out", file("leaf.csr")], 30_000)
      yield* run("openssl", ["x509", "-req", "-in", file("leaf.csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"), "-CAcreateserial", "-copy_extensions", "copy", "-days", "1", "-out", file("leaf.pem")], 30_000)
      const [ca, leaf, key] = ["ca.pem", "leaf.pem", "leaf.key"].map((name) => Fs.readFileSync(file(name), "utf8"))
      // (OpenSSL says UNABLE_TO_VERIFY_LEAF_SIGNATURE for the one, SELF_SIGNED_CERT_IN_CHAIN for the other)
      for (const [cert, code] of [[leaf!, "UNABLE_TO_VERIFY_LEAF_SIGNATURE"], [leaf! + ca!, "SELF_SIGNED_CERT_IN_CHAIN"]] as const) {
        const { server } = yield* echoServer({ tls: { cert, key: key! } })
        const error = yield* Effect.flip(Effect.scoped(NodeClient.connect(server.url)))
        assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : undefined], ["ConnectError", "Tls"], error.message)
        assert.strictEqual((error.cause as { code?: unknown } | undefined)?.code, code)
      }
      // (and trusting the CA, the same server is reached)
      const { server } = yield* echoServer({ tls: { cert: leaf!, key: key! } })
      yield* Effect.scoped(Effect.flatMap(NodeClient.connect(server.url, { tls: { ca } }), (connection) => connection.close(1000)))
    }))

  it.live("a TCP client that never finishes its TLS handshake is dropped after handshakeTimeout and does not hold the shutdown", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const scope = yield* Scope.make()
      const { server } = yield* echoServer({ tls: { cert, key }, handshakeTimeout: "300 millis" }).pipe(Scope.provide(scope))
      /** A TCP connection that sends nothing: resolves with how long the server kept it. */
      const silent = (port = server.address.port) =>
        Effect.callback<number>((resume) => {
          const started = Date.now()
          const socket = Net.connect(port, "127.0.0.1")
          socket.on("error", () => {})
          socket.on("close", () => resume(Effect.succeed(Date.now() - started)))
          return Effect.sync(() => socket.destroy())
        })
      const timeouts = Effect.map(
        Metric.value(Metric.withAttributes(Metrics.handshakeFailures, { side: "server", reason: "RequestTimeout" })),
        (state) => Number(state.count)
      )
      const before = yield* timeouts
      const kept = yield* within(silent(), 10_000, "the server to drop a silent TLS client")
      // (at once: no HTTP answer can go out before the TLS handshake, nor be waited for)
      assert.isBelow(kept, 900, "dropped after about handshakeTimeout (Node's TLS default is 120 s)")
      assert.strictEqual((yield* timeouts) - before, 1, "counted as a request that did not come in time")
      // another silent client is there when the server shuts down: the shutdown ends all the same
      const second = yield* Effect.forkChild(silent())
      yield* Effect.sleep("50 millis")
      yield* within(Scope.close(scope, Exit.void), 5_000, "the shutdown")
      yield* within(Fiber.join(second), 5_000, "the silent client to be dropped")
      // and within about its shutdownTimeout when that is shorter than the handshake timeout
      const shortScope = yield* Scope.make()
      const short = yield* echoServer({ tls: { cert, key }, shutdownTimeout: "100 millis" }).pipe(Scope.provide(shortScope))
      const third = yield* Effect.forkChild(silent(short.server.address.port))
      yield* Effect.sleep("50 millis")
      const started = Date.now()
      yield* within(Scope.close(shortScope, Exit.void), 5_000, "the shutdown")
      assert.isBelow(Date.now() - started, 700, "the shutdown took about its shutdownTimeout")
      yield* within(Fiber.join(third), 5_000, "the silent client to be dropped")
    }))

  it.live("a client stuck in its TLS handshake beside one that never answers the Close: the shutdown still ends at shutdownTimeout", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const scope = yield* Scope.make()
      const { server } = yield* echoServer({ tls: { cert, key }, shutdownTimeout: "1 second" }).pipe(Scope.provide(scope))
      // upgraded, then silent: its closing handshake keeps the shutdown busy until the deadline
      const silent = Tls.connect({ port: server.address.port, host: "127.0.0.1", ca: cert })
      silent.on("error", () => {})
      silent.once("secureConnect", () =>
        silent.write(
          "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ))
      // the first bytes of a ClientHello, then nothing
      const stuck = Net.connect(server.address.port, "127.0.0.1", () => stuck.write(Buffer.from([0x16, 0x03, 0x01])))
      stuck.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => (silent.destroy(), stuck.destroy())))
      yield* within(
        Effect.repeat(server.connections, { until: (n) => n === 1, schedule: Schedule.spaced("10 millis") }),
        5_000,
        "the silent client to be upgraded"
      )
      const started = Date.now()
      yield* within(Scope.close(scope, Exit.void), 5_000, "the shutdown")
      const took = Date.now() - started
      assert.isAtLeast(took, 900, "the closing handshake was waited for")
      assert.isBelow(took, 1600, "the client still in its TLS handshake did not add its own grace after the deadline")
    }))

  it.live("a server that refuses our client certificate during the TLS 1.2 handshake (it resets the connection): ConnectError reason Tls", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const other = yield* certificate // a client certificate the server does not trust
      const { server } = yield* echoServer({ tls: { cert, key, ca: cert, requestCert: true, rejectUnauthorized: true, maxVersion: "TLSv1.2" } })
      const error = yield* Effect.flip(NodeClient.connect(server.url, { tls: { ca: cert, cert: other.cert, key: other.key } }))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : undefined], ["ConnectError", "Tls"], error.message)
      assert.isFalse(error.message.endsWith("\n"))
    }))

  it.live("a connection reset after the server answered the TLS handshake and before it completed: ConnectError reason Tls", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      // TLS 1.2: the client answers the server's first flight with its own second flight, so
      // bytes from the client after the server's mean the handshake is under way on both sides
      const { server } = yield* echoServer({ tls: { cert, key, maxVersion: "TLSv1.2" } })
      const proxy = yield* resetMidHandshake(server.address.port)
      const error = yield* Effect.flip(NodeClient.connect(`wss://127.0.0.1:${proxy.port}/`, { tls: { ca: cert } }))
      assert.deepStrictEqual([error._tag, error._tag === "ConnectError" ? error.reason : undefined], ["ConnectError", "Tls"], error.message)
      assert.include(error.message, "ECONNRESET")
      assert.strictEqual(yield* proxy.resets, 1)
      assert.strictEqual(yield* server.connections, 0)
    }))

  it.live("connect with the CA but expecting another server name fails with ConnectError reason Tls", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const { server } = yield* echoServer({ tls: { cert, key } })
      const error = yield* Effect.flip(NodeClient.connect(server.url, { tls: { ca: cert, servername: "example.com" } }))
      assert.strictEqual(error._tag, "ConnectError")
      assert.strictEqual(error._tag === "ConnectError" ? error.reason : undefined, "Tls", error.message)
    }))
})
