import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { WebSocket as WsClient } from "ws"
import { NodeClient, NodeServer } from "../src/index.ts"

const echo = NodeServer.serve((connection) => Stream.runForEach(connection.messages, (m) => connection.send(m)), {
  selectProtocol: (offered) => offered[0]
})

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
})
