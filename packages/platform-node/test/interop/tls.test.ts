/**
 * `wss://` with a self-signed certificate made by OpenSSL at test time: our client and our server,
 * a `ws` client against our server, our client against a `ws` server on `node:https`, and the
 * failures when the certificate cannot be trusted.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Https from "node:https"
import type * as Net from "node:net"
import { WebSocketServer } from "ws"
import { NodeClient } from "../../src/index.ts"
import {
  bytesOfSize,
  certificate,
  digest,
  echoing,
  echoServer,
  Mailbox,
  messageReader,
  SIZES,
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
    yield* Effect.acquireRelease(
      within(
        Effect.callback<void, Error>((resume) => {
          https.once("error", (error) => resume(Effect.fail(error)))
          https.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        5_000,
        "the https server to listen"
      ),
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
    const { port } = https.address() as Net.AddressInfo
    return { url: `wss://127.0.0.1:${port}/`, accepted: within(accepted.take, 10_000, "the wss server to accept") }
  })

describe("TLS", () => {
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

  it.live("connect without the CA fails with ConnectError reason Tls", () =>
    Effect.gen(function*() {
      const { cert, key } = yield* certificate
      const { server } = yield* echoServer({ tls: { cert, key } })
      const error = yield* Effect.flip(NodeClient.connect(server.url, { handshakeTimeout: "10 seconds" }))
      assert.strictEqual(error._tag, "ConnectError")
      assert.strictEqual(error._tag === "ConnectError" ? error.reason : undefined, "Tls", error.message)
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
