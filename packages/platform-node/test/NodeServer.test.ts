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
