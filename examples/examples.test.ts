import { Client } from "@effect-websocket/core"
import { NodeClient, NodeServer } from "@effect-websocket/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { readFileSync } from "node:fs"
import { greet } from "./client.ts"
import { program } from "./handles.ts"

const echo: Client.Handler<unknown> = (connection) => Stream.runForEach(connection.messages, (m) => connection.send(m))
const selectFirst = { selectProtocol: (offered: ReadonlyArray<string>) => offered[0] }

describe("the client example", () => {
  it.effect("runs in memory with Client.layerMemory", () =>
    Effect.gen(function*() {
      const result = yield* greet("ws://example.test/chat").pipe(Effect.provide(Client.layerMemory(echo, selectFirst)))
      assert.strictEqual(result.reply, "hello")
      assert.strictEqual(result.protocol, "chat.v1")
      assert.deepStrictEqual(result.closed, { code: 1000, reason: "bye", clean: true, initiator: "local" })
    }))

  it.live("runs unchanged over loopback with NodeClient.layer", () =>
    Effect.gen(function*() {
      const server = yield* NodeServer.serve(echo, selectFirst)
      const result = yield* greet(server.url).pipe(Effect.provide(NodeClient.layer))
      assert.strictEqual(result.reply, "hello")
      assert.strictEqual(result.protocol, "chat.v1")
      assert.deepStrictEqual(result.closed, { code: 1000, reason: "bye", clean: true, initiator: "local" })
    }))
})

describe("the handles example", () => {
  it.effect("runs", () => program)
})

describe("README", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
  for (const file of ["server.ts", "client.ts", "handles.ts"]) {
    it(`shows examples/${file} as it is`, () => {
      const source = readFileSync(new URL(`./${file}`, import.meta.url), "utf8")
      assert.include(readme, source.trim())
    })
  }
})
