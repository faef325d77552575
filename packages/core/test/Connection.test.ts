import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { Connection } from "../src/index.ts"

describe("Connection", () => {
  it.effect("echo", () =>
    Effect.gen(function*() {
      const [client, server] = yield* Connection.makeMemoryPair()
      yield* Effect.forkScoped(Stream.runForEach(server.messages, (m) => server.send(m)))
      yield* client.send("hello")
      yield* client.send(new Uint8Array([1, 2, 3]))
      const got = yield* Stream.runCollect(Stream.take(client.messages, 2))
      assert.deepStrictEqual(got, ["hello", new Uint8Array([1, 2, 3])])
      const info = yield* client.close(1000, "bye")
      assert.deepStrictEqual(info, { code: 1000, reason: "bye", clean: true, initiator: "local" })
      const serverInfo = yield* server.closed
      assert.deepStrictEqual(serverInfo, { code: 1000, reason: "bye", clean: true, initiator: "remote" })
    }))
})
